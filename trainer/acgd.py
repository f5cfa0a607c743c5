"""Adaptive competitive gradient descent (ACGD; seed 002, SPEC §6), written from the paper and checked against
the authors' `cgds` package in the tests.

Both players update at once on one shared scalar f: the maximizer x (D) ascends, the minimizer y (G) descends.
With g = ∇f, the mixed second derivatives D_xy = ∇ₓ∇ᵧf and D_yx as Hessian-vector products (double backprop,
never formed), and RMSprop-style step sizes η = √(1−βᵗ)·lr/(√v + ε), v ← βv + (1−β)g² per coordinate:

    p_x = g_x − D_xy(η_y g_y),   p_y = g_y + D_yx(η_x g_x)
    solve (I + η_x^½ D_xy η_y D_yx η_x^½) w = η_x^½ p_x by conjugate gradient (warm start: the last w),
    Δx = η_x^½ w,   Δy = −η_y (g_y + D_yx Δx)

and, like the package, alternating each step which side the linear system is solved for (the other side
follows in closed form), which keeps both warm starts fresh.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from sqd.trainer import probe_worker


def _flat(tensors: Iterable[Tensor | None], like: list[nn.Parameter]) -> Tensor:
    return torch.cat([(t if t is not None else torch.zeros_like(p)).reshape(-1) for t, p in zip(tensors, like,
                                                                                                 strict=True)])


def mixed_product(grad: Tensor, params: list[nn.Parameter], vec: Tensor) -> Tensor:
    """∂/∂params ⟨grad, vec⟩ for a gradient `grad` of f w.r.t. the *other* player (vec held constant)."""
    if not grad.requires_grad:  # f is separable: the mixed derivatives vanish
        return torch.zeros(sum(p.numel() for p in params), device=vec.device, dtype=vec.dtype)
    out = torch.autograd.grad(grad, params, grad_outputs=vec, retain_graph=True, allow_unused=True)
    return _flat(out, params)


@dataclass
class Player:
    params: list[nn.Parameter]
    lr: float
    sign: float  # +1 ascends f (maximizer), −1 descends (minimizer)
    sq_avg: Tensor | None = None
    warm: Tensor | None = None  # last CG solution for this side (in the η^½-scaled variables)

    def apply(self, delta: Tensor) -> None:
        offset = 0
        with torch.no_grad():
            for p in self.params:
                p.add_(delta[offset:offset + p.numel()].view_as(p))
                offset += p.numel()


def conjugate_gradient(op: Any, b: Tensor, x0: Tensor | None, tol: float, atol: float,
                       max_iter: int) -> tuple[Tensor, int]:
    """Solve op(x) = b for a symmetric positive definite op; stop when ‖r‖² < tol·‖b‖² or ‖r‖² < atol."""
    x = torch.zeros_like(b) if x0 is None else x0.clone()
    r = b - op(x) if x0 is not None else b.clone()
    rr, limit = r.dot(r), tol * b.dot(b)
    if rr < limit or rr < atol:
        return x, 0
    p = r.clone()
    for i in range(1, max_iter + 1):
        Ap = op(p)
        alpha = rr / p.dot(Ap)
        x.add_(alpha * p)
        r.sub_(alpha * Ap)
        rr_new = r.dot(r)
        if rr_new < limit or rr_new < atol:
            return x, i
        p = r + (rr_new / rr) * p
        rr = rr_new
    return x, max_iter


class ACGD:
    def __init__(self, max_params: Iterable[nn.Parameter], min_params: Iterable[nn.Parameter], lr_max: float = 1e-3,
                 lr_min: float = 1e-3, beta: float = 0.99, eps: float = 1e-5, tol: float = 1e-12,
                 atol: float = 1e-20, max_iter: int | None = None):
        self.x = Player([p for p in max_params if p.requires_grad], lr_max, +1.0)
        self.y = Player([p for p in min_params if p.requires_grad], lr_min, -1.0)
        self.beta, self.eps, self.tol, self.atol, self.max_iter = beta, eps, tol, atol, max_iter
        self.t = 0
        self.solve_max = True  # which side the next step solves for; alternates
        self.cg_iters = 0

    def set_lr(self, lr_max: float, lr_min: float) -> None:
        self.x.lr, self.y.lr = lr_max, lr_min

    def _eta(self, player: Player, grad: Tensor) -> Tensor:
        if player.sq_avg is None:
            player.sq_avg = torch.zeros_like(grad)
        player.sq_avg.mul_(self.beta).addcmul_(grad, grad, value=1 - self.beta)
        return math.sqrt(1 - self.beta**self.t) * player.lr / (player.sq_avg.sqrt() + self.eps)

    def step(self, f: Tensor) -> None:
        """One simultaneous update of both players on the shared loss f (a scalar with a graph)."""
        self.t += 1
        x, y = self.x, self.y
        gx = _flat(torch.autograd.grad(f, x.params, create_graph=True, allow_unused=True), x.params)
        gy = _flat(torch.autograd.grad(f, y.params, create_graph=True, allow_unused=True), y.params)
        grads = {id(x): gx, id(y): gy}
        eta = {id(x): self._eta(x, gx.detach()), id(y): self._eta(y, gy.detach())}
        a, b = (x, y) if self.solve_max else (y, x)
        ga, gb, eta_a, eta_b = grads[id(a)], grads[id(b)], eta[id(a)], eta[id(b)]
        ga_d, gb_d = ga.detach(), gb.detach()

        def cross(v: Tensor) -> Tensor:  # D_ab (η_b D_ba v): through b's gradient and back
            return mixed_product(gb, a.params, eta_b * mixed_product(ga, b.params, v))

        p_a = ga_d - a.sign * mixed_product(gb, a.params, eta_b * gb_d)
        sqrt_eta = eta_a.sqrt()
        w, self.cg_iters = conjugate_gradient(lambda v: v + sqrt_eta * cross(sqrt_eta * v), sqrt_eta * p_a, a.warm,
                                              self.tol, self.atol, self.max_iter or p_a.numel())
        delta_a = a.sign * sqrt_eta * w
        follow = gb_d + mixed_product(ga, b.params, delta_a)
        a.warm, b.warm = w, eta_b.sqrt() * follow
        probe_worker.fence()  # not a torch.optim optimizer: the Monitor's pre-step fence does not see this step
        a.apply(delta_a)
        b.apply(b.sign * eta_b * follow)
        self.solve_max = not self.solve_max

    def state_dict(self) -> dict[str, Any]:
        return {"t": self.t, "solve_max": self.solve_max, "lr_max": self.x.lr, "lr_min": self.y.lr,
                "sq_max": self.x.sq_avg, "sq_min": self.y.sq_avg, "warm_max": self.x.warm, "warm_min": self.y.warm}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.t, self.solve_max = int(state["t"]), bool(state["solve_max"])
        self.x.lr, self.y.lr = float(state["lr_max"]), float(state["lr_min"])
        self.x.sq_avg, self.y.sq_avg = state["sq_max"], state["sq_min"]
        self.x.warm, self.y.warm = state["warm_max"], state["warm_min"]

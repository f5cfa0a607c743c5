"""Penalties on D (SPEC §3): input gradients per sample (L2 norm over the flattened image), batch means.

Each penalty differentiates with `create_graph=True`, so the penalty itself is trained (double backprop).
r1 / r2 reuse the logits of the loss's own forward pass (the trainer marks real / fake as requiring grad first,
see `needs_input_grad`); gp / zero_gp / lp / dragan run their own forward pass on perturbed points.
Structural regularizers (sn, l2, gran_*) are not here: they change the net or the optimizer.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

Critic = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class PenaltyWeights:
    lam: float = 10.0  # gp, dragan, zero_gp, lp
    gamma: float = 0.1  # r1, r2 (R3GAN ramps it during burn-in)
    dragan_c: float = 0.25  # variance of DRAGAN's δ


@dataclass(frozen=True)
class DBatch:
    critic: Critic
    real: Tensor
    fake: Tensor
    real_logits: Tensor
    fake_logits: Tensor


def input_gradient(logits: Tensor, x: Tensor) -> Tensor:
    """∇ₓ of each sample's logit, flattened: (N, C·H·W). Samples are independent (no BatchNorm in D)."""
    (grad,) = torch.autograd.grad(logits.sum(), x, create_graph=True)
    return grad.flatten(1)


def _norm(grad: Tensor) -> Tensor:
    # The tiny offset keeps d‖g‖ finite at g = 0 (a dead critic); it changes ‖g‖ by < 1e-10 otherwise.
    return (grad.pow(2).sum(1) + 1e-20).sqrt()


def interpolates(real: Tensor, fake: Tensor) -> Tensor:
    """x̂ = αx + (1 − α)x̃ with one α ~ U[0, 1] per sample (WGAN-GP)."""
    alpha = torch.rand(real.shape[0], *([1] * (real.dim() - 1)), device=real.device, dtype=real.dtype)
    return (alpha * real.detach() + (1 - alpha) * fake.detach()).requires_grad_(True)


def _grad_at(critic: Critic, x: Tensor) -> Tensor:
    return input_gradient(critic(x), x)


def gp(b: DBatch, w: PenaltyWeights) -> Tensor:
    return w.lam * (_norm(_grad_at(b.critic, interpolates(b.real, b.fake))) - 1).pow(2).mean()


def zero_gp(b: DBatch, w: PenaltyWeights) -> Tensor:
    return w.lam * _grad_at(b.critic, interpolates(b.real, b.fake)).pow(2).sum(1).mean()


def lp(b: DBatch, w: PenaltyWeights) -> Tensor:
    return w.lam * torch.relu(_norm(_grad_at(b.critic, interpolates(b.real, b.fake))) - 1).pow(2).mean()


def dragan(b: DBatch, w: PenaltyWeights) -> Tensor:
    x = (b.real.detach() + w.dragan_c**0.5 * torch.randn_like(b.real)).requires_grad_(True)
    return w.lam * (_norm(_grad_at(b.critic, x)) - 1).pow(2).mean()


def r1(b: DBatch, w: PenaltyWeights) -> Tensor:
    return w.gamma / 2 * input_gradient(b.real_logits, b.real).pow(2).sum(1).mean()


def r2(b: DBatch, w: PenaltyWeights) -> Tensor:
    return w.gamma / 2 * input_gradient(b.fake_logits, b.fake).pow(2).sum(1).mean()


def r1r2(b: DBatch, w: PenaltyWeights) -> Tensor:
    # One backward pass for both input gradients (samples are independent, so the sums do not mix).
    g_real, g_fake = torch.autograd.grad(b.real_logits.sum() + b.fake_logits.sum(), [b.real, b.fake],
                                         create_graph=True)
    return w.gamma / 2 * (g_real.flatten(1).pow(2).sum(1).mean() + g_fake.flatten(1).pow(2).sum(1).mean())


PENALTIES: dict[str, Callable[[DBatch, PenaltyWeights], Tensor]] = {
    "gp": gp, "zero_gp": zero_gp, "lp": lp, "dragan": dragan, "r1": r1, "r2": r2, "r1r2": r1r2,
}


def needs_input_grad(names: Iterable[str]) -> tuple[bool, bool]:
    """Whether (real, fake) must require grad before D's forward pass, for r1 / r2 on the same logits."""
    names = set(names)
    return bool(names & {"r1", "r1r2"}), bool(names & {"r2", "r1r2"})


def penalty(names: Iterable[str], batch: DBatch, weights: PenaltyWeights) -> Tensor | None:
    """Sum of the named penalties (names without one, e.g. sn or gran_d, are skipped); None if there are none."""
    terms = [PENALTIES[n](batch, weights) for n in names if n in PENALTIES]
    return torch.stack(terms).sum() if terms else None

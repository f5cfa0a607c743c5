"""GraN: piecewise gradient normalization of D (seed 001, SPEC §4). No official code exists; this is the
reconstruction SPEC §4 gives.

For a piecewise-linear D = f and u(x) = ‖∇ₓf(x)‖₂ per sample: h(x) = K · f(x) · u / (u² + ε). Inside a linear
region u is constant, so ‖∇ₓh‖ = K·u²/(u² + ε) < K (→ K as ε → 0): h is piecewise K-Lipschitz while its value is
unbounded. GraN-D feeds h to the NS loss (1/K is the sigmoid's temperature); GraN-C uses h as a critic with the
soft-hinge loss. u is differentiated through (create_graph=True) for the D and the G update alike.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class GradNormalized(nn.Module):
    """Wraps D; its parameters are D's (the Monitor and the optimizer keep seeing the raw D)."""

    def __init__(self, D: nn.Module, eps: float = 0.1, k: float = 1.0):
        super().__init__()
        self.D, self.eps, self.k = D, eps, k

    def forward(self, x: Tensor) -> Tensor:
        if not x.requires_grad:  # real images: a leaf we may differentiate
            x = x.detach().requires_grad_(True)
        f = self.D(x)
        (grad,) = torch.autograd.grad(f.sum(), x, create_graph=True)
        u2 = grad.flatten(1).pow(2).sum(1)
        u = (u2 + 1e-20).sqrt()  # finite derivative where D is flat (u = 0)
        return self.k * f * u / (u2 + self.eps)

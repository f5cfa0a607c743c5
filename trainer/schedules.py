"""Per-step hyper-parameters: lr decay and R3GAN's cosine burn-in (SPEC §5), and the EMA generator."""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
from torch import nn

from sqd.train_config import TrainConfig


def cosine_ramp(t: int, T: int, start: float | None, final: float) -> float:
    """v(t) = start + (1 − ½(1 + cos πt/T))·(final − start) for t ≤ T, then final (start None: constant)."""
    if start is None or T <= 0 or t >= T:
        return final
    return start + (1 - 0.5 * (1 + math.cos(math.pi * t / T))) * (final - start)


@dataclass(frozen=True)
class Hyper:
    lr_g: float
    lr_d: float
    gamma: float
    beta2: float
    ema_half_life_images: float


def hyper_at(cfg: TrainConfig, step: int) -> Hyper:
    o, b = cfg.optim, cfg.burnin
    decay = 1 - step / cfg.train.steps if o.schedule == "linear" else 1.0
    return Hyper(
        lr_g=cosine_ramp(step, b.steps, b.lr, o.lr_g) * decay,
        lr_d=cosine_ramp(step, b.steps, b.lr, o.lr_d) * decay,
        gamma=cosine_ramp(step, b.steps, b.gamma, cfg.reg.gamma),
        beta2=cosine_ramp(step, b.steps, b.beta2, o.betas[1]),
        ema_half_life_images=cosine_ramp(step, b.steps, b.ema_half_life_images, cfg.ema.half_life_images),
    )


def set_adam(opt: torch.optim.Optimizer, lr: float, beta2: float) -> None:
    for group in opt.param_groups:
        group["lr"] = lr
        group["betas"] = (group["betas"][0], beta2)


class EMA:
    """G_ema ← β·G_ema + (1 − β)·G with β = 0.5^(batch / half-life in images) (StyleGAN / R3GAN); buffers
    (BatchNorm statistics) are copied."""

    def __init__(self, G: nn.Module):
        self.model = copy.deepcopy(G).eval().requires_grad_(False)

    @torch.no_grad()
    def update(self, G: nn.Module, batch: int, half_life_images: float) -> None:
        beta = 0.5 ** (batch / half_life_images) if half_life_images > 0 else 0.0
        ema_params: list[torch.Tensor] = list(self.model.parameters())
        params: list[torch.Tensor] = list(G.parameters())
        torch._foreach_lerp_(ema_params, params, 1.0 - beta)
        for b_ema, b in zip(self.model.buffers(), G.buffers(), strict=True):
            b_ema.copy_(b)

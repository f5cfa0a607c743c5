"""torch.compile for the zoo's nets (train.compile).

G is compiled whenever compile is on (its update needs first derivatives only; ACGD, which differentiates G
twice, is refused by the config). D is compiled only when nothing differentiates it twice: R1, R2, GP, DRAGAN,
zero-GP, LP and GraN take an input gradient with create_graph=True and then the gradient of that, and
torch.compile (AOTAutograd) has no double backward — those runs keep D eager on the custom conv
(`sqd.trainer.conv`) and say so in one warning. Each compiled net is tried at once on a batch of the training
shape (forward + backward; gradients, BatchNorm / spectral-norm buffers and the RNG states restored, so the run
is the one it would have been); where compiling or running fails, the net stays eager with a warning.
Compiled wrappers share the raw nets' parameters: optimizers, EMA, checkpoints and the Monitor are unaffected.
Inside a compiled graph the custom conv and activation fall back to plain ops (`torch.compiler.is_compiling`),
which inductor fuses.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

import torch
from torch import Tensor, nn

from sqd.train_config import INPUT_GRADIENT_REGS
from sqd.trainer.speed import to_layout

if TYPE_CHECKING:
    from sqd.trainer.steps import GANTrainer


def _try(net: nn.Module, raw: nn.Module, example: Callable[[], Tensor], device: torch.device,
         what: str) -> nn.Module:
    """`torch.compile(net)` after one forward + backward on `example()`, or `net` (eager) with a warning."""
    compiled = cast(nn.Module, torch.compile(net, dynamic=False))
    buffers = [b.detach().clone() for b in raw.buffers()]
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            compiled(example()).float().sum().backward()
    except Exception as exc:  # torch.compile fails in many ways (backend, graph breaks, unsupported ops)
        warnings.warn(f"train.compile: {what} stays eager: compiling it failed ({type(exc).__name__}: "
                      f"{str(exc).splitlines()[0] if str(exc) else ''})", stacklevel=4)
        return net
    finally:
        raw.zero_grad(set_to_none=True)
        with torch.no_grad():
            for b, saved in zip(raw.buffers(), buffers, strict=True):
                b.copy_(saved)
    return compiled


def compile_nets(trainer: GANTrainer) -> None:
    """Replace the trainer's call wrappers (`g`, `d`, `critic`) by compiled ones where that works."""
    cfg, plan = trainer.cfg, trainer.plan
    n, d, device = cfg.train.batch, cfg.dataset, plan.device
    trainer.g = _try(trainer.g, trainer.G, lambda: torch.randn(n, cfg.model.z_dim, device=device), device, "G")
    twice = sorted(set(cfg.reg.names) & INPUT_GRADIENT_REGS)
    if twice:
        warnings.warn(f"train.compile: D stays eager: {', '.join(twice)} differentiate(s) D twice (double "
                      f"backward), which torch.compile does not support", stacklevel=3)
        return
    trainer.d = trainer.critic = _try(
        trainer.d, trainer.D, lambda: to_layout(torch.randn(n, d.channels, d.resolution, d.resolution,
                                                            device=device), plan), device, "D")

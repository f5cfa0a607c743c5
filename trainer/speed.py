"""How a trainer uses its device, resolved once from `cfg.train` and the device: TF32, cuDNN autotuning, bf16
autocast, channels_last, DataLoader workers, torch.compile and CUDA graphs (docs/zoo.md, "GPU speed").

Defaults: on CUDA, TF32 matmuls and convolutions, cudnn.benchmark, bf16 autocast of the nets' forward passes,
channels_last, 4 loader workers (at most the cores); on the CPU, fp32, NCHW and no workers, so CPU runs stay
exact and reproducible. `apply_backends` sets the process-wide torch.backends flags (they are global in torch).

Mixed precision: `Mixed(net)` runs `net` under autocast and returns fp32 (logits, images), so every loss and
penalty is computed in fp32, and input gradients (R1, R2, GP, DRAGAN, GraN's u) are taken w.r.t. the fp32
images, so autograd returns them in fp32 — the way the official R3GAN keeps its penalties fp32 around bf16 stages.
ACGD resolves `auto` to fp32 (its conjugate-gradient tolerance is far below bf16's resolution; `bf16` with ACGD
is a config error). fp16 is not offered: it would need loss scaling through the double backward.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from sqd.train_config import TrainConfig

CUDA_LOADER_WORKERS = 4


@dataclass(frozen=True)
class SpeedPlan:
    device: torch.device
    autocast: torch.dtype | None  # None: fp32 throughout
    channels_last: bool
    tf32: bool
    compile: bool
    cuda_graphs: bool
    loader_workers: int

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def describe(self) -> str:
        dtype = "bf16 autocast" if self.autocast is torch.bfloat16 else "fp32"
        parts = [dtype, "channels_last" if self.channels_last else "NCHW"]
        if self.cuda:
            parts.append("TF32" if self.tf32 else "no TF32")
        parts += [p for p, on in (("compile", self.compile), ("CUDA graphs", self.cuda_graphs)) if on]
        return ", ".join(parts)


def plan_speed(cfg: TrainConfig, device: torch.device) -> SpeedPlan:
    t = cfg.train
    cuda = device.type == "cuda"
    if t.precision == "bf16":
        autocast: torch.dtype | None = torch.bfloat16
    elif t.precision == "auto" and cuda and cfg.optim.name != "acgd" and torch.cuda.is_bf16_supported():
        autocast = torch.bfloat16
    else:
        autocast = None
    channels_last = cuda if t.channels_last is None else t.channels_last
    default_workers = min(CUDA_LOADER_WORKERS, os.cpu_count() or 1) if cuda else 0
    workers = t.loader_workers if t.loader_workers is not None else default_workers
    return SpeedPlan(device, autocast, channels_last, t.tf32, t.compile, t.cuda_graphs and cuda, workers)


def apply_backends(plan: SpeedPlan) -> None:
    """Process-wide: TF32 (matmul and cuDNN) and cuDNN autotuning on CUDA; nothing on other devices."""
    if plan.cuda:
        torch.backends.cuda.matmul.allow_tf32 = plan.tf32
        torch.backends.cudnn.allow_tf32 = plan.tf32
        torch.backends.cudnn.benchmark = True


def to_layout(x: Tensor, plan: SpeedPlan) -> Tensor:
    return x.contiguous(memory_format=torch.channels_last) if plan.channels_last and x.dim() == 4 else x


class Mixed(nn.Module):
    """`net` under autocast (when the plan has it), its output as fp32. Holds `net` itself, so its parameters
    are the net's own (optimizers and the Monitor keep seeing the raw net)."""

    def __init__(self, net: nn.Module, plan: SpeedPlan):
        super().__init__()
        self.net, self.device_type, self.dtype = net, plan.device.type, plan.autocast

    def forward(self, x: Tensor) -> Tensor:
        if self.dtype is None:
            return self.net(x)
        with torch.autocast(self.device_type, dtype=self.dtype):
            y = self.net(x)
        return y.float()

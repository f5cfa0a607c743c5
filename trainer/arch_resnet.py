"""SNGAN-style ResNets as in Mimicry (Lee & Town 2020), the nets of the GraN experiments (seed 001, SPEC §4).

G: linear z → 4×4×W, then one up-block per doubling (BN, ReLU, nearest ×2, 3×3 conv, BN, ReLU, 3×3 conv;
shortcut: ×2 then 1×1 conv), then BN, ReLU, 3×3 conv, tanh. D (no normalization, ReLU): an "optimized" first
block that downsamples, more downsampling blocks until 8×8, two blocks at 8×8, ReLU, global sum pool, linear —
at 32×32 this is Mimicry's SNGAN D exactly. Init: Xavier-uniform (gain √2 in the residual paths, 1 elsewhere).
Convs are PyTorch's own: for dense convs its double backward (GraN differentiates D twice) measured faster than
sqd.trainer.conv's on an H200 (docs/gpu.md); the hand-written derivatives pay off for R3GAN's grouped convs only.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from sqd.trainer.arch_dcgan import doublings


def _conv(cin: int, cout: int, k: int, gain: float = math.sqrt(2)) -> nn.Conv2d:
    conv = nn.Conv2d(cin, cout, k, 1, k // 2)
    nn.init.xavier_uniform_(conv.weight, gain)
    nn.init.zeros_(conv.bias)  # type: ignore[arg-type]
    return conv


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


class GBlock(nn.Module):
    def __init__(self, cin: int, cout: int, norm: str):
        super().__init__()
        self.b1, self.c1 = _norm(norm, cin), _conv(cin, cout, 3)
        self.b2, self.c2 = _norm(norm, cout), _conv(cout, cout, 3)
        self.sc = _conv(cin, cout, 1, 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.interpolate(F.relu(self.b1(x)), scale_factor=2.0, mode="nearest")
        h = self.c2(F.relu(self.b2(self.c1(h))))
        return h + self.sc(F.interpolate(x, scale_factor=2.0, mode="nearest"))


class DBlock(nn.Module):
    """Pre-activation residual block; `first` is Mimicry's DBlockOptimized (no ReLU on the input image)."""

    def __init__(self, cin: int, cout: int, down: bool, first: bool = False):
        super().__init__()
        self.down, self.first = down, first
        self.c1, self.c2 = _conv(cin, cout, 3), _conv(cout, cout, 3)
        self.sc = _conv(cin, cout, 1, 1.0) if (cin != cout or down) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.c2(F.relu(self.c1(x if self.first else F.relu(x))))
        s = x
        if self.first:  # optimized block: pool before the shortcut conv
            s = self.sc(F.avg_pool2d(s, 2)) if self.sc is not None else F.avg_pool2d(s, 2)
            return F.avg_pool2d(h, 2) + s
        if self.sc is not None:
            s = self.sc(s)
        if self.down:
            h, s = F.avg_pool2d(h, 2), F.avg_pool2d(s, 2)
        return h + s


class ResNetGenerator(nn.Module):
    def __init__(self, z_dim: int, resolution: int, channels: int = 3, width: int = 256, norm: str = "batch"):
        super().__init__()
        self.z_dim, self.width = z_dim, width
        self.fc = nn.Linear(z_dim, 16 * width)
        nn.init.xavier_uniform_(self.fc.weight)
        self.blocks = nn.Sequential(*[GBlock(width, width, norm) for _ in range(doublings(resolution))])
        self.out_norm, self.out = _norm(norm, width), _conv(width, channels, 3, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        h = self.blocks(self.fc(z).view(z.shape[0], self.width, 4, 4))
        return torch.tanh(self.out(F.relu(self.out_norm(h))))


class ResNetDiscriminator(nn.Module):
    def __init__(self, resolution: int, channels: int = 3, width: int = 128, norm: str = "none"):
        super().__init__()
        if norm != "none":
            raise ValueError(f"the SNGAN ResNet D has no normalization (model.d_norm={norm!r}); use none")
        downs = doublings(resolution) - 1  # down to 8×8
        blocks = [DBlock(channels, width, down=True, first=True)]
        blocks += [DBlock(width, width, down=True) for _ in range(downs - 1)]
        blocks += [DBlock(width, width, down=False) for _ in range(2)]
        self.blocks = nn.Sequential(*blocks)
        self.fc = nn.Linear(width, 1)
        nn.init.xavier_uniform_(self.fc.weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.blocks(x)).sum(dim=(2, 3))
        return self.fc(h).view(x.shape[0])

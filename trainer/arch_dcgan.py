"""DCGAN (Radford et al. 2016) sized by resolution: the nets of the SQD experiments (seed 003, SPEC §6b).

G: z → 4×4 transposed conv → (stride-2 transposed conv, BatchNorm, ReLU)* → tanh image. Channels halve at each
doubling, so width W at the last hidden layer and W·2^(n−1) at 4×4 (W = 64 at 64×64 is the classic DCGAN).
D mirrors it with stride-2 convs and LeakyReLU(0.2), no norm on the first layer, and a 4×4 conv to one logit.
D's convs are PyTorch's own: its double backward of these dense convs (GP, DRAGAN, LP differentiate D twice) ran
faster than sqd.trainer.conv's on an H200 (DCGAN-64 + GP, b64: 17.8 vs 23.1 ms/step; docs/gpu.md), which pays
off for R3GAN's grouped convs only.
"""

from __future__ import annotations

import math

import torch
from torch import nn


def doublings(resolution: int) -> int:
    n = int(math.log2(resolution // 4))
    if resolution < 8 or 4 * 2**n != resolution:
        raise ValueError(f"resolution must be 4·2^n ≥ 8 (16, 32, 64, 128), got {resolution}")
    return n


def _norm(kind: str, channels: int) -> nn.Module:
    return nn.BatchNorm2d(channels) if kind == "batch" else nn.Identity()


class DCGANGenerator(nn.Module):
    def __init__(self, z_dim: int, resolution: int, channels: int = 3, width: int = 64, norm: str = "batch"):
        super().__init__()
        self.z_dim = z_dim
        n = doublings(resolution)
        ch = width * 2 ** (n - 1)
        layers: list[nn.Module] = [nn.ConvTranspose2d(z_dim, ch, 4, 1, 0, bias=norm != "batch"),
                                   _norm(norm, ch), nn.ReLU(True)]
        for _ in range(n - 1):
            layers += [nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1, bias=norm != "batch"), _norm(norm, ch // 2),
                       nn.ReLU(True)]
            ch //= 2
        layers += [nn.ConvTranspose2d(ch, channels, 4, 2, 1), nn.Tanh()]
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.net(z.view(z.shape[0], self.z_dim, 1, 1))


class DCGANDiscriminator(nn.Module):
    def __init__(self, resolution: int, channels: int = 3, width: int = 64, norm: str = "none"):
        super().__init__()
        n = doublings(resolution)
        layers: list[nn.Module] = [nn.Conv2d(channels, width, 4, 2, 1), nn.LeakyReLU(0.2)]
        ch = width
        for _ in range(n - 1):
            layers += [nn.Conv2d(ch, ch * 2, 4, 2, 1, bias=norm != "batch"), _norm(norm, ch * 2),
                       nn.LeakyReLU(0.2)]
            ch *= 2
        layers.append(nn.Conv2d(ch, 1, 4, 1, 0))
        self.net = nn.Sequential(*layers)
        self.apply(_dcgan_init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x).view(x.shape[0])


def _dcgan_init(m: nn.Module) -> None:
    # DCGAN §4: weights N(0, 0.02), BatchNorm scale N(1, 0.02).
    if isinstance(m, nn.Conv2d | nn.ConvTranspose2d):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.BatchNorm2d):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)

"""The R3GAN network (seed 000, SPEC §5; official code brownvc/R3GAN), with one width for every stage.

No normalization and no mapping network. G: z (64) scales a learned 4×4 constant channel-wise, then per stage
bilinear ×2 and residual blocks; D mirrors G and ends in a depthwise 4×4 conv + linear. Block: 1×1 conv C→eC,
bias + LeakyReLU(0.2), grouped 3×3 conv (group_size channels per group), bias + LeakyReLU, 1×1 conv eC→C, identity
skip, nothing after the sum. Fix-up init: weights N(0, (gain/√fan_in)²), convs without bias, the last 1×1 conv of
each branch zero and the other two scaled by L^(−1/4) (L = residual blocks in the net), so at init every block
is the identity and activations keep their variance however deep the net.

GPU speed (docs/zoo.md): every conv is `sqd.trainer.conv.Conv2d` (cuDNN kernels for the R1 / R2 double
backward); on CUDA (`conv.fast_derivatives`) bias + LeakyReLU is one autograd Function that saves only its
output and whose backward's backward needs nothing from x (the slope mask is piecewise constant) — the built-in
pair saves x + b too and materialises a zero tensor for it in every double backward. Under autocast the
activations stay in the autocast dtype (the fp32 bias is cast to it, not the activations promoted to fp32).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sqd.trainer.arch_dcgan import doublings
from sqd.trainer.conv import Conv2d, conv2d, fast_derivatives

LEAK = 0.2
ACT_GAIN = math.sqrt(2 / (1 + LEAK**2))  # He gain of LeakyReLU(0.2)
LOWPASS = (1.0, 3.0, 3.0, 1.0)  # the [1,3,3,1] filter: bilinear ×2 up, its adjoint down


def msr_init(layer: nn.Conv2d | nn.Linear, gain: float) -> nn.Conv2d | nn.Linear:
    """N(0, (gain/√fan_in)²); gain 0 gives the zero-initialised last layer of a fix-up branch."""
    fan_in = layer.weight[0].numel()
    with torch.no_grad():
        layer.weight.normal_(0.0, gain / math.sqrt(fan_in)) if gain else layer.weight.zero_()
    return layer


def conv(cin: int, cout: int, k: int, gain: float, groups: int = 1) -> nn.Conv2d:
    layer = Conv2d(cin, cout, k, 1, k // 2, groups=groups, bias=False)
    msr_init(layer, gain)
    return layer


class _LeakyReLUSlope(torch.autograd.Function):
    """g ↦ g · slope(y), slope 1 where y > 0 and LEAK elsewhere (y = the activation's output, same sign as its
    input). Linear in g; its derivative w.r.t. y is zero almost everywhere, so nothing flows to y."""

    @staticmethod
    def forward(ctx: Any, g: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(y)
        return torch.ops.aten.leaky_relu_backward(g, y, LEAK, True)

    @staticmethod
    def backward(ctx: Any, gg: torch.Tensor) -> tuple[torch.Tensor, None]:
        (y,) = ctx.saved_tensors
        return _LeakyReLUSlope.apply(gg, y), None


class _BiasedLeakyReLU(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        y = F.leaky_relu_(x + bias.view(1, -1, 1, 1), LEAK)
        ctx.save_for_backward(y)
        return y

    @staticmethod
    def backward(ctx: Any, g: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        (y,) = ctx.saved_tensors
        gx = _LeakyReLUSlope.apply(g, y)
        return gx, gx.sum((0, 2, 3)) if ctx.needs_input_grad[1] else None


class BiasedLeakyReLU(nn.Module):
    def __init__(self, channels: int):
        super().__init__()
        self.bias = nn.Parameter(torch.zeros(channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if fast_derivatives(x):
            return _BiasedLeakyReLU.apply(x, self.bias.to(x.dtype))
        return F.leaky_relu(x + self.bias.to(x.dtype).view(1, -1, 1, 1), LEAK)


class ResidualBlock(nn.Module):
    def __init__(self, channels: int, expansion: int, group_size: int, total_blocks: int):
        super().__init__()
        wide = channels * expansion
        gain = ACT_GAIN * total_blocks ** (-1 / 4)  # L^(−1/(2·3−2)) for a branch of 3 linear layers
        self.expand = conv(channels, wide, 1, gain)
        self.act1 = BiasedLeakyReLU(wide)
        self.grouped = conv(wide, wide, 3, gain, groups=max(wide // group_size, 1))
        self.act2 = BiasedLeakyReLU(wide)
        self.project = conv(wide, channels, 1, 0.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.project(self.act2(self.grouped(self.act1(self.expand(x)))))


class Resample(nn.Module):
    """×2 up (bilinear = zero-stuffing + [1,3,3,1]) or ×2 down (the [1,3,3,1] filter, stride 2), per channel."""

    kernel: torch.Tensor

    def __init__(self, channels: int, up: bool):
        super().__init__()
        self.up, self.channels = up, channels
        f = torch.tensor(LOWPASS)
        self.register_buffer("kernel", (torch.outer(f, f) / f.sum() ** 2).expand(channels, 1, 4, 4).clone(),
                             persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.up:  # in the activations' dtype: autocast would run it in fp32 (10 ms a call at b256 on an H200)
            with torch.autocast(x.device.type, enabled=False):
                return F.interpolate(x, scale_factor=2.0, mode="bilinear", align_corners=False)
        return conv2d(x, self.kernel, stride=2, padding=1, groups=self.channels)


def _blocks(width: int, n: int, expansion: int, group_size: int, total: int) -> list[nn.Module]:
    return [ResidualBlock(width, expansion, group_size, total) for _ in range(n)]


class R3GANGenerator(nn.Module):
    def __init__(self, z_dim: int, resolution: int, channels: int = 3, width: int = 256, blocks: int = 2,
                 expansion: int = 2, group_size: int = 16):
        super().__init__()
        self.z_dim, self.width = z_dim, width
        stages = doublings(resolution) + 1
        total = stages * blocks
        self.basis = nn.Parameter(torch.randn(width, 4, 4))
        self.to_scale = msr_init(nn.Linear(z_dim, width, bias=False), 1.0)
        layers = _blocks(width, blocks, expansion, group_size, total)
        for _ in range(stages - 1):
            layers += [Resample(width, up=True), *_blocks(width, blocks, expansion, group_size, total)]
        self.body = nn.Sequential(*layers)
        self.to_rgb = conv(width, channels, 1, 1.0)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        scale = self.to_scale(z)  # (under autocast the basis takes its dtype: the residual stream stays bf16)
        h = self.basis.to(scale.dtype).unsqueeze(0) * scale.view(z.shape[0], self.width, 1, 1)
        return self.to_rgb(self.body(h))


class R3GANDiscriminator(nn.Module):
    def __init__(self, resolution: int, channels: int = 3, width: int = 256, blocks: int = 2, expansion: int = 2,
                 group_size: int = 16):
        super().__init__()
        stages = doublings(resolution) + 1
        total = stages * blocks
        self.from_rgb = conv(channels, width, 1, ACT_GAIN)
        layers: list[nn.Module] = []
        for _ in range(stages - 1):
            layers += [*_blocks(width, blocks, expansion, group_size, total), Resample(width, up=False)]
        layers += _blocks(width, blocks, expansion, group_size, total)
        self.body = nn.Sequential(*layers)
        self.basis = Conv2d(width, width, 4, 1, 0, groups=width, bias=False)  # depthwise 4×4 → 1×1
        msr_init(self.basis, 1.0)
        self.fc = msr_init(nn.Linear(width, 1, bias=False), 1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.basis(self.body(self.from_rgb(x))).view(x.shape[0], -1)
        return self.fc(h).view(x.shape[0])

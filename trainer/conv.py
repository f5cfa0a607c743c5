"""A 2-D convolution whose derivatives of every order run on cuDNN's own forward, data-gradient and weight-gradient
kernels — the double backward that R1 / R2 / GP / DRAGAN / GraN need (an input gradient with create_graph=True,
then the penalty's gradient w.r.t. the weights).

Why: PyTorch's built-in double backward of conv2d (`_convolution_double_backward`) computes the weight term as a
*forward* convolution of the batch-transposed input gradient with the batch-transposed output gradient — a
kernel the size of the feature map (64×64 at CelebA-64), batch and channels swapped — and, for a grouped conv,
one such convolution per group after two contiguous copies each (32 groups in R3GAN's 3×3 convs, 256 in its
depthwise head). `bench/gpu/section_zoo.py` times both. Here each derivative is an autograd Function whose
forward is one `convolution_backward` call and whose backward is written with the other two, so every order
stays on the fast kernels:

    y  = conv(x, W)                 d/dx: input_grad(gy, W)       d/dW: weight_grad(x, gy)
    gx = input_grad(gy, W)          d/dgy: conv(ggx, W)           d/dW: weight_grad(ggx, gy)
    gW = weight_grad(x, gy)         d/dx: input_grad(gy, ggW)     d/dgy: conv(x, ggW)

Used by R3GAN's nets, whose grouped convs gain most (R3GAN-64 b64 on an H200: 153 vs 1,024 ms/step); DCGAN and
the ResNets keep PyTorch's own, which measured faster for dense convs (DCGAN-64 + GP: 17.8 vs 23.1 ms; docs/gpu.md).
Contract: same values, state_dict and init as `nn.Conv2d` (dilation 1, zero padding); the bias is added by
autograd outside the Functions. Where: `FAST_DERIVATIVES` "cuda" (default) uses them on CUDA tensors only — on
the CPU PyTorch's own formulas are as fast or faster (its data / weight gradients of a stand-in input take a slow
im2col path; bench/zoo_speed.py --builtin-derivatives: WGAN-GP digits 1.4× slower with these), so CPU runs are
exactly what they were; "never" is PyTorch's everywhere (the GPU bench times both; the first thing to flip if
these are ever suspected); "always" runs them on the CPU too (the tests). R3GAN's activation follows the same
switch.
Autocast: a custom Function does not see autocast, so `conv2d` casts input and weight to the autocast dtype
itself (the casts are autograd ops: the fp32 weights get fp32 gradients).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import torch
from torch import Tensor, nn
from torch.nn import functional as F

FAST_DERIVATIVES: Literal["cuda", "always", "never"] = "cuda"


def fast_derivatives(x: Tensor) -> bool:
    """Whether ops on `x` use the hand-written derivatives (never inside a torch.compile graph, which has no
    double backward and fuses the plain ops)."""
    if FAST_DERIVATIVES == "never" or torch.compiler.is_compiling():
        return False
    return FAST_DERIVATIVES == "always" or x.is_cuda


@dataclass(frozen=True)
class Geometry:
    stride: tuple[int, int]
    padding: tuple[int, int]
    groups: int

    def forward(self, x: Tensor, w: Tensor) -> Tensor:
        return F.conv2d(x, w, None, self.stride, self.padding, 1, self.groups)

    def backward(self, gy: Tensor, x: Tensor, w: Tensor, mask: tuple[bool, bool]) -> tuple[Tensor, Tensor]:
        return torch.ops.aten.convolution_backward(gy, x, w, None, self.stride, self.padding, (1, 1), False,
                                                   (0, 0), self.groups, (*mask, False))[:2]


def _shaped(like: Tensor, shape: torch.Size) -> Tensor:
    """A tensor of `shape` that costs no memory: convolution_backward reads only the shape of what it does not
    differentiate (the same trick as torch.nn.grad.conv2d_input)."""
    return like.new_empty(1).expand(shape)


class _Conv(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, w: Tensor, geo: Geometry) -> Tensor:
        ctx.save_for_backward(x, w)
        ctx.geo = geo
        return geo.forward(x, w)

    @staticmethod
    def backward(ctx: Any, gy: Tensor) -> tuple[Tensor | None, Tensor | None, None]:
        x, w = ctx.saved_tensors
        gx = _InputGrad.apply(gy, w, x.shape, ctx.geo) if ctx.needs_input_grad[0] else None
        gw = _WeightGrad.apply(x, gy, w.shape, ctx.geo) if ctx.needs_input_grad[1] else None
        return gx, gw, None


class _InputGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, gy: Tensor, w: Tensor, x_shape: torch.Size, geo: Geometry) -> Tensor:
        ctx.save_for_backward(gy, w)
        ctx.geo = geo
        return geo.backward(gy, _shaped(gy, x_shape), w, (True, False))[0]

    @staticmethod
    def backward(ctx: Any, ggx: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        gy, w = ctx.saved_tensors
        d_gy = _Conv.apply(ggx, w, ctx.geo) if ctx.needs_input_grad[0] else None
        d_w = _WeightGrad.apply(ggx, gy, w.shape, ctx.geo) if ctx.needs_input_grad[1] else None
        return d_gy, d_w, None, None


class _WeightGrad(torch.autograd.Function):
    @staticmethod
    def forward(ctx: Any, x: Tensor, gy: Tensor, w_shape: torch.Size, geo: Geometry) -> Tensor:
        ctx.save_for_backward(x, gy)
        ctx.geo = geo
        return geo.backward(gy, x, _shaped(gy, w_shape), (False, True))[1]

    @staticmethod
    def backward(ctx: Any, ggw: Tensor) -> tuple[Tensor | None, Tensor | None, None, None]:
        x, gy = ctx.saved_tensors
        d_x = _InputGrad.apply(gy, ggw, x.shape, ctx.geo) if ctx.needs_input_grad[0] else None
        d_gy = _Conv.apply(x, ggw, ctx.geo) if ctx.needs_input_grad[1] else None
        return d_x, d_gy, None, None


def _pair(v: int | tuple[int, ...]) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[-1]))


def conv2d(x: Tensor, weight: Tensor, bias: Tensor | None = None, stride: int | tuple[int, ...] = 1,
           padding: int | tuple[int, ...] = 0, groups: int = 1) -> Tensor:
    """F.conv2d (dilation 1) with fast derivatives of every order where `fast_derivatives(x)` (module docstring)."""
    if not fast_derivatives(x):
        return F.conv2d(x, weight, bias, stride, padding, 1, groups)
    if torch.is_autocast_enabled(x.device.type):
        x = x.to(torch.get_autocast_dtype(x.device.type))
    y = _Conv.apply(x, weight.to(x.dtype), Geometry(_pair(stride), _pair(padding), groups))
    return y if bias is None else y + bias.to(y.dtype).view(1, -1, 1, 1)


class Conv2d(nn.Conv2d):
    """nn.Conv2d (same parameters, init and state_dict) computed by `conv2d`; zero padding, dilation 1."""

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        if self.dilation != (1, 1) or self.padding_mode != "zeros" or isinstance(self.padding, str):
            raise ValueError("sqd.trainer.conv.Conv2d supports dilation 1 and numeric zero padding only")

    def forward(self, x: Tensor) -> Tensor:
        return conv2d(x, self.weight, self.bias, self.stride, self.padding, self.groups)  # type: ignore[arg-type]

"""How the evaluation networks (FID Inception, ArcFace) run on the worker's device.

* Weights and activations are float32 everywhere: the metrics are compared with references computed the same way,
  and half precision would move FID and the embeddings by more than the runs we compare differ.
* On CUDA the networks are in `channels_last` memory format (cuDNN's fast NHWC kernels) and run under
  `conv_math(device, tf32)`: cuDNN autotuning on (the batch shapes repeat every evaluation, so the tuning is paid
  once per worker) and TF32 tensor cores for convolutions when `worker.tf32` is true — torch's own default for
  cuDNN, what pytorch-fid gets on any recent GPU; false gives strict IEEE float32, as StyleGAN3's metric code
  runs. Matrix products (`torch.backends.cuda.matmul`) are left alone. Both flags are process-wide in torch, so they
  are set for the duration of the call and restored after it.
* On the CPU nothing changes (torch's defaults).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TypeVar

import torch
from torch import nn

M = TypeVar("M", bound=nn.Module)


def to_device(net: M, device: torch.device) -> M:
    """`net` moved to `device` in eval mode without gradients; channels_last on CUDA."""
    net.to(device).eval().requires_grad_(False)
    if device.type == "cuda":
        net.to(memory_format=torch.channels_last)
    return net


def as_input(x: torch.Tensor) -> torch.Tensor:
    """A batch laid out as the network on its device expects it (NHWC on CUDA)."""
    return x.contiguous(memory_format=torch.channels_last) if x.is_cuda else x


@contextmanager
def conv_math(device: torch.device, tf32: bool) -> Iterator[None]:
    """cuDNN autotuning and the TF32 choice for the evaluation networks' convolutions (CUDA only)."""
    if device.type != "cuda":
        yield
        return
    cudnn = torch.backends.cudnn
    saved = cudnn.benchmark, cudnn.allow_tf32
    cudnn.benchmark, cudnn.allow_tf32 = True, tf32
    try:
        yield
    finally:
        cudnn.benchmark, cudnn.allow_tf32 = saved

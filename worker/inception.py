"""The FID Inception-v3: torchvision's Inception3 with the four pooling differences of the TensorFlow graph that
FID was defined with, loading the standard weights file pt_inception-2015-12-05-6726825d.pth (pytorch-fid's
conversion; it cannot be downloaded here, see `model_files`). Features are the 2048-d pool3 activations.

The TF graph differs from torchvision's blocks only in the pooling branch: Mixed_5b–d, 6b–e and 7b average-pool
without counting the zero padding, and Mixed_7c max-pools. Each block below reuses torchvision's branches and
only recomputes that branch (one 1×1 conv, a negligible extra cost) rather than restating the block.
Input: images in [−1, 1] of any size, resized to 299×299 bilinearly (no antialias), as pytorch-fid does. On CUDA
the network runs float32 in channels_last under `inference.conv_math` (cuDNN autotuning; TF32 per `worker.tf32`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.models import inception as tv

from sqd.errors import ModelFileMissing
from sqd.worker.inference import as_input, conv_math, to_device
from sqd.worker.model_files import INCEPTION_HOWTO

FEATURES = 2048
INPUT_SIZE = 299
FID_CLASSES = 1008  # the TF graph's classifier has 1008 outputs; its weights are in the file, unused for FID


def _avg_pool_exclude_pad(x: torch.Tensor) -> torch.Tensor:
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


def _max_pool(x: torch.Tensor) -> torch.Tensor:
    return F.max_pool2d(x, kernel_size=3, stride=1, padding=1)


def _with_pool(block: type[nn.Module], pool: object) -> type[nn.Module]:
    """A subclass of a torchvision block whose pooling branch (the last output) uses `pool`."""

    def _forward(self: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
        outputs: list[torch.Tensor] = block._forward(self, x)  # type: ignore[attr-defined]
        outputs[-1] = self.branch_pool(pool(x))  # type: ignore[operator]
        return outputs

    return type(f"FID{block.__name__}", (block,), {"_forward": _forward})


FIDInceptionA = _with_pool(tv.InceptionA, _avg_pool_exclude_pad)
FIDInceptionC = _with_pool(tv.InceptionC, _avg_pool_exclude_pad)
FIDInceptionE1 = _with_pool(tv.InceptionE, _avg_pool_exclude_pad)
FIDInceptionE2 = _with_pool(tv.InceptionE, _max_pool)


class FIDInception(nn.Module):
    """pool3 features of the FID network: `forward(x)` with x (N, 3, H, W) in [−1, 1] → (N, 2048)."""

    def __init__(self) -> None:
        super().__init__()
        net = tv.Inception3(num_classes=FID_CLASSES, aux_logits=False, init_weights=False)
        net.Mixed_5b = FIDInceptionA(192, pool_features=32)
        net.Mixed_5c = FIDInceptionA(256, pool_features=64)
        net.Mixed_5d = FIDInceptionA(288, pool_features=64)
        for name in ("Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"):
            setattr(net, name, FIDInceptionC(768, channels_7x7=getattr(net, name).branch7x7_1.conv.out_channels))
        net.Mixed_7b = FIDInceptionE1(1280)
        net.Mixed_7c = FIDInceptionE2(2048)
        self.net = net
        self.trunk = nn.Sequential(*(getattr(net, n) for n in (
            "Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "maxpool1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
            "maxpool2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
            "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "avgpool")))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            x = F.interpolate(x, size=(INPUT_SIZE, INPUT_SIZE), mode="bilinear", align_corners=False)
        return self.trunk(as_input(x)).flatten(1)

    def load_weights_file(self, path: Path) -> None:
        """Load the FID weights (a state dict with torchvision's Inception3 names, fc of 1008 classes)."""
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated / non-torch files raise many types
            raise ModelFileMissing(f"FID Inception weights {path} cannot be read ({type(exc).__name__}); "
                                   f"{INCEPTION_HOWTO}") from exc
        if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise ModelFileMissing(f"FID Inception weights {path} is not a state dict of tensors; {INCEPTION_HOWTO}")
        own = self.net.state_dict()
        # num_batches_tracked is training bookkeeping, absent from the converted TF weights
        missing = [k for k in own if k not in state and not k.endswith("num_batches_tracked")]
        unexpected = [k for k in state if k not in own]
        wrong = [f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
                 for k in own if k in state and state[k].shape != own[k].shape]
        if missing or unexpected or wrong:
            parts = [f"{label}: {', '.join(keys[:5])}{' …' if len(keys) > 5 else ''}"
                     for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
                     if keys]
            raise ModelFileMissing(f"FID Inception weights {path} do not fit the FID Inception-v3 "
                                   f"({'; '.join(parts)}); {INCEPTION_HOWTO}")
        self.net.load_state_dict(state, strict=False)


def save_weights_file(model: FIDInception, path: Path) -> Path:
    """Write `model`'s weights as the real file lays them out (torchvision's Inception3 names, 1008 classes, no
    num_batches_tracked): how tests and benches make a random-weights stand-in under the real name."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: v for k, v in model.net.state_dict().items() if not k.endswith("num_batches_tracked")}, path)
    return path


def load_fid_inception(path: Path, device: torch.device | str = "cpu") -> FIDInception:
    model = FIDInception()
    model.load_weights_file(path)
    return to_device(model, torch.device(device))


def quantize(images: torch.Tensor) -> torch.Tensor:
    """[−1, 1] floats → the nearest of the 256 uint8 levels, still in [−1, 1]: generated images are measured as
    they would be saved, like the real ones they are compared with."""
    return images.float().clamp(-1, 1).add(1).mul(127.5).round().div(127.5).sub(1)


def fid_features(model: FIDInception, images: torch.Tensor, batch_size: int, tf32: bool = True) -> torch.Tensor:
    """pool3 features (N, 2048) of images (N, C, H, W) in [−1, 1] (grey is repeated to RGB), on the model's
    device, in batches; `tf32` as `worker.tf32` (CUDA only)."""
    device = next(model.parameters()).device
    out = []
    with torch.inference_mode(), conv_math(device, tf32):
        for batch in images.split(batch_size):
            x = quantize(batch.to(device))
            out.append(model(x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x))
    return torch.cat(out) if out else torch.zeros(0, FEATURES, device=device)

"""Sampling a rebuilt generator: batched, deterministic, on the worker's device, checked for NaN.

z is drawn on the CPU from a seeded `torch.Generator` and moved to the device in one copy (10,000 × 512 floats:
20 MB, milliseconds), so the same seed gives the same images on a GPU worker and a CPU worker (up to the device's
arithmetic); the images are generated and kept on the device for the profile, in batches of the device's size
(`worker.gpu_batch_size` on CUDA). Seeds derive from the run id, so every
checkpoint of a run is judged on the same z: the metrics and the sample grids are comparable over time.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field

import torch
from torch import nn


class NonFiniteImages(ValueError):
    """The generator produced NaN or infinite pixels (a diverged run): the evaluation fails, naming how many."""


def run_seed(run_id: str, purpose: str) -> int:
    """A stable 63-bit seed per (run, purpose), e.g. purpose "grid" or "eval"."""
    return int.from_bytes(hashlib.sha256(f"{run_id}|{purpose}".encode()).digest()[:8], "big") >> 1


def pick_device(name: str = "auto") -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


@dataclass
class GeneratorSampler:
    """`sampler(n)` → n images (n, C, H, W) in [−1, 1] on `device`, the same ones on every call with that n; the last
    result is kept, so a profile asking for 2,000 and then 1,000 gets the first 1,000 of them without generating.
    Seconds spent generating accumulate in `timings["generate"]`."""

    G: nn.Module
    z_dim: int
    seed: int
    device: torch.device
    batch_size: int
    timings: dict[str, float] = field(default_factory=dict)
    generated: int = 0  # images generated so far (for the images/s figures)
    largest: int = 0  # the most images one call asked for (the evaluation's sample count)
    _last: torch.Tensor | None = None

    def __call__(self, n: int) -> torch.Tensor:
        if n < 1:
            raise ValueError(f"sample: n must be >= 1, got {n}")
        self.largest = max(self.largest, n)
        if self._last is not None and len(self._last) >= n:
            return self._last[:n]
        start = time.perf_counter()
        # one host→device copy of every z, then the batches are views on the device
        z_all = torch.randn(n, self.z_dim, generator=torch.Generator().manual_seed(self.seed)).to(self.device)
        chunks = []
        with torch.inference_mode():
            for z in z_all.split(self.batch_size):
                chunks.append(self.G(z).float())
            images = torch.cat(chunks)
            bad = int((~torch.isfinite(images)).flatten(1).any(dim=1).sum())
            # R3GAN's output layer is linear (SPEC §5): clamp to the image range every profile expects.
            images.clamp_(-1.0, 1.0)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        self.timings["generate"] = self.timings.get("generate", 0.0) + time.perf_counter() - start
        self.generated += n
        if bad:
            raise NonFiniteImages(f"generator output: {bad} of {n} images contain NaN or infinite pixels "
                                  "(the run has diverged)")
        self._last = images
        return images

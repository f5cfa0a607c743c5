"""Datasets: stacked digits (offline, 1000 modes), any folder of images (e.g. CelebA's img_align_celeba),
CIFAR-10 from its python pickle files, and synthetic noise images (speed benches). Each gives batches as float
tensors in [−1, 1], N×C×H×W, drawn with replacement by a `torch.Generator` (so a resumed run draws the same
batches as an uninterrupted one). Where the batches are made — on the device by index, or by DataLoader workers —
is `batches.py`'s business: stacked digits and synthetic images move to the device (`.to(device)`) and draw
there with a generator on that device; uint8 image sets are gathered by index (`gather`) and converted to float
(`to_float`) after the copy.

Nothing can be downloaded here: a missing dataset raises ModelFileMissing naming the path looked at and how to
provide it. Image folders are decoded once into a uint8 cache file (memory-mapped) so training never decodes.
"""

from __future__ import annotations

import hashlib
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from torch.nn import functional as F

from sqd.errors import ModelFileMissing
from sqd.images import CELEBA_CROP, centre_square
from sqd.train_config import DatasetConfig

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
DIGITS_EPOCH = 10_000  # stacked digits have no natural epoch: count one per 10,000 images (DESIGN: epochs)


class ImageSource(Protocol):
    channels: int
    resolution: int

    def __len__(self) -> int: ...

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor: ...


class DeviceSource(ImageSource, Protocol):
    """A source small enough to live on the training device: `sample` then draws with a generator there."""

    def to(self, device: torch.device) -> DeviceSource: ...


# ---- stacked digits (SPEC §7) ---------------------------------------------------------------------------------
def digit_images(resolution: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 8×8 digits, bilinearly upsampled: (images N×1×R×R in [0, 1], labels N)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.from_numpy(digits.images).float().div(16.0).unsqueeze(1)
    if resolution != 8:
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False).clamp(0, 1)
    return x, torch.from_numpy(digits.target).long()


def mode_of(digits: torch.Tensor) -> torch.Tensor:
    """Per-channel digits (N×3, R, G, B) → mode id 0…999 (100·R + 10·G + B)."""
    return digits[:, 0] * 100 + digits[:, 1] * 10 + digits[:, 2]


def digits_of(mode: torch.Tensor) -> torch.Tensor:
    """Mode id → per-channel digits (N×3)."""
    return torch.stack([mode // 100, mode // 10 % 10, mode % 10], dim=1)


class StackedDigits:
    """Three random digit images as the R, G, B channels: 10³ = 1000 modes, like StackedMNIST (seed 000).

    With `size` None every batch draws fresh triples (uniform over the modes); with a size, a fixed set of that
    many triples is drawn once (seed 0) and batches sample from it, like a finite training set."""

    channels = 3

    def __init__(self, resolution: int = 16, size: int | None = None):
        self.resolution = resolution
        images, self.labels = digit_images(resolution)
        self.images = images.mul(2).sub(1)  # [−1, 1]
        self.triples: torch.Tensor | None = None
        if size is not None:
            fixed = torch.Generator().manual_seed(0)
            self.triples = torch.randint(len(self.labels), (size, 3), generator=fixed)

    def __len__(self) -> int:
        return len(self.triples) if self.triples is not None else DIGITS_EPOCH

    def to(self, device: torch.device) -> StackedDigits:
        """The digit images, labels and fixed triples on `device` (a few MB): batches are then drawn there by
        index with a generator on that device — no host work or copy per batch."""
        self.images, self.labels = self.images.to(device), self.labels.to(device)
        if self.triples is not None:
            self.triples = self.triples.to(device)
        return self

    def sample_with_labels(self, n: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """A batch and its mode ids, on the images' device (the generator must be on it too)."""
        device = self.images.device
        if self.triples is None:
            idx = torch.randint(len(self.labels), (n, 3), generator=generator, device=device)
        else:
            idx = self.triples[torch.randint(len(self.triples), (n,), generator=generator, device=device)]
        x = self.images[idx].squeeze(2)  # n×3×1×R×R → n×3×R×R
        return x, mode_of(self.labels[idx])

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.sample_with_labels(n, generator)[0]


class SyntheticImages:
    """Uniform noise images in [−1, 1] drawn fresh for every batch: the shape of a real dataset with nothing to
    read or learn — for speed benches of the full-size presets where their data is absent
    (`--set dataset.name=synthetic`). An epoch counts 10,000 images, like stacked digits."""

    def __init__(self, resolution: int, channels: int = 3):
        self.resolution, self.channels = resolution, channels
        self.device = torch.device("cpu")

    def __len__(self) -> int:
        return DIGITS_EPOCH

    def to(self, device: torch.device) -> SyntheticImages:
        self.device = device
        return self

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        shape = (n, self.channels, self.resolution, self.resolution)
        return torch.rand(shape, generator=generator, device=self.device).mul_(2).sub_(1)


# ---- tensors in memory (CIFAR-10, cached image folders) -------------------------------------------------------
@dataclass
class UInt8Images:
    """uint8 N×3×H×W RGB images (an array or a memory map), resized on the fly if the resolution differs and
    averaged to grey when `channels` is 1."""

    data: np.ndarray
    resolution: int
    channels: int = 3

    def __len__(self) -> int:
        return int(self.data.shape[0])

    def indices(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return torch.randint(len(self), (n,), generator=generator)

    def gather(self, idx: torch.Tensor) -> torch.Tensor:
        """The uint8 images at `idx` (N×3×H×W, a copy out of the memory map)."""
        return torch.from_numpy(np.ascontiguousarray(self.data[idx.numpy()]))

    def to_float(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 images (on any device) → float in [−1, 1] at the configured resolution and channels."""
        x = x.float().div(127.5).sub(1)
        if self.channels == 1:
            x = x.mean(dim=1, keepdim=True)
        if x.shape[-1] != self.resolution:
            x = F.interpolate(x, size=(self.resolution, self.resolution), mode="bilinear", antialias=True,
                              align_corners=False)
        return x

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        return self.to_float(self.gather(self.indices(n, generator)))


def load_cifar10(root: Path, resolution: int = 32, channels: int = 3) -> UInt8Images:
    files = [root / f"data_batch_{i}" for i in range(1, 6)]
    present = [f for f in files if f.is_file()]
    if not present:
        raise ModelFileMissing(
            f"CIFAR-10 not found: no data_batch_1…5 in {root}. Download cifar-10-python.tar.gz from "
            f"https://www.cs.toronto.edu/~kriz/cifar.html, extract it and point dataset.root at the "
            f"cifar-10-batches-py folder (or put it at {root})")
    arrays = []
    for f in present:
        try:
            with f.open("rb") as fh:
                batch = pickle.load(fh, encoding="bytes")
            arrays.append(np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        except (pickle.UnpicklingError, KeyError, ValueError, EOFError) as exc:
            raise ModelFileMissing(f"CIFAR-10 file {f} is not a CIFAR-10 python batch ({type(exc).__name__}: "
                                   f"{exc}); re-extract cifar-10-python.tar.gz") from exc
    return UInt8Images(np.concatenate(arrays), resolution, channels)


def image_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def load_image_folder(root: Path, resolution: int, crop: int | None, cache_dir: Path, what: str,
                      channels: int = 3) -> UInt8Images:
    """Center-crop (to `crop`, default the short side) and resize every image once; cache as uint8."""
    from PIL import Image

    if not root.is_dir():
        raise ModelFileMissing(f"{what} not found: {root} is not a directory. Put the images there (any "
                               f"nesting, {', '.join(sorted(IMAGE_SUFFIXES))}) or set dataset.root")
    files = image_files(root)
    if not files:
        raise ModelFileMissing(f"{what}: no images ({', '.join(sorted(IMAGE_SUFFIXES))}) under {root}")
    key = hashlib.sha256(f"{root.resolve()}|{len(files)}|{files[-1].name}|{resolution}|{crop}".encode()).hexdigest()
    cache = cache_dir / f"images-{key[:16]}-{resolution}.npy"
    if cache.is_file():
        return UInt8Images(np.load(cache, mmap_mode="r"), resolution, channels)
    cache_dir.mkdir(parents=True, exist_ok=True)
    partial = cache.with_suffix(".partial.npy")
    out = np.lib.format.open_memmap(partial, mode="w+", dtype=np.uint8, shape=(len(files), 3, resolution, resolution))
    for i, f in enumerate(files):
        try:
            with Image.open(f) as img:
                out[i] = centre_square(img.convert("RGB"), crop, resolution).transpose(2, 0, 1)
        except OSError as exc:
            raise ModelFileMissing(f"{what}: cannot read image {f}: {exc}") from exc
    out.flush()
    del out
    partial.replace(cache)  # only a complete cache is ever found
    return UInt8Images(np.load(cache, mmap_mode="r"), resolution, channels)


def default_root(cfg: DatasetConfig, home: Path) -> Path:
    if cfg.root:
        return Path(cfg.root).expanduser()
    if cfg.name == "celeba":
        return home / "datasets" / "celeba" / "img_align_celeba"
    if cfg.name == "cifar10":
        return home / "datasets" / "cifar-10-batches-py"
    raise ModelFileMissing(f"dataset.root is required for dataset {cfg.name!r}: set it to a folder of images "
                           f"(--set dataset.root=/path/to/images)")


def build_dataset(cfg: DatasetConfig, home: Path) -> ImageSource:
    """The dataset a config names; `home` is SQD_HOME (default roots and the image cache live under it)."""
    if cfg.name == "stacked_digits":
        return StackedDigits(cfg.resolution, cfg.size)
    if cfg.name == "synthetic":
        return SyntheticImages(cfg.resolution, cfg.channels)
    root = default_root(cfg, home)
    if cfg.name == "cifar10":
        return load_cifar10(root, cfg.resolution, cfg.channels)
    crop = cfg.crop if cfg.crop is not None else (CELEBA_CROP if cfg.name == "celeba" else None)
    what = "CelebA (img_align_celeba)" if cfg.name == "celeba" else "image folder"
    return load_image_folder(root, cfg.resolution, crop, home / "cache" / "datasets", what, cfg.channels)

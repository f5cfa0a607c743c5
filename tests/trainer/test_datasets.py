"""Datasets: stacked digits (1000 modes), an image folder the test writes, CIFAR-10 from pickle files in the
real format, and the errors that name a missing dataset's path and how to provide it."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sqd.errors import ModelFileMissing
from sqd.presets import resolve_config
from sqd.trainer.datasets import StackedDigits, build_dataset, digit_images, digits_of, load_cifar10, mode_of

torch.set_num_threads(1)


def test_digit_images_are_upsampled_and_labelled() -> None:
    x, y = digit_images(32)
    assert x.shape == (1797, 1, 32, 32) and y.shape == (1797,)
    assert 0.0 <= x.min() and x.max() <= 1.0 and set(y.tolist()) == set(range(10))


def test_stacked_digits_channels_are_the_labelled_digits() -> None:
    data = StackedDigits(16)
    x, mode = data.sample_with_labels(256, torch.Generator().manual_seed(0))
    assert x.shape == (256, 3, 16, 16) and x.min() >= -1 and x.max() <= 1
    digits = digits_of(mode)
    assert torch.equal(mode_of(digits), mode)
    # each channel is one of the images of the digit its label names
    images = data.images.squeeze(1)
    for i in range(8):
        for c in range(3):
            candidates = images[data.labels == digits[i, c]]
            assert (candidates - x[i, c]).abs().flatten(1).amax(1).min() == 0


def test_stacked_digits_cover_all_1000_modes_uniformly() -> None:
    _, mode = StackedDigits(16).sample_with_labels(20_000, torch.Generator().manual_seed(1))
    counts = torch.bincount(mode, minlength=1000)
    assert len(counts) == 1000 and counts.min() > 0 and counts.max() < 60  # mean 20


def test_same_generator_state_gives_the_same_batches() -> None:
    data = StackedDigits(16)
    a = data.sample(32, torch.Generator().manual_seed(5))
    b = data.sample(32, torch.Generator().manual_seed(5))
    assert torch.equal(a, b)


def test_fixed_size_draws_from_a_fixed_pool() -> None:
    data = StackedDigits(16, size=50)
    _, modes = data.sample_with_labels(2000, torch.Generator().manual_seed(0))
    assert len(data) == 50 and len(set(modes.tolist())) <= 50


def _bands(path: Path, width: int, height: int) -> None:
    """Three horizontal bands, green / red / blue: a center square crop of a tall image is all red."""
    img = np.zeros((height, width, 3), np.uint8)
    img[: height // 3, :, 1] = 255
    img[height // 3: 2 * height // 3, :, 0] = 255
    img[2 * height // 3:, :, 2] = 255
    Image.fromarray(img).save(path)


def test_image_folder_center_crops_resizes_and_caches(tmp_path: Path) -> None:
    root = tmp_path / "faces" / "nested"
    root.mkdir(parents=True)
    for i in range(4):
        _bands(root / f"img{i}.png", 30, 90)
    (root / "notes.txt").write_text("not an image")
    cfg = resolve_config("sqd-nsgan-celeba", {"dataset.name": "image_folder", "dataset.root": str(tmp_path / "faces"),
                                              "dataset.resolution": 16})
    home = tmp_path / "home"
    data = build_dataset(cfg.dataset, home)
    x = data.sample(6, torch.Generator().manual_seed(0))
    assert len(data) == 4 and x.shape == (6, 3, 16, 16)
    assert torch.allclose(x[:, 0], torch.ones(6, 16, 16), atol=0.02)  # red = +1
    assert torch.allclose(x[:, 1:], -torch.ones(6, 2, 16, 16), atol=0.02)
    caches = list((home / "cache" / "datasets").glob("*.npy"))
    assert len(caches) == 1
    again = build_dataset(cfg.dataset, home)
    assert torch.equal(again.sample(6, torch.Generator().manual_seed(0)), x)


def test_celeba_default_root_missing_names_the_path(tmp_path: Path) -> None:
    cfg = resolve_config("sqd-nsgan-celeba")
    with pytest.raises(ModelFileMissing) as info:
        build_dataset(cfg.dataset, tmp_path)
    assert str(tmp_path / "datasets" / "celeba" / "img_align_celeba") in str(info.value)
    assert "dataset.root" in str(info.value)


def test_image_folder_needs_a_root(tmp_path: Path) -> None:
    cfg = resolve_config("sqd-nsgan-celeba", {"dataset.name": "image_folder"})
    with pytest.raises(ModelFileMissing, match="dataset.root is required"):
        build_dataset(cfg.dataset, tmp_path)
    (tmp_path / "empty").mkdir()
    cfg = resolve_config("sqd-nsgan-celeba", {"dataset.name": "image_folder", "dataset.root": str(tmp_path / "empty")})
    with pytest.raises(ModelFileMissing, match="no images"):
        build_dataset(cfg.dataset, tmp_path)


def _cifar(root: Path, n: int = 10) -> np.ndarray:
    """A data_batch_1 in the real format: 3072 bytes per row (1024 R, 1024 G, 1024 B), row-major 32×32."""
    root.mkdir(parents=True)
    rows = np.random.default_rng(0).integers(0, 256, (n, 3072), dtype=np.uint8)
    with (root / "data_batch_1").open("wb") as f:
        pickle.dump({b"batch_label": b"training batch 1 of 5", b"labels": list(range(n)), b"data": rows,
                     b"filenames": [b"x.png"] * n}, f)
    return rows


def test_cifar10_pickles(tmp_path: Path) -> None:
    rows = _cifar(tmp_path / "cifar-10-batches-py")
    data = load_cifar10(tmp_path / "cifar-10-batches-py", 32)
    assert len(data) == 10
    x = data.sample(64, torch.Generator().manual_seed(0))
    pixel = rows[:, 0].astype(np.float32) / 127.5 - 1  # R at (0, 0) of every image
    assert set(np.round(x[:, 0, 0, 0].numpy(), 5)) <= set(np.round(pixel, 5))
    assert load_cifar10(tmp_path / "cifar-10-batches-py", 16).sample(2, torch.Generator()).shape == (2, 3, 16, 16)


def test_cifar10_missing_and_corrupt(tmp_path: Path) -> None:
    cfg = resolve_config("r3gan-cifar10")
    with pytest.raises(ModelFileMissing) as info:
        build_dataset(cfg.dataset, tmp_path)
    assert str(tmp_path / "datasets" / "cifar-10-batches-py") in str(info.value)
    assert "cifar-10-python.tar.gz" in str(info.value)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "data_batch_1").write_bytes(b"not a pickle")
    with pytest.raises(ModelFileMissing, match="is not a CIFAR-10 python batch"):
        load_cifar10(bad)

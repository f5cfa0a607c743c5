"""The digit classifier of the `digits` profile: a tiny CNN trained once on scikit-learn's digits and cached.

It sees one grey 16×16 digit in [−1, 1] (one channel of a stacked-digits image) and gives the 10 class
probabilities and its 64-d penultimate features (the FID feature space). Training is deterministic (seeded, one
thread) and takes a few seconds on a CPU; the weights are cached under `<models_dir>/digits/` in a file named by
the hash of the training recipe below, so changing the recipe retrains and two recipes never share a cache.
The held-out accuracy (a fixed 20 % of the 1,797 digits never trained on) is stored with the weights.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from sqd.trainer.datasets import digit_images

log = logging.getLogger(__name__)

RESOLUTION = 16
FEATURES = 64
RECIPE: dict[str, Any] = {
    "version": 1, "net": "conv8-pool-conv16-pool-fc64-fc10", "resolution": RESOLUTION, "holdout": 0.2,
    "epochs": 20, "batch": 32, "lr": 2e-3, "seed": 0, "augment": {"shift_px": 1, "noise_std": 0.05},
}


def recipe_hash() -> str:
    return hashlib.sha256(json.dumps(RECIPE, sort_keys=True).encode()).hexdigest()[:16]


class DigitNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        # ~0.1 M multiply-adds a digit: 6,000 digits (2,000 stacked images) in ~0.3 CPU-seconds
        self.conv1 = nn.Conv2d(1, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, padding=1)
        self.fc = nn.Linear(16 * (RESOLUTION // 4) ** 2, FEATURES)
        self.head = nn.Linear(FEATURES, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x (N, 1, 16, 16) → (logits (N, 10), features (N, 64))."""
        h = F.max_pool2d(F.relu(self.conv1(x)), 2)
        h = F.max_pool2d(F.relu(self.conv2(h)), 2)
        features = F.relu(self.fc(h.flatten(1)))
        return self.head(features), features


@dataclass
class DigitClassifier:
    net: DigitNet
    accuracy: float  # on the held-out digits
    recipe: str  # recipe_hash() of the weights

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def __call__(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Grey digits (N, 1, 16, 16) in [−1, 1] → (probabilities (N, 10), features (N, 64)), on the net's device."""
        with torch.inference_mode():
            logits, features = self.net(x.to(self.device))
        return logits.softmax(dim=1), features


def _split(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    perm = torch.randperm(n, generator=gen)
    n_test = round(n * RECIPE["holdout"])
    return perm[n_test:], perm[:n_test]


def _augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Random ±1 px shifts and pixel noise, so the blurry, noisy digits of a young generator still classify."""
    s = RECIPE["augment"]["shift_px"]
    padded = F.pad(x, (s, s, s, s), value=-1.0)
    dx, dy = (int(v) for v in torch.randint(0, 2 * s + 1, (2,), generator=gen))
    x = padded[:, :, dy:dy + RESOLUTION, dx:dx + RESOLUTION]
    noise = torch.randn(x.shape, generator=gen) * RECIPE["augment"]["noise_std"]
    return (x + noise).clamp(-1, 1)


def train_classifier() -> DigitClassifier:
    """Train the recipe from scratch on the CPU (deterministic: seeded, one thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # bit-identical weights on any machine size
    try:
        gen = torch.Generator().manual_seed(RECIPE["seed"])
        torch.manual_seed(RECIPE["seed"])  # the layers' default init draws from the global generator
        images, labels = digit_images(RESOLUTION)
        x = images.mul(2).sub(1)
        train, test = _split(len(labels), gen)
        net = DigitNet()
        opt = torch.optim.Adam(net.parameters(), lr=RECIPE["lr"])
        for _ in range(RECIPE["epochs"]):
            for batch in torch.randperm(len(train), generator=gen).split(RECIPE["batch"]):
                idx = train[batch]
                loss = F.cross_entropy(net(_augment(x[idx], gen))[0], labels[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        net.eval().requires_grad_(False)
        with torch.inference_mode():
            accuracy = float((net(x[test])[0].argmax(1) == labels[test]).float().mean())
    finally:
        torch.set_num_threads(threads)
    return DigitClassifier(net, accuracy, recipe_hash())


def cache_dir(models_dir: Path) -> Path:
    return models_dir / "digits"


def atomic_write(path: Path, data: bytes) -> None:
    """Write then rename, so a concurrent worker never reads half a cache file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex}")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def load_classifier(models_dir: Path, device: str | torch.device = "cpu") -> DigitClassifier:
    """The cached classifier for this recipe, training and caching it first if absent or unreadable."""
    path = cache_dir(models_dir) / f"classifier-{recipe_hash()}.pt"
    clf: DigitClassifier | None = None
    if path.is_file():
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            net = DigitNet()
            net.load_state_dict(state["net"])
            clf = DigitClassifier(net.eval().requires_grad_(False), float(state["accuracy"]), state["recipe"])
        except Exception as exc:  # a damaged cache is rebuilt, not trusted
            log.warning("digit classifier cache %s unreadable (%s); retraining", path, exc)
    if clf is None:
        clf = train_classifier()
        log.info("trained the digit classifier: held-out accuracy %.4f; cached at %s", clf.accuracy, path)
        buf = io.BytesIO()
        torch.save({"net": clf.net.state_dict(), "accuracy": clf.accuracy, "recipe": clf.recipe,
                    "recipe_spec": json.dumps(RECIPE, sort_keys=True)}, buf)
        atomic_write(path, buf.getvalue())
    clf.net.to(device)
    return clf


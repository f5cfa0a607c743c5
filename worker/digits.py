"""The `digits` evaluation profile (SPEC §7): stacked digits, fully offline.

Each generated image (3 channels, any resolution) is split into its R, G, B channels; each channel is resized to
16×16 and classified by the cached digit classifier, and the three digits give the mode id 100·R + 10·G + B:

- eval/quality: mean over images and channels of the classifier's max probability (the analogue of MTCNN's face
  probability),
- eval/diversity (James–Stein, nats, max ln 1000 = 6.908), eval/diversity_plugin, eval/js_lambda and
  eval/modes_covered over the 1000 modes,
- eval/reverse_kl: KL(p_gen ‖ uniform over 1000) of the observed mode frequencies (seed 000's StackedMNIST
  measure; `estimators.reverse_kl`),
- eval/fid: Fréchet distance in the classifier's penultimate space (the three channels' 64-d features
  concatenated, 192-d) against real stacked digits at the same resolution; the reference statistics are computed
  once per (classifier recipe, resolution) from 10,000 real samples and cached with a manifest (1/(N−1)).
"""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

import numpy as np
import torch
from threadpoolctl import threadpool_limits
from torch.nn import functional as F

from sqd.settings import Settings
from sqd.trainer.datasets import StackedDigits, mode_of
from sqd.worker import estimators
from sqd.worker.digits_classifier import RESOLUTION, DigitClassifier, atomic_write, cache_dir, load_classifier
from sqd.worker.evaluate import stage
from sqd.worker.profiles import Sampler

MODES = 1000
REFERENCE_SAMPLES = 10_000
REFERENCE_SEED = 0


def _as_digits(images: torch.Tensor) -> torch.Tensor:
    """(n, 3, H, W) stacked images → (3n, 1, 16, 16) grey digits, channel-major per image (R, G, B, R, G, B…)."""
    if images.ndim != 4 or images.shape[1] != 3:
        raise ValueError(f"digits profile: expects stacked digits (n, 3, H, W), got images of shape "
                         f"{tuple(images.shape)}")
    x = images.reshape(-1, 1, *images.shape[2:])
    if x.shape[-1] != RESOLUTION or x.shape[-2] != RESOLUTION:
        x = F.interpolate(x, size=(RESOLUTION, RESOLUTION), mode="bilinear", antialias=True, align_corners=False)
    return x


class DigitsProfile:
    name = "digits"

    def __init__(self, settings: Settings, device: str | torch.device = "cpu"):
        self.samples = settings.worker.samples
        self.batch_size = max(settings.worker.batch_size, 1000)  # the classifier is tiny: big batches are faster
        self.models_dir = settings.models_dir
        self.classifier: DigitClassifier = load_classifier(self.models_dir, device)
        self._reference: dict[int, tuple[np.ndarray, np.ndarray]] = {}

    def classify(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Stacked images (n, 3, H, W) → (mode ids (n,), max probability per channel (n, 3), features (n, 192))."""
        digits = _as_digits(images)
        probs, feats = zip(*(self.classifier(chunk) for chunk in digits.split(self.batch_size * 3)), strict=True)
        p = torch.cat(probs).float().cpu()
        confidence, label = p.max(dim=1)
        n = images.shape[0]
        return mode_of(label.view(n, 3)), confidence.view(n, 3), torch.cat(feats).float().cpu().reshape(n, -1)

    def reference_stats(self, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        """(μ, Σ) of the features of real stacked digits at `resolution`, cached on disk and in memory."""
        if resolution not in self._reference:
            self._reference[resolution] = self._load_or_compute_reference(resolution)
        return self._reference[resolution]

    def _load_or_compute_reference(self, resolution: int) -> tuple[np.ndarray, np.ndarray]:
        stem = cache_dir(self.models_dir) / f"fid-ref-{self.classifier.recipe}-r{resolution}"
        npz, manifest = Path(f"{stem}.npz"), Path(f"{stem}.json")
        if npz.is_file() and manifest.is_file():
            with np.load(npz) as cached:
                return cached["mu"], cached["sigma"]
        real = StackedDigits(resolution).sample(REFERENCE_SAMPLES, torch.Generator().manual_seed(REFERENCE_SEED))
        mu, sigma = estimators.gaussian_stats(self.classify(real)[2].double().numpy())
        buf = io.BytesIO()
        np.savez(buf, mu=mu, sigma=sigma)
        atomic_write(npz, buf.getvalue())
        atomic_write(manifest, json.dumps({
            "what": "FID reference statistics of real stacked digits in the digit classifier's feature space",
            "classifier_recipe": self.classifier.recipe, "resolution": resolution, "n": REFERENCE_SAMPLES,
            "seed": REFERENCE_SEED, "features": "3 channels × 64-d penultimate features, concatenated (192-d)",
            "covariance": "1/(N-1)", "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }, indent=2).encode())
        return mu, sigma

    def fid(self, features: torch.Tensor, resolution: int) -> float:
        """Fréchet distance of these (n, 192) features to the real stacked digits at `resolution`."""
        mu_ref, sigma_ref = self.reference_stats(resolution)
        # 192-d algebra: thread pools only add wake-up latency (seconds on a busy machine instead of milliseconds)
        with threadpool_limits(1):
            mu, sigma = estimators.gaussian_stats(features.double().numpy())
            return estimators.frechet_distance(mu, sigma, mu_ref, sigma_ref)

    def evaluate(self, sample: Sampler, timings: dict[str, float]) -> dict[str, float]:
        images = sample(self.samples)
        with stage(timings, "classify"):
            modes, confidence, features = self.classify(images)
        self.reference_stats(images.shape[-1])  # computed once per resolution: not part of the FID timing
        with stage(timings, "fid"):
            fid = self.fid(features, images.shape[-1])
        counts = np.bincount(modes.numpy(), minlength=MODES)
        return {"eval/quality": float(confidence.mean()), **estimators.diversity_metrics(counts),
                "eval/reverse_kl": estimators.reverse_kl(counts), "eval/fid": fid}

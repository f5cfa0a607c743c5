"""The `faces` evaluation profile (seed 003, SPEC §1) for CelebA-style runs.

On one checkpoint's generated images, all on the worker's device from the generator to the metrics (in batches of
`worker.gpu_batch_size` on CUDA, `worker.batch_size` on the CPU; the networks run as `inference` says):

- **Q** `eval/quality`: MTCNN's probability of the most confident face, 0 where none is found, averaged over the
  max(quality_samples, samples) images MTCNN sees (it has to see the `samples` images anyway: their landmarks
  align the embedder's crops).
- **D** `eval/diversity`: each of the first `samples` images goes to its nearest identity centroid (squared
  Euclidean distance, one matrix product on the device; raw embeddings as in the paper, or L2-normalised ones
  with `worker.normalize_embeddings`); the James–Stein entropy of the counts over all m identities (nats, max
  ln m), with `eval/diversity_plugin`, `eval/modes_covered` (identities hit), `eval/js_lambda` and
  `eval/no_face_fraction` (images that got the whole-frame fallback of `face_detect`).
- **FID** `eval/fid`: Inception-v3 pool3 features of the first `fid_samples` images against the cached reference
  moments of the real images at the same resolution (`sqd dataset index faces`).

Identity centroids and reference moments come from `face_index.load_index`; a missing file raises
ModelFileMissing saying how to build or provide it, and the evaluation is reported failed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from sqd.settings import Settings
from sqd.worker import estimators
from sqd.worker.evaluate import stage
from sqd.worker.face_detect import FaceDetector, to_uint8_range
from sqd.worker.face_embed import build_embedder
from sqd.worker.inception import FEATURES, fid_features, load_fid_inception
from sqd.worker.model_files import inception_weights_path
from sqd.worker.profiles import Sampler
from sqd.worker.sampling import pick_device


@dataclass
class FidReference:
    """The real images' FID moments on the device (float64) and Σ^{1/2}, computed once per worker."""

    mu: torch.Tensor
    sigma: torch.Tensor
    sqrt_sigma: torch.Tensor


def _sync(device: torch.device) -> None:
    if device.type == "cuda":  # stage timings must include the queued GPU work
        torch.cuda.synchronize(device)


class IdentityAssigner:
    """Nearest identity centroid for a batch of embeddings: argmin_j ‖f − f_j‖² = ‖f‖² − 2 f·f_j + ‖f_j‖², one
    (N × d) @ (d × m) product on the device."""

    def __init__(self, centroids: np.ndarray, normalize: bool, device: torch.device):
        c = torch.as_tensor(np.asarray(centroids, dtype=np.float32), device=device)
        if c.ndim != 2 or c.shape[0] == 0:
            raise ValueError(f"identity centroids must be a non-empty (m, d) matrix, got {tuple(c.shape)}")
        self.normalize, self.device = normalize, device
        self.centroids = torch.nn.functional.normalize(c, dim=1) if normalize else c
        self.sq_norms = (self.centroids ** 2).sum(1)

    @property
    def modes(self) -> int:
        return int(self.centroids.shape[0])

    def assign(self, embeddings: np.ndarray | torch.Tensor) -> torch.Tensor:
        f = torch.as_tensor(embeddings, dtype=torch.float32, device=self.device)
        if f.ndim != 2 or f.shape[1] != self.centroids.shape[1]:
            raise ValueError(f"embeddings must be (N, {self.centroids.shape[1]}) to match the identity centroids, "
                             f"got {tuple(f.shape)} (were the centroids built with another embedder?)")
        if self.normalize:
            f = torch.nn.functional.normalize(f, dim=1)
        return (self.sq_norms - 2 * f @ self.centroids.T).argmin(dim=1)  # ‖f‖² is the same for every j


class FacesProfile:
    name = "faces"

    def __init__(self, settings: Settings, device: str | torch.device = "cpu"):
        self.settings = settings
        self.device = pick_device(device) if isinstance(device, str) else device
        w = settings.worker
        self.quality_samples, self.samples, self.fid_samples = w.quality_samples, w.samples, w.fid_samples
        self.batch_size, self.tf32 = w.batch_for(self.device.type), w.tf32
        # Load everything a checkpoint needs now, so a missing file fails the first evaluation, not the tenth.
        self.detector = FaceDetector(self.device)
        self.embedder = build_embedder(settings, self.device)
        self.inception = load_fid_inception(inception_weights_path(settings), self.device)
        self._indexes: dict[int, tuple[IdentityAssigner, FidReference]] = {}

    def index(self, resolution: int) -> tuple[IdentityAssigner, FidReference]:
        """The identity centroids and FID reference of real faces at this resolution (loaded once, kept on the
        device)."""
        if resolution not in self._indexes:
            from sqd.worker.face_index import load_index

            idx = load_index(self.settings, self.embedder, resolution)
            normalize = self.settings.worker.normalize_embeddings
            assigner = IdentityAssigner(idx.centroids(normalize), normalize, self.device)
            sigma = torch.as_tensor(idx.fid_sigma, dtype=torch.float64, device=self.device)
            reference = FidReference(torch.as_tensor(idx.fid_mu, dtype=torch.float64, device=self.device), sigma,
                                     estimators.sqrtm_psd(sigma))
            self._indexes[resolution] = (assigner, reference)
        return self._indexes[resolution]

    def identities(self, images: torch.Tensor, n_embed: int, assigner: IdentityAssigner,
                   timings: dict[str, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """MTCNN on every image, embedding + nearest identity on the first `n_embed`: (probabilities,
        identity counts, found-a-face flags of the embedded images)."""
        probs: list[np.ndarray] = []
        found: list[np.ndarray] = []
        modes: list[torch.Tensor] = []
        for start in range(0, len(images), self.batch_size):
            batch = images[start:start + self.batch_size]
            with stage(timings, "mtcnn"):
                faces = self.detector.detect(to_uint8_range(batch))
                _sync(self.device)
            probs.append(faces.prob)
            keep = max(0, min(len(batch), n_embed - start))
            if keep == 0:
                continue
            with stage(timings, "embed"):
                head = faces if keep == len(batch) else faces.head(keep)
                embeddings = self.embedder.embed(head)
                _sync(self.device)
            with stage(timings, "assign"):
                modes.append(assigner.assign(embeddings))
            found.append(head.found)
        counts = torch.bincount(torch.cat(modes), minlength=assigner.modes).cpu().numpy()
        return np.concatenate(probs), counts, np.concatenate(found)

    def evaluate(self, sample: Sampler, timings: dict[str, float]) -> dict[str, float]:
        n_detect = max(self.quality_samples, self.samples)
        images = sample(max(n_detect, self.fid_samples))
        assigner, reference = self.index(int(images.shape[-1]))
        probs, counts, found = self.identities(images[:n_detect], self.samples, assigner, timings)
        with stage(timings, "fid_features"):
            moments = estimators.RunningMoments(FEATURES, self.device)
            for batch in images[:self.fid_samples].split(self.batch_size):
                moments.update(fid_features(self.inception, batch, self.batch_size, self.tf32))
            _sync(self.device)
        with stage(timings, "fid"):
            fid = estimators.frechet_distance(reference.mu, reference.sigma, moments.mean, moments.covariance(),
                                              sqrt_sigma1=reference.sqrt_sigma)
        return {
            "eval/quality": float(probs.mean()),
            **estimators.diversity_metrics(counts),
            "eval/no_face_fraction": float(1.0 - found.mean()),
            "eval/fid": fid,
        }

"""`sqd dataset index faces`: the real-face reference of the faces profile, built once from a local CelebA.

From `<celeba>/img_align_celeba/*.jpg` and `<celeba>/identity_CelebA.txt` (10,177 identities, 202,599 images),
every image is cropped and resized exactly as the trainer feeds CelebA to a generator (centre 140×140 square,
LANCZOS to `resolution`, 64 by default), then goes through the faces profile's own path — MTCNN landmarks, the
chosen embedder, the FID Inception — so real and generated images are measured alike. It stores:

* per identity: the image count and the sums of the raw and of the L2-normalised embeddings. Centroids are their
  means: raw (Euclidean assignment, seed 003) or mean unit vectors renormalised (the `normalize_embeddings`
  option), so one index serves both. Identities without any indexed image are dropped (m = those left).
* the FID reference: mean and covariance of the 2048-d pool3 features, covariance with 1/(N−1) as pytorch-fid
  (StyleGAN3 / R3GAN use 1/N; their statistics are not interchangeable).
* `manifest.json`: sha256 of every model file and of the identity list, counts, the embedder and its model id,
  the preprocessing, the no-face count and the covariance convention.

Interruptible: the running sums are saved atomically every `save_every` images (and on Ctrl-C) to
`partial.npz`; a rerun with the same inputs continues from there, a rerun with other inputs starts over, and a
rerun after a finished build returns at once (`--restart` forces a new build).
The index lives in `<models_dir>/faces-index/celeba-<embedder model id>-<resolution>px/`.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sqd.errors import ModelFileMissing
from sqd.images import CELEBA_CROP, load_square
from sqd.settings import Settings
from sqd.worker.estimators import RunningMoments
from sqd.worker.face_detect import FaceDetector, to_uint8_range
from sqd.worker.face_embed import FaceEmbedder, build_embedder
from sqd.worker.inception import FEATURES, FIDInception, fid_features, load_fid_inception
from sqd.worker.model_files import arcface_model_path, dlib_model_paths, file_sha256, inception_weights_path

FORMAT = "sqd-faces-index/1"
IMAGES_DIR = "img_align_celeba"
IDENTITY_FILE = "identity_CelebA.txt"
CELEBA_HOWTO = ("Download CelebA's img_align_celeba.zip (\"Align&Cropped Images\") and identity_CelebA.txt "
                "(\"Anno\") from the CelebA site (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html) and unpack "
                "them into {root}, or pass --celeba DIR")
MANIFEST, IDENTITIES, FID_REFERENCE, PARTIAL = "manifest.json", "identities.npz", "fid_reference.npz", "partial.npz"

Progress = Callable[[int, int], None]  # (images done, images in total), called after every batch


def default_celeba_dir(settings: Settings) -> Path:
    """Where `sqd train` looks for CelebA too ($SQD_HOME/datasets/celeba)."""
    return settings.home / "datasets" / "celeba"


def index_dir(settings: Settings, embedder_model_id: str, resolution: int) -> Path:
    return settings.models_dir / "faces-index" / f"celeba-{embedder_model_id}-{resolution}px"


@dataclass
class FacesIndex:
    identity_ids: np.ndarray  # (m,) CelebA identity numbers
    counts: np.ndarray  # (m,) images per identity, all ≥ 1
    sum_raw: np.ndarray  # (m, d) float64
    sum_unit: np.ndarray  # (m, d) float64, sums of L2-normalised embeddings
    fid_mu: np.ndarray  # (2048,) float64
    fid_sigma: np.ndarray  # (2048, 2048) float64, 1/(N−1)
    fid_n: int
    manifest: dict[str, Any]

    def centroids(self, normalize: bool) -> np.ndarray:
        """(m, d) float32: mean raw embeddings, or (normalize) the mean unit vectors scaled back to unit length."""
        if not normalize:
            return (self.sum_raw / self.counts[:, None]).astype(np.float32)
        mean = self.sum_unit / self.counts[:, None]
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def load_index(settings: Settings, embedder: FaceEmbedder, resolution: int) -> FacesIndex:
    """The index built for this embedder's weights at this resolution; ModelFileMissing says how to build it."""
    root = index_dir(settings, embedder.model_id, resolution)
    if not (root / MANIFEST).is_file():
        others = sorted(p.name for p in root.parent.glob("celeba-*") if (p / MANIFEST).is_file())
        built = f" Indexes present: {', '.join(others)}." if others else ""
        raise ModelFileMissing(
            f"faces index for embedder {embedder.model_id} at {resolution}×{resolution} not found (looked in: "
            f"{root}): build it with `sqd dataset index faces --embedder {embedder.name} --resolution {resolution}`"
            f" (needs CelebA in {default_celeba_dir(settings)} or --celeba DIR, and the model files).{built}")
    manifest = json.loads((root / MANIFEST).read_text())
    if manifest.get("format") != FORMAT:
        raise ModelFileMissing(f"faces index {root} has format {manifest.get('format')!r}, not {FORMAT!r}: rebuild "
                               f"it with `sqd dataset index faces --embedder {embedder.name} --resolution "
                               f"{resolution} --restart`")
    with np.load(root / IDENTITIES) as ids, np.load(root / FID_REFERENCE) as fid:
        return FacesIndex(ids["identity_ids"], ids["counts"], ids["sum_raw"], ids["sum_unit"], fid["mu"],
                          fid["sigma"], int(fid["n"]), manifest)


# ---- inputs ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CelebA:
    root: Path
    files: list[str]  # image file names, in identity_CelebA.txt order
    labels: np.ndarray  # (N,) index into identity_ids
    identity_ids: np.ndarray  # (M,) sorted identity numbers listed in the file
    identity_sha256: str

    def head(self, n: int | None) -> CelebA:
        """The first n images (all identities stay listed): `--limit` for a quick trial index."""
        return self if n is None else replace(self, files=self.files[:n], labels=self.labels[:n])


def read_celeba(root: Path) -> CelebA:
    """Parse identity_CelebA.txt ("000001.jpg 2880" per line) and check that every listed image is there."""
    images, ident = root / IMAGES_DIR, root / IDENTITY_FILE
    missing = [p for p, ok in ((images, images.is_dir()), (ident, ident.is_file())) if not ok]
    if missing:
        raise ModelFileMissing(f"CelebA not found: missing {' and '.join(str(p) for p in missing)}. "
                               + CELEBA_HOWTO.format(root=root))
    raw = ident.read_bytes()
    files, numbers = [], []
    for lineno, line in enumerate(raw.decode().splitlines(), start=1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or not parts[1].isdigit():
            raise ValueError(f"{ident}:{lineno}: expected '<image>.jpg <identity number>', got {line!r}")
        files.append(parts[0])
        numbers.append(int(parts[1]))
    if not files:
        raise ValueError(f"{ident} lists no images")
    on_disk = set(os.listdir(images))
    absent = [f for f in files if f not in on_disk]
    if absent:
        raise ModelFileMissing(f"CelebA is incomplete: {len(absent)} of the {len(files)} images listed in {ident} "
                               f"are not in {images} (first: {absent[0]}). " + CELEBA_HOWTO.format(root=root))
    identity_ids, labels = np.unique(np.asarray(numbers, dtype=np.int64), return_inverse=True)
    return CelebA(root, files, labels, identity_ids, hashlib.sha256(raw).hexdigest())


def embedder_files(settings: Settings, embedder: FaceEmbedder) -> list[Path]:
    return list(dlib_model_paths()) if embedder.name == "dlib" else [arcface_model_path(settings)]


def check_inputs(settings: Settings, celeba_root: Path) -> CelebA:
    """CelebA, read; every missing input (CelebA, the embedder's weights, the FID Inception) is named at once,
    one per line, so a fresh machine learns everything it lacks from one run."""
    problems, found = [], []
    probes: list[Callable[[], object]] = [
        lambda: read_celeba(celeba_root),
        lambda: dlib_model_paths() if settings.worker.face_embedder == "dlib" else arcface_model_path(settings),
        lambda: inception_weights_path(settings),
    ]
    for probe in probes:
        try:
            found.append(probe())
        except ModelFileMissing as exc:
            problems.append(str(exc))
    if problems:
        raise ModelFileMissing("\n".join(problems))
    celeba = found[0]
    assert isinstance(celeba, CelebA)
    return celeba


# ---- the running sums -----------------------------------------------------------------------------------------
@dataclass
class Sums:
    done: int  # images processed, a prefix of CelebA.files
    no_face: int
    counts: np.ndarray
    sum_raw: np.ndarray
    sum_unit: np.ndarray
    moments: RunningMoments

    @classmethod
    def empty(cls, identities: int, dim: int, device: torch.device) -> Sums:
        return cls(0, 0, np.zeros(identities, np.int64), np.zeros((identities, dim)), np.zeros((identities, dim)),
                   RunningMoments(FEATURES, device))

    def add(self, labels: np.ndarray, embeddings: torch.Tensor, no_face: int, features: torch.Tensor) -> None:
        e = embeddings.double().cpu().numpy()
        np.add.at(self.sum_raw, labels, e)
        np.add.at(self.sum_unit, labels, e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12))
        np.add.at(self.counts, labels, 1)
        self.no_face += no_face
        self.moments.update(features)
        self.done += len(labels)

    def save(self, path: Path, key: str) -> None:
        tmp = path.with_name(path.name + ".tmp.npz")
        m = self.moments
        np.savez(tmp, key=key, done=self.done, no_face=self.no_face, counts=self.counts, sum_raw=self.sum_raw,
                 sum_unit=self.sum_unit, fid_n=m.n, fid_mean=m.mean.cpu().numpy(), fid_m2=m.m2.cpu().numpy())
        os.replace(tmp, path)  # a crash mid-write leaves the previous partial intact

    @classmethod
    def resume(cls, path: Path, key: str, device: torch.device) -> Sums | None:
        if not path.is_file():
            return None
        with np.load(path) as p:
            if str(p["key"]) != key:
                return None
            moments = RunningMoments(FEATURES, device)
            moments.n = int(p["fid_n"])
            moments.mean = torch.as_tensor(p["fid_mean"], device=device)
            moments.m2 = torch.as_tensor(p["fid_m2"], device=device)
            return cls(int(p["done"]), int(p["no_face"]), p["counts"], p["sum_raw"], p["sum_unit"], moments)


# ---- the builder ----------------------------------------------------------------------------------------------
@dataclass
class Models:
    """The embedder and the model files' sha256s at once (they key the index); MTCNN and the Inception load on
    first use, so an up-to-date index costs no model loading."""

    embedder: FaceEmbedder
    weights: Path  # FID Inception
    files: dict[str, str]  # file name → sha256
    device: torch.device

    @cached_property
    def detector(self) -> FaceDetector:
        return FaceDetector(self.device)

    @cached_property
    def inception(self) -> FIDInception:
        return load_fid_inception(self.weights, self.device)


def load_models(settings: Settings, device: torch.device) -> Models:
    embedder = build_embedder(settings, device)
    weights = inception_weights_path(settings)
    files = {p.name: file_sha256(p) for p in [*embedder_files(settings, embedder), weights]}
    return Models(embedder, weights, files, device)


def _batches(celeba: CelebA, start: int, size: int, crop: int, resolution: int) -> Iterator[tuple[int, np.ndarray]]:
    """(first index, uint8 images N×H×W×3) batches, decoded by a thread pool one batch ahead of the GPU."""
    folder = celeba.root / IMAGES_DIR
    starts = range(start, len(celeba.files), size)
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        def submit(i: int) -> list[Any]:
            return [pool.submit(load_square, folder / f, crop, resolution) for f in celeba.files[i:i + size]]

        pending = submit(starts[0]) if starts else []
        for k, i in enumerate(starts):
            current = pending
            pending = submit(starts[k + 1]) if k + 1 < len(starts) else []
            yield i, np.stack([f.result() for f in current])


def build_index(settings: Settings, celeba_root: Path, device: torch.device, *, resolution: int = 64,
                crop: int = CELEBA_CROP, limit: int | None = None, save_every: int = 5000, restart: bool = False,
                on_progress: Progress | None = None) -> Path:
    """Build (or finish) the faces index; returns its directory. The embedder is `settings.worker.face_embedder`."""
    celeba = check_inputs(settings, celeba_root).head(limit)
    models = load_models(settings, device)
    out = index_dir(settings, models.embedder.model_id, resolution)
    out.mkdir(parents=True, exist_ok=True)
    config = {"identity_sha256": celeba.identity_sha256, "images": len(celeba.files), "resolution": resolution,
              "crop": crop, "embedder": models.embedder.model_id, "files": models.files}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()
    if not restart and (out / MANIFEST).is_file() and json.loads((out / MANIFEST).read_text()).get("inputs") == key:
        return out  # already built from these very inputs
    partial = out / PARTIAL
    sums = None if restart else Sums.resume(partial, key, device)
    sums = sums or Sums.empty(len(celeba.identity_ids), models.embedder.dim, device)
    started, last_saved = time.monotonic(), sums.done
    if on_progress:
        on_progress(sums.done, len(celeba.files))
    try:
        batch_size = settings.worker.batch_for(device.type)
        for first, batch in _batches(celeba, sums.done, batch_size, crop, resolution):
            images = torch.from_numpy(batch).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)
            faces = models.detector.detect(to_uint8_range(images))
            embeddings = models.embedder.embed(faces)
            features = fid_features(models.inception, images, batch_size, settings.worker.tf32)
            sums.add(celeba.labels[first:first + len(batch)], embeddings, int((~faces.found).sum()), features)
            if sums.done - last_saved >= save_every:
                sums.save(partial, key)
                last_saved = sums.done
            if on_progress:
                on_progress(sums.done, len(celeba.files))
    except KeyboardInterrupt:
        sums.save(partial, key)  # sums only change between batches, so they are consistent here
        raise
    _write(out, celeba, models, sums, config, key, time.monotonic() - started, limit)
    partial.unlink(missing_ok=True)
    return out


def _write(out: Path, celeba: CelebA, models: Models, sums: Sums, config: dict[str, Any], key: str, seconds: float,
           limit: int | None) -> None:
    keep = sums.counts > 0
    np.savez(out / IDENTITIES, identity_ids=celeba.identity_ids[keep], counts=sums.counts[keep],
             sum_raw=sums.sum_raw[keep], sum_unit=sums.sum_unit[keep])
    m = sums.moments
    np.savez(out / FID_REFERENCE, mu=m.mean.cpu().numpy(), sigma=m.covariance().cpu().numpy(), n=m.n)
    manifest = {
        "format": FORMAT, "dataset": "celeba", "celeba_dir": str(celeba.root), "created": datetime.now(UTC).isoformat(),
        "images": sums.done, "limit": limit, "identities_listed": int(len(celeba.identity_ids)),
        "identities": int(keep.sum()), "no_face": sums.no_face, "no_face_fraction": sums.no_face / max(sums.done, 1),
        "no_face_fallback": "whole frame taken as the face (face_detect.fallback_landmarks)",
        "preprocessing": {"crop": config["crop"], "resolution": config["resolution"], "resize": "lanczos",
                          "quantised": "uint8 (JPEG decode)"},
        "embedder": {"name": models.embedder.name, "model_id": models.embedder.model_id,
                     "dim": models.embedder.dim},
        "centroids": {"raw": "mean of raw embeddings (Euclidean assignment, seed 003)",
                      "normalized": "mean of L2-normalised embeddings, renormalised (worker.normalize_embeddings)"},
        "fid": {"network": "FID Inception-v3 pool3", "features": FEATURES, "n": m.n, "covariance": "1/(N-1)"},
        "model_files_sha256": models.files, "identity_file_sha256": celeba.identity_sha256,
        "inputs": key, "seconds": round(seconds, 1),
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")

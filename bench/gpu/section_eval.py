"""GPU bench section 'eval' (see run.py): the evaluation profiles on the device, stage by stage, against the goals
of issue 13 — the faces evaluation (1,000 MTCNN + 2,000 ArcFace + 10,000-sample FID) < 5 s, the digits evaluation
of 2,000 samples < 0.1 s.

Faces, through the worker's own code (`FacesProfile.evaluate`, default settings: quality 1,000, samples 2,000,
FID 10,000, `gpu_batch_size`; ArcFace in PyTorch as a CUDA worker runs it):
- models with random weights under the real file names in a temp models dir: the FID Inception (as
  bench/worker_faces.py), ArcFace = arcface_torch's IResNet-50 exported to ONNX as insightface did (timed);
- the faces index built on the device from 200 LFW faces in CelebA-sized frames (bench/worker_faces.py), timed;
- each evaluation generates 10,000 images with the CelebA-64 DCGAN of `sqd-nsgan-celeba` (random weights; its
  time is the `generate` stage) and then measures LFW faces in their place (the pool, with fresh pixel noise), so
  MTCNN and ArcFace work as on a good generator's output. The profile runs MTCNN on all 2,000 embedded images (their
  landmarks align ArcFace's crops), so its total is stricter than the goal's 1,000.
- the first evaluation (cuDNN autotuning, lazy CUDA init) is reported apart; the figures are medians of the next.
Then MTCNN on 1,000 images through facenet-pytorch's own `detect_face` and through our batched stages, and, per
network, the share of the stage's wall time the GPU spends in kernels (torch.profiler): a low share means the
stage is host-bound. Then precision: ArcFace on CUDA against onnxruntime on the CPU (cosine), the Inception
with strict float32 (TF32 off) against the default (speed, feature and FID differences).
Digits: the worker's Evaluator on one `demo-stable` checkpoint (bench/worker_digits.py), 2,000 samples.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
from report import Context, Report

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/: the LFW CelebA and checkpoint helpers
from mtcnn_batched import compare as compare_mtcnn  # noqa: E402
from worker_digits import store_checkpoint  # noqa: E402
from worker_faces import fake_generator, write_lfw_celeba  # noqa: E402

from sqd.artifacts import ArtifactStore  # noqa: E402
from sqd.presets import resolve_config  # noqa: E402
from sqd.settings import Settings, WorkerSettings  # noqa: E402
from sqd.trainer.nets import build_generator, generator_spec  # noqa: E402
from sqd.worker import estimators, face_index  # noqa: E402
from sqd.worker.arcface_export import export_onnx, random_arcface  # noqa: E402
from sqd.worker.evaluate import Evaluator  # noqa: E402
from sqd.worker.face_align import align_faces  # noqa: E402
from sqd.worker.face_detect import to_uint8_range  # noqa: E402
from sqd.worker.face_embed import TorchArcFaceEmbedder  # noqa: E402
from sqd.worker.faces import FacesProfile  # noqa: E402
from sqd.worker.inception import FIDInception, fid_features, save_weights_file  # noqa: E402
from sqd.worker.iresnet import IRESNET50  # noqa: E402
from sqd.worker.model_files import ARCFACE_FILE, INCEPTION_FILE  # noqa: E402
from sqd.worker.sampling import GeneratorSampler  # noqa: E402

S = "eval"
T = TypeVar("T")


@dataclass(frozen=True)
class Sizes:
    quality: int
    samples: int
    fid: int
    digits: int
    repeats: int
    arcface_layers: tuple[int, ...]
    identities: int
    checks: int  # images for the precision checks


FULL = Sizes(1000, 2000, 10_000, 2000, 3, IRESNET50, 100, 1000)
QUICK = Sizes(10, 10, 10, 100, 1, (1, 1, 1, 1), 5, 4)  # a CPU dry run of every code path (10: the settings' least)


def _attempt(report: Report, what: str, fn: Callable[[], T]) -> T | None:
    """Run one part of the section; a failure is reported and the other parts still run."""
    try:
        return fn()
    except Exception:
        report.add(S, f"{what} failed", "error")
        report.note(f"eval: {what}: " + traceback.format_exc(limit=6).replace("\n", " ⏎ "))
        return None


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Any, device: torch.device) -> tuple[Any, float]:
    _sync(device)
    start = time.perf_counter()
    out = fn()
    _sync(device)
    return out, time.perf_counter() - start


def _rate(n: int, seconds: float) -> str:
    return f"{seconds:.3f} s ({n / seconds:,.0f} img/s)" if seconds > 0 else "0 s"


class PoolSampler:
    """`sample(n)`: generates n images with the real generator (timed as the `generate` stage), then hands out the
    LFW pool in their place, with fresh pixel noise so no two evaluations see the same pixels."""

    def __init__(self, G: torch.nn.Module, z_dim: int, pool: torch.Tensor, batch: int, timings: dict[str, float]):
        self.generator = GeneratorSampler(G, z_dim, 1, pool.device, batch, timings)
        self.pool = pool

    def __call__(self, n: int) -> torch.Tensor:
        self.generator(n)
        reps = -(-n // len(self.pool))
        base = self.pool.repeat(reps, 1, 1, 1)[:n]
        return (base + 0.02 * torch.randn_like(base)).clamp_(-1, 1)


def _faces_setup(tmp: Path, sizes: Sizes, device: torch.device, report: Report) -> tuple[Settings, torch.Tensor]:
    models = tmp / "models"
    models.mkdir()
    torch.manual_seed(0)
    save_weights_file(FIDInception(), models / INCEPTION_FILE)
    start = time.perf_counter()
    onnx_file = export_onnx(random_arcface(sizes.arcface_layers), models / "arcface" / ARCFACE_FILE)
    report.add(S, f"setup: ArcFace ONNX export (random IResNet{sizes.arcface_layers}, as insightface's torch2onnx)",
               f"{time.perf_counter() - start:.1f} s, {onnx_file.stat().st_size / 1e6:.0f} MB")
    paths = write_lfw_celeba(tmp / "celeba", sizes.identities)
    # ArcFace in PyTorch on any device ("auto" picks it on CUDA), so the CPU dry run takes the GPU run's path
    settings = Settings(home=tmp / "home", worker=WorkerSettings(
        models_dir=models, quality_samples=sizes.quality, samples=sizes.samples, fid_samples=sizes.fid,
        arcface_runtime="torch"))
    _, seconds = _timed(lambda: face_index.build_index(settings, tmp / "celeba", device, save_every=10**9), device)
    report.add(S, f"setup: faces index built on {device.type} ({len(paths)} LFW faces, first use of every network "
                  "included)", _rate(len(paths), seconds))
    return settings, fake_generator(paths, 64).to(device)


def _faces(ctx: Context, report: Report, sizes: Sizes, device: torch.device, tmp: Path) -> FacesProfile:
    settings, pool = _faces_setup(tmp, sizes, device, report)
    profile, seconds = _timed(lambda: FacesProfile(settings, device), device)
    runtime = "torch" if isinstance(profile.embedder, TorchArcFaceEmbedder) else "onnxruntime"
    report.add(S, f"faces profile load (MTCNN, ArcFace from ONNX on {runtime}, Inception)", f"{seconds:.1f} s")
    spec = generator_spec(resolve_config("sqd-nsgan-celeba", {}))
    G = build_generator(spec).to(device).eval()
    batch = settings.worker.batch_for(device.type)

    def evaluate() -> tuple[dict[str, float], dict[str, float], float]:
        timings: dict[str, float] = {}
        metrics, wall = _timed(lambda: profile.evaluate(PoolSampler(G, spec["z_dim"], pool, batch, timings),
                                                        timings), device)
        return metrics, timings, wall

    _, _, warm = evaluate()
    report.add(S, "faces warm-up (first evaluation: cuDNN autotuning, lazy CUDA init)", f"{warm:.1f} s")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    runs = [evaluate() for _ in range(sizes.repeats)]
    metrics = runs[-1][0]
    stage = {k: statistics.median(r[1].get(k, 0.0) for r in runs) for k in runs[0][1]}
    n_detect = max(sizes.quality, sizes.samples)
    report.add(S, f"faces: generate {sizes.fid:,} (CelebA-64 DCGAN, batch {batch})",
               _rate(sizes.fid, stage["generate"]))
    report.add(S, f"faces: MTCNN {n_detect:,} (Q and landmarks, batched stages; facenet-pytorch's loop took 0.9 s "
                  "per 1,000)", _rate(n_detect, stage["mtcnn"]))
    report.add(S, f"faces: ArcFace {sizes.samples:,} (alignment + IResNet{sizes.arcface_layers}, {runtime})",
               _rate(sizes.samples, stage["embed"]))
    report.add(S, "faces: nearest identity", f"{stage.get('assign', 0.0):.4f} s")
    report.add(S, f"faces: FID Inception {sizes.fid:,} (fp32, channels_last, TF32 convs; was 2.4 s)",
               _rate(sizes.fid, stage["fid_features"]))
    report.add(S, "faces: Fréchet distance (2048², float64)", f"{stage['fid']:.3f} s")
    total = statistics.median(r[2] for r in runs)
    report.add(S, f"**faces evaluation total** ({n_detect:,} MTCNN + {sizes.samples:,} ArcFace + {sizes.fid:,} FID, "
                  f"sampling included; median of {sizes.repeats})", f"{total:.2f} s", "< 5 s on one H200",
               total < 5.0 if _at_scale(device, sizes) else None)
    if device.type == "cuda":
        report.add(S, "faces: peak GPU memory", f"{torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB")
    report.note(f"eval: faces metrics on the LFW pool: Q {metrics['eval/quality']:.3f}, no-face "
                f"{metrics['eval/no_face_fraction']:.3f}, identities {metrics['eval/modes_covered']:.0f} of "
                f"{sizes.identities}, FID {metrics['eval/fid']:.1f} (random Inception weights)")
    _attempt(report, "MTCNN before/after", lambda: _mtcnn_before_after(report, profile, pool, sizes))
    _attempt(report, "GPU-busy shares", lambda: _gpu_busy(report, profile, pool, sizes, device))
    return profile


def _mtcnn_before_after(report: Report, profile: FacesProfile, pool: torch.Tensor, sizes: Sizes) -> None:
    """facenet-pytorch's per-box loop against the batched stages, same images and batches (bench/mtcnn_batched)."""
    n = sizes.quality
    images = to_uint8_range(pool.repeat(-(-n // len(pool)), 1, 1, 1)[:n])
    r = compare_mtcnn(profile.detector, images, profile.batch_size, repeats=1)
    report.add(S, f"MTCNN {n:,}: facenet-pytorch detect_face (per-box loop) → batched stages",
               f"{r['facenet_s']:.3f} s → {r['batched_s']:.3f} s (max Δ probability {r['max_prob_diff']:.0e}, "
               f"landmarks {r['max_landmark_px']:.0e} px)")


def _gpu_busy(report: Report, profile: FacesProfile, pool: torch.Tensor, sizes: Sizes, device: torch.device) -> None:
    """Kernel time / wall time per network: near 1 = the GPU is the limit; low = the host (Python, launches, syncs)."""
    if device.type != "cuda":
        report.add(S, "GPU-busy share per stage", "n/a on the CPU")
        return
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    n = min(1000, len(pool) * 5)
    images = to_uint8_range(pool.repeat(-(-n // len(pool)), 1, 1, 1)[:n])
    faces = profile.detector.detect(images[:profile.batch_size])
    crops = align_faces(faces.images, faces.landmarks)
    stages = {
        f"MTCNN ({n:,} images)": lambda: [profile.detector.detect(b) for b in images.split(profile.batch_size)],
        f"ArcFace ({len(crops):,} crops)": lambda: profile.embedder.embed_crops(crops),  # type: ignore[attr-defined]
        f"Inception ({n:,} images)": lambda: fid_features(profile.inception, pool.repeat(5, 1, 1, 1)[:n],
                                                          profile.batch_size, profile.tf32),
    }
    for name, fn in stages.items():
        _, wall = _timed(fn, device)
        with torch_profile(activities=[ProfilerActivity.CUDA]) as prof:
            fn()
            _sync(device)
        busy_us = sum(getattr(e, "self_device_time_total", 0.0) for e in prof.key_averages())
        report.add(S, f"GPU-busy share: {name}", f"{busy_us / 1e6 / wall:.0%} of {wall:.3f} s")


def _precision(ctx: Context, report: Report, profile: FacesProfile, sizes: Sizes, device: torch.device) -> None:
    import onnxruntime as ort

    n = sizes.checks
    gen = torch.Generator().manual_seed(5)
    x = torch.rand(min(n, 64), 3, 112, 112, generator=gen).mul(255).round()
    embedder = profile.embedder
    if isinstance(embedder, TorchArcFaceEmbedder):
        path = profile.settings.models_dir / "arcface" / ARCFACE_FILE
        options = ort.SessionOptions()
        options.log_severity_level = 3  # the file declares a batch of 1 for its output, as the real one does
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        expected = session.run(None, {session.get_inputs()[0].name: x.sub(127.5).div(127.5).numpy()})[0]
        for tf32 in (True, False):
            embedder.tf32 = tf32
            got = embedder.embed_crops(x).cpu().numpy()
            cos = (got * expected).sum(1) / (np.linalg.norm(got, axis=1) * np.linalg.norm(expected, axis=1))
            report.add(S, f"ArcFace torch on {device.type} (TF32 {'on' if tf32 else 'off'}) vs onnxruntime CPU, "
                          f"{len(x)} crops: min cosine", f"{cos.min():.7f}", "≥ 0.9999", bool(cos.min() >= 0.9999))
        embedder.tf32 = profile.tf32
    images = torch.rand(n, 3, 64, 64, generator=gen).mul(2).sub(1).to(device)
    feats = {}
    for tf32 in (True, False):
        fid_features(profile.inception, images[:profile.batch_size], profile.batch_size, tf32)  # autotune this mode
        feats[tf32], seconds = _timed(lambda t=tf32: fid_features(profile.inception, images, profile.batch_size, t),
                                      device)
        report.add(S, f"Inception TF32 {'on' if tf32 else 'off (strict fp32)'}, {n:,} images", _rate(n, seconds))
    rel = ((feats[True] - feats[False]).norm(dim=1) / feats[False].norm(dim=1)).max().item()
    fids = [estimators.frechet_distance(*_moments(feats[t][: n // 2]), *_moments(feats[t][n // 2:]))
            for t in (True, False)]
    report.add(S, "Inception TF32 vs strict fp32: max relative feature difference; FID (half vs half) difference",
               f"{rel:.1e}; {abs(fids[0] - fids[1]):.2e} of {fids[1]:.3f}")


def _moments(features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    m = estimators.RunningMoments(features.shape[1], features.device)
    m.update(features)
    return m.mean, m.covariance()


def _digits(report: Report, sizes: Sizes, device: torch.device, tmp: Path) -> None:
    settings = Settings(home=tmp / "digits-home", worker=WorkerSettings(samples=sizes.digits))
    store = ArtifactStore(str(tmp / "artifacts"))
    _, _, event = store_checkpoint(store, "demo-stable", "digits")
    evaluator = Evaluator(settings, store, device, "bench")
    first, warm = _timed(lambda: evaluator.evaluate(event), device)
    if first.status != "ok":
        raise RuntimeError(f"digits evaluation failed: {first.error}")
    report.add(S, "digits warm-up (first evaluation: trains the classifier on the CPU, 10,000-sample FID reference)",
               f"{warm:.1f} s")
    results = [evaluator.evaluate(event) for _ in range(max(5, sizes.repeats))]
    stage = {k: statistics.median(r.timings_s.get(k, 0.0) for r in results) for k in results[0].timings_s}
    profile_s = stage["generate"] + stage["classify"] + stage["fid"]
    n = sizes.digits
    report.add(S, f"digits: generate / classify / FID, {n:,} samples",
               f"{stage['generate']:.4f} / {stage['classify']:.4f} / {stage['fid']:.4f} s")
    report.add(S, f"**digits evaluation** ({n:,} samples: generate + classify + FID; median)", f"{profile_s:.3f} s",
               "< 0.1 s on the GPU", profile_s < 0.1 if _at_scale(device, sizes) else None)
    report.add(S, "digits: whole checkpoint (fetch + load + 64-image grid PNG + profile; 1.93 CPU-s on the CPU)",
               f"{stage['total']:.3f} s")


def _at_scale(device: torch.device, sizes: Sizes) -> bool:
    """Whether a figure is comparable with its goal (full sizes on a GPU)."""
    return device.type == "cuda" and sizes == FULL


def run(ctx: Context, report: Report) -> None:
    sizes = QUICK if ctx.quick else FULL
    device = torch.device(ctx.device)
    threads = torch.get_num_threads()
    if device.type == "cpu":
        torch.set_num_threads(1)  # a dry run on a shared machine: one thread contends least
    try:
        with tempfile.TemporaryDirectory() as tmp:
            profile = _attempt(report, "faces evaluation", lambda: _faces(ctx, report, sizes, device, Path(tmp)))
            if profile is not None and (ctx.time_left() > 30 or ctx.quick):
                _attempt(report, "precision checks", lambda: _precision(ctx, report, profile, sizes, device))
            elif profile is not None:
                report.note(f"eval: precision checks skipped ({ctx.time_left():.0f} s left)")
            profile = None  # free the networks before the digits part
            if device.type == "cuda":
                torch.cuda.empty_cache()
            _attempt(report, "digits evaluation", lambda: _digits(report, sizes, device, Path(tmp)))
    finally:
        torch.set_num_threads(threads)

"""GPU bench section 'zoo' (see run.py): the zoo's training speed on the device, and SQD's R3GAN step against the
official R3GAN's at the same CelebA-64 shape, batch and GPU (goal: SQD/official ≤ 1.0).

Rows, most valuable first; what ctx.time_left() does not allow is skipped with a note:
 1. the official ops' build (nvcc + ninja) starts in two background processes (CPU; never in a step time);
 2. `r3gan-celeba` shape (64×64, width 256, batch 256, synthetic batches): s/step, images/s, peak memory;
 3. its profile: the top CUDA kernels of one step (torch.profiler);
 4. R3GAN-64 variants at a reduced batch: PyTorch's built-in conv / activation derivatives vs SQD's
    (`sqd.trainer.conv`), fp32 (TF32) vs bf16, NCHW vs channels_last, without R1/R2;
 5. the anchor: the official networks + AdversarialTraining step at the r3gan-celeba shape, and SQD/official;
 6. `r3gan-cifar10` shape (32×32, width 256, batch 512); the SQD grid's DCGAN-64 + GP;
 7. every preset family at 16, 32, 64 (stacked digits): steps/s and images/s;
 8. the launch-bound case (sqd-nsgan-digits, r3gan-digits): eager vs a whole-step CUDA graph (and the loss
    difference between the two), and torch.compile.
Options: r3gan_dir (default .r3gan), variants_batch (default 64), seconds (per timed row, default 1.5).
`--quick` (a CPU dry run) shrinks every shape to a few channels and a few images.
"""

from __future__ import annotations

import gc
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from report import Context, Report

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # bench/: zoo_speed's timing helper
import r3gan_anchor  # noqa: E402
from zoo_speed import FAMILIES, Speed, time_steps, time_trainer  # noqa: E402

from sqd.presets import resolve_config  # noqa: E402
from sqd.trainer import conv  # noqa: E402
from sqd.trainer.loop import build_trainer  # noqa: E402
from sqd.trainer.steps import GANTrainer  # noqa: E402

S = "zoo"
GiB = 2**30


def _shape(ctx: Context, preset: str, **overrides: Any) -> dict[str, Any]:
    """Overrides for a full-size R3GAN preset at its shape with synthetic batches (tiny under --quick)."""
    base: dict[str, Any] = {"dataset.name": "synthetic", "train.device": ctx.device}
    if ctx.quick:
        base.update({"model.width": 16, "train.batch": 4, "dataset.resolution": 16})
    return {**base, **overrides}


def _fmt(speed: Speed) -> str:
    mem = f", peak {speed.peak_bytes / GiB:.1f} GiB" if speed.peak_bytes is not None else ""
    return (f"{speed.seconds_per_step * 1e3:.1f} ms/step ({speed.steps_per_s:.2f} steps/s, "
            f"{speed.images_per_s:.0f} images/s{mem}, {speed.steps} steps)")


def _row(report: Report, figure: str, fn: Callable[[], str]) -> bool:
    """One row; an exception becomes an error row and the section goes on."""
    try:
        report.add(S, figure, fn())
        return True
    except Exception as exc:
        report.add(S, figure, f"error: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        report.note(f"{figure}: " + traceback.format_exc(limit=6).replace("\n", " ⏎ "))
        return False
    finally:
        _free()


def _free() -> None:
    gc.collect()  # a trainer with a CUDA graph is a reference cycle
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _time(ctx: Context, preset: str, overrides: dict[str, Any], seconds: float, warmup: int = 2) -> Speed:
    trainer = build_trainer(resolve_config(preset, overrides))
    return time_trainer(trainer, 0.05 if ctx.quick else seconds, warmup=warmup, min_steps=2)


def _speed_row(ctx: Context, report: Report, figure: str, preset: str, overrides: dict[str, Any],
               seconds: float, warmup: int = 2) -> Speed | None:
    """A timed row (an error row where it fails); the Speed for ratios."""
    got: list[Speed] = []

    def run() -> str:
        got.append(_time(ctx, preset, overrides, seconds, warmup))
        return _fmt(got[0])

    _row(report, figure, run)
    return got[0] if got else None


def _profile(ctx: Context, report: Report) -> str:
    from torch.profiler import ProfilerActivity, profile

    trainer = build_trainer(resolve_config("r3gan-celeba", _shape(ctx, "r3gan-celeba")))
    trainer.step(0)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if ctx.device == "cuda" else [])
    with profile(activities=activities) as prof:
        trainer.step(1)
        if ctx.device == "cuda":
            torch.cuda.synchronize()
    events = prof.key_averages()
    key = "self_device_time_total" if ctx.device == "cuda" else "self_cpu_time_total"
    if not hasattr(events[0], key):  # older torch: self_cuda_time_total
        key = key.replace("device", "cuda")
    total = sum(getattr(e, key) for e in events) / 1e3
    top = sorted(events, key=lambda e: getattr(e, key), reverse=True)[:12]
    lines = [f"{getattr(e, key) / 1e3:.1f} ms ×{e.count} {e.key[:90]}" for e in top]
    report.note("r3gan-celeba profile, top by self " + ("CUDA" if ctx.device == "cuda" else "CPU") + " time: "
                + " | ".join(lines))
    return f"{total:.0f} ms self time in one step; top: " + "; ".join(lines[:3])


VARIANTS: list[tuple[str, dict[str, Any], bool]] = [  # label, overrides, SQD's conv / activation derivatives
    ("default: SQD derivatives, bf16, NCHW", {}, True),
    ("SQD derivatives, bf16, channels_last", {"train.channels_last": True}, True),
    ("default without R1/R2 (no double backward)", {"reg.names": "none"}, True),
    ("SQD derivatives, fp32 (TF32), NCHW", {"train.precision": "fp32"}, True),
    ("default, TF32 off", {"train.tf32": False}, True),
    ("built-in derivatives, bf16, NCHW", {}, False),
    ("built-in derivatives, fp32 (TF32), NCHW — the pre-GPU-work path", {"train.precision": "fp32"}, False),
]


def _variants(ctx: Context, report: Report, batch: int, seconds: float, reserve: float) -> None:
    for label, overrides, fast in VARIANTS:
        if ctx.time_left() < reserve:
            report.note(f"R3GAN-64 variants: skipped from '{label}' on (time left {ctx.time_left():.0f} s)")
            return
        conv.FAST_DERIVATIVES = "cuda" if fast else "never"
        try:
            _speed_row(ctx, report, f"R3GAN-64 b{batch}: {label}", "r3gan-celeba",
                       _shape(ctx, "r3gan-celeba", **{"train.batch": batch, **overrides}), seconds)
        finally:
            conv.FAST_DERIVATIVES = "cuda"


def _anchor(ctx: Context, report: Report, build: r3gan_anchor.Build | None, r3gan_dir: Path, ext_dir: Path,
            sqd: Speed | None, seconds: float) -> None:
    device = torch.device(ctx.device)
    reference = device.type != "cuda"  # on the CPU its ops fall back to its reference code by themselves
    if build is not None:
        took, errors = build.wait(timeout=max(ctx.time_left() - 40, 5))
        report.add(S, "official R3GAN: custom ops build (background, not in step times)",
                   f"{took:.0f} s" + (f"; {'; '.join(errors)}" if errors else ""))
        if not errors:
            ok = _row(report, "official R3GAN: custom ops load",
                      lambda: f"{r3gan_anchor.load_ops(r3gan_dir, ext_dir):.1f} s")
            reference = not ok
        else:
            reference = True
        if reference:
            r3gan_anchor.use_reference_ops(r3gan_dir)
            report.note("official R3GAN timed with its reference (PyTorch) bias_act / resamplers: the CUDA ops did "
                        "not build or load")
    cfg = resolve_config("r3gan-celeba", _shape(ctx, "r3gan-celeba"))
    res, width, batch = cfg.dataset.resolution, cfg.model.width, cfg.train.batch
    timed: dict[str, float] = {}

    def run() -> str:
        official = r3gan_anchor.OfficialStep(r3gan_dir, width, res, batch, device)
        speed = time_steps(lambda i: official.step(), device, batch, 0.05 if ctx.quick else seconds, warmup=2)
        timed["s"] = speed.seconds_per_step
        ops = "reference ops" if reference else "CUDA ops"
        return f"{_fmt(speed)}; {ops}, bf16 stages, TF32 off, {official.params() / 1e6:.1f} M params"

    _row(report, f"official R3GAN at the r3gan-celeba shape ({res}×{res}, w{width}, b{batch})", run)
    if sqd is not None and "s" in timed:
        ratio = sqd.seconds_per_step / timed["s"]
        against = "its reference ops" if reference else "its CUDA ops"
        report.add(S, f"R3GAN-64 step time, SQD / official with {against} (same shape, batch, GPU)",
                   f"{ratio:.2f}×", "≤ 1.0", ratio <= 1.0)


def _gp_row(ctx: Context, report: Report, seconds: float) -> None:
    """The SQD grid's DCGAN-64 + WGAN-GP (synthetic batches; D with PyTorch's own conv derivatives, which measured
    faster than sqd.trainer.conv's here: 17.8 vs 23.1 ms/step, H200, 2026-12-04)."""
    overrides = _shape(ctx, "sqd-wgan-gp-celeba", **({"model.width": 8} if ctx.quick else {}))
    _speed_row(ctx, report, "sqd-wgan-gp-celeba shape (DCGAN 64×64, b64, GP)", "sqd-wgan-gp-celeba", overrides,
               seconds)


def _grid(ctx: Context, report: Report, seconds: float, reserve: float) -> None:
    resolutions = (16, 32) if ctx.quick else (16, 32, 64)
    for label, preset in FAMILIES:
        cells = []
        for res in resolutions:
            if ctx.time_left() < reserve:
                report.note(f"family grid: skipped from {preset} at {res}×{res} on "
                            f"(time left {ctx.time_left():.0f} s)")
                if cells:
                    report.add(S, f"{label} ({preset})", " · ".join(cells))
                return
            try:
                overrides = {"dataset.resolution": res, "train.device": ctx.device}
                if ctx.quick:
                    overrides.update({"train.batch": 4, "model.width": 8, "model.group_size": 4})
                sp = _time(ctx, preset, overrides, seconds)
                cells.append(f"{res}: {sp.steps_per_s:.1f} steps/s, {sp.images_per_s:.0f} img/s")
            except Exception as exc:
                cells.append(f"{res}: error {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
            finally:
                _free()
        report.add(S, f"{label} ({preset})", " · ".join(cells))


def _losses(trainer: GANTrainer, steps: int) -> torch.Tensor:
    return torch.stack([torch.stack([r.loss_d, r.loss_g]) for r in (trainer.step(s) for s in range(steps))]).cpu()


def _graph_rows(ctx: Context, report: Report, preset: str, seconds: float, tiny: dict[str, Any]) -> bool:
    """Eager vs whole-step CUDA graph for one preset, and whether the graph trains the same; False: out of time."""
    base = {"train.device": ctx.device, "burnin.steps": 0, **tiny}
    speeds: list[Speed | None] = []
    for mode, extra in (("eager", {}), ("CUDA graph", {"train.cuda_graphs": True})):
        if ctx.time_left() < 15:
            report.note(f"launch-bound rows: skipped from {preset} {mode} on (time left {ctx.time_left():.0f} s)")
            return False
        speeds.append(_speed_row(ctx, report, f"{preset} ({mode})", preset, {**base, **extra}, seconds, warmup=5))
    eager, graph = speeds
    if ctx.device != "cuda" or eager is None or graph is None:
        return True
    report.add(S, f"{preset}: CUDA graph speed-up", f"{eager.seconds_per_step / graph.seconds_per_step:.2f}×")

    def same() -> str:
        runs = [_losses(build_trainer(resolve_config(preset, {**base, "train.cuda_graphs": g})), 12)
                for g in (False, True)]
        diff = (runs[0] - runs[1]).abs().max().item()
        return f"max |Δloss| over 12 steps, same seed: {diff:.2e} (losses ~{runs[0].abs().mean():.2f})"

    _row(report, f"{preset}: CUDA graph vs eager, same seed", same)
    return True


def _launch_bound(ctx: Context, report: Report, seconds: float) -> None:
    """The small presets, launch-bound on a GPU: CUDA graphs and torch.compile."""
    tiny = {"train.batch": 4, "model.width": 8, "model.group_size": 4} if ctx.quick else {}
    for preset in ("sqd-nsgan-digits", "r3gan-digits"):
        if not _graph_rows(ctx, report, preset, seconds, tiny):
            return
    if ctx.time_left() > 60:
        _speed_row(ctx, report, "sqd-nsgan-digits (torch.compile, after compiling)", "sqd-nsgan-digits",
                   {"train.device": ctx.device, "train.compile": True, **tiny}, seconds)
    else:
        report.note(f"torch.compile row skipped (time left {ctx.time_left():.0f} s)")


def run(ctx: Context, report: Report) -> None:
    seconds = float(ctx.options.get("seconds", 1.5))
    r3gan_dir = Path(ctx.options.get("r3gan_dir", ".r3gan")).resolve()
    ext_dir = ctx.out / "torch_extensions"
    build = None
    if not (r3gan_dir / "R3GAN").is_dir():
        report.add(S, "official R3GAN", f"error: no R3GAN/ folder in {r3gan_dir} (carry .r3gan or set "
                                        f"--option r3gan_dir=...)")
        r3gan_dir = Path()
    elif ctx.device == "cuda":
        build = r3gan_anchor.start_build(r3gan_dir, ext_dir)
    sqd = _speed_row(ctx, report, "r3gan-celeba shape (64×64, w256, b256), SQD default", "r3gan-celeba",
                     _shape(ctx, "r3gan-celeba"), seconds)
    _row(report, "r3gan-celeba profile (one step)", lambda: _profile(ctx, report))
    batch = 4 if ctx.quick else int(ctx.options.get("variants_batch", 64))
    _variants(ctx, report, batch, seconds, reserve=110)
    if r3gan_dir != Path():
        _anchor(ctx, report, build, r3gan_dir, ext_dir, sqd, seconds)
    if ctx.time_left() > 50:
        _speed_row(ctx, report, "r3gan-cifar10 shape (32×32, w256, b512), SQD default", "r3gan-cifar10",
                   _shape(ctx, "r3gan-cifar10", **({"train.batch": 8} if ctx.quick else {})), seconds)
        _gp_row(ctx, report, min(seconds, 1.0))
    else:
        report.note(f"r3gan-cifar10 and GP rows skipped (time left {ctx.time_left():.0f} s)")
    _grid(ctx, report, min(seconds, 0.6), reserve=35)
    _launch_bound(ctx, report, min(seconds, 1.0))

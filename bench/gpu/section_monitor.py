"""GPU bench section 'monitor' (see run.py): what the Monitor costs a GPU training step, and that its angles hold.

For `sqd-nsgan-digits`, the DCGAN-64 shape (`sqd-nsgan-celeba`: 6.3 M parameters, batch 64) and the R3GAN-64 shape
(`r3gan-celeba`: width 256, batch 256), the zoo's real training step runs in alternating blocks without and with
`Monitor.step` (a private Valkey as the bus, system metrics on). CelebA is not on the GPU machine: the celeba
shapes train on random images of the right shape kept on the device (the data path is not what is measured).
Printed per preset and per mode (CUDA graph on; eager, i.e. SQD_TRAINER__CUDA_GRAPHS=0):

* plain and monitored step time (median of the blocks), wall overhead = monitored / plain − 1 per adjacent pair
  of blocks (median and interquartile range), and the host µs inside one `mon.step` (median);
* a note with that host time by phase (phases.py: moved check, input keys, the copy into the static slots,
  graph replay, row, flush), from one more monitored block with timing wrappers — what to look at before
  changing the probe;

then two checks: the graph path's angles against `weight_angle` in float64 (a real training run, and a rotation
of 1e-7 rad with a 10⁴× larger radial change), and that moving the parameters makes the Monitor take fresh
snapshots and capture again (never a wrong angle). R3GAN-64 steps take seconds: it runs as many 1-step pairs as
its share of the budget allows (graph mode only), which the report says.

    .venv/bin/python bench/gpu/run.py --device cpu --quick --sections monitor    # dry run here
"""

from __future__ import annotations

import math
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any
from unittest import mock

import torch
from phases import monitored_phases
from report import Context, Report
from torch import nn

from sqd.embedded_redis import EmbeddedRedis
from sqd.presets import resolve_config
from sqd.settings import Settings, TrainerSettings
from sqd.trainer import loop
from sqd.trainer.monitor import Monitor
from sqd.trainer.stability import weight_angle
from sqd.trainer.step_probe import DeviceProbe, HostProbe, make_probe

# (label, preset, wall-overhead goal in %), and each one's share of the section's time
PRESETS = (("sqd-nsgan-digits", "sqd-nsgan-digits", 2.0),
           ("DCGAN-64 (sqd-nsgan-celeba shape)", "sqd-nsgan-celeba", 0.5),
           ("R3GAN-64 (r3gan-celeba shape)", "r3gan-celeba", 0.5))
SHARES = (0.15, 0.3, 0.3)
TARGET_S = 90.0


class RandomImages:
    """Random images of the dataset's shape, already on the device: the monitored step, not the loader."""

    def __init__(self, cfg: Any, device: torch.device, batch: int):
        shape = (4 * batch, cfg.channels, cfg.resolution, cfg.resolution)
        self.pool = torch.rand(shape, device=device) * 2 - 1

    def __len__(self) -> int:
        return 1_000_000

    def sample(self, n: int, generator: torch.Generator) -> torch.Tensor:
        start = int(torch.randint(0, self.pool.shape[0] - n + 1, (1,), generator=generator))
        return self.pool[start:start + n]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def quantiles(xs: list[float]) -> tuple[float, float, float]:
    s = sorted(xs)
    return statistics.median(s), s[len(s) // 4], s[(3 * len(s)) // 4]


def build(preset: str, ctx: Context, settings: Settings) -> Any:
    overrides: dict[str, Any] = {"train.device": ctx.device}
    if ctx.quick:  # a CPU dry run: the same code paths on narrow nets
        overrides.update({"train.batch": 4, "model.width": 8})
    cfg = resolve_config(preset, overrides)
    if cfg.dataset.name == "stacked_digits":
        return loop.build_trainer(cfg, settings)
    with mock.patch.object(loop, "build_dataset", lambda d, home: RandomImages(d, loop.resolve_device(ctx.device),
                                                                                 cfg.train.batch)):
        return loop.build_trainer(cfg, settings)


def paired(trainer: Any, mon: Monitor, pairs: int, block: int, start: int) -> dict[str, Any]:
    plain, monitored, calls, overhead = [], [], [], []
    step = start
    for _ in range(pairs):
        times = []
        for on in (False, True):
            sync(trainer.device)
            t0 = time.perf_counter()
            for _ in range(block):
                r = trainer.step(step)
                if on:
                    t = time.perf_counter()
                    mon.step(step, epoch=0, losses={"D": r.loss_d, "G": r.loss_g}, lr=trainer.lr, metrics=r.metrics)
                    calls.append(time.perf_counter() - t)
                step += 1
            sync(trainer.device)
            times.append((time.perf_counter() - t0) / block)
        plain.append(times[0])
        monitored.append(times[1])
        overhead.append(100 * (times[1] / times[0] - 1))
    return {"plain": statistics.median(plain), "mon": statistics.median(monitored), "over": quantiles(overhead),
            "host_us": 1e6 * statistics.median(calls), "step": step, "pairs": pairs, "block": block}


def measure(label: str, preset: str, goal_pct: float, ctx: Context, report: Report, settings: Settings,
            share_s: float) -> None:
    trainer = build(preset, ctx, settings)
    step = 0
    for _ in range(2):  # warm-up: allocator, cudnn, first-call overheads
        trainer.step(step)
        step += 1
    sync(trainer.device)
    t = time.perf_counter()
    trainer.step(step)
    sync(trainer.device)
    step_s = time.perf_counter() - t
    step += 1
    slow = step_s > 0.2
    modes = (True,) if slow or ctx.device != "cuda" else (True, False)  # graphs or not: a GPU question
    for graphs in modes:
        s = settings.model_copy(update={"trainer": settings.trainer.model_copy(update={"cuda_graphs": graphs})})
        mon = Monitor(trainer.G, trainer.D, name=f"gpu bench {preset}", checkpoint_every=None,
                      flush_every=trainer.cfg.train.log_every, settings=s, batch_size=trainer.cfg.train.batch)
        budget = share_s / len(modes)
        block = 1 if slow else max(5, min(25, int(0.05 / max(step_s, 1e-4))))
        pairs = max(1, min(12, int(budget / (2 * block * step_s * 1.1)) - 1))
        if ctx.quick:
            pairs, block = (1, 1) if slow else (2, 2)
        with mon:
            for _ in range(min(block, 2)):  # the first monitored steps (one per snapshot row) capture the graphs
                r = trainer.step(step)
                mon.step(step, epoch=0, losses={"D": r.loss_d, "G": r.loss_g})
                step += 1
            res = paired(trainer, mon, pairs, block, step)
            step = res["step"]
            phases, step = monitored_phases(trainer, mon, step, block)
            probe = mon.probe
        mode = ("graph" if probe.graphed else "eager") if isinstance(probe, DeviceProbe) else "CPU path"
        if graphs and isinstance(probe, DeviceProbe) and not probe.graphed:
            report.note(f"monitor {label}: CUDA graph capture failed, eager fallback: {probe.runner.failed}")
        report.note(f"monitor {label}, {mode}: host time by phase, median per call: {phases}")
        med, lo, hi = res["over"]
        is_cuda = ctx.device == "cuda"
        times = f"{1e3 * res['plain']:.2f} / {1e3 * res['mon']:.2f} ms"
        report.add("monitor", f"{label}, {mode}: plain / monitored step",
                   f"{times} ({res['pairs']} pairs × {res['block']} steps)")
        report.add("monitor", f"{label}, {mode}: wall overhead, median (IQR)", f"{med:+.2f} % ({lo:+.2f} … {hi:+.2f})",
                   f"< {goal_pct:g} %", (med < goal_pct) if is_cuda and graphs else None)
        host_goal = "≤ 50 µs" if preset == "sqd-nsgan-digits" and is_cuda else ""
        report.add("monitor", f"{label}, {mode}: host time in mon.step", f"{res['host_us']:.0f} µs", host_goal,
                   (res["host_us"] <= 50) if host_goal and graphs else None)
        if slow:
            report.note(f"monitor {label}: a step takes {step_s:.2f} s, so {res['pairs']} pairs of 1 step, graph mode "
                        "only (the eager mode is timed on the faster shapes)")
    del trainer
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def rotated(a: torch.Tensor, theta: float, scale: float) -> torch.Tensor:
    a64 = a.double()
    u = torch.randn(a.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64).to(a.device)
    u -= (u @ a64) / (a64 @ a64) * a64
    u *= a64.norm() / u.norm()
    return ((a64 * math.cos(theta) + u * math.sin(theta)) * scale).float()


def angles(probe: HostProbe | DeviceProbe) -> dict[int, float]:
    return {s: v for k, s, v, _, _ in probe.take().points() if k == "angle/G"}


def accuracy(ctx: Context, report: Report, settings: Settings) -> None:
    """Graph-path angles of a real DCGAN digits run and of a radial-heavy rotation against float64 weight_angle."""
    trainer = build("sqd-nsgan-digits", ctx, settings)
    probe = make_probe({"G": trainer.G, "D": trainer.D}, 64, True)
    worst, ref = 0.0, []
    for step in range(12):
        before = [p.detach().clone() for p in trainer.G.parameters() if p.requires_grad]
        r = trainer.step(step)
        ref.append(weight_angle(before, [p for p in trainer.G.parameters() if p.requires_grad]))
        probe.step(step, 0, {"loss/G": r.loss_g})
    got = angles(probe)
    worst = max(abs(got[s] / a - 1) for s, a in enumerate(ref))
    mode = "graph" if isinstance(probe, DeviceProbe) and probe.graphed else type(probe).__name__
    report.add("monitor", f"angle vs float64 weight_angle, DCGAN digits training ({mode})",
               f"max rel. error {worst:.1e}", "≤ 1e-6", worst <= 1e-6)

    device = trainer.device
    p = nn.Parameter(torch.randn(1 << 20, generator=torch.Generator().manual_seed(2)).to(device))
    net = nn.Module()
    net.w = p
    rot = make_probe({"G": net}, 8, False)
    a = p.detach().clone()
    b = rotated(a, 1e-7, 1.001)
    with torch.no_grad():
        p.copy_(b)
    rot.step(0, None, {})
    got1 = angles(rot)[0]
    err = abs(got1 / weight_angle(a, b) - 1)
    report.add("monitor", "angle 1e-7 rad, radial change 10⁴× tangential, 1 M params", f"rel. error {err:.1e}",
               "≤ 1e-5", err <= 1e-5)

    moved = move_check(trainer)
    report.add("monitor", "parameters moved (.to() round trip, p.data swap) → fresh snapshots, re-capture",
               moved, "no wrong angle", moved.startswith("ok"))


def move_check(trainer: Any) -> str:
    G, D = trainer.G, trainer.D
    probe = make_probe({"G": G, "D": D}, 64, True)
    for step in range(3):
        r = trainer.step(step)
        probe.step(step, 0, {"loss/G": r.loss_g})
    if trainer.device.type == "cuda":
        G.to("cpu").to(trainer.device)
    else:  # a CPU dry run: a dtype round trip gives new storage too
        G.double().float()
    if not probe.moved():
        return "NOT detected after .to()"
    fresh = make_probe({"G": G, "D": D}, 64, True, continues=False)  # what the Monitor does on a move
    ref = []
    for step in range(3, 6):
        before = [p.detach().clone() for p in G.parameters() if p.requires_grad]
        r = trainer.step(step)
        ref.append(weight_angle(before, [p for p in G.parameters() if p.requires_grad]))
        fresh.step(step, 0, {"loss/G": r.loss_g})
    got = angles(fresh)
    if 3 in got:
        return "an angle was reported across the move"
    worst = max(abs(got[s] / ref[s - 3] - 1) for s in (4, 5))
    weight = next(p for p in G.parameters() if p.requires_grad)
    weight.data = weight.data.clone()
    swapped = fresh.moved()
    captures = fresh.runner.captures if isinstance(fresh, DeviceProbe) else 0
    return (f"ok: detected, {captures} captures after the move, angles after it within {worst:.0e}, "
            f"p.data swap detected: {swapped}") if swapped and worst < 1e-6 else f"FAILED (swap {swapped}, {worst})"


def host_profile(ctx: Context, report: Report, settings: Settings, calls: int = 200) -> None:
    """Where the host time of `mon.step` goes (sqd-nsgan-digits): cProfile over `calls` calls, top by own time."""
    import cProfile
    import pstats

    trainer = build("sqd-nsgan-digits", ctx, settings)
    mon = Monitor(trainer.G, trainer.D, name="gpu bench host profile", checkpoint_every=None,
                  flush_every=trainer.cfg.train.log_every, settings=settings, batch_size=trainer.cfg.train.batch)
    profiler = cProfile.Profile()
    with mon:
        for step in range(calls + 10):
            r = trainer.step(step)
            if step >= 10:
                profiler.enable()
            mon.step(step, epoch=0, losses={"D": r.loss_d, "G": r.loss_g}, lr=trainer.lr, metrics=r.metrics)
            profiler.disable()
    stats = pstats.Stats(profiler)
    rows = sorted(stats.stats.items(), key=lambda kv: kv[1][2], reverse=True)[:10]  # type: ignore[attr-defined]
    total = sum(v[2] for v in stats.stats.values()) / calls  # type: ignore[attr-defined]
    top = [f"{1e6 * v[2] / calls:.0f} µs {k[2]} ({Path(k[0]).name}:{k[1]})" for k, v in rows]
    report.note(f"monitor host profile, sqd-nsgan-digits, {calls} calls, {1e6 * total:.0f} µs own time per call "
                f"under cProfile; top: " + " | ".join(top))


def run(ctx: Context, report: Report) -> None:
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix="sqd-gpu-monitor-") as home:
        valkey = EmbeddedRedis(Path(home) / "valkey")
        url = valkey.start()
        try:
            settings = Settings(home=Path(home), redis_url=url, trainer=TrainerSettings())
            budget = min(ctx.budget_s, TARGET_S)
            for (label, preset, goal), share in zip(PRESETS, SHARES, strict=True):
                if ctx.time_left() < 10:
                    report.note(f"monitor {label}: skipped, the section's budget is spent")
                    continue
                measure(label, preset, goal, ctx, report, settings, share * budget)
            accuracy(ctx, report, settings)
            if ctx.time_left() > 5:
                host_profile(ctx, report, settings)
        finally:
            valkey.stop()
    report.note(f"monitor: section took {time.monotonic() - started:.0f} s on {ctx.device}")

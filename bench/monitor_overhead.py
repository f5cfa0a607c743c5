"""Monitor overhead as a share of the training step, for the DCGAN and R3GAN digits presets.

The zoo's real training step (`GANTrainer.step`) runs in alternating blocks without and with `Monitor.step`
(angles of G and D, gradient norms, losses, flushes to a private Valkey every `log_every` steps). Printed per preset:

* host µs: median wall time of one `mon.step` call, in microseconds (what the training thread pays per step), and
  its CPU time (the training thread's, `time.thread_time`), which preemption on a loaded machine does not inflate;
* in-loop: time spent inside `mon.step` / time of the training step;
* CPU A/B: process CPU time per step with the Monitor (its sender and probe worker threads included) / without,
  minus 1, each monitored block against the plain block before it (median and interquartile range over the
  rounds) — CPU time, not wall time, so that other load on a shared machine does not swamp a 1 % effect;
* wall A/B: the same with wall time per step — what training pays (by default the step is measured in the
  training thread; `--worker`: in the probe worker thread on another core, as `SQD_TRAINER__MONITOR_THREAD=true`
  does);
* Monitor CPU: the CPU time the Monitor itself spends per step — the training thread's inside `mon.step` plus its
  probe worker and sender threads' (per-thread CPU clocks) over the monitored blocks — as a share of a plain
  step's process CPU time: direct accounting, which resolves what the A/B's scatter hides (it leaves out indirect
  costs such as the caches the Monitor's copies evict);
* first ms: the first `mon.step` of the process (with its flush), in the warm-up — on a CPU it loads the compiled
  pass of sqd.trainer.host_sums (compiles it, the first time on a machine); not in the figures above;
* checkpoint: one `torch.save` of the checkpoint dict in the training thread, amortized over the preset's
  checkpoint interval (its `checkpoint_every` steps, or its epoch cadence in steps);
* `--phases`: then one more block with timing wrappers around the phases of `mon.step` (bench/gpu/phases.py),
  printed as one line per preset — where the host time goes (each wrapper adds ~1 µs);
* sys: one system-metrics sample (sqd.trainer.system_metrics, in the sender thread) in µs, and as a share of the
  sampling interval (`SQD_TRAINER__SYSTEM_METRICS_S`, 5 s) — it runs during the monitored blocks, so the CPU A/B
  includes it.

usage: .venv/bin/python bench/monitor_overhead.py [--rounds 12] [--block 25] [--threads 1] [--presets …] [--worker]
       [--phases]
On a GPU machine the presets run on cuda (step times are synchronised at block ends only).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch
from gpu.phases import monitored_phases

from sqd.embedded_redis import EmbeddedRedis
from sqd.presets import resolve_config
from sqd.settings import Settings
from sqd.trainer.loop import build_trainer
from sqd.trainer.monitor import Monitor

try:  # absent before the system metrics (to time an older checkout with this script)
    from sqd.trainer.system_metrics import SystemSampler
except ImportError:
    SystemSampler = None  # type: ignore[assignment,misc]

PRESETS = ("sqd-nsgan-digits", "r3gan-digits")


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def helper_cpu_s() -> float:
    """CPU seconds so far of the Monitor's own threads (probe worker, sender), by their per-thread clocks."""
    total = 0.0
    for t in threading.enumerate():
        if t.ident is not None and t.name.startswith(("sqd-probe", "sqd-monitor-")):
            try:
                total += time.clock_gettime(time.pthread_getcpuclockid(t.ident))
            except OSError:  # ended meanwhile
                pass
    return total


def checkpoint_interval(cfg: Any, trainer: Any) -> float:
    """Steps between the preset's checkpoints: its step cadence, or its epoch cadence in steps (inf: none)."""
    if cfg.train.checkpoint_every:
        return float(cfg.train.checkpoint_every)
    if cfg.train.checkpoint_every_epochs:
        return cfg.train.checkpoint_every_epochs * len(trainer.data) / cfg.train.batch
    return math.inf


def measure(preset: str, settings: Settings, rounds: int, block: int, threads: int, phases: bool
            ) -> dict[str, Any]:
    cfg = resolve_config(preset, {"train.threads": threads})
    trainer = build_trainer(cfg, settings)
    mon = Monitor(trainer.G, trainer.D, name=f"bench {preset}", config=cfg.model_dump(mode="json"),
                  generator_spec=trainer.g_spec, checkpoint_every=None, checkpoint_state=trainer.state_dict,
                  flush_every=cfg.train.log_every, settings=settings)
    mon.batch_size = cfg.train.batch
    step = 0
    first_s = 0.0
    for _ in range(5):  # warm-up: allocator, first-call overheads (the Monitor's: loading its compiled CPU pass)
        result = trainer.step(step)
        t = time.perf_counter()
        mon.step(step, epoch=0, losses={"D": result.loss_d, "G": result.loss_g}, lr=trainer.lr, metrics=result.metrics)
        mon.flush()
        first_s = first_s or time.perf_counter() - t
        step += 1
    plain_cpu, mon_cpu, plain_wall, mon_wall, in_loop, calls, call_cpu, helpers = [], [], [], [], [], [], [], []
    with mon:
        for _ in range(rounds):
            for monitored in (False, True):
                sync(trainer.device)
                c0, w0, inside, h0 = time.process_time(), time.perf_counter(), 0.0, helper_cpu_s()
                for _ in range(block):
                    result = trainer.step(step)
                    if monitored:
                        t, c = time.perf_counter(), time.thread_time()
                        mon.step(step, epoch=0, losses={"D": result.loss_d, "G": result.loss_g}, lr=trainer.lr,
                                 metrics=result.metrics)
                        calls.append(time.perf_counter() - t)
                        call_cpu.append(time.thread_time() - c)
                        inside += calls[-1]
                    step += 1
                sync(trainer.device)
                cpu, wall = (time.process_time() - c0) / block, (time.perf_counter() - w0) / block
                if monitored:
                    helpers.append((helper_cpu_s() - h0) / block)
                    mon_cpu.append(cpu)
                    mon_wall.append(wall)
                    in_loop.append(inside / block / max(wall - inside / block, 1e-12))
                else:
                    plain_cpu.append(cpu)
                    plain_wall.append(wall)
        breakdown = ""
        if phases:
            breakdown, step = monitored_phases(trainer, mon, step, block)
        t = time.perf_counter()
        mon.checkpoint(step)
        checkpoint_s = time.perf_counter() - t
    step_s = statistics.median(plain_wall)
    # each monitored block against the plain block just before it: drifts in machine load cancel out
    paired = sorted(100 * (m / p - 1) for m, p in zip(mon_cpu, plain_cpu, strict=True))
    walls = sorted(100 * (m / p - 1) for m, p in zip(mon_wall, plain_wall, strict=True))
    return {"wall_ab_pct": statistics.median(walls), "wall_ab_lo": walls[len(walls) // 4],
            "wall_ab_hi": walls[(3 * len(walls)) // 4],
            "step_ms": 1e3 * step_s, "host_us": 1e6 * statistics.median(calls), "first_ms": 1e3 * first_s,
            "cpu_us": 1e6 * statistics.median(call_cpu),
            "own_cpu_pct": 100 * (statistics.mean(call_cpu) + statistics.mean(helpers)) / statistics.median(plain_cpu),
            "in_loop_pct": 100 * statistics.median(in_loop),
            "cpu_ab_pct": statistics.median(paired), "cpu_ab_lo": paired[len(paired) // 4],
            "cpu_ab_hi": paired[(3 * len(paired)) // 4],
            "checkpoint_pct": 100 * checkpoint_s / (checkpoint_interval(cfg, trainer) * step_s),
            "params_g": sum(p.numel() for p in trainer.G.parameters()),
            "params_d": sum(p.numel() for p in trainer.D.parameters()), "device": str(trainer.device),
            "phases": breakdown}


def system_sample_us(n: int = 50) -> float:
    sampler = SystemSampler(lambda: 0, 64)
    sampler.sample()  # opens NVML where there is one
    t = time.perf_counter()
    for _ in range(n):
        sampler.sample()
    sampler.close()
    return 1e6 * (time.perf_counter() - t) / n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--block", type=int, default=25)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--presets", nargs="+", default=list(PRESETS))
    parser.add_argument("--worker", action="store_true", help="CPU: measure in the probe worker thread")
    parser.add_argument("--phases", action="store_true", help="also time the phases of mon.step (one more block)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="sqd-bench-", dir="/tmp") as home:
        valkey = EmbeddedRedis(Path(home) / "valkey")
        url = valkey.start()
        try:
            settings = Settings(home=Path(home), redis_url=url)
            settings.trainer.monitor_thread = args.worker
            print(f"Monitor overhead ({args.rounds} rounds × {args.block} steps each way, "
                  f"{args.threads} torch thread(s), {os.cpu_count()} cores, CPU steps measured "
                  f"{'in the probe worker thread' if args.worker else 'in the training thread'})")
            print(f"{'preset':18} {'device':6} {'params G/D':>14} {'step ms':>8} {'host µs':>8} {'CPU µs':>7} "
                  f"{'in-loop %':>9} {'Monitor CPU %':>13} {'CPU A/B % (IQR)':>22} {'wall A/B % (IQR)':>22} "
                  f"{'ckpt %':>7} {'first ms':>8}")
            for preset in args.presets:
                r = measure(preset, settings, args.rounds, args.block, args.threads, args.phases)
                print(f"{preset:18} {r['device']:6} {r['params_g']:>7,}/{r['params_d']:<7,}"
                      f"{r['step_ms']:>8.1f} {r['host_us']:>8.0f} {r['cpu_us']:>7.0f} {r['in_loop_pct']:>9.2f} "
                      f"{r['own_cpu_pct']:>13.2f} "
                      f"{r['cpu_ab_pct']:>7.2f} ({r['cpu_ab_lo']:>5.1f} to {r['cpu_ab_hi']:>4.1f}) "
                      f"{r['wall_ab_pct']:>7.2f} ({r['wall_ab_lo']:>5.1f} to {r['wall_ab_hi']:>4.1f}) "
                      f"{r['checkpoint_pct']:>7.2f} {r['first_ms']:>8.0f}")
                if r["phases"]:
                    print(f"  phases (median µs per call): {r['phases']}")
            if SystemSampler is not None:
                sample_us = system_sample_us()
                print(f"system metrics: one sample {sample_us:.0f} µs in the sender thread, every "
                      f"{settings.trainer.system_metrics_s:g} s = "
                      f"{100 * sample_us * 1e-6 / settings.trainer.system_metrics_s:.4f} % of one core")
        finally:
            valkey.stop()


if __name__ == "__main__":
    main()

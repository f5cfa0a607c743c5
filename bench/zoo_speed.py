"""Training speed of each preset family (generator steps/s and images/s) at 16×16, 32×32 and 64×64 on stacked
digits, on the CPU or a GPU.

    .venv/bin/python bench/zoo_speed.py [--seconds 8] [--threads N] [--device cpu|cuda] [--resolutions 16 32 64]
        [--set train.precision=fp32 ...] [--derivatives cuda|never|always] [--presets …]

Each cell: the family's stacked-digits preset at its own width and batch, resolution overridden, the speed
defaults of `train.*` for the device (bf16 + channels_last on CUDA, fp32 on the CPU) unless --set says
otherwise; warm-up steps, then as many steps as fit in --seconds. images/s counts the real images the step's
D updates see (batch × n_dis). --derivatives sets sqd.trainer.conv.FAST_DERIVATIVES: where the hand-written
conv / activation derivatives run (default cuda; never = PyTorch's everywhere, always = also on the CPU).
Prints a Markdown table (docs/zoo.md carries the figures). `time_trainer` is shared with the GPU bench
(bench/gpu/section_zoo.py).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from sqd.presets import resolve_config
from sqd.trainer import conv
from sqd.trainer.loop import build_trainer
from sqd.trainer.steps import GANTrainer

FAMILIES = [
    ("SQD DCGAN, NSGAN", "sqd-nsgan-digits"),
    ("SQD DCGAN, WGAN-GP", "sqd-wgan-gp-digits"),
    ("R3GAN (RpGAN+R1+R2, EMA)", "r3gan-digits"),
    ("GraN-D ResNet", "grand-digits"),
    ("GraN-C ResNet", "granc-digits"),
    ("ICR WGAN + ACGD", "icr-wgan-acgd-digits"),
    ("ICR WGAN + Adam", "icr-wgan-adam-digits"),
]


@dataclass
class Speed:
    seconds_per_step: float
    steps: int
    images_per_step: int
    peak_bytes: int | None  # CUDA only

    @property
    def steps_per_s(self) -> float:
        return 1 / self.seconds_per_step

    @property
    def images_per_s(self) -> float:
        return self.images_per_step / self.seconds_per_step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_steps(step: Callable[[int], object], device: torch.device, images_per_step: int, seconds: float,
               warmup: int = 3, min_steps: int = 2, max_steps: int = 10_000) -> Speed:
    """Warm-up steps (cuDNN autotuning, allocator, a CUDA-graph capture), then about `seconds` of steps, sized
    from the last warm-up step so the device queue never runs far ahead of the clock."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    for i in range(warmup):
        _sync(device)
        start = time.perf_counter()
        step(i)
    _sync(device)
    estimate = max(time.perf_counter() - start, 1e-6)
    n = max(min_steps, min(max_steps, int(seconds / estimate)))
    start = time.perf_counter()
    for i in range(warmup, warmup + n):
        step(i)
    _sync(device)
    elapsed = time.perf_counter() - start
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return Speed(elapsed / n, n, images_per_step, peak)


def time_trainer(trainer: GANTrainer, seconds: float, warmup: int = 3, min_steps: int = 2) -> Speed:
    """`time_steps` of a trainer; images: the real images its D updates see per step (batch × n_dis)."""
    cfg = trainer.cfg
    images = cfg.train.batch * (cfg.optim.n_dis if cfg.optim.name == "adam" else 1)
    return time_steps(trainer.step, trainer.device, images, seconds, warmup, min_steps)


def measure(preset: str, resolution: int, seconds: float, overrides: dict[str, Any]) -> tuple[Speed, int, str]:
    cfg = resolve_config(preset, {"dataset.resolution": resolution, **overrides})
    trainer = build_trainer(cfg)
    speed = time_trainer(trainer, seconds)
    params = sum(p.numel() for p in trainer.G.parameters()) + sum(p.numel() for p in trainer.D.parameters())
    shape = f"w{cfg.model.width} b{cfg.train.batch}" + (f" n_dis {cfg.optim.n_dis}" if cfg.optim.n_dis > 1 else "")
    return speed, params, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=None, help="default: the loop's (half the cores, 1–4)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--resolutions", type=int, nargs="+", default=[16, 32, 64])
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config overrides")
    parser.add_argument("--presets", nargs="+", default=[p for _, p in FAMILIES], help="a subset of the rows")
    parser.add_argument("--derivatives", choices=["cuda", "never", "always"], default="cuda",
                        help="where sqd.trainer.conv's derivatives run (never: PyTorch's conv double backward)")
    args = parser.parse_args()
    conv.FAST_DERIVATIVES = args.derivatives
    overrides: dict[str, Any] = {"train.device": args.device, **dict(s.split("=", 1) for s in args.set)}
    if args.threads:
        overrides["train.threads"] = args.threads
    print(f"# zoo speed — {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, device {args.device}, "
          f"SQD conv derivatives: {args.derivatives}"
          + (f" ({torch.cuda.get_device_name()})" if args.device.startswith("cuda") else ""))
    cells = " | ".join(f"steps/s {r} | images/s {r}" for r in args.resolutions)
    print(f"| family | preset | size | G+D params ({args.resolutions[0]}) | {cells} |")
    print("|---|---|---|---|" + "---|---|" * len(args.resolutions))
    for label, preset in (f for f in FAMILIES if f[1] in args.presets):
        speeds = []
        params, shape = 0, ""
        for i, resolution in enumerate(args.resolutions):
            speed, p, s = measure(preset, resolution, args.seconds, overrides)
            speeds.append(f"{speed.steps_per_s:.3g} | {speed.images_per_s:.3g}")
            if i == 0:
                params, shape = p, s
        print(f"| {label} | {preset} | {shape} | {params / 1e3:.0f} k | {' | '.join(speeds)} |", flush=True)
    plan = build_trainer(resolve_config(FAMILIES[0][1], overrides)).plan
    print(f"threads: {torch.get_num_threads()}, plan: {plan.describe()}")


if __name__ == "__main__":
    main()

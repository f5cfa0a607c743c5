"""Training speed of each preset family (generator steps/s, CPU) at 16×16 and 32×32 on stacked digits.

    .venv/bin/python bench/zoo_speed.py [--seconds 8] [--threads N] [--device cpu]

Each row: the family's stacked-digits preset at its own width and batch, resolution overridden; 3 warm-up steps,
then as many steps as fit in --seconds. Prints a Markdown table (docs/zoo.md carries the figures).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from sqd.presets import resolve_config
from sqd.trainer.loop import build_trainer

FAMILIES = [
    ("SQD DCGAN, NSGAN", "sqd-nsgan-digits"),
    ("SQD DCGAN, WGAN-GP", "sqd-wgan-gp-digits"),
    ("R3GAN (RpGAN+R1+R2, EMA)", "r3gan-digits"),
    ("GraN-D ResNet", "grand-digits"),
    ("GraN-C ResNet", "granc-digits"),
    ("ICR WGAN + ACGD", "icr-wgan-acgd-digits"),
    ("ICR WGAN + Adam", "icr-wgan-adam-digits"),
]


def measure(preset: str, resolution: int, seconds: float, threads: int | None, device: str) -> tuple[float, int, str]:
    overrides: dict[str, object] = {"dataset.resolution": resolution, "train.device": device}
    if threads:
        overrides["train.threads"] = threads
    cfg = resolve_config(preset, overrides)
    trainer = build_trainer(cfg)
    for step in range(3):
        trainer.step(step)
    sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
    sync()
    start, steps = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        trainer.step(3 + steps)
        steps += 1
    sync()
    elapsed = time.perf_counter() - start
    params = sum(p.numel() for p in trainer.G.parameters()) + sum(p.numel() for p in trainer.D.parameters())
    shape = f"w{cfg.model.width} b{cfg.train.batch}" + (f" n_dis {cfg.optim.n_dis}" if cfg.optim.n_dis > 1 else "")
    return steps / elapsed, params, shape


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--threads", type=int, default=None, help="default: the loop's (half the cores, 1–4)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    print(f"# zoo speed — {time.strftime('%Y-%m-%d')}, {platform.machine()}, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.1f}, torch {torch.__version__}, device {args.device}")
    print("| family | preset | size | G+D params (16) | steps/s 16×16 | steps/s 32×32 |")
    print("|---|---|---|---|---|---|")
    for label, preset in FAMILIES:
        fast, params, shape = measure(preset, 16, args.seconds, args.threads, args.device)
        slow, _, _ = measure(preset, 32, args.seconds, args.threads, args.device)
        print(f"| {label} | {preset} | {shape} | {params / 1e3:.0f} k | {fast:.1f} | {slow:.1f} |", flush=True)
    print(f"threads: {torch.get_num_threads()}")


if __name__ == "__main__":
    main()

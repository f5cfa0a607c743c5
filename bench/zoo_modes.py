"""Seed 000's StackedMNIST claim in miniature: modes covered and reverse KL on stacked digits after a fixed budget,
for RpGAN + R1 + R2 (R3GAN) vs RpGAN + R1 alone vs the classic NS loss + R1 + R2, on the same R3GAN net.

    .venv/bin/python bench/zoo_modes.py [--steps 1500] [--samples 10000] [--seed 0]

Each run trains its preset for --steps generator steps (burn-in scaled to a quarter of the budget), then samples
the EMA generator; the worker's digits classifier (sqd.worker.digits) gives each channel's digit → mode id.
A run whose losses turn non-finite, or whose D gradient on fakes explodes, is reported as diverged (Table 4's
"Fail"). Paper (full StackedMNIST, 32×32, batch 512): RpGAN+R1+R2 1000 modes, KL 0.0781; GAN+R1+R2 693, 0.9270;
RpGAN+R1 and GAN+R1 fail.
"""

from __future__ import annotations

import argparse
import math
import os
import time

import numpy as np
import torch

from sqd.presets import resolve_config
from sqd.settings import get_settings
from sqd.trainer.loop import build_trainer
from sqd.trainer.steps import GANTrainer
from sqd.worker.digits import DigitsProfile
from sqd.worker.estimators import reverse_kl

RUNS = [
    ("RpGAN + R1 + R2 (R3GAN)", "r3gan-digits"),
    ("RpGAN + R1", "r3gan-digits-r1"),
    ("NSGAN + R1 + R2", "r3gan-digits-nsgan"),
]
EXPLODED = 1e4  # ‖∇ₓD‖ on fakes this large: D has blown up (seed 000, Fig. 2)


def fake_gradient_norm(trainer: GANTrainer) -> float:
    z = torch.randn(64, trainer.cfg.model.z_dim, device=trainer.device)
    fake = trainer.G(z).detach().requires_grad_(True)
    (grad,) = torch.autograd.grad(trainer.D(fake).sum(), fake)
    return float(grad.flatten(1).norm(dim=1).mean())


def run(preset: str, steps: int, samples: int, seed: int, profile: DigitsProfile) -> dict[str, float | str]:
    cfg = resolve_config(preset, {"train.steps": steps, "burnin.steps": steps // 4, "train.seed": seed})
    trainer = build_trainer(cfg)
    start, status, grad_norm = time.perf_counter(), "ok", math.nan
    for step in range(steps):
        result = trainer.step(step)
        if step % 100 == 99 or step == steps - 1:
            grad_norm = fake_gradient_norm(trainer)
            if not (math.isfinite(float(result.loss_d)) and math.isfinite(grad_norm)) or grad_norm > EXPLODED:
                status = f"diverged at step {step}"
                break
    seconds = time.perf_counter() - start
    out: dict[str, float | str] = {"status": status, "seconds": seconds, "grad_fake": grad_norm}
    if status != "ok":
        return out
    with torch.no_grad():
        images = torch.cat([trainer.sampler(torch.randn(1000, cfg.model.z_dim, device=trainer.device)).clamp(-1, 1)
                            for _ in range(samples // 1000)]).cpu()
    modes, confidence, _ = profile.classify(images)
    counts = np.bincount(modes.numpy(), minlength=1000)
    out.update(modes=float(np.count_nonzero(counts)), reverse_kl=reverse_kl(counts),
               quality=float(confidence.mean()))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--samples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    profile = DigitsProfile(get_settings())
    print(f"# zoo modes — {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
          f"{args.steps} steps × batch 64 on 16×16 stacked digits, {args.samples} EMA samples, seed {args.seed}; "
          f"digit classifier held-out accuracy {profile.classifier.accuracy:.3f}")
    print("| loss | preset | modes (of 1000) | reverse KL | mean max-prob | ‖∇D(fake)‖ | status | minutes |")
    print("|---|---|---|---|---|---|---|---|")
    for label, preset in RUNS:
        r = run(preset, args.steps, args.samples, args.seed, profile)
        modes = f"{r['modes']:.0f}" if "modes" in r else "—"
        kl = f"{r['reverse_kl']:.3f}" if "reverse_kl" in r else "—"
        quality = f"{r['quality']:.3f}" if "quality" in r else "—"
        print(f"| {label} | {preset} | {modes} | {kl} | {quality} | {float(r['grad_fake']):.3g} | {r['status']} | "
              f"{float(r['seconds']) / 60:.1f} |", flush=True)


if __name__ == "__main__":
    main()

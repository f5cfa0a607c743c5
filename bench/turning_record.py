"""Record real stacked-digit runs of the demo presets for the turning-point benchmark (bench/data/*.npz).

Each run trains with sqd.trainer.loop.train and, instead of a Monitor + bus, a recorder that computes the same
signals in-process: per-step and per-epoch weight angles with the Monitor's `AngleTracker`, the losses, and the
worker's `digits` evaluation of 1000 samples (eval/quality, eval/diversity, eval/modes_covered), as a worker would
compute them from the checkpoints the preset asks for (every `train.checkpoint_every` steps and/or at the end of
every `train.checkpoint_every_epochs`-th epoch).

Label (with hindsight, which the online detector never has): a run turned when its diversity falls below 75% of
its best so far; the turning step is the last evaluation before the fall. Runs that never do are stable.
"""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
from turning_data import DATA_DIR

PRESETS = ("demo-stable", "demo-turning", "sqd-wgan-gp-digits")
N_SAMPLES = 1000
EVAL_KEYS = ("eval/quality", "eval/diversity", "eval/modes_covered")


def digits_profile() -> Any:
    """The worker's `digits` profile (its cached classifier under ~/.sqd/models, trained once if absent)."""
    from sqd.settings import Settings, WorkerSettings
    from sqd.worker.digits import DigitsProfile

    return DigitsProfile(Settings(worker=WorkerSettings(samples=N_SAMPLES)))


class Recorder:
    """A `Reporter` for sqd.trainer.loop.train that keeps every signal in memory."""

    def __init__(self, trainer: Any, profile: Any, every: int | None, every_epochs: int | None) -> None:
        from sqd.trainer.stability import AngleTracker, trainable_parameters

        # the Monitor's cadence: every `every` steps and at the end of every `every_epochs`-th epoch
        self.trainer, self.profile, self.every, self.every_epochs = trainer, profile, every, every_epochs
        nets = {"G": trainer.G, "D": trainer.D}
        self.steps = {k: AngleTracker(trainable_parameters(v)) for k, v in nets.items()}
        self.epochs = {k: AngleTracker(trainable_parameters(v)) for k, v in nets.items()}
        for tracker in (*self.steps.values(), *self.epochs.values()):
            tracker.snapshot()
        self.rows: dict[str, list[tuple[int, float, int]]] = defaultdict(list)
        self.last = (0, 0)

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def step(self, step: int, epoch: int | None = None, losses: Any = None, lr: Any = None,
             metrics: Any = None) -> None:
        e = int(epoch or 0)
        self.last = (step, e)
        for k, t in self.steps.items():
            self.rows[f"angle/{k}"].append((step, float(t.update()), e))
        for k, v in (losses or {}).items():
            self.rows[f"loss/{k}"].append((step, float(v), e))
        if self.every and step % self.every == 0:
            self._evaluate(step, e)

    def end_epoch(self, epoch: int) -> None:
        for k, t in self.epochs.items():
            self.rows[f"angle_epoch/{k}"].append((self.last[0], float(t.update()), epoch))
        if self.every_epochs and (epoch + 1) % self.every_epochs == 0:
            self._evaluate(self.last[0], epoch)

    def _evaluate(self, step: int, epoch: int) -> None:
        import torch

        done = self.rows[EVAL_KEYS[0]]
        if done and done[-1][0] == step:
            return  # a step both cadences want is evaluated once
        g = self.trainer.G
        was = g.training
        g.eval()
        gen = torch.Generator().manual_seed(7)

        def sample(n: int) -> torch.Tensor:
            with torch.no_grad():
                z = torch.randn(n, self.trainer.g_spec["z_dim"], generator=gen)
                return g(z.to(self.trainer.device)).cpu()

        metrics = self.profile.evaluate(sample, {})
        g.train(was)
        for key in EVAL_KEYS:
            self.rows[key].append((step, metrics[key], epoch))


def label(steps: np.ndarray, diversity: np.ndarray) -> int:
    """The step of the last evaluation before diversity first falls below 75 % of its best so far (after the first
    3 evaluations), or −1. A plateau's noise is a few percent, so a quarter is a collapse even if modes come back
    later (as they partly do after some turning points)."""
    for i in range(3, len(diversity)):
        if diversity[i] < 0.75 * diversity[:i].max():
            return int(steps[i - 1])
    return -1


def record(preset: str, seed: int, steps: int | None, out: Path) -> Path:
    import torch

    from sqd.presets import resolve_config
    from sqd.trainer.loop import train

    torch.set_num_threads(1)
    cfg = resolve_config(preset, {"train.seed": seed})
    profile = digits_profile()
    holder: dict[str, Recorder] = {}

    def factory(trainer: Any) -> Recorder:
        holder["r"] = Recorder(trainer, profile, cfg.train.checkpoint_every, cfg.train.checkpoint_every_epochs)
        return holder["r"]

    t0 = time.monotonic()
    train(cfg, preset=preset, steps=steps, monitor=factory)
    rows = holder["r"].rows
    arrays: dict[str, np.ndarray] = {}
    for key, pts in rows.items():
        a = np.asarray(pts)
        arrays[f"{key}|steps"] = a[:, 0].astype(np.int32)
        arrays[f"{key}|values"] = a[:, 1].astype(np.float32)
        arrays[f"{key}|epochs"] = a[:, 2].astype(np.int32)
    div = np.asarray(rows["eval/diversity"])
    turning = label(div[:, 0], div[:, 1])
    spe = len(holder["r"].trainer.data) / cfg.train.batch
    path = out / f"{preset}-seed{seed}.npz"
    out.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, turning_step=turning, steps_per_epoch=spe, **arrays)
    print(f"{path.name}: {time.monotonic() - t0:.0f} s, turning step {turning}, diversity "
          f"{' '.join(f'{v:.1f}' for v in div[:, 1])}")
    return path


def record_all(runs: int, steps: int | None = None, presets: tuple[str, ...] = PRESETS, out: Path = DATA_DIR) -> None:
    for seed in range(runs):
        for preset in presets:
            if not (out / f"{preset}-seed{seed}.npz").exists():
                record(preset, seed, steps, out)

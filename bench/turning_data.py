"""Labelled runs for the turning-point benchmark (bench/turning.py).

Synthetic runs imitate what the SQD paper (seed 003, Figures 3-5) and the stacked-digit demo runs show: weight
angles that fall fast during warm-up and then drift down, quality and diversity that rise and level off, noisy
losses. A *collapsing* run adds, at a known step, a jump of the angle curves (epoch angles far more than per-step
ones: the updates turn coherent), then quality oscillating down and diversity dropping (sometimes only some of
these). *Stable* runs carry what must NOT fire: heavy-tailed noise, warm-up spikes, lr warm-up ramps, lr drops
(angles fall by 2-10×), missing evaluations, short angle spikes late in the run with nothing degrading (what
the stable demo shows, issue #14). 40 % of the runs settle fast (2-4 epochs, like the stacked-digit
demos) and most of their collapses come early (epoch 5-12).

Real runs: bench/data/**/*.npz, recorded from the demo presets by `bench/turning.py record` or
`bench/demo_turning.py` (same recorder, bench/turning_record.py).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

DATA_DIR = Path(__file__).parent / "data"
Series = dict[str, tuple[np.ndarray, np.ndarray, np.ndarray]]


@dataclass
class LabelledRun:
    name: str
    turning_step: int | None  # None: a stable run, any alarm is false
    steps_per_epoch: float
    series: Series = field(repr=False)
    kind: str = "synthetic"


def _lognormal(rng: np.random.Generator, sigma: float, n: int, outliers: float = 0.0) -> np.ndarray:
    noise = np.exp(sigma * rng.standard_normal(n))
    if outliers:
        hit = rng.random(n) < outliers
        noise[hit] *= rng.uniform(2.0, 4.0, hit.sum())
    return noise


def synthetic_run(seed: int, kind: str) -> LabelledRun:
    """kind: 'stable', 'noisy', 'warmup', 'lrdrop', 'spike' (stable variants) or 'collapse', 'collapse_noisy',
    'collapse_spike' (one-epoch angle spike + evaluations), 'collapse_diversity' (no angle jump)."""
    rng = np.random.default_rng(seed)
    spe = int(rng.choice([32, 48, 64]))
    n_epochs = int(rng.integers(50, 121))
    n = n_epochs * spe
    step = np.arange(n)
    epoch_of = step // spe
    t = step / spe  # time in epochs
    noisy = kind in ("noisy", "collapse_noisy")

    # angle level: fast warm-up decay onto a slowly falling floor, an lr warm-up ramp sometimes
    floor = rng.uniform(0.05, 0.3) * (1 - 0.4 * t / n_epochs)
    fast = rng.random() < 0.4  # small models (the stacked-digit demos) settle within 2-4 epochs
    level = floor * (1 + rng.uniform(2, 8) * np.exp(-t / (rng.uniform(0.7, 2) if fast else rng.uniform(2, 12))))
    if rng.random() < 0.3 or kind == "warmup":
        level *= np.minimum(1.0, 0.1 + t / rng.uniform(1, 6))
    lr_scale = np.ones(n)
    if kind == "lrdrop" or rng.random() < 0.25:
        for e in sorted(rng.uniform(0.3, 0.9, int(rng.integers(1, 3))) * n_epochs):
            lr_scale[t >= e] *= rng.uniform(0.1, 0.5)
    level = level * lr_scale
    if kind == "warmup" or rng.random() < 0.2:
        for _ in range(int(rng.integers(1, 3))):  # warm-up transients within the first epochs
            start = rng.uniform(0.5, 3)
            bump = (t >= start) & (t < start + rng.uniform(0.3, 1.5))
            level[bump] *= rng.uniform(3, 10)
    if kind == "spike":  # the stable demo's sawtooth: short angle spikes late in a healthy run, nothing degrades
        for start in rng.uniform(0.3, 0.9, int(rng.integers(1, 4))) * n_epochs:
            level[(t >= start) & (t < start + rng.uniform(0.3, 1.0))] *= rng.uniform(3, 10)

    # quality and diversity levels (per step, sampled at evaluations)
    q_max, d_max = rng.uniform(0.55, 0.95), rng.uniform(4.0, 8.0)
    quality = q_max - (q_max - 0.1) * np.exp(-t / (rng.uniform(0.5, 1.5) if fast else rng.uniform(2, 10)))
    diversity = d_max - (d_max - 1.0) * np.exp(-t / (rng.uniform(0.5, 1.5) if fast else rng.uniform(2, 12)))
    quality += 0.03 * (lr_scale < 1) * rng.uniform(0, 1)  # a smaller lr often helps quality a little
    # losses say little on their own (as in real GANs): an lr drop moves them, and a stable run may change its
    # loss regime (D stronger or weaker for a while) without turning
    loss_d = rng.uniform(0.4, 1.3) * (1 + 0.3 * np.exp(-t / 3)) * np.where(lr_scale < 1, rng.uniform(0.7, 1.2), 1)
    loss_g = rng.uniform(0.8, 3.0) * np.where(lr_scale < 1, rng.uniform(0.9, 1.4), 1) * np.ones(n)
    if rng.random() < 0.3:
        shift = t >= rng.uniform(0.2, 0.9) * n_epochs
        loss_d = np.where(shift, loss_d * rng.uniform(0.6, 1.6), loss_d)
        loss_g = np.where(shift, loss_g * rng.uniform(0.7, 1.5), loss_g)
    loss_noise = np.ones(n)

    turning: int | None = None
    angle_jump, epoch_jump = np.ones(n), np.ones(n)
    if kind.startswith("collapse"):
        # a third turn early, right after a fast warm-up (as the stacked-digit demo does near epoch 6-8)
        e0 = rng.uniform(5, 12) if fast and rng.random() < 0.75 else rng.uniform(0.3, 0.75) * n_epochs
        turning = int(e0 * spe)
        after = t >= e0
        since = np.where(after, t - e0, 0.0)
        jump_e = rng.uniform(3, 12)
        stay = 1.0 if kind == "collapse_spike" else rng.uniform(1.5, 4)
        decay = rng.uniform(3, 30)
        if kind == "collapse_diversity":
            jump_e, stay = 1.0, 1.0
        epoch_jump = np.where(after, 1 + (jump_e - 1) * (since < 1) + (stay - 1) * np.exp(-since / decay), 1.0)
        angle_jump = np.where(after, 1 + (rng.uniform(1, 5) - 1) * (epoch_jump - 1) / max(jump_e - 1, 1e-9), 1.0)
        if kind == "collapse_diversity":
            angle_jump = np.ones(n)
        onset = rng.uniform(0, 2)  # evaluations feel it within 0-2 epochs
        hit = t >= e0 + onset
        drop_q = rng.uniform(0.1, 0.5) * q_max if rng.random() < 0.85 else 0.0
        quality = np.where(hit, quality - drop_q * (0.5 + 0.5 * np.abs(np.sin(3.7 * t))), quality)
        drop_d = rng.uniform(1.0, 4.0) if kind != "collapse_spike" or rng.random() < 0.9 else 0.0
        diversity = np.where(hit, diversity - drop_d * np.minimum(1, (t - e0 - onset + 1) / rng.uniform(1, 3)),
                             diversity)
        if rng.random() < 0.5:  # half the collapses show in the losses
            loss_d = np.where(after, loss_d * rng.uniform(0.3, 0.8), loss_d)
            loss_g = np.where(after, loss_g * rng.uniform(1.2, 2.0), loss_g)
            loss_noise = np.where(after, 2.0, 1.0)

    series: Series = {}
    sigma_step, sigma_epoch = rng.uniform(0.2, 0.5), rng.uniform(0.08, 0.25) * (1.8 if noisy else 1.0)
    outl = 0.03 if noisy else 0.005
    step_level = level / np.sqrt(spe) * rng.uniform(0.5, 1.0)
    for net, ratio in (("G", 1.0), ("D", rng.uniform(0.5, 2.0))):
        series[f"angle/{net}"] = (step, step_level * ratio * angle_jump * _lognormal(rng, sigma_step, n, outl),
                                  epoch_of)
        ends = np.arange(spe - 1, n, spe)
        series[f"angle_epoch/{net}"] = (ends, level[ends] * ratio * epoch_jump[ends]
                                        * _lognormal(rng, sigma_epoch, len(ends), outl), epoch_of[ends])
    for name, base in (("D", loss_d), ("G", loss_g)):
        noise = 1 + rng.uniform(0.1, 0.3) * loss_noise * rng.standard_normal(n)
        spikes = rng.random(n) < outl  # heavy-tailed loss spikes
        noise[spikes] *= rng.uniform(2, 5, spikes.sum())
        series[f"loss/{name}"] = (step, base * noise, epoch_of)

    every = int(rng.choice([1, 1, 2]))
    evals = np.arange(every * spe - 1, n, every * spe)
    keep = rng.random(len(evals)) >= rng.uniform(0, 0.3)
    if rng.random() < 0.1 and kind not in ("collapse_spike", "collapse_diversity"):
        keep[:] = False  # a run without evaluations at all
    evals = evals[keep]
    sq, sd = rng.uniform(0.005, 0.03), rng.uniform(0.03, 0.15)
    if len(evals):
        series["eval/quality"] = (evals, np.clip(quality[evals] + sq * rng.standard_normal(len(evals)), 0, 1),
                                  epoch_of[evals])
        series["eval/diversity"] = (evals, diversity[evals] + sd * rng.standard_normal(len(evals)),
                                    epoch_of[evals])
    return LabelledRun(f"{kind}-{seed}", turning, float(spe), series)


STABLE_KINDS = ("stable", "noisy", "warmup", "lrdrop", "spike")
COLLAPSE_KINDS = ("collapse", "collapse", "collapse_noisy", "collapse_spike", "collapse_diversity")


def synthetic_suite(n_stable: int, n_collapse: int, seed: int) -> list[LabelledRun]:
    runs = [synthetic_run(seed * 100_003 + i, STABLE_KINDS[i % len(STABLE_KINDS)]) for i in range(n_stable)]
    runs += [synthetic_run(seed * 100_003 + 50_000 + i, COLLAPSE_KINDS[i % len(COLLAPSE_KINDS)])
             for i in range(n_collapse)]
    return runs


def recorded_runs(directory: Path = DATA_DIR) -> Iterator[LabelledRun]:
    """Runs cached by `bench/turning.py record`: arrays `<key>|steps`, `<key>|values`, `<key>|epochs` plus
    `turning_step` (−1 = stable) and `steps_per_epoch`; runs with evaluations are labelled by
    turning_record.label."""
    from turning_record import label

    for path in sorted(directory.glob("**/*.npz")):
        if "corpus" in path.relative_to(directory).parts:  # bench/turning_corpus.py's runs, under their own label
            continue
        with np.load(path) as z:
            keys = sorted({name.split("|")[0] for name in z.files if "|" in name})
            series = {k: (z[f"{k}|steps"], z[f"{k}|values"], z[f"{k}|epochs"]) for k in keys}
            if "eval/diversity" in series:  # labelled now, by the current rule, not the one of record time
                turning = label(series["eval/diversity"][0], series["eval/diversity"][1])
            else:
                turning = int(z["turning_step"])
            name = str(path.relative_to(directory).with_suffix(""))
            yield LabelledRun(name, None if turning < 0 else turning, float(z["steps_per_epoch"]), series,
                              kind="recorded")

"""The label of a recorded run (bench/data/corpus): did it pass a turning point, and at which epoch.

Fixed before any run of the corpus was recorded, and computed only from what the worker measured at each checkpoint
(eval/modes_covered, eval/diversity, eval/quality), never from the detector's output, so the detector's figures
(bench/turning_corpus.py) are measured against something it could not have shaped.

Rule: a run turns at the first evaluation after warm-up (index ≥ WARMUP_EVALS) where
  * modes covered fall ≥ MODES_DROP below their running peak (the peak of all earlier evaluations), the peak being at
    least MIN_PEAK_MODES (a few dozen modes of 1000 come and go by chance while a young G still learns), and
  * diversity falls ≥ DIVERSITY_DROP below its running peak, or quality moves by more than QUALITY_SWING from the
    previous evaluation (a collapse that keeps the entropy but wrecks the digits).
The turning epoch is the epoch of the last evaluation before that fall. Runs that never do are stable. Later
recoveries don't undo a label: the dashboard should have told the user when it happened.

Why these thresholds: on the three older recorded runs (bench/data/*.npz) a healthy plateau moves modes by ≤ 15 %
and diversity by ≤ 5 % between evaluations, while the demo-turning collapses take modes from ~490 to 47-206 and
diversity from ~6.6 to 1.9-4.9 nats within one evaluation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

WARMUP_EVALS = 3
MODES_DROP = 0.30
DIVERSITY_DROP = 0.25
QUALITY_SWING = 0.10
MIN_PEAK_MODES = 50.0


@dataclass(frozen=True)
class Label:
    turning_epoch: int | None  # None: a stable run
    turning_step: int | None
    reason: str  # what the rule saw, for the report


def label_run(steps: np.ndarray, epochs: np.ndarray, quality: np.ndarray, diversity: np.ndarray,
              modes: np.ndarray) -> Label:
    """The label of one run from its evaluations, all arrays aligned on the evaluation index (ordered by step)."""
    n = len(steps)
    if not (len(epochs) == len(quality) == len(diversity) == len(modes) == n):
        raise ValueError(f"evaluation series differ in length: steps {n}, epochs {len(epochs)}, quality "
                         f"{len(quality)}, diversity {len(diversity)}, modes {len(modes)}")
    for i in range(WARMUP_EVALS, n):
        modes_peak = float(np.max(modes[:i]))
        if modes_peak < MIN_PEAK_MODES or modes[i] > (1 - MODES_DROP) * modes_peak:
            continue
        div_peak = float(np.max(diversity[:i]))
        div_fell = diversity[i] <= (1 - DIVERSITY_DROP) * div_peak
        q_swing = abs(float(quality[i] - quality[i - 1])) > QUALITY_SWING
        if div_fell or q_swing:
            saw = [f"modes {modes[i]:.0f} vs peak {modes_peak:.0f}"]
            saw.append(f"diversity {diversity[i]:.2f} vs peak {div_peak:.2f}" if div_fell
                       else f"quality {quality[i - 1]:.2f} → {quality[i]:.2f}")
            return Label(int(epochs[i - 1]), int(steps[i - 1]), f"at step {int(steps[i])}: " + ", ".join(saw))
    return Label(None, None, "stable")


def label_arrays(arrays: dict[str, np.ndarray]) -> Label:
    """The label of a run stored as `{key}|steps`, `{key}|values`, `{key}|epochs` arrays (a corpus file)."""
    keys = ("eval/quality", "eval/diversity", "eval/modes_covered")
    missing = [k for k in keys if f"{k}|values" not in arrays]
    if missing:
        raise ValueError(f"no evaluations of {', '.join(missing)}: a run is labelled from the worker's Q/D")
    # align on the steps all three were measured at (an evaluation's metrics arrive together)
    common = np.intersect1d(arrays["eval/quality|steps"], arrays["eval/diversity|steps"])
    common = np.intersect1d(common, arrays["eval/modes_covered|steps"])

    def at(key: str, part: str) -> np.ndarray:
        idx = np.searchsorted(arrays[f"{key}|steps"], common)
        return np.asarray(arrays[f"{key}|{part}"])[idx]

    return label_run(common, at("eval/quality", "epochs"), at("eval/quality", "values"),
                     at("eval/diversity", "values"), at("eval/modes_covered", "values"))

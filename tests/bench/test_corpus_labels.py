"""The corpus's label rule (bench/corpus_labels.py) on hand-made evaluation series."""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from corpus_labels import label_arrays, label_run  # noqa: E402


def run(modes: list[float], diversity: list[float], quality: list[float] | None = None):
    n = len(modes)
    steps = np.arange(n) * 250
    epochs = np.arange(n) * 2
    q = np.asarray(quality if quality is not None else [0.2] + [0.78] * (n - 1))
    return label_run(steps, epochs, q, np.asarray(diversity), np.asarray(modes, dtype=float))


def test_a_plateau_with_noise_is_stable():
    assert run([1, 60, 300, 480, 440, 500, 455, 470], [0, 3, 6, 6.6, 6.4, 6.7, 6.5, 6.6]).turning_epoch is None


def test_modes_and_diversity_falling_together_turn_at_the_evaluation_before():
    label = run([1, 80, 400, 490, 460, 47, 200], [0, 3, 6.4, 6.6, 6.5, 1.9, 4.9])
    assert (label.turning_epoch, label.turning_step) == (8, 1000)
    assert "modes 47 vs peak 490" in label.reason


def test_modes_falling_alone_is_not_a_turn():
    assert run([1, 80, 400, 490, 300, 320], [0, 3, 6.4, 6.6, 6.3, 6.4]).turning_epoch is None


def test_a_quality_swing_stands_in_for_diversity():
    label = run([1, 80, 400, 490, 300], [0, 3, 6.4, 6.6, 6.3], quality=[0.2, 0.7, 0.78, 0.8, 0.6])
    assert label.turning_epoch == 6 and "quality 0.80 → 0.60" in label.reason


def test_the_warm_up_and_a_tiny_peak_never_turn():
    # a young G's first evaluations swing wildly; a peak of a handful of modes is chance
    assert run([1, 90, 20, 100, 120, 130], [0, 4, 1, 4.5, 5, 5.2]).turning_epoch is None
    assert run([1, 40, 10, 30, 5, 8], [0, 2, 0.5, 1.5, 0.2, 0.3]).turning_epoch is None


def test_files_are_labelled_on_the_steps_all_three_metrics_share():
    steps = np.array([0, 250, 500, 750, 1000, 1250], dtype=np.int32)
    arrays = {}
    for key, values in (("eval/quality", [0.2, 0.7, 0.78, 0.8, 0.8, 0.79]),
                        ("eval/diversity", [0, 3, 6.4, 6.6, 6.5, 2.0]),
                        ("eval/modes_covered", [1, 80, 400, 490, 460, 60])):
        arrays[f"{key}|steps"] = steps
        arrays[f"{key}|values"] = np.asarray(values, dtype=np.float32)
        arrays[f"{key}|epochs"] = steps // 156
    assert label_arrays(arrays).turning_step == 1000


def test_missing_or_ragged_evaluations_are_refused():
    with pytest.raises(ValueError, match="eval/modes_covered"):
        label_arrays({"eval/quality|values": np.zeros(3), "eval/diversity|values": np.zeros(3)})
    with pytest.raises(ValueError, match="differ in length"):
        label_run(np.arange(3), np.arange(3), np.zeros(3), np.zeros(2), np.zeros(3))

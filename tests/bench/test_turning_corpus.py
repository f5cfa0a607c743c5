"""bench/turning_corpus.py's shape of a labelled turn: sustained (modes stay down for 3 evaluations) or transient."""

import sys
from pathlib import Path
from typing import Literal

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
from corpus_data import CorpusRun  # noqa: E402
from corpus_labels import Label  # noqa: E402
from turning_corpus import turn_shape  # noqa: E402


def corpus_run(modes: list[float], label_step: int | None) -> CorpusRun:
    steps = np.arange(len(modes), dtype=np.int32) * 250
    label = Label(None if label_step is None else label_step // 156, label_step, "test")
    series = {"eval/modes_covered": (steps, np.asarray(modes, np.float32), [None] * len(modes))}
    return CorpusRun("r-seed0", "demo-turning", "", 0, 156.0, label, label_step or -1, series, [], {}, {})


@pytest.mark.parametrize(("modes", "label_step", "shape"), [
    ([1, 400, 600, 650, 100, 200, 150, 300], 750, ("sustained", 650.0)),   # down for the fall and 3 after
    ([1, 400, 600, 650, 100, 200, 640, 600], 750, ("transient", 650.0)),   # back within 30 % of the peak
    ([1, 40, 64, 1, 50, 60, 70], 500, ("transient", 64.0)),                # noise of a run that covers few modes
    ([1, 400, 600, 650, 100, 120], 750, ("sustained", 650.0)),             # the run ends before 3 more
])
def test_shape_of_a_turn(modes, label_step, shape):
    assert turn_shape(corpus_run(modes, label_step)) == shape


def test_a_stable_run_has_no_shape():
    assert turn_shape(corpus_run([1, 400, 600, 650], None)) is None


def test_the_ramp_table_holds_the_ramp_twins_and_demo_turning_as_its_nsgan_row():
    from turning_corpus import Judged, grid_table  # noqa: PLC0415

    def judged(name: str, preset: str, variant: str, seed: int) -> Judged:
        run = corpus_run([1, 400, 600, 650], None)
        run.name, run.preset, run.variant, run.seed = name, preset, variant, seed
        return Judged(run, [])

    runs = [judged("demo-turning-seed0", "demo-turning", "", 0),
            judged("sqd-lsgan-gp-digits-ramp-seed0", "sqd-lsgan-gp-digits", "ramp", 0),
            judged("sqd-lsgan-gp-digits-seed0", "sqd-lsgan-gp-digits", "", 0)]
    ramp = grid_table(runs, "ramp")
    assert [line.split(" | ")[0] for line in ramp[2:]] == ["| sqd-nsgan-digits + ramp", "| sqd-lsgan-gp-digits + ramp"]
    plain = grid_table(runs)
    assert [line.split(" | ")[0] for line in plain[2:]] == ["| sqd-lsgan-gp-digits"]
    assert grid_table(runs[:1]) == []
    # evaluated every epoch: demo-turning-e1 is the NSGAN row of the ramp-e1 table only
    runs.append(judged("demo-turning-e1-seed0", "demo-turning", "e1", 0))
    assert [line.split(" | ")[0] for line in grid_table(runs, "ramp-e1")[2:]] == ["| sqd-nsgan-digits + ramp"]
    assert len(grid_table(runs, "ramp")[2:]) == 2 and grid_table(runs, "e1") == []


def test_no_recorded_stable_run_gets_a_critical_alert():
    """Issue 14's first goal on the committed corpus, replayed through today's detector: 0 critical false alarms
    (warnings are allowed: a lone angle spike is one)."""
    from corpus_data import load_corpus, severity  # noqa: PLC0415

    stable = [run for run in load_corpus() if run.label.turning_step is None]
    assert len(stable) >= 40
    flagged = {run.name: [tp.explanation for tp in run.replay() if severity(tp) == "critical"] for run in stable}
    assert {name: why for name, why in flagged.items() if why} == {}


def test_the_held_out_row_counts_the_runs_recorded_after_the_detector_last_changed():
    from turning_corpus import DETECTOR_FROZEN_AT, Judged, family_table  # noqa: PLC0415

    before, after = corpus_run([1, 400, 600, 650], None), corpus_run([1, 400, 600, 650], None)
    before.meta, after.meta = {"created_at": DETECTOR_FROZEN_AT - 60}, {"created_at": DETECTOR_FROZEN_AT + 60}
    rows = family_table([Judged(before, []), Judged(after, [])])
    assert rows[-2].startswith("| **all** | 2 |") and rows[-1].startswith("| held out (") and "| 1 |" in rows[-1]
    assert not family_table([Judged(before, [])])[-1].startswith("| held out")


def test_a_missed_turn_is_reported_with_where_it_fell_and_what_the_detector_raised():
    from turning_corpus import judge, miss_reason  # noqa: PLC0415

    from sqd.server.turning import TurningPoint  # noqa: PLC0415

    def late_critical(step: int, severity: Literal["warning", "critical"] = "critical") -> TurningPoint:
        return TurningPoint(step=step, epoch=step // 156, detected_step=step, detected_epoch=step // 156,
                            signals=["angle_epoch/G"], scores={}, evidence={}, combined=1.0, explanation="",
                            severity=severity)

    plateau = corpus_run([1, 400, 600, 650, 100, 120, 110, 100], 750)  # label epoch 4, the fall at epoch 6
    plateau.replay = lambda: []  # type: ignore[method-assign]
    assert miss_reason(judge(plateau)).endswith("peak 650 modes, from a plateau: no alert)")
    plateau.replay = lambda: [late_critical(16 * 156)]  # type: ignore[method-assign]
    assert miss_reason(judge(plateau)).endswith("from a plateau: first critical 12 epochs after)")
    plateau.replay = lambda: [late_critical(156), late_critical(16 * 156)]  # type: ignore[method-assign]
    assert miss_reason(judge(plateau)).endswith("first critical 12 epochs after)")  # the later one tells more
    plateau.replay = lambda: [late_critical(156)]  # type: ignore[method-assign]
    assert miss_reason(judge(plateau)).endswith("from a plateau: a critical before the window)")
    plateau.replay = lambda: [late_critical(156, "warning")]  # type: ignore[method-assign]
    assert miss_reason(judge(plateau)).endswith("from a plateau: warnings only)")  # not an early critical
    young = corpus_run([1, 600, 100, 120, 110, 100], 250)  # label epoch 1: the fall comes before epoch 4
    young.replay = lambda: []  # type: ignore[method-assign]
    assert "in the warm-up: no alert" in miss_reason(judge(young))
    few = corpus_run([1, 40, 64, 20, 30, 25, 70, 60, 50], 1000)
    few.replay = lambda: []  # type: ignore[method-assign]
    assert "peak 64 modes, of a run that never covered many modes: no alert" in miss_reason(judge(few))

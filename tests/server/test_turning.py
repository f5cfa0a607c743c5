"""The turning-point detector on hand-built series (pure numpy, no server)."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import numpy as np
import pytest

from sqd.server.alerts.signals import SignalTracker
from sqd.server.alerts.turning import (
    DEFAULT_GROUPS,
    Corroboration,
    TurningDetector,
    TurningParams,
    TurningPoint,
    detect_turning_points,
)

SPE = 20  # steps per epoch
EPOCHS = 60


def make_run(seed: int = 0, *, jump_epoch: float | None = None, jump: float = 8.0, noise: float = 1.0,
             warmup_spike: tuple[float, float] | None = None, lr_drop_epoch: float | None = None,
             diversity_drop_epoch: float | None = None, evals: bool = True) -> dict[str, tuple]:
    """angle/G, angle/D per step, angle_epoch/G, angle_epoch/D per epoch, eval/quality and eval/diversity per
    epoch: a run that settles after a fast warm-up, with optional events (times in epochs)."""
    rng = np.random.default_rng(seed)
    n = EPOCHS * SPE
    steps = np.arange(n)
    t = steps / SPE
    epochs = steps // SPE
    level = 0.1 * (1 + 4 * np.exp(-t / 3))
    if warmup_spike is not None:
        start, factor = warmup_spike
        level = np.where((t >= start) & (t < start + 1), level * factor, level)
    if lr_drop_epoch is not None:
        level = np.where(t >= lr_drop_epoch, level * 0.2, level)
    epoch_factor = np.ones(n)
    step_factor = np.ones(n)
    if jump_epoch is not None:
        after = t >= jump_epoch
        epoch_factor = np.where(after, np.where(t < jump_epoch + 10, jump, 2.0), 1.0)
        step_factor = np.where(after, np.where(t < jump_epoch + 10, 3.0, 1.5), 1.0)
    ends = np.arange(SPE - 1, n, SPE)
    series: dict[str, tuple] = {}
    for net in ("G", "D"):
        step_noise = np.exp(0.3 * noise * rng.standard_normal(n))
        series[f"angle/{net}"] = (steps, level / 5 * step_factor * step_noise, epochs)
        epoch_noise = np.exp(0.1 * noise * rng.standard_normal(len(ends)))
        series[f"angle_epoch/{net}"] = (ends, level[ends] * epoch_factor[ends] * epoch_noise, epochs[ends])
    if evals:
        quality = 0.8 - 0.6 * np.exp(-ends / SPE / 4) + 0.01 * rng.standard_normal(len(ends))
        diversity = 6.0 - 5.0 * np.exp(-ends / SPE / 4) + 0.05 * rng.standard_normal(len(ends))
        if diversity_drop_epoch is not None:
            diversity = np.where(ends / SPE >= diversity_drop_epoch, diversity - 3.0, diversity)
        series["eval/quality"] = (ends, quality, epochs[ends])
        series["eval/diversity"] = (ends, diversity, epochs[ends])
    return series


def criticals(tps: list[TurningPoint]) -> list[TurningPoint]:
    return [tp for tp in tps if tp.severity == "critical"]


def test_clean_jump_is_a_warning_then_critical_once_the_angles_stay_up() -> None:
    """An angle jump alone is a warning at once; the angles staying up for `sustain_epochs` make the same turning
    point critical (the detector reports both)."""
    warning, tp = detect_turning_points(make_run(jump_epoch=30.0))
    assert warning.severity == "warning" and warning.step == tp.step and warning.detected_step < tp.detected_step
    p = TurningParams()
    assert warning.explanation.startswith(
        f"Not a turning point: no drop of quality, diversity, modes or rise of FID within {p.corroborate_epochs:g} "
        f"epochs, and the epoch angle did not stay up for {p.sustain_epochs} epochs.")
    assert warning.missing and warning.corroborated_by == []
    assert tp.severity == "critical" and tp.missing == "" and tp.corroborated_by[0].startswith("sustained:angle")
    assert (tp.detected_step - warning.detected_step) / SPE <= 4.0
    assert 30 * SPE - SPE <= tp.step <= 30 * SPE + SPE
    assert tp.epoch in (29, 30)
    assert (warning.detected_step - 30 * SPE) / SPE <= 1.0
    assert (tp.detected_step - 30 * SPE) / SPE <= p.sustain_epochs + 0.5
    assert any(s.startswith("angle") for s in tp.signals)
    assert set(tp.scores) == set(tp.signals) and all(v > 0 for v in tp.scores.values())
    assert tp.explanation.startswith(f"Turning point at epoch {tp.epoch}")
    assert "jumped to" in tp.explanation and "corroborated by sustained:" in tp.explanation
    assert "\n" not in tp.explanation


def test_jump_with_a_diversity_drop_is_critical_within_the_epoch() -> None:
    (tp,) = criticals(detect_turning_points(make_run(jump_epoch=30.0, diversity_drop_epoch=30.0)))
    assert tp.severity == "critical" and tp.corroborated_by == ["eval/diversity"]
    assert (tp.detected_step - 30 * SPE) / SPE <= 1.0


def test_one_epoch_spike_stays_a_warning() -> None:
    """The stable demo's case: one family jumps for a moment, nothing degrades, nothing stays up."""
    run = make_run(2)
    for key in ("angle/D", "angle_epoch/D"):
        steps, values, epochs = run[key]
        run[key] = (steps, np.where(steps // SPE == 30, values * 8, values), epochs)
    (tp,) = detect_turning_points(run)
    assert tp.severity == "warning" and tp.epoch == 30 and "Not a turning point" in tp.explanation
    assert detect_turning_points(run, TurningParams(sustain_epochs=1))[-1].severity == "critical"


def test_fid_rising_alone_does_not_make_a_spike_critical() -> None:
    """sqd-nsgan-gp-digits-e1-seed2's case (docs/alerts.md): a D spike meets one evaluation whose FID rises 5× and
    recovers while quality, diversity and modes hold: a warning that says so. With the diversity falling too it is
    a turning point."""
    run = make_run(2)
    for key in ("angle/D", "angle_epoch/D"):
        steps, values, epochs = run[key]
        run[key] = (steps, np.where(steps // SPE == 30, values * 8, values), epochs)
    ends, _, eval_epochs = run["eval/quality"]
    fid = 100.0 * np.exp(0.02 * np.random.default_rng(3).standard_normal(len(ends)))
    run["eval/fid"] = (ends, np.where(eval_epochs == 30, fid * 5, fid), eval_epochs)
    (tp,) = detect_turning_points(run)
    assert tp.severity == "warning" and tp.corroborated_by == []
    assert Corroboration(["angle/D"], [], [], alone=["eval/fid"]).missing(TurningParams()) == (
        "no drop of quality, diversity or modes within 4 epochs (eval/fid rose, which counts only beside one), and "
        "the epoch angle did not stay up for 4 epochs")
    steps, diversity, epochs = run["eval/diversity"]
    run["eval/diversity"] = (steps, np.where(epochs >= 30, diversity - 3.0, diversity), epochs)
    (tp,) = criticals(detect_turning_points(run))
    assert tp.epoch == 30 and "eval/diversity" in tp.corroborated_by


def test_angles_moving_again_after_a_freeze_are_no_sustained_rise() -> None:
    """demo-stable-e1-seed0's case (docs/alerts.md): D's weights stall for 5 epochs, then move as before. The
    return scores as a jump over a median the frozen blocks hold down, block after block; it is no *rise* (the
    corroboration a lone jump needs to be critical), because it never goes above what the window held before the
    freeze. The same jump to 8× the old level is one, and lasts as long as it does."""
    def longest_rise(factor_of_epoch) -> int:
        steps, values, epochs = make_run(3)["angle/D"]
        tracker = SignalTracker(key="angle/D", block_steps=25, blocks_per_epoch=4, expiry_gaps=3.0)
        marks = tracker.feed(steps, values * factor_of_epoch(steps / SPE), epochs, DEFAULT_GROUPS["angle_step"])
        return max((m.streak for m in marks), default=0)

    sustained = TurningParams().sustain_epochs * TurningParams().blocks_per_epoch
    assert longest_rise(lambda t: np.where((t >= 30) & (t < 35), 0.1, 1.0)) < 4 < sustained
    assert longest_rise(lambda t: np.where(t >= 35, 8.0, 1.0)) >= sustained


def test_jump_in_noise_is_found() -> None:
    for seed in range(3):
        tps = criticals(detect_turning_points(make_run(seed, jump_epoch=35.0, jump=6.0, noise=2.5)))
        assert len(tps) == 1, seed
        assert abs(tps[0].step - 35 * SPE) <= 2 * SPE


def test_stable_run_warmup_spike_and_lr_drop_are_not_turning_points() -> None:
    for seed in range(3):
        assert detect_turning_points(make_run(seed)) == []
        assert detect_turning_points(make_run(seed, warmup_spike=(1.5, 6.0))) == []
        assert detect_turning_points(make_run(seed, lr_drop_epoch=30.0)) == []


def test_diversity_collapse_without_angle_jump_is_a_warning_on_diversity_alone() -> None:
    tps = detect_turning_points(make_run(diversity_drop_epoch=40.0))
    assert len(tps) == 1 and tps[0].severity == "warning" and tps[0].missing == "no angle jump or drop within 4 epochs"
    assert tps[0].signals[0] == "eval/diversity" and tps[0].corroborated_by == ["eval/diversity"]
    assert not any(s.startswith("angle") for s in tps[0].signals)
    assert tps[0].step >= 40 * SPE - SPE
    assert "no angle jump" in tps[0].explanation


def test_a_freeze_of_the_angles_with_a_diversity_collapse_is_critical() -> None:
    """The lr-ramp collapses of the recorded corpus: the weights freeze (per-step angles fall 5× here, 10-300× there)
    as the diversity collapses — a drop is stability evidence too (`angle_drop/*`, derived from `angle/*`)."""
    run = make_run(diversity_drop_epoch=40.0, lr_drop_epoch=40.0)
    (tp,) = detect_turning_points(run)
    assert tp.severity == "critical" and tp.missing == ""
    assert {"angle_drop/G", "angle_drop/D", "eval/diversity"} == set(tp.signals)
    assert tp.corroborated_by == ["eval/diversity"]  # the freeze is named in the signals, the collapse completes it
    assert re.search(r"angle/[GD] fell to \S+ rad, 1/\d+\.\d of its recent level", tp.explanation)
    assert 39 * SPE <= tp.step <= 41 * SPE
    # a freeze alone never fires (test_stable_run_warmup_spike_and_lr_drop_are_not_turning_points), and without
    # the derived family the same collapse is a warning again
    off = TurningParams.from_dict({"groups": {"angle_drop": {"coef": 0}}})
    (warning,) = detect_turning_points(run, off)
    assert warning.severity == "warning" and warning.missing == "no angle jump or drop within 4 epochs"


def test_derived_keys_are_the_detectors_own() -> None:
    """`angle_drop/*` is computed from `angle/*`; a stored series of that name is not read (it would be fed twice)."""
    det, plain = TurningDetector(), TurningDetector()
    assert det.uses("angle/D") and not det.uses("angle_drop/D")
    run = make_run(diversity_drop_epoch=40.0, lr_drop_epoch=40.0)
    assert det.update({**run, "angle_drop/D": run["angle/G"]}) == plain.update(run)
    assert det.to_state() == plain.to_state()
    assert {"angle_drop/G", "angle_drop/D"} <= set(det.trackers)
    restored = TurningDetector.from_state(json.loads(json.dumps(det.to_state())))
    assert restored.to_state() == det.to_state()


def test_trackers_count_the_points_they_are_fed() -> None:
    """The server's cue for a replay (engine.behind_cursor): points fed, ignored ones included; a state saved before
    the count existed says "unknown" (None) rather than a count that would look short."""
    det = TurningDetector()
    run = make_run()
    det.update(run)
    det.update({"eval/quality": run["eval/quality"]})  # the same points again: ignored, still counted as fed
    n = len(run["eval/quality"][0])
    assert det.trackers["eval/quality"].fed == 2 * n and det.trackers["eval/quality"].ignored == n
    old = det.to_state()
    for tracker in old["trackers"].values():
        del tracker["fed"]
    restored = TurningDetector.from_state(json.loads(json.dumps(old)))
    restored.update({"angle/G": run["angle/G"]})
    assert all(t.fed is None for t in restored.trackers.values())


def test_missing_keys_and_missing_evaluations() -> None:
    run = make_run(jump_epoch=30.0, evals=False)
    assert len(criticals(detect_turning_points(run))) == 1
    only_epoch = {k: v for k, v in run.items() if k.startswith("angle_epoch/")}
    assert len(criticals(detect_turning_points(only_epoch))) == 1
    two_tuple = {k: (v[0], v[1]) for k, v in run.items()}  # no epochs: blocks of block_steps, epoch None
    tps = criticals(detect_turning_points(two_tuple))
    assert len(tps) == 1 and tps[0].epoch is None and "at step" in tps[0].explanation
    assert detect_turning_points({}) == []
    assert detect_turning_points({"eval/fid": ([1, 2], [3.0, 4.0])}) == []  # keys it does not use are ignored


def test_nan_values_are_skipped_not_fatal() -> None:
    run = make_run(jump_epoch=30.0)
    steps, values, epochs = run["angle/G"]
    values = values.copy()
    values[::7] = np.nan
    values[3] = np.inf
    run["angle/G"] = (steps, values, epochs)
    assert len(criticals(detect_turning_points(run))) == 1


def test_bad_series_names_the_key() -> None:
    with pytest.raises(ValueError, match="angle/G.*3.*2"):
        detect_turning_points({"angle/G": ([1, 2, 3], [0.1, 0.2])})
    with pytest.raises(ValueError, match="angle/D"):
        detect_turning_points({"angle/D": ([1, 2],)})


def _chunks(series: dict[str, tuple], rng: np.random.Generator, eval_lag: int) -> list[dict[str, tuple]]:
    """The same data in random batches, as ingest delivers it: every key in step order, evaluations arriving
    `eval_lag` steps after the training data of their step."""
    n = max(int(v[0][-1]) for v in series.values()) + 1
    cuts = np.unique(np.r_[0, rng.integers(1, n, 40), n + eval_lag + 1])
    out = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        batch = {}
        for key, (steps, values, epochs) in series.items():
            lag = eval_lag if key.startswith("eval/") else 0
            m = (steps + lag >= lo) & (steps + lag < hi)
            if m.any():
                batch[key] = (steps[m], values[m], epochs[m])
        out.append(batch)
    return out


@pytest.mark.parametrize("eval_lag", [0, 3 * SPE])
def test_online_equals_offline(eval_lag: int) -> None:
    """Batch by batch, with the state saved as JSON between batches (what the server does), the detector finds
    exactly what it finds on the whole series."""
    rng = np.random.default_rng(5)
    for run in (make_run(1, jump_epoch=28.0), make_run(2, diversity_drop_epoch=33.0), make_run(3),
                make_run(4, jump_epoch=20.0, noise=2.0), make_run(5, jump_epoch=25.0, diversity_drop_epoch=27.0)):
        offline = detect_turning_points(run)
        state = TurningDetector().to_state()
        online = []
        for batch in _chunks(run, rng, eval_lag):
            det = TurningDetector.from_state(json.loads(json.dumps(state)))
            online += det.update(batch)
            state = det.to_state()
        assert [tp.to_dict() for tp in online] == [tp.to_dict() for tp in offline]


def test_block_means_do_not_depend_on_batch_cuts() -> None:
    """Per-step blocks summed left to right across batches: the marks are the same bits however cut."""
    run = make_run(6, jump_epoch=30.0, noise=3.0)
    whole = TurningDetector()
    whole.feed(run)
    cut = TurningDetector()
    for batch in _chunks(run, np.random.default_rng(7), 0):
        cut.feed(batch)
    assert sorted(m.to_list() for m in cut.marks) == sorted(m.to_list() for m in whole.marks)


@pytest.mark.parametrize(("data", "named"), [
    ({"corroborate_epoch": 4.0}, "unknown key 'corroborate_epoch'"),
    ({"corroborate_min": -0.1}, "corroborate_min: must be a number ≥ 0"),
    ({"sustain_epochs": 2.5}, "sustain_epochs: must be an integer ≥ 1"),
    ({"sustain_epochs": True}, "sustain_epochs"),
    ({"groups": {"angles": {}}}, "unknown family 'angles'"),
    ({"groups": {"quality": {"kapa": 1.0}}}, "groups.quality: unknown key 'kapa'"),
    ({"groups": {"quality": {"kappa": "high"}}}, "groups.quality.kappa: must be a number"),
    ({"groups": []}, "groups: must be an object"),
])
def test_params_from_dict_names_what_is_wrong(data: dict, named: str) -> None:
    with pytest.raises(ValueError, match=re.escape(named)):
        TurningParams.from_dict(data)


def test_params_from_dict_overrides_only_what_it_gives() -> None:
    params = TurningParams.from_dict({"sustain_epochs": 5, "groups": {"diversity": {"coef": 0.5}}})
    assert params.sustain_epochs == 5 and params.groups["diversity"].coef == 0.5
    assert params.groups["diversity"].kappa == TurningParams().groups["diversity"].kappa


def test_fires_once_and_rearms_after_the_run_is_stable_again() -> None:
    run = make_run(jump_epoch=20.0)
    # a second, separate jump 25 epochs after the first has settled back (factor 2 → 1 at epoch 30)
    for key in ("angle_epoch/G", "angle_epoch/D", "angle/G", "angle/D"):
        steps, values, epochs = run[key]
        t = steps / SPE
        values = np.where(t >= 30, values / np.where(t >= 30, 2.0 if "epoch" in key else 1.5, 1), values)
        values = np.where((t >= 50) & (t < 55), values * (8 if "epoch" in key else 3), values)
        run[key] = (steps, values, epochs)
    tps = criticals(detect_turning_points(run))
    assert [round(tp.step / SPE) for tp in tps] == [20, 50]
    # without the quiet stretch the second jump does not re-arm the detector
    held = TurningParams().with_group("angle_epoch", calm_blocks=40).with_group("angle_step", calm_blocks=200)
    assert len(criticals(detect_turning_points(run, held))) == 1


def test_a_warning_does_not_hold_back_the_collapse_that_follows_it() -> None:
    """sqd-lsgan-gp-digits-ramp-e1-seed2's case (docs/alerts.md): an instability warning leaves the detector
    disarmed while its angles stay restless, and the collapse that follows must still be a turning point. A lone
    D spike at epoch 30, then at epoch 45 the weights freeze as the diversity collapses (critical on its own); the
    angle keys are kept from calming, so the detector is still disarmed by the warning when the collapse comes."""
    run = make_run(2, diversity_drop_epoch=45.0, lr_drop_epoch=45.0)
    for key in ("angle/D", "angle_epoch/D"):
        steps, values, epochs = run[key]
        run[key] = (steps, np.where(steps // SPE == 30, values * 8, values), epochs)
    held = TurningParams().with_group("angle_epoch", calm_blocks=40).with_group("angle_step", calm_blocks=200)
    for params in (TurningParams(), held):
        warning, tp = detect_turning_points(run, params)
        assert warning.severity == "warning" and warning.epoch == 30
        assert tp.severity == "critical" and 44 <= tp.epoch <= 46 and "eval/diversity" in tp.corroborated_by
    # once critical, the detector stays disarmed: a critical is not raised again for the same restless stretch
    assert len(detect_turning_points(run, held)) == 2
    state, online = TurningDetector(held).to_state(), []
    for batch in _chunks(run, np.random.default_rng(8), SPE):
        det = TurningDetector.from_state(json.loads(json.dumps(state)), held)
        online += det.update(batch)
        state = det.to_state()
    assert [tp.to_dict() for tp in online] == [tp.to_dict() for tp in detect_turning_points(run, held)]


def test_params_round_trip_and_import_has_no_server_side_effects() -> None:
    params = TurningParams().with_group("quality", coef=0.25)
    assert TurningParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    code = ("import sys, sqd.server.alerts.turning; bad = [m for m in ('fastapi', 'sqlalchemy', 'torch') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)

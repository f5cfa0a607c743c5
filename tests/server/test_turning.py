"""The turning-point detector on hand-built series (pure numpy, no server)."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest

from sqd.server.alerts.turning import TurningDetector, TurningParams, detect_turning_points

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


def test_clean_jump_is_found_once_with_the_angle_signals() -> None:
    tps = detect_turning_points(make_run(jump_epoch=30.0))
    assert len(tps) == 1
    tp = tps[0]
    assert 30 * SPE - SPE <= tp.step <= 30 * SPE + SPE
    assert tp.epoch in (29, 30)
    assert (tp.detected_step - 30 * SPE) / SPE <= 2.0
    assert any(s.startswith("angle") for s in tp.signals)
    assert set(tp.scores) == set(tp.signals) and all(v > 0 for v in tp.scores.values())
    assert tp.explanation.startswith(f"Turning point at epoch {tp.epoch}")
    assert "jumped to" in tp.explanation and "\n" not in tp.explanation


def test_jump_in_noise_is_found() -> None:
    for seed in range(3):
        tps = detect_turning_points(make_run(seed, jump_epoch=35.0, jump=6.0, noise=2.5))
        assert len(tps) == 1, seed
        assert abs(tps[0].step - 35 * SPE) <= 2 * SPE


def test_stable_run_warmup_spike_and_lr_drop_are_not_turning_points() -> None:
    for seed in range(3):
        assert detect_turning_points(make_run(seed)) == []
        assert detect_turning_points(make_run(seed, warmup_spike=(1.5, 6.0))) == []
        assert detect_turning_points(make_run(seed, lr_drop_epoch=30.0)) == []


def test_diversity_collapse_without_angle_jump_fires_on_diversity_alone() -> None:
    tps = detect_turning_points(make_run(diversity_drop_epoch=40.0))
    assert len(tps) == 1
    assert tps[0].signals[0] == "eval/diversity"
    assert not any(s.startswith("angle") for s in tps[0].signals)
    assert tps[0].step >= 40 * SPE - SPE
    assert "no angle jump" in tps[0].explanation


def test_missing_keys_and_missing_evaluations() -> None:
    run = make_run(jump_epoch=30.0, evals=False)
    assert len(detect_turning_points(run)) == 1
    only_epoch = {k: v for k, v in run.items() if k.startswith("angle_epoch/")}
    assert len(detect_turning_points(only_epoch)) == 1
    two_tuple = {k: (v[0], v[1]) for k, v in run.items()}  # no epochs: blocks of block_steps, epoch None
    tps = detect_turning_points(two_tuple)
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
    assert len(detect_turning_points(run)) == 1


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
                make_run(4, jump_epoch=20.0, noise=2.0)):
        offline = detect_turning_points(run)
        state = TurningDetector().to_state()
        online = []
        for batch in _chunks(run, rng, eval_lag):
            det = TurningDetector.from_state(json.loads(json.dumps(state)))
            online += det.update(batch)
            state = det.to_state()
        assert [tp.to_dict() for tp in online] == [tp.to_dict() for tp in offline]


def test_fires_once_and_rearms_after_the_run_is_stable_again() -> None:
    run = make_run(jump_epoch=20.0)
    # a second, separate jump 25 epochs after the first has settled back (factor 2 → 1 at epoch 30)
    for key in ("angle_epoch/G", "angle_epoch/D", "angle/G", "angle/D"):
        steps, values, epochs = run[key]
        t = steps / SPE
        values = np.where(t >= 30, values / np.where(t >= 30, 2.0 if "epoch" in key else 1.5, 1), values)
        values = np.where((t >= 50) & (t < 55), values * (8 if "epoch" in key else 3), values)
        run[key] = (steps, values, epochs)
    tps = detect_turning_points(run)
    assert [round(tp.step / SPE) for tp in tps] == [20, 50]
    # without the quiet stretch the second jump does not re-arm the detector
    held = TurningParams().with_group("angle_epoch", calm_blocks=40).with_group("angle_step", calm_blocks=200)
    assert len(detect_turning_points(run, held)) == 1


def test_params_round_trip_and_import_has_no_server_side_effects() -> None:
    params = TurningParams().with_group("quality", coef=0.25)
    assert TurningParams.from_dict(json.loads(json.dumps(params.to_dict()))) == params
    code = ("import sys, sqd.server.alerts.turning; bad = [m for m in ('fastapi', 'sqlalchemy', 'torch') "
            "if m in sys.modules]; assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)

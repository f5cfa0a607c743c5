"""The zoo trains a few steps through the Monitor (real bus, real artifact store); the worker evaluates them."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from worker_support import RunningWorker

from sqd.presets import resolve_config
from sqd.settings import Settings
from sqd.trainer.loop import train


@pytest.mark.parametrize("redis_url", ["external"], indirect=True)  # one Redis flavour: training is the cost
def test_checkpoints_of_a_training_run_are_evaluated(wsettings: Settings,
                                                     start_worker: Callable[..., RunningWorker]) -> None:
    # R3GAN keeps EMA weights (load_generator uses them) and has a linear output (the sampler clamps it)
    cfg = resolve_config("r3gan-digits", {"train.batch": 16, "train.checkpoint_every": 2, "train.log_every": 2})
    summary = train(cfg, preset="r3gan-digits", steps=4, settings=wsettings)
    found = start_worker().wait_for(2)
    by_step = {r.checkpoint_step: r for r in found if r.run_id == summary.run_id}
    newest = by_step[max(by_step)]
    assert newest.status == "ok", newest.error
    assert {"eval/quality", "eval/diversity", "eval/fid", "eval/reverse_kl"} <= set(newest.metrics)
    assert newest.grid_uri == f"runs/{summary.run_id}/samples/step-{newest.checkpoint_step:09d}.png"
    assert all(r.status in ("ok", "skipped") for r in by_step.values())

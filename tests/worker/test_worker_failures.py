"""Bad checkpoints become failed evaluations (and the worker goes on); an unreachable store is retried."""

from __future__ import annotations

import io
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from worker_support import RunningWorker, checkpoint_bytes, digits_spec, publish_checkpoints, put_checkpoint, wait_until

from sqd.artifacts import ArtifactStore
from sqd.bus import Bus
from sqd.protocol import CheckpointReady


def _nan_weights(weights: dict[str, torch.Tensor]) -> None:
    for name, w in weights.items():
        if w.is_floating_point() and "running" not in name:
            w.fill_(math.nan)


def test_bad_checkpoints_fail_with_their_reason_and_the_worker_goes_on(
        bus: Bus, store: ArtifactStore, start_worker: Callable[..., RunningWorker]) -> None:
    good = checkpoint_bytes()
    foreign = io.BytesIO()
    torch.save({"weights": torch.zeros(3)}, foreign)
    bad_arch = _with_spec(good, {**digits_spec(), "arch": "stylegan9"})
    narrow = checkpoint_bytes(spec={**digits_spec(), "kwargs": {**digits_spec()["kwargs"], "width": 16}})
    cases: dict[str, tuple[CheckpointReady, str]] = {
        "corrupt": (put_checkpoint(store, "corrupt", 10, b"not a checkpoint" * 64), "not a readable torch checkpoint"),
        "truncated": (put_checkpoint(store, "truncated", 10, good[: len(good) // 2]),
                      "not a readable torch checkpoint"),
        "sha": (put_checkpoint(store, "sha", 10, good, sha256="0" * 64), "sha256 mismatch"),
        "missing": (put_checkpoint(store, "missing", 10).model_copy(update={"uri": "runs/missing/nothing.pt"}),
                    "get runs/missing/nothing.pt: no such artifact"),
        "foreign": (put_checkpoint(store, "foreign", 10, foreign.getvalue()),
                    "format is None, expected 'sqd-checkpoint/1'"),
        "arch": (put_checkpoint(store, "arch", 10, bad_arch), "arch 'stylegan9' is not one of dcgan"),
        "shape": (put_checkpoint(store, "shape", 10, _with_spec(narrow, digits_spec())),
                  "weights do not fit generator spec"),
        "nan": (put_checkpoint(store, "nan", 10, checkpoint_bytes(mutate=_nan_weights)),
                "images contain NaN or infinite pixels (the run has diverged)"),
        "profile": (put_checkpoint(store, "profile", 10, profile="cifar"),
                    "evaluation profile 'cifar' is not one of digits, faces"),
    }
    publish_checkpoints(bus, [event for event, _ in cases.values()])
    publish_checkpoints(bus, [put_checkpoint(store, "good", 10, good)])
    found = {r.run_id: r for r in start_worker().wait_for(len(cases) + 1)}
    for run_id, (_, message) in cases.items():
        result = found[run_id]
        assert result.status == "failed", run_id
        assert message in (result.error or ""), (run_id, result.error)
        assert "Traceback" in (result.error or "")  # the tail of the traceback travels with the message
        assert result.metrics == {} and "total" in result.timings_s
    assert found["good"].status == "ok"
    assert bus.length("checkpoints:dead") == 0  # reported as failed evaluations, not dead letters


def _with_spec(data: bytes, spec: dict[str, Any]) -> bytes:
    """The checkpoint with another generator spec than the one its weights were made with."""
    state = torch.load(io.BytesIO(data), weights_only=True)
    state["generator"] = spec
    out = io.BytesIO()
    torch.save(state, out)
    return out.getvalue()


def _unreachable(store: ArtifactStore, event: CheckpointReady) -> None:
    """Make reading the checkpoint fail with an OSError that is not "file not found" (a directory in its place)."""
    store.delete(event.uri)
    Path(store.local_path(event.uri)).mkdir(parents=True)


def test_unreachable_store_is_retried_until_it_comes_back(bus: Bus, store: ArtifactStore,
                                                          start_worker: Callable[..., RunningWorker]) -> None:
    data = checkpoint_bytes()
    event = put_checkpoint(store, "flaky", 10, data)
    _unreachable(store, event)
    publish_checkpoints(bus, [event])
    worker = start_worker()
    counter = worker.loop.transient_key(worker.loop.consumer)
    assert wait_until(lambda: bus.client.hlen(counter) > 0)  # it failed once, transiently, and is pending
    Path(store.local_path(event.uri)).rmdir()
    store.put_bytes(event.uri, data)
    (result,) = worker.wait_for(1)
    assert result.status == "ok"
    assert wait_until(lambda: bus.client.hlen(counter) == 0)  # the retry count is cleared with the ack, just after


def test_store_that_stays_away_is_failed_and_dead_lettered(bus: Bus, store: ArtifactStore,
                                                           start_worker: Callable[..., RunningWorker]) -> None:
    event = put_checkpoint(store, "gone", 10)
    _unreachable(store, event)
    publish_checkpoints(bus, [event])
    (result,) = start_worker(transient_retries=2).wait_for(1)
    assert result.status == "failed"
    assert "gave up after 2 tries" in (result.error or "") and "artifact store unreachable" in (result.error or "")
    (dead,) = bus.dead_letters("checkpoints")
    assert "gave up after 2 transient failures" in dead["error"].decode()

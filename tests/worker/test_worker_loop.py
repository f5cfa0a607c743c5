"""The worker end to end on the real bus: CheckpointReady on `checkpoints` → EvaluationResult on `ingest`."""

from __future__ import annotations

import io
from collections.abc import Callable

from PIL import Image
from worker_support import (
    TEST_SAMPLES,
    RunningWorker,
    checkpoint_bytes,
    publish_checkpoints,
    put_checkpoint,
    wait_until,
)

from sqd.artifacts import ArtifactStore
from sqd.bus import BACKFILL, CHECKPOINTS, Bus
from sqd.worker.grid import grid_key
from sqd.worker.loop import GROUP

DIGITS_KEYS = {"eval/quality", "eval/diversity", "eval/diversity_plugin", "eval/js_lambda", "eval/modes_covered",
               "eval/reverse_kl", "eval/fid"}


def pending(bus: Bus, stream: str = CHECKPOINTS) -> int:
    return int(bus.client.xpending(bus.key(stream), GROUP)["pending"])


def all_acked(bus: Bus) -> bool:
    """Results are published before the ack: wait for it."""
    return wait_until(lambda: pending(bus) == 0)


def test_checkpoint_becomes_an_evaluation_with_a_grid(bus: Bus, store: ArtifactStore,
                                                      start_worker: Callable[..., RunningWorker]) -> None:
    event = put_checkpoint(store, "run-a", 1000)
    publish_checkpoints(bus, [event])
    (result,) = start_worker("w1").wait_for(1)
    assert result.status == "ok", result.error
    assert (result.run_id, result.checkpoint_step, result.checkpoint_uri) == ("run-a", 1000, event.uri)
    assert set(result.metrics) == DIGITS_KEYS
    assert result.n_samples == TEST_SAMPLES
    assert {"fetch", "load", "grid", "generate", "classify", "fid", "total"} <= set(result.timings_s)
    assert result.worker == "w1"
    assert result.grid_uri == grid_key("run-a", 1000) == "runs/run-a/samples/step-000001000.png"
    grid = Image.open(io.BytesIO(store.get_bytes(result.grid_uri)))
    assert grid.format == "PNG" and grid.mode == "RGB"
    assert grid.size == (2 + 8 * (16 + 2), 2 + 8 * (16 + 2))  # 8×8 tiles of 16 px with 2 px gutters
    assert all_acked(bus)


def test_grids_of_a_run_use_the_same_z(bus: Bus, store: ArtifactStore,
                                       start_worker: Callable[..., RunningWorker]) -> None:
    # Same weights at two steps → identical grids (so a grid timeline shows the change of G, not of z);
    # another run gets another z.
    worker = start_worker()
    publish_checkpoints(bus, [put_checkpoint(store, "run-z", 100)])
    worker.wait_for(1)
    publish_checkpoints(bus, [put_checkpoint(store, "run-z", 200), put_checkpoint(store, "run-y", 100)])
    found = {(r.run_id, r.checkpoint_step): r for r in worker.wait_for(3)}
    assert all(r.status == "ok" for r in found.values())
    first, second = (store.get_bytes(grid_key("run-z", s)) for s in (100, 200))
    assert first == second
    assert store.get_bytes(grid_key("run-y", 100)) != first
    # the evaluation z is fixed per run too: same weights, same metrics
    assert found[("run-z", 100)].metrics == found[("run-z", 200)].metrics


def test_profile_none_makes_only_the_grid(bus: Bus, store: ArtifactStore,
                                          start_worker: Callable[..., RunningWorker]) -> None:
    publish_checkpoints(bus, [put_checkpoint(store, "run-n", 50, profile="none")])
    (result,) = start_worker().wait_for(1)
    assert result.status == "ok" and result.metrics == {} and result.n_samples == 0
    assert result.grid_uri is not None and store.exists(result.grid_uri)
    assert "generate" not in result.timings_s and "grid" in result.timings_s


def test_queued_checkpoints_of_a_run_evaluate_only_the_newest_then_the_rest_when_idle(
        bus: Bus, store: ArtifactStore, start_worker: Callable[..., RunningWorker]) -> None:
    publish_checkpoints(bus, [put_checkpoint(store, "run-b", step) for step in (100, 200, 300)])
    worker = start_worker()
    first = {r.checkpoint_step: r for r in worker.wait_for(3)[:3]}
    assert first[300].status == "ok" and set(first[300].metrics) == DIGITS_KEYS
    for step in (100, 200):
        assert first[step].status == "skipped"
        assert first[step].metrics == {} and first[step].grid_uri is None
        assert "superseded by checkpoint step 300" in (first[step].error or "")
    # nothing new waits: the skipped checkpoints are evaluated after all, oldest first
    later = worker.wait_for(5)[3:]
    assert [(r.checkpoint_step, r.status) for r in later] == [(100, "ok"), (200, "ok")], [r.error for r in later]
    assert all(set(r.metrics) == DIGITS_KEYS and r.grid_uri and store.exists(r.grid_uri) for r in later)
    assert all_acked(bus) and wait_until(lambda: pending(bus, BACKFILL) == 0)
    assert worker.loop.backfilled == 2


def test_backpressure_is_per_run(bus: Bus, store: ArtifactStore,
                                 start_worker: Callable[..., RunningWorker]) -> None:
    publish_checkpoints(bus, [put_checkpoint(store, "run-c", 100), put_checkpoint(store, "run-d", 100),
                              put_checkpoint(store, "run-c", 200)])
    found = {(r.run_id, r.checkpoint_step): r.status for r in start_worker().wait_for(3)[:3]}
    assert found == {("run-c", 100): "skipped", ("run-c", 200): "ok", ("run-d", 100): "ok"}


def test_a_checkpoint_older_than_one_seen_elsewhere_is_skipped(bus: Bus, store: ArtifactStore,
                                                               start_worker: Callable[..., RunningWorker]) -> None:
    worker = start_worker()
    assert worker.loop.note_seen("run-e", 500) == 500  # another worker has read step 500
    assert worker.loop.note_seen("run-e", 400) == 500  # the mark only goes up
    publish_checkpoints(bus, [put_checkpoint(store, "run-e", 100)])
    result = worker.wait_for(1)[0]
    assert result.status == "skipped" and "superseded by checkpoint step 500" in (result.error or "")
    assert bus.client.get(worker.loop.latest_key("run-e")) == b"500"
    assert worker.wait_for(2)[1].status == "ok"  # then backfilled


def test_without_backfill_skipped_checkpoints_stay_skipped(bus: Bus, store: ArtifactStore,
                                                           start_worker: Callable[..., RunningWorker]) -> None:
    publish_checkpoints(bus, [put_checkpoint(store, "run-f", step) for step in (100, 200)])
    worker = start_worker(backfill=False)
    assert sorted(r.status for r in worker.wait_for(2)) == ["ok", "skipped"] and all_acked(bus)
    assert bus.length(BACKFILL) == 0 and worker.loop.backfill is None


def test_a_backfill_that_fails_is_reported_and_the_worker_goes_on(bus: Bus, store: ArtifactStore,
                                                                 start_worker: Callable[..., RunningWorker]) -> None:
    gone = put_checkpoint(store, "run-g", 100)
    publish_checkpoints(bus, [gone, put_checkpoint(store, "run-g", 200)])
    store.delete(gone.uri)  # e.g. the run was deleted meanwhile
    worker = start_worker()
    late = worker.wait_for(3)[2]
    assert (late.checkpoint_step, late.status) == (100, "failed") and gone.uri in (late.error or ""), late.error
    publish_checkpoints(bus, [put_checkpoint(store, "run-g", 300)])
    assert worker.wait_for(4)[3].status == "ok" and wait_until(lambda: pending(bus, BACKFILL) == 0)


def test_two_workers_share_the_group(bus: Bus, store: ArtifactStore,
                                     start_worker: Callable[..., RunningWorker]) -> None:
    a, _ = start_worker("wa", read_batch=1), start_worker("wb", read_batch=1)
    data = checkpoint_bytes()
    publish_checkpoints(bus, [put_checkpoint(store, f"run-{i}", 10, data) for i in range(6)])
    found = a.wait_for(6)
    assert sorted(r.run_id for r in found) == sorted(f"run-{i}" for i in range(6))  # each evaluated once
    assert all(r.status == "ok" for r in found)
    assert all_acked(bus)

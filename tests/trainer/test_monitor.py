"""The Monitor on a tiny GAN loop, against the real Redis and the embedded Valkey (the `bus` fixture)."""

from __future__ import annotations

import hashlib
import io
import math
import threading
from pathlib import Path

import pytest
import torch
from monitor_support import SPEC, events, of_type, points, tiny_gan, train

from sqd.artifacts import ArtifactStore
from sqd.bus import Bus
from sqd.settings import Settings
from sqd.trainer import Monitor
from sqd.trainer.publisher import NonFiniteError
from sqd.trainer.stability import weight_angle


def make(settings: Settings, bus: Bus, **kw: object) -> tuple[Monitor, torch.nn.Module, torch.nn.Module]:
    G, D = tiny_gan()
    kw.setdefault("generator_spec", SPEC)
    mon = Monitor(G, D, name="tiny", config={"lr": 1e-3}, preset="tiny", settings=settings, bus=bus, **kw)
    return mon, G, D


def test_constructor_starts_nothing(settings: Settings) -> None:
    before = threading.active_count()
    G, D = tiny_gan()
    mon = Monitor(G, D, settings=settings.model_copy(update={"redis_url": "redis://127.0.0.1:1/0"}))
    assert threading.active_count() == before and not mon.started
    assert not (settings.home / "spool").exists()


def test_tiny_loop_emits_the_expected_events(settings: Settings, bus: Bus) -> None:
    mon, G, D = make(settings, bus, checkpoint_every=10, flush_every=8)
    with mon:
        train(mon, G, D, steps=25)
    ingest = events(bus, "ingest")
    assert ingest[0].type == "run_started" and ingest[0].name == "tiny" and ingest[0].preset == "tiny"
    assert ingest[-1].type == "run_finished" and ingest[-1].status == "finished" and ingest[-1].step == 24
    pts = points(ingest)
    for key in ("angle/G", "angle/D", "loss/D", "loss/G", "grad_norm/G", "grad_norm/D"):
        assert sorted(pts[key]) == list(range(25)), key
        assert all(math.isfinite(v) for v in pts[key].values())
    assert all(0 < v < 0.5 for v in pts["angle/G"].values())
    assert pts["lr/G"] == {0: 1e-3}  # a constant learning rate is one point
    assert sorted(pts["angle_epoch/G"]) == [9, 19]  # at the last step of epochs 0 and 1
    assert "health/nonfinite" not in pts
    batches = of_type(ingest, "metrics")
    assert all(b.run_id == mon.run_id for b in batches) and len(batches) >= 4  # flushed every 8 rows

    ckpts = of_type(events(bus, "checkpoints"), "checkpoint")
    assert [c.step for c in ckpts] == [0, 10, 20, 24]  # every 10 steps from 0, plus the final state
    assert [c.step for c in of_type(ingest, "checkpoint")] == [0, 10, 20, 24]
    last = ckpts[-1]
    assert last.uri == f"runs/{mon.run_id}/checkpoints/step-000000024.pt"
    assert last.generator == SPEC and last.profile == "digits" and last.config == {"lr": 1e-3}
    data = ArtifactStore.from_settings(settings).get_bytes(last.uri, last.sha256)
    assert hashlib.sha256(data).hexdigest() == last.sha256 and len(data) == last.size_bytes
    state = torch.load(io.BytesIO(data), weights_only=True)
    assert state["format"] == "sqd-checkpoint/1" and state["step"] == 24 and state["generator"] == SPEC
    assert weight_angle([state["G"][k] for k in G.state_dict()], list(G.parameters())) == 0.0


def test_step_angles_equal_weight_angle(settings: Settings, bus: Bus) -> None:
    mon, G, D = make(settings, bus, checkpoint_every=None, flush_every=1)
    snapshots = [[p.detach().clone() for p in G.parameters()]]

    class Recorder(Monitor):
        def step(self, step: int, **kw: object) -> None:  # type: ignore[override]
            snapshots.append([p.detach().clone() for p in G.parameters()])
            super().step(step, **kw)  # type: ignore[arg-type]

    mon.__class__ = Recorder
    with mon:
        train(mon, G, D, steps=5)
    got = points(events(bus, "ingest"))["angle/G"]
    assert bus.length("checkpoints") == 0  # checkpoint_every=None: none, not even a final one
    for s in range(5):
        assert got[s] == pytest.approx(weight_angle(snapshots[s], snapshots[s + 1]), rel=1e-4)


def test_exception_marks_the_run_failed_and_is_reraised(settings: Settings, bus: Bus) -> None:
    mon, G, D = make(settings, bus, checkpoint_every=None)
    with pytest.raises(ZeroDivisionError), mon:
        train(mon, G, D, steps=3)
        _ = 1 / 0
    finished = of_type(events(bus, "ingest"), "run_finished")
    assert len(finished) == 1 and finished[0].status == "failed" and finished[0].step == 2
    assert finished[0].error == "ZeroDivisionError: division by zero"
    assert "1 / 0" in finished[0].traceback
    assert sorted(points(events(bus, "ingest"))["loss/D"]) == [0, 1, 2]  # what was measured is kept


def test_keyboard_interrupt_is_a_cancel(settings: Settings, bus: Bus) -> None:
    mon, G, D = make(settings, bus, checkpoint_every=None)
    with pytest.raises(KeyboardInterrupt), mon:
        train(mon, G, D, steps=2)
        raise KeyboardInterrupt
    (finished,) = of_type(events(bus, "ingest"), "run_finished")
    assert finished.status == "cancelled" and finished.traceback is None


def test_nonfinite_loss_is_reported_and_the_run_goes_on(settings: Settings, bus: Bus,
                                                         caplog: pytest.LogCaptureFixture) -> None:
    mon, G, D = make(settings, bus, checkpoint_every=None, flush_every=4)
    with mon:
        train(mon, G, D, steps=12, nan_at=5)
    ingest = events(bus, "ingest")
    pts = points(ingest)
    assert math.isnan(pts["loss/D"][5]) and pts["health/nonfinite"] == {5: 1.0}
    (alert,) = of_type(ingest, "alert")
    assert alert.rule == "nonfinite" and alert.step == 5 and alert.signals == ["loss/D"]
    assert of_type(ingest, "run_finished")[0].status == "finished"
    assert sum("non-finite" in r.getMessage() for r in caplog.records) == 1


def test_nonfinite_can_fail_the_run(settings: Settings, bus: Bus) -> None:
    mon, G, D = make(settings, bus, checkpoint_every=None, flush_every=2, on_nonfinite="fail")
    with pytest.raises(NonFiniteError, match="loss/D=nan"), mon:
        train(mon, G, D, steps=40, nan_at=3)
    (finished,) = of_type(events(bus, "ingest"), "run_finished")
    assert finished.status == "failed" and "NonFiniteError" in finished.error


def test_unwritable_artifact_store_is_reported_not_fatal(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    _run_with_broken_store(settings, bus, ArtifactStore(str(blocker)))


def _run_with_broken_store(settings: Settings, bus: Bus, store: ArtifactStore) -> None:
    mon, G, D = make(settings, bus, checkpoint_every=5, artifacts=store)
    with mon:
        train(mon, G, D, steps=12)
    ingest = events(bus, "ingest")
    assert of_type(ingest, "run_finished")[0].status == "finished"
    assert sorted(points(ingest)["health/checkpoint_failed"]) == [0, 5, 10, 11]
    assert {a.rule for a in of_type(ingest, "alert")} == {"checkpoint_failed"}
    assert not of_type(ingest, "checkpoint") and bus.length("checkpoints") == 0


def test_user_checkpoint_state_without_generator_spec_is_an_error(settings: Settings, bus: Bus) -> None:
    mon, G, D = make(settings, bus, checkpoint_every=1, generator_spec=None,
                     checkpoint_state=lambda: {"G": G.state_dict()})
    with pytest.raises(ValueError, match="no 'generator' spec"), mon:
        train(mon, G, D, steps=1)
    assert of_type(events(bus, "ingest"), "run_finished")[0].status == "failed"

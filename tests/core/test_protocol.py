import math

import msgpack
import pytest

from sqd.errors import BusError, DecodeError
from sqd.protocol import (
    AlertRaised,
    CancelRequest,
    CheckpointReady,
    EvaluationResult,
    LaunchRequest,
    MetricBatch,
    RunFinished,
    RunStarted,
)
from sqd.wire import decode, encode

SHA = "a" * 64


def examples():
    return [
        MetricBatch.from_points("r1", [("loss/D", 1, 0.5, 0, 10.0), ("angle/G", 1, 1e-6, 0, 10.0),
                                       ("loss/D", 2, float("nan"), 0, 11.0), ("loss/G", 2, float("inf"), None, 11.0)]),
        RunStarted(run_id="r1", name="n", preset="demo", config={"loss": {"name": "nsgan"}}, pid=3),
        RunFinished(run_id="r1", status="failed", error="boom", traceback="Traceback..."),
        CheckpointReady(run_id="r1", step=100, uri="runs/r1/checkpoints/step-000000100.pt", sha256=SHA,
                        size_bytes=10, generator={"arch": "dcgan", "kwargs": {}, "z_dim": 100}),
        EvaluationResult(run_id="r1", checkpoint_step=100, status="ok", metrics={"eval/quality": 0.9}),
        LaunchRequest(run_id="r2", preset="demo-stable", overrides={"optim.lr_g": 1e-3}),
        CancelRequest(run_id="r2"),
        AlertRaised(run_id="r1", rule="turning_point", step=5, signals=["angle/G"], explanation="jump"),
    ]


@pytest.mark.parametrize("event", examples(), ids=lambda e: e.type)
def test_round_trip_keeps_every_field(event):
    back = decode(encode(event))
    assert type(back) is type(event)
    assert back.event_id == event.event_id and back.run_id == event.run_id and back.ts == event.ts
    if isinstance(event, MetricBatch):
        got, want = list(back.points()), list(event.points())
        assert [p[:2] for p in got] == [p[:2] for p in want]
        assert math.isnan(got[2].value) and got[3].value == math.inf  # NaN and inf survive the wire
    else:
        assert back == event


def test_batch_rows_and_columns_agree():
    batch = MetricBatch.from_points("r", [("a", 0, 1.0, None, 0.0), ("b", 0, 2.0, None, 0.0), ("a", 1, 3.0, 1, 1.0)])
    assert batch.keys == ["a", "b"] and batch.key_index == [0, 1, 0] and len(batch) == 3


def test_mismatched_columns_are_rejected_with_the_column_named():
    with pytest.raises(ValueError, match="column 'value' has 1 entries, key_index has 2"):
        MetricBatch(run_id="r", keys=["a"], key_index=[0, 0], step=[1, 2], value=[1.0], epoch=[None, None],
                    wall_time=[0.0, 0.0])


def _fields(data):
    return {b"t": b"x", b"v": b"1", b"d": msgpack.packb(data)}


@pytest.mark.parametrize("fields, message", [
    ({b"x": b"1"}, "lacks field 'v' or 'd'"),
    ({b"v": b"9", b"d": b""}, "schema_version b'9' is not supported"),
    ({b"v": b"1", b"d": b"\xc1\xc1"}, "not valid msgpack"),
    (_fields([1, 2]), "must hold a map"),
    (_fields({"type": "nope", "run_id": "r"}), "invalid 'nope' event"),
    (_fields({"type": "metrics", "run_id": "r", "keys": ["a"], "key_index": [0], "step": ["x"], "value": [1.0],
              "epoch": [None], "wall_time": [0.0]}), "step.0: Input should be a valid integer"),
    (_fields({"type": "run_finished", "run_id": "r", "status": "exploded"}), "status: Input should be"),
    (_fields({"type": "evaluation", "run_id": "", "checkpoint_step": 1, "status": "ok"}), "run_id"),
])
def test_malformed_payloads_say_which_field_is_wrong(fields, message):
    with pytest.raises(DecodeError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")):
        decode(fields)


def test_encode_refuses_non_events():
    with pytest.raises(BusError, match="expected an Event, got dict"):
        encode({"type": "metrics"})


def test_oversized_events_are_refused_on_both_sides():
    from sqd.wire import MAX_MESSAGE_BYTES

    huge = MetricBatch.from_points("r", (("k", i, 0.5, None, 0.0) for i in range(MAX_MESSAGE_BYTES // 20)))
    with pytest.raises(BusError, match=r"encode: metrics event for run r is [\d,]+ bytes, over the .* split it"):
        encode(huge)
    with pytest.raises(DecodeError, match="over the"):
        decode({b"v": b"1", b"d": b"\x00" * (MAX_MESSAGE_BYTES + 1)})

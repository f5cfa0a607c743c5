"""Metric batches travel as packed numpy columns: exact round trips, the narrow integer types, the list fallback
for numbers beyond 64 bits, and a clear error for every malformed column."""

import math
import struct

import msgpack
import numpy as np
import pytest

from sqd.errors import DecodeError
from sqd.protocol import NO_EPOCH, MetricBatch, PackedMetrics
from sqd.wire import decode, decode_packed, encode

NAN_WITH_PAYLOAD = struct.unpack("<d", b"\x01\x00\x00\x00\x00\x00\xf8\x7f")[0]
ODD_FLOATS = [0.0, -0.0, 1e-310, float("inf"), float("-inf"), NAN_WITH_PAYLOAD]


def batch(n: int = 6, epochs: list[int | None] | None = None, step0: int = 0) -> MetricBatch:
    epochs = epochs if epochs is not None else [i // 2 for i in range(n)]
    values = (ODD_FLOATS * n)[:n]
    return MetricBatch.from_points("r1", [(f"k{i % 3}", step0 + i, values[i], epochs[i], 1.7e9 + i * 0.01)
                                          for i in range(n)])


def body(event: MetricBatch) -> dict:
    return msgpack.unpackb(encode(event)["d"], raw=False)


def test_packed_round_trip_is_bit_exact():
    sent = batch(epochs=[None, 0, None, 1, 2, None])
    back = decode(encode(sent))
    assert back.model_dump(exclude={"value"}) == sent.model_dump(exclude={"value"})
    assert np.array_equal(np.array(back.value).view(np.int64), np.array(sent.value).view(np.int64))  # NaN payload


def test_the_consumer_path_keeps_the_columns_packed():
    sent = batch(epochs=[None, 0, None, 1, 2, None])
    packed = decode_packed(encode(sent))
    assert isinstance(packed, PackedMetrics) and packed.run_id == "r1" and packed.keys == sent.keys
    assert packed.cols.epoch.tolist() == [NO_EPOCH, 0, NO_EPOCH, 1, 2, NO_EPOCH]
    assert packed.batch().model_dump(exclude={"value"}) == sent.model_dump(exclude={"value"})


def test_integer_columns_take_the_narrowest_type():
    columns = body(batch(step0=70_000))["columns"]
    assert columns["key_index"][0] == "<i1" and columns["step"][0] == "<i4" and columns["epoch"][0] == "<i1"
    assert columns["value"][0] == "<f8" and columns["wall_time"][0] == "<f8"
    assert body(batch(epochs=[None] * 6))["columns"]["epoch"][0] == "<i8"  # "none" is -2**63


def test_numbers_beyond_64_bits_travel_as_lists_and_arrive_intact():
    sent = MetricBatch.from_points("r1", [("k", 2**63 + 5, 1.0, None, 1.0)])
    assert "columns" not in body(sent)
    assert decode(encode(sent)).step == [2**63 + 5]  # the consumer refuses it with a reason, not the bus


def fields_with(change) -> dict:
    data = body(batch())
    change(data["columns"])
    return {"t": b"metrics", "v": b"1", "d": msgpack.packb(data, use_bin_type=True)}


def set_column(name, spec):
    return lambda cols: cols.__setitem__(name, spec)


@pytest.mark.parametrize(("change", "message"), [
    (set_column("step", ["<f8", b"\x00" * 48]), "columns.step must be [dtype, bytes]"),
    (set_column("value", ["<f8", b"\x00" * 47]), "columns.value: 47 bytes is not a whole number of <f8 values"),
    (set_column("wall_time", "nope"), "columns.wall_time must be [dtype, bytes]"),
    (set_column("step", ["<i8", np.arange(5, dtype="<i8").tobytes()]), "column 'step' has 5 entries, key_index has 6"),
    (set_column("key_index", ["<i1", np.array([0, 1, 2, 3, 0, 1], "<i1").tobytes()]), "key_index must lie in [0, 3)"),
    (set_column("step", ["<i8", np.array([0, 1, -2, 3, 4, 5], "<i8").tobytes()]), "step must be >= 0"),
    (lambda cols: cols.pop("epoch"), "columns must map each of"),
    (lambda cols: [cols.__setitem__(k, [v[0], b""]) for k, v in list(cols.items())], "at least 1 item"),
])
def test_malformed_columns_say_which_column_is_wrong(change, message):
    with pytest.raises(DecodeError, match="invalid 'metrics' event") as err:
        decode(fields_with(change))
    assert message in str(err.value)


def test_a_bad_header_is_reported_by_the_model():
    data = body(batch())
    data["keys"] = []
    with pytest.raises(DecodeError, match="keys"):
        decode({"t": b"metrics", "v": b"1", "d": msgpack.packb(data, use_bin_type=True)})


def test_cached_columns_follow_a_copy_with_new_points():
    sent = batch()
    assert sent.columns().step.tolist() == list(range(6))
    moved = sent.model_copy(update={"step": [s + 10 for s in sent.step]})
    assert moved.columns().step.tolist() == list(range(10, 16))
    assert math.isnan(decode(encode(moved)).value[5])

"""Columns as byte planes (server/store/byte_planes.py): any column round-trips, each plane takes its cheapest
form, and a damaged body is refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sqd.server.store.byte_planes import ColumnReader, encode_column


def round_trip(*columns: np.ndarray) -> list[np.ndarray]:
    reader = ColumnReader(memoryview(b"".join(encode_column(c) for c in columns)))
    out = [reader.column(len(c), c.dtype.type) for c in columns]
    reader.finish()
    return out


@settings(max_examples=150, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1), max_size=300), st.integers(0, 2**64 - 1),
       st.sampled_from(["any", "small", "runs"]))
def test_any_column_round_trips(values, base, shape):
    a = np.array(values, np.uint64)
    if shape == "small":
        a = (a % 13) + np.uint64(base % 2**60)
    elif shape == "runs":
        a = np.repeat(a[:5], 60)
    b = a.astype(np.uint32) if shape == "small" else a
    got = round_trip(a, b)
    assert np.array_equal(got[0], a) and np.array_equal(got[1], b)


def test_each_plane_takes_its_cheapest_form():
    rng = np.random.default_rng(0)
    m = 1000
    assert len(encode_column(np.full(m, 0x0102030405060708, np.uint64))) == 1 + 8 * 2  # eight constant planes
    jitter = np.uint64(50) + rng.integers(0, 16, m).astype(np.uint64)  # step times: 4 bits a point
    assert len(encode_column(jitter)) == 1 + 3 + m * 4 // 8
    noise = rng.integers(0, 2**32, m).astype(np.uint32)  # mantissas: raw, no frame around them
    assert len(encode_column(noise)) == 1 + 4 * (3 + m)
    runs = np.repeat(rng.integers(0, 2**32, 4).astype(np.uint32), m // 4)  # a schedule: zstd finds the runs
    assert len(encode_column(runs)) < 4 * 40
    assert len(encode_column(np.zeros(0, np.uint64))) == 1 and round_trip(np.zeros(0, np.uint64))[0].size == 0


@pytest.mark.parametrize(("body", "message"), [
    (b"\x09", "9 planes for a 8-byte column"),
    (b"\x01\x07", "plane kind 7 is unknown"),
    (b"\x01\x01\x00\x09", "a packed plane of 9 bits"),
    (b"\x01\x01\x00\x04\xff", "packed plane runs past the end"),
    (b"\x01\x02\x05\x00\x00\x00junk!", "zstd plane"),
    (b"\x01\x00\x07\x00", "1 bytes after the last column"),
])
def test_damaged_bodies_are_refused(body, message):
    reader = ColumnReader(memoryview(body))
    with pytest.raises(ValueError, match=message):
        reader.column(10, np.uint64)
        reader.finish()

"""The chunk format alone (no database): every column round-trips bit for bit, rollups equal a brute-force
aggregate, and a damaged blob is refused with a reason."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from server_support import V1_FLOAT32, V1_FLOAT64

from sqd.server.store.chunk_codec import (
    Buckets,
    CorruptChunk,
    Points,
    bucketize,
    buckets_of,
    decode_points,
    decode_rollups,
    encode_points,
    encode_rollups,
    merge_buckets,
    rollup_levels,
)

SPECIAL = [np.nan, -np.nan, np.inf, -np.inf, 0.0, -0.0, 5e-324, -2.2250738585072014e-308, 1.7976931348623157e308,
           np.float64(np.float32(1e-45)), 1.0]


def bits(a: np.ndarray) -> np.ndarray:
    return a.view(np.int64) if a.dtype == np.float64 else a


def assert_same(a: Points, b: Points) -> None:
    for name in ("step", "value", "epoch", "wall_time"):
        assert np.array_equal(bits(getattr(a, name)), bits(getattr(b, name))), name


@st.composite
def chunks(draw, float32: bool = False, most: int = 300) -> Points:  # type: ignore[no-untyped-def]
    n = draw(st.integers(1, most))
    gaps = draw(st.lists(st.integers(1, 2**20), min_size=n, max_size=n))
    start = draw(st.integers(0, 2**40))
    steps = start + np.cumsum(np.array(gaps, np.int64)) - gaps[0]
    if float32:
        values = np.array(draw(st.lists(st.floats(width=32, allow_nan=True), min_size=n, max_size=n)),
                          np.float32).astype(np.float64)
    else:  # any 64-bit pattern: NaN payloads, denormals, -0.0 and ±inf included
        raw = draw(st.lists(st.integers(0, 2**64 - 1), min_size=n, max_size=n))
        values = np.array(raw, np.uint64).view(np.float64)
    epochs = np.array(draw(st.lists(st.integers(-1, 2**31 - 1), min_size=n, max_size=n)), np.int64)
    walls = np.array(draw(st.lists(st.floats(0, 4e9), min_size=n, max_size=n)), np.float64)
    return Points(steps.astype(np.int64), values, epochs, walls)


@settings(max_examples=100, deadline=None)
@given(chunks())
def test_any_float64_bits_round_trip(p):
    assert_same(decode_points(encode_points(p)), p)


@settings(max_examples=40, deadline=None)
@given(chunks(float32=True, most=60))
def test_float32_values_round_trip_and_take_four_bytes(p):
    blob = encode_points(p)
    assert_same(decode_points(blob), p)
    assert blob[1] & 1  # the float32 flag


def test_special_values_bit_for_bit():
    payload = np.array([0x7FF0000000000001, 0xFFF8000000000123], np.uint64).view(np.float64)  # signalling, payload
    values = np.r_[np.array(SPECIAL, np.float64), payload]
    n = len(values)
    p = Points(np.arange(n, dtype=np.int64) * 3, values, np.full(n, -1, np.int64), np.full(n, 1.7e9))
    assert_same(decode_points(encode_points(p)), p)


def test_dense_float32_losses_compress():
    rng = np.random.default_rng(0)
    n = 4096
    p = Points(np.arange(n, dtype=np.int64), (0.7 + 0.05 * rng.normal(size=n)).astype(np.float32).astype(np.float64),
               np.arange(n, dtype=np.int64) // 1000, np.full(n, 1.7e9))
    assert len(encode_points(p)) < 3.5 * n  # float32 mantissas, steps/epochs/wall_time nearly free


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(-2**52, 2**52), min_size=1, max_size=200))
def test_millisecond_wall_times_round_trip_as_integers(ms):
    walls = np.array([round(m / 1000, 3) for m in ms])  # what sqd.trainer.metric_buffer.wall_ms sends
    n = len(walls)
    p = Points(np.arange(n, dtype=np.int64), np.ones(n), np.zeros(n, np.int64), walls)
    blob = encode_points(p)
    assert_same(decode_points(blob), p)
    assert blob[1] & 2  # the millisecond flag


def test_wall_times_off_the_millisecond_stay_exact_and_millisecond_ones_are_cheaper():
    rng = np.random.default_rng(0)
    n = 4096
    walls = 1.7e9 + np.cumsum(0.05 + rng.exponential(0.002, n))  # time.time() of a ~20 steps/s loop
    for w, flag in ((walls, 0), (np.array([round(x, 3) for x in walls.tolist()]), 2), (np.r_[0.001, -0.0], 0)):
        p = Points(np.arange(len(w), dtype=np.int64), np.ones(len(w)), np.zeros(len(w), np.int64), w)
        assert_same(decode_points(encode_points(p)), p)  # -0.0 is not a whole millisecond bit for bit
        assert encode_points(p)[1] & 2 == flag
    exact, ms = (len(encode_points(Points(np.arange(n), np.ones(n), np.zeros(n, np.int64), w)))
                 for w in (walls, np.array([round(x, 3) for x in walls.tolist()])))
    assert ms < exact - n  # ≥ 1 byte a point saved


def brute(step: np.ndarray, value: np.ndarray, level: int) -> list[tuple]:
    out = []
    for b in np.unique(step >> level):
        sel = (step >> level) == b
        v = value[sel]
        finite = v[~np.isnan(v)]
        out.append((int(b), int(sel.sum()), int(np.isnan(v).sum()), finite.min() if finite.size else np.nan,
                    finite.max() if finite.size else np.nan, int(step[sel][-1]), v[-1]))
    return out


def rows(b: Buckets) -> list[tuple]:
    return list(zip(b.bucket.tolist(), b.n.tolist(), b.n_nan.tolist(), b.vmin.tolist(), b.vmax.tolist(),
                    b.last_step.tolist(), b.last_value.tolist(), strict=True))


def same_rows(a: list[tuple], b: list[tuple]) -> bool:
    return len(a) == len(b) and all(x == y or (x != x and y != y) for ra, rb in zip(a, b, strict=True)
                                    for x, y in zip(ra, rb, strict=True))


@settings(max_examples=25, deadline=None)
@given(st.integers(1, 6000), st.integers(1, 40), st.integers(0, 10_000), st.integers(0, 2**32))
def test_rollups_equal_brute_force(n, stride, start, seed):
    rng = np.random.default_rng(seed)
    step = start + np.cumsum(rng.integers(1, stride + 1, n)).astype(np.int64)
    value = rng.normal(size=n)
    value[rng.random(n) < 0.05] = np.nan
    value[rng.random(n) < 0.01] = np.inf
    p = Points(step, value, np.full(n, -1, np.int64), np.zeros(n))
    records, owner = decode_rollups([encode_rollups(p)])
    assert set(np.unique(records["level"]).tolist()) == set(rollup_levels(step))
    assert (owner == 0).all()
    for level in rollup_levels(step):
        got = buckets_of(records[records["level"] == level])
        assert same_rows(rows(got), brute(step, value, level))
        assert len(got) * 16 <= n  # rollups cost at most 1/16 of the points
    coarse = 12
    assert same_rows(rows(merge_buckets(bucketize(step, value, 8), coarse - 8)), brute(step, value, coarse))


def test_sparse_chunks_have_no_rollups():
    step = np.arange(0, 4096 * 1000, 1000, dtype=np.int64)  # an evaluation every 1,000 steps
    assert rollup_levels(step)[0] >= 14  # only buckets holding ≥ 16 points on average


def flip(blob: bytes, at: int) -> bytes:
    return blob[:at] + bytes([blob[at] ^ 0x10]) + blob[at + 1:]


@pytest.mark.parametrize("damage", [lambda b: b[:3], lambda b: b[:6] + b"junk" + b[10:], lambda b: b"\x09" + b[1:],
                                    lambda b: flip(b, 20), lambda b: b[:-1], lambda b: b + b"\x00"])
def test_damaged_blobs_are_refused(damage):
    p = Points(np.arange(100, dtype=np.int64), np.ones(100), np.zeros(100, np.int64), np.zeros(100))
    with pytest.raises(CorruptChunk, match="chunk points"):
        decode_points(damage(encode_points(p)))
    with pytest.raises(CorruptChunk, match="chunk rollups"):
        decode_rollups([b"not zstd at all"])


def test_format_1_chunks_still_decode():
    old = decode_points(bytes.fromhex(V1_FLOAT64))
    assert_same(old, Points(np.array([3, 4, 6, 9, 10, 1000]), np.array([0.5, np.nan, -np.inf, 1e300, -0.0, 5e-324]),
                            np.array([-1, 0, 0, 1, 1, 7]), 1.7e9 + np.array([0, 0.25, 0.5, 1.0, 1.5, 9.125])))
    old = decode_points(bytes.fromhex(V1_FLOAT32))
    assert_same(old, Points(np.arange(5) * 2, np.array([0.5, 0.25, 0.75, 1.0, 2.0]), np.zeros(5, np.int64),
                            np.array([1700000000.001, 1700000000.052, 1700000000.1, 1700000000.15, 1700000000.2])))
    assert_same(decode_points(encode_points(old)), old)  # rewritten in today's format
    assert encode_points(old)[0] == 2


def test_a_short_series_costs_little_beyond_its_values():
    """A 100-point chunk (a short run: one of 100 keys × 100 steps) of float32 losses with millisecond wall
    times: the value bytes carry the noise, and the rest is a few bytes."""
    rng = np.random.default_rng(1)
    n = 100
    steps = np.arange(n, dtype=np.int64)
    walls = np.array([round(w, 3) for w in (1.7e9 + np.cumsum(0.05 + rng.exponential(0.002, n))).tolist()])
    losses = (0.7 + rng.normal(0, 0.05, n)).astype(np.float32).astype(np.float64)
    p = Points(steps, losses, steps // 10, walls)
    blob = encode_points(p)
    assert_same(decode_points(blob), p)
    assert len(blob) < 4.2 * n  # format 1: 4.7 bytes a point; the float32 noise alone is ~2.7
    schedule = Points(steps, np.full(n, 2e-4) * (0.5 ** (steps // 50)), steps // 10, walls)
    assert len(encode_points(schedule)) < 1.5 * n


def test_threads_encode_and_decode_at_once():
    """The server encodes and decodes chunks on many threads at once (ingest, HTTP ingest, parallel page requests);
    each must get its own bytes back."""
    from concurrent.futures import ThreadPoolExecutor

    rng = np.random.default_rng(3)
    originals = []
    for i in range(16):
        n = 4096
        steps = np.arange(n, dtype=np.int64) + i * n
        originals.append(Points(steps, rng.normal(size=n), steps // 100, 1.7e9 + steps * 0.05))

    def round_trips(p: Points) -> bool:
        for _ in range(20):
            blob, rollups = encode_points(p), encode_rollups(p)
            q = decode_points(blob)
            records, _ = decode_rollups([rollups])
            if not (np.array_equal(q.value.view(np.int64), p.value.view(np.int64)) and len(records)):
                return False
        return True

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(round_trips, originals * 2))


@settings(max_examples=200, deadline=None)
@given(st.integers(0, 10**6), st.integers(0, 7))
def test_any_flipped_bit_is_refused(at, bit):
    """Format 2 carries a CRC-32 over its count, flags and body: one flipped bit anywhere after the format byte
    (which selects the reader) is refused before the count sizes anything."""
    rng = np.random.default_rng(5)
    p = Points(np.arange(300, dtype=np.int64), rng.normal(size=300), np.arange(300) // 7, 1.7e9 + np.arange(300) * 0.05)
    blob = encode_points(p)
    at = 1 + at % (len(blob) - 1)
    damaged = blob[:at] + bytes([blob[at] ^ (1 << bit)]) + blob[at + 1:]
    with pytest.raises(CorruptChunk, match="chunk points"):
        decode_points(damaged)

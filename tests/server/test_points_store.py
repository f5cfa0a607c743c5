"""Point storage and downsampling against real SQLite and PostgreSQL: idempotency, NaN/±inf, rollups."""

from __future__ import annotations

import math

import numpy as np
import pytest
from server_support import V1_FLOAT32, brute_buckets, same_float
from sqlalchemy import func, select

from sqd.protocol import MetricBatch
from sqd.server.store.chunk_read import run_points
from sqd.server.store.models import Chunk
from sqd.server.store.points_store import store_points
from sqd.server.store.series_query import bucket_level, query_series


@pytest.fixture
def sessions(store_sessions):
    return store_sessions


def store(sessions, steps, values, key="k", run="run"):
    batch = MetricBatch.from_points(run, [(key, int(s), float(v), 0, 1.0) for s, v in zip(steps, values, strict=True)])
    with sessions() as s:
        new = store_points(s, [batch]).new
        s.commit()
    return len(new)


def totals(sessions):
    """(points decoded from the chunks, points the chunks' summaries count, the chunk rows as stored)."""
    with sessions() as s:
        return (sum(len(p) for p in run_points(s, "run").values()), s.scalar(select(func.sum(Chunk.n))),
                s.execute(select(Chunk.series_id, Chunk.first_step, Chunk.data).order_by(Chunk.first_step)).all())


def test_duplicate_delivery_stores_nothing_twice(sessions):
    assert store(sessions, range(100), range(100)) == 100
    before = totals(sessions)
    assert store(sessions, range(100), range(100)) == 0
    assert totals(sessions) == before  # a repeat rewrites nothing
    assert store(sessions, [5, 5, 50, 150], [1, 2, 3, 4]) == 1  # only step 150 is new
    assert totals(sessions)[:2] == (before[0] + 1, before[1] + 1)


def test_first_value_for_a_step_wins_within_and_across_batches(sessions):
    store(sessions, [3, 3], [1.0, 2.0])
    store(sessions, [3], [9.0])
    with sessions() as s:
        assert query_series(s, "run", ["k"], 10)["k"].value == [1.0]


def test_nan_and_infinities_round_trip(sessions):
    values = [math.nan, math.inf, -math.inf, 0.0, -0.0, 1e308, 5e-324]
    store(sessions, range(len(values)), values)
    with sessions() as s:
        got = query_series(s, "run", ["k"], 100)["k"]
    assert math.isnan(got.value[0]) and got.value[1:3] == [math.inf, -math.inf]
    assert got.value[3:] == values[3:] and got.nan == [1, 0, 0, 0, 0, 0, 0]


@pytest.mark.parametrize("max_points", [1, 3, 10, 64, 500])
def test_downsampled_buckets_match_numpy(sessions, max_points):
    rng = np.random.default_rng(max_points)
    steps = rng.choice(20_000, size=5000, replace=False).astype(np.int64)
    values = rng.normal(size=5000)
    values[rng.choice(5000, 50)] = np.nan
    values[rng.choice(5000, 5)] = np.inf
    for chunk in np.array_split(np.arange(5000), 7):  # several batches, out of order
        store(sessions, steps[chunk], values[chunk])
    for lo, hi in [(None, None), (1234, 15_000), (0, 300)]:
        first, last = int(steps.min()), int(steps.max())
        a, b = max(first, lo or first), min(last, hi if hi is not None else last)
        with sessions() as s:
            got = query_series(s, "run", ["k"], max_points, lo, hi)["k"]
        level = 0 if (b - a + 1 <= max_points) else bucket_level(a, b, max_points)
        want = brute_buckets(steps, values, a, b, level)
        assert len(got.step) == len(want) <= max_points
        for i, (st, v, mn, mx, n, nn) in enumerate(want):
            assert (got.step[i], got.count[i], got.nan[i]) == (st, n, nn)
            assert same_float(got.value[i], v) and same_float(got.min[i], mn) and same_float(got.max[i], mx)


def test_a_single_step_spike_survives_any_max_points(sessions):
    n = 50_000
    values = np.sin(np.arange(n) / 100.0)
    spike_step = 31_337
    values[spike_step] = 1e6
    store(sessions, np.arange(n), values)
    for max_points in (1, 2, 3, 7, 100, 999, 1000, 4096, n):
        with sessions() as s:
            got = query_series(s, "run", ["k"], max_points)["k"]
        assert len(got.step) <= max_points
        assert max(got.max) == 1e6, max_points
        assert sum(got.count) == n


def test_window_at_full_resolution_and_unknown_keys(sessions):
    store(sessions, range(10_000), range(10_000))
    with sessions() as s:
        got = query_series(s, "run", ["k", "nope"], 1000, start=4000, end=4500)
    assert "nope" not in got
    assert got["k"].step == list(range(4000, 4501)) and got["k"].bucket_width == 1


def test_chunks_of_format_1_are_read_and_rewritten_in_format_2(sessions):
    """A database written before chunk format 2 keeps its chunks as they are: they are read, and the open one is
    rewritten in format 2 when a batch extends it."""
    store(sessions, [0, 2, 4, 6, 8], [9, 9, 9, 9, 9])  # the series and its chunk row
    with sessions() as s:
        s.execute(Chunk.__table__.update().values(data=bytes.fromhex(V1_FLOAT32)))  # steps 0..8, as format 1 wrote
        s.commit()
        assert run_points(s, "run")["k"].value.tolist() == [0.5, 0.25, 0.75, 1.0, 2.0]
    assert store(sessions, [8, 10, 12], [7, 7, 7]) == 2  # step 8 is stored: its format-1 value stays
    with sessions() as s:
        p = run_points(s, "run")["k"]
        assert p.step.tolist() == [0, 2, 4, 6, 8, 10, 12]
        assert p.value.tolist() == [0.5, 0.25, 0.75, 1.0, 2.0, 7.0, 7.0]
        assert [d[0] for d in s.scalars(select(Chunk.data))] == [2]

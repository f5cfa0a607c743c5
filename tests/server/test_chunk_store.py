"""The chunk store against real SQLite and PostgreSQL: chunk boundaries, out-of-order and overlapping batches,
redelivery, queries equal to a brute-force downsample (rollup paths included), downsampling, and gc."""

from __future__ import annotations

import math
import threading
import time

import numpy as np
import pytest
from server_support import brute_buckets, same_float
from sqlalchemy import event as sa_event
from sqlalchemy import select
from sqlalchemy.exc import OperationalError

from sqd.protocol import MetricBatch
from sqd.server.ingest.apply import apply_events
from sqd.server.store import migrate, runs_store
from sqd.server.store.chunk_read import run_points
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.export import csv_chunks
from sqd.server.store.gc import gc_data
from sqd.server.store.models import Chunk, Evaluation, Run, Series, run_ref
from sqd.server.store.points_store import CHUNK_POINTS, OPEN_POINTS, store_points
from sqd.server.store.retention import downsample_run
from sqd.server.store.series_query import bucket_level, query_series


@pytest.fixture
def engine(db_url):
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    with session_factory(eng)() as s:
        for run in ("run", "other"):
            runs_store.create_run(s, name=run, kind="external", status="running", run_id=run)
        s.commit()
    yield eng
    eng.dispose()


@pytest.fixture
def sessions(engine):
    return session_factory(engine)


def store(sessions, steps, values, key="k", run="run", epoch=None) -> int:
    rows = [(key, int(s), float(v), epoch if epoch is not None else int(s) // 1000, 1.7e9 + int(s) * 0.01)
            for s, v in zip(steps, values, strict=True)]
    with sessions() as s:
        new = len(store_points(s, [MetricBatch.from_points(run, rows)]).new)
        s.commit()
    return new


def chunk_rows(sessions, run="run"):
    with sessions() as s:
        return s.execute(select(Chunk.series_id, Chunk.first_step, Chunk.last_step, Chunk.n, Chunk.width, Chunk.data)
                         .join(Series, Series.id == Chunk.series_id).where(Series.run_ref == run_ref(run))
                         .order_by(Chunk.series_id, Chunk.first_step)).all()


def check_chunks(sessions, run="run"):
    """Chunks are sorted, non-overlapping, at most CHUNK_POINTS each, and their counts match their points."""
    rows = chunk_rows(sessions, run)
    for a, b in zip(rows, rows[1:], strict=False):
        assert a.series_id != b.series_id or a.last_step < b.first_step
    assert all(r.n <= CHUNK_POINTS for r in rows)
    return rows


def stored(sessions, key="k", run="run"):
    with sessions() as s:
        return run_points(s, run, [key])[key]


def test_chunk_boundaries_and_appends(sessions):
    n = 3 * CHUNK_POINTS + 5
    steps, values = np.arange(n), np.sin(np.arange(n) / 50.0)
    for lo, hi in [(0, 1000), (1000, 4095), (4095, 4097), (4097, 9000), (9000, n)]:  # straddle every boundary
        assert store(sessions, steps[lo:hi], values[lo:hi]) == hi - lo
    rows = check_chunks(sessions)
    assert [r.n for r in rows] == [CHUNK_POINTS] * 3 + [5]
    assert [r.first_step for r in rows] == [0, CHUNK_POINTS, 2 * CHUNK_POINTS, 3 * CHUNK_POINTS]
    p = stored(sessions)
    assert np.array_equal(p.step, steps) and np.array_equal(p.value, values)
    assert np.array_equal(p.epoch, steps // 1000)


def test_out_of_order_overlapping_and_redelivered_batches(sessions):
    rng = np.random.default_rng(7)
    steps = rng.choice(30_000, size=12_000, replace=False)
    batches = np.array_split(rng.permutation(len(steps)), 9)
    first_value: dict[int, float] = {}
    for i, idx in enumerate(batches):
        idx = np.r_[idx, batches[i - 1][:300]] if i else idx  # overlap the previous batch with other values
        values = rng.normal(size=len(idx))
        for s, v in zip(steps[idx].tolist(), values.tolist(), strict=True):
            first_value.setdefault(s, v)
        store(sessions, steps[idx], values)
    before = check_chunks(sessions)
    assert store(sessions, steps[batches[3]], np.zeros(len(batches[3]))) == 0  # redelivery: nothing new
    assert chunk_rows(sessions) == before  # ... and nothing rewritten
    p = stored(sessions)
    want = sorted(first_value.items())
    assert p.step.tolist() == [s for s, _ in want] and p.value.tolist() == [v for _, v in want]


def test_nan_infinities_and_signed_zero_survive_merges(sessions):
    values = [math.nan, math.inf, -math.inf, -0.0, 5e-324]
    store(sessions, [10, 20, 30, 40, 50], values)
    store(sessions, [15, 25, 35], [1.0, 2.0, 3.0])  # merged into the same chunk
    p = stored(sessions)
    assert p.step.tolist() == [10, 15, 20, 25, 30, 35, 40, 50]
    got = p.value[[0, 2, 4, 6, 7]]
    assert math.isnan(got[0]) and got[1:3].tolist() == [math.inf, -math.inf]
    assert math.copysign(1, got[3]) == -1 and got[4] == 5e-324


def check_query(sessions, steps, values, max_points, lo, hi, key="k"):
    first, last = int(steps.min()), int(steps.max())
    a, b = max(first, lo if lo is not None else first), min(last, hi if hi is not None else last)
    with sessions() as s:
        got = query_series(s, "run", [key], max_points, lo, hi)[key]
    level = 0 if (b - a + 1 <= max_points or len(steps) <= max_points) else bucket_level(a, b, max_points)
    want = brute_buckets(steps, values, a, b, level)
    assert len(got.step) == len(want) and got.bucket_width == 1 << level
    for i, (st, v, mn, mx, n, nn) in enumerate(want):
        assert (got.step[i], got.count[i], got.nan[i]) == (st, n, nn), (max_points, lo, hi, i)
        assert same_float(got.value[i], v) and same_float(got.min[i], mn) and same_float(got.max[i], mx)


@pytest.mark.parametrize("stride", [1, 7])
def test_rollup_queries_equal_brute_force(sessions, stride):
    """A long series (dense, or every 7th step) read through summaries, rollups and points, in several windows."""
    rng = np.random.default_rng(stride)
    n = 20_000
    steps = np.arange(n, dtype=np.int64) * stride + 3
    values = rng.normal(size=n)
    values[rng.choice(n, 300)] = np.nan
    values[rng.choice(n, 20)] = np.inf
    values[5000:5600] = np.nan  # whole all-NaN buckets
    perm = rng.permutation(n)
    for idx in np.array_split(perm[: n // 2], 3):  # half of it out of order ...
        store(sessions, steps[np.sort(idx)], values[np.sort(idx)])
    store(sessions, steps, values)  # ... then all of it (the stored half wins, with equal values)
    check_chunks(sessions)
    for max_points in (1, 10, 100, 1000, 25_000):  # chunk summaries, rollups at 4^5 and 4^4, points
        for lo, hi in [(None, None), (12_345, 100_000), (0, 9_000), (30_000, 30_500)]:
            check_query(sessions, steps, values, max_points, lo, hi)


def test_downsampling_keeps_the_rollups(sessions):
    n = 5 * CHUNK_POINTS
    steps = np.arange(n, dtype=np.int64)
    values = np.cos(steps / 300.0)
    values[777] = np.nan
    store(sessions, steps, values)
    store(sessions, np.arange(0, n, 500), np.arange(0, n, 500) * 1.0, key="eval/fid")  # sparse: untouched
    with sessions() as s:
        coarse = query_series(s, "run", None, 40)
    with sessions() as s, s.begin():
        report = downsample_run(s, "run", before_step=3 * CHUNK_POINTS)
    assert report.chunks == 3 and report.points_before == 3 * CHUNK_POINTS
    assert report.points_kept == 3 * CHUNK_POINTS // 256 and report.bytes_after < report.bytes_before / 50
    with sessions() as s:
        assert query_series(s, "run", None, 40) == coarse  # every query at ≥ the kept width is unchanged
        full = query_series(s, "run", ["k"], 100_000)["k"]
        sparse = run_points(s, "run", ["eval/fid"])["eval/fid"]
    assert len(sparse) == len(range(0, n, 500))
    sampled = [i for i, st in enumerate(full.step) if st < 3 * CHUNK_POINTS]
    assert len(sampled) == 3 * CHUNK_POINTS // 256 and all(full.count[i] == 256 for i in sampled)
    assert full.nan[sampled[3]] == 1 and sum(full.count) == n  # step 777 lies in the 4th bucket
    assert full.step[sampled[-1] + 1:] == list(range(3 * CHUNK_POINTS, n))
    assert store(sessions, [100, 3 * CHUNK_POINTS + 10, n + 1], [9.0, 9.0, 9.0]) == 1  # only the new step
    exported = b"".join(csv_chunks(sessions, "run", ["k"])).decode().splitlines()
    assert len(exported) == 1 + 3 * CHUNK_POINTS // 256 + 2 * CHUNK_POINTS + 1 and exported[1].startswith("k,255,")


def test_gc_removes_the_data_of_deleted_runs_only(sessions, engine):
    store(sessions, range(5000), range(5000))
    store(sessions, range(5000), range(5000), run="other")
    with sessions() as s:
        s.add(Evaluation(run_id="run", event_id="e1", checkpoint_step=10, status="ok", metrics={"fid": 3.0}))
        s.get(Run, "run").deleted_at = 1.0
        s.commit()
    dry = gc_data(engine, dry_run=True)
    assert dry.runs == ["run"] and dry.points == 5000
    with sessions() as s:
        assert len(run_points(s, "run")["k"]) == 5000  # a dry run removes nothing
    report = gc_data(engine)
    assert report.runs == ["run"] and report.points == 5000 and report.series == 1 and report.evaluations == 1
    assert report.chunks == len(range(0, 5000, CHUNK_POINTS)) and report.chunk_bytes > 0
    with sessions() as s:
        assert run_points(s, "run") == {} and s.scalar(select(Evaluation.id)) is None
        assert s.get(Run, "run") is None  # erased for good
        assert len(run_points(s, "other")["k"]) == 5000
    assert gc_data(engine).points == 0  # idempotent
    with sessions() as s:  # a run row deleted outright: its series cascade away, its chunks are orphans
        s.delete(s.get(Run, "other"))
        s.commit()
    orphans = gc_data(engine)
    assert (orphans.orphan_chunks, orphans.points, orphans.runs) == (len(range(0, 5000, CHUNK_POINTS)), 5000, [])
    with sessions() as s:
        assert s.scalar(select(Chunk.series_id)) is None
    with sessions() as s, s.begin():  # a run in the trash takes no more points
        runs_store.create_run(s, name="trash", kind="external", status="running", run_id="trash")
        s.flush()
        s.get(Run, "trash").deleted_at = 1.0
    with sessions() as s, s.begin():
        assert apply_events(s, [MetricBatch.from_points("trash", [("k", 11, 1.0, 0, 0.0)])]).points == 0


def test_gc_while_ingest_runs(sessions, engine):
    """Ingest keeps feeding two runs in the same transactions (retrying one the database refuses, as the consumer
    does) while one of them is marked deleted and erased: no error, no deadlock, the other keeps every point.
    Events that reach the erased run after gc create a bare run of that id again (server/store/gc.py), so once
    its feed stops the test marks and erases that one too, and then it is gone."""
    stop, run_fed, errors, sent = threading.Event(), threading.Event(), [], {"steps": 0}
    run_fed.set()

    def feed():
        step = 0
        while not stop.is_set() and not errors:
            runs = ("run", "other") if run_fed.is_set() else ("other",)
            events = [MetricBatch.from_points(r, [(k, step + i, float(i), 0, 0.0) for i in range(200)
                                                  for k in ("a", "b")]) for r in runs]
            try:
                with sessions() as s, s.begin():
                    apply_events(s, events)
            except OperationalError:
                continue  # SQLite: the snapshot went stale under a concurrent commit; retried
            except Exception as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            step += 200
            sent["steps"] = step

    def mark_deleted():
        with sessions() as s:
            if (run := s.get(Run, "run")) is not None:
                run.deleted_at = time.time()
            s.commit()

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    try:
        while sent["steps"] < 2000 and thread.is_alive():
            time.sleep(0.02)
        mark_deleted()
        freed = [gc_data(engine).points for _ in range(3)]  # while "run" is still being fed
        run_fed.clear()
        fed_until = sent["steps"]
        while sent["steps"] < fed_until + 2000 and thread.is_alive():
            time.sleep(0.02)
    finally:
        stop.set()
        thread.join(30)
    assert not errors and freed[0] > 0
    mark_deleted()
    gc_data(engine)
    with sessions() as s:
        assert run_points(s, "run") == {} and s.get(Run, "run") is None
        other = run_points(s, "other")
    assert {k: p.step.tolist() for k, p in other.items()} == {k: list(range(sent["steps"])) for k in ("a", "b")}


def test_small_live_batches_rewrite_little_and_still_fill_chunks(sessions):
    """A live run sends a few hundred points at a time: the open chunk is rewritten only while it is small, sealed
    chunks are merged into full ones, and every point is stored once."""
    n = 3 * CHUNK_POINTS + 777
    steps, values = np.arange(n), np.cos(np.arange(n) / 70.0)
    for lo in range(0, n, 250):
        assert store(sessions, steps[lo:lo + 250], values[lo:lo + 250]) == len(steps[lo:lo + 250])
        rows = chunk_rows(sessions)
        assert rows[-1].n < OPEN_POINTS + 250  # the chunk the next batch may rewrite stays small
    rows = check_chunks(sessions)
    full = [r.n for r in rows if r.n == CHUNK_POINTS]
    assert len(full) >= 2 and sum(r.n for r in rows) == n and len(rows) <= 6, [r.n for r in rows]
    p = stored(sessions)
    assert np.array_equal(p.step, steps) and np.array_equal(p.value, values)


def test_ingest_locks_its_runs_in_id_order_before_writing_them(sessions, engine):
    """On PostgreSQL a batch locks its runs' rows in id order before any write to them (an UPDATE first would lock
    them in the order its plan meets them, and two batches of overlapping runs could deadlock); on SQLite a write
    comes first, as it takes the database's write lock."""
    statements: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    events = [MetricBatch.from_points(r, [("k", 0, 1.0, 0, 0.0)]) for r in ("run", "other")]
    sa_event.listen(engine, "before_cursor_execute", note)
    try:
        with sessions() as s, s.begin():
            apply_events(s, events)
    finally:
        sa_event.remove(engine, "before_cursor_execute", note)
    on_runs = [st for st in statements if st.startswith(("SELECT runs.", "UPDATE runs "))]
    if engine.dialect.name == "postgresql":
        assert on_runs[0].startswith("SELECT runs.") and "ORDER BY runs.id" in on_runs[0] \
            and on_runs[0].endswith("FOR UPDATE"), on_runs
    else:
        assert on_runs[0].startswith("UPDATE runs "), on_runs


def test_overlapping_batches_in_any_order_store_every_point(sessions, engine):
    """Three feeders send batches naming the same runs in different orders and subsets at once: nothing fails (no
    deadlock on PostgreSQL; SQLite's refused snapshots are retried, as the consumer does) and every point is
    stored once."""
    orders = [("run", "other"), ("other", "run"), ("other",)]
    postgres = engine.dialect.name == "postgresql"
    errors: list[Exception] = []

    def feed(k: int, runs: tuple[str, ...]) -> None:
        for i in range(30):
            events = [MetricBatch.from_points(r, [(f"f{k}", 10 * i + j, float(j), 0, 0.0) for j in range(10)])
                      for r in runs]
            while True:
                try:
                    with sessions() as s, s.begin():
                        apply_events(s, events)
                    break
                except OperationalError as exc:
                    if postgres:
                        errors.append(exc)
                        return
                except Exception as exc:  # noqa: BLE001 - reported by the test
                    errors.append(exc)
                    return

    threads = [threading.Thread(target=feed, args=(k, runs)) for k, runs in enumerate(orders)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    with sessions() as s:
        for k, runs in enumerate(orders):
            for r in runs:
                assert run_points(s, r, [f"f{k}"])[f"f{k}"].step.tolist() == list(range(300))

"""Run packs (server/store/packs.py) against real SQLite and PostgreSQL: a finished run's small series move into one
blob and a directory, leaving `chunks` and `series`, and read back exactly as before (queries, export, last points,
run filters), a late point moves its series back without loss or doubling, gc erases packs, and a damaged pack is
refused by name."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
from types import SimpleNamespace

import numpy as np
import pytest
from sqlalchemy import event as sa_event
from sqlalchemy import select, update
from sqlalchemy.exc import OperationalError

from sqd.protocol import MetricBatch
from sqd.server.schemas import RunFilter
from sqd.server.store import migrate, runs_store
from sqd.server.store.chunk_codec import CorruptChunk, Points, decode_points, encode_axes, encode_values
from sqd.server.store.chunk_read import last_points, run_points, window_points
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.export import csv_chunks
from sqd.server.store.gc import gc_data
from sqd.server.store.models import Chunk, Pack, Run, Series, run_ref
from sqd.server.store.pack_codec import decode_pack, encode_pack
from sqd.server.store.packs import PACK_POINTS, pack_run, runs_to_pack
from sqd.server.store.points_store import store_points
from sqd.server.store.series_catalog import run_keys, series_of
from sqd.server.store.series_query import query_series


def sqd(*args, env):
    out = subprocess.run([sys.executable, "-m", "sqd", *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    return out.returncode, out.stdout, out.stderr


SPECIAL = [float("nan"), float("inf"), float("-inf"), -0.0, 5e-324]


def test_pack_codec_round_trips_groups_and_special_values():
    rng = np.random.default_rng(0)
    steps = np.arange(100, dtype=np.int64)
    walls = np.round(1.7e9 + np.cumsum(0.05 + rng.exponential(0.002, 100)), 3)
    series = {sid: Points(steps, rng.normal(size=100).astype(np.float32).astype(np.float64), steps // 10, walls)
              for sid in range(1, 40)}
    series[900] = Points(np.array([3, 7, 2**40]), np.array(SPECIAL[:3]), np.array([-1, 0, 1]),
                         np.array([1.7e9 + 1e-7, 1.7e9, 0.0]))  # µs walls, a third group
    series[901] = Points(np.arange(5), np.array(SPECIAL), np.arange(5), np.full(5, 1.5))
    blob = encode_pack(series)
    back = decode_pack(blob)
    assert set(back) == set(series)
    for sid, p in series.items():
        for f in ("step", "epoch"):
            assert np.array_equal(getattr(back[sid], f), getattr(p, f))
        assert np.array_equal(back[sid].value.view(np.int64), p.value.view(np.int64))  # NaN, -0.0 bit for bit
        assert np.array_equal(back[sid].wall_time.view(np.int64), p.wall_time.view(np.int64))
    assert set(decode_pack(blob, only={901, 5})) == {901, 5}
    # the shared axes are stored once: the series cost their values and a few bytes each, one set of axes in all
    values = sum(len(encode_values(p.value)[0]) for p in series.values())
    assert len(blob) < values + 6 * len(series) + 3 * len(encode_axes(steps, steps // 10, walls)[0])


@pytest.mark.parametrize("damage", ["flip", "cut", "format"])
def test_a_damaged_pack_is_refused_by_name(damage):
    blob = bytearray(encode_pack({1: Points(np.arange(10), np.arange(10.0), np.arange(10), np.arange(10.0))}))
    if damage == "flip":
        blob[-3] ^= 0x40
    elif damage == "cut":
        blob = blob[:-5]
    else:
        blob[0] = 9
    with pytest.raises(CorruptChunk, match="run pack"):
        decode_pack(bytes(blob))


@pytest.fixture
def sessions(store_sessions):
    return store_sessions


def store(sessions, run, rows) -> int:
    with sessions() as s:
        new = len(store_points(s, [MetricBatch.from_points(run, rows)]).new)
        s.commit()
    return new


def fill(sessions, run="run") -> None:
    """20 keys × 100 steps sharing walls, an eval key every 10 steps with NaN and ±inf, and one long key."""
    rng = np.random.default_rng(1)
    rows = [(f"loss/{k}", s, float(np.float32(rng.normal())), s // 10, 1.7e9 + s * 0.05)
            for s in range(100) for k in range(20)]
    rows += [("eval/fid", s, SPECIAL[s // 10 % 5], s // 10, 1.7e9 + s * 0.05 + 3) for s in range(0, 100, 10)]
    rows += [("long", s, float(s), None, 1.7e9 + s * 0.01) for s in range(PACK_POINTS + 1)]
    store(sessions, run, rows)


def finish(sessions, run="run", at=1.0):
    with sessions() as s:
        s.execute(update(Run).where(Run.id == run).values(status="finished", finished_at=at))
        s.commit()


def snapshot(sessions, run="run"):
    with sessions() as s:
        points = run_points(s, run)
        queried = query_series(s, run, None, max_points=16)
        last = {e.key: v for e, v in last_points(s, series_of(s, run)).items()}
        filters = [RunFilter(filter=f"metric.{key} {op} 0", sort=f"metric.{key}")
                   for key in ("eval/fid", "loss/3", "long") for op in (">", "<=")]
        filtered = [[r.id for r in runs_store.list_runs(s, f).data] for f in filters]
        filtered.append(run_keys(s, [run, "no such run"], 2000))
    export = b"".join(csv_chunks(sessions, run, None))
    return points, queried, dict(sorted(last.items())), export, filtered


def same(a, b) -> bool:
    pa, qa, la, ea, fa = a
    pb, qb, lb, eb, fb = b
    fields = ("step", "epoch", "wall_time")
    return (ea == eb and pa.keys() == pb.keys()
            and all(np.array_equal(pa[k].value.view(np.int64), pb[k].value.view(np.int64))
                    and all(np.array_equal(getattr(pa[k], f), getattr(pb[k], f)) for f in fields) for k in pa)
            and repr(qa) == repr(qb) and repr(la) == repr(lb) and fa == fb)


def test_packing_moves_small_series_and_every_reader_answers_the_same(sessions):
    fill(sessions)
    before = snapshot(sessions)
    finish(sessions)
    with sessions() as s:
        assert runs_to_pack(s, finished_before=2.0) == ["run"]
        report = pack_run(s, "run")
        s.commit()
    assert (report.series, report.points) == (21, 2010)
    assert report.pack_bytes < report.bytes_before
    with sessions() as s:
        packed = {e.key: e.packed for e in series_of(s, "run")}
        assert sum(packed.values()) == 21 and not packed["long"]  # past PACK_POINTS: stays in chunks
        assert s.scalars(select(Series.key).where(Series.run_ref == run_ref("run"))).all() == ["long"]
        assert s.scalar(select(Pack.n_points).where(Pack.run_id == "run")) == 2010
        assert runs_to_pack(s, finished_before=2.0) == []  # packed: not due again
        with_chunks = s.scalars(select(Series.key).join(Chunk, Chunk.series_id == Series.id)
                                .where(Series.run_ref == run_ref("run")).distinct()).all()
        assert with_chunks == ["long"]
        fid = series_of(s, "run", ["eval/fid"])[0]
        assert window_points(s, fid, 20, 40).step.tolist() == [20, 30, 40]
        assert (fid.first_step, fid.last_step, fid.n_points) == (0, 90, 10)
    assert same(snapshot(sessions), before)
    with sessions() as s:  # packing again moves nothing and changes nothing
        assert pack_run(s, "run").series == 0
        s.commit()
    assert same(snapshot(sessions), before)


def test_a_late_point_unpacks_its_series_and_nothing_is_lost_or_doubled(sessions):
    fill(sessions)
    finish(sessions)
    with sessions() as s:
        pack_run(s, "run")
        s.commit()
    assert store(sessions, "run", [("loss/3", 50, 123.0, 5, 0.0)]) == 0  # a redelivery: the stored value wins
    assert store(sessions, "run", [("loss/3", 100, 7.0, 10, 1.7e9 + 5), ("eval/fid", 55, 1.0, 5, 1.7e9)]) == 2
    with sessions() as s:
        packed = {e.key: e.packed for e in series_of(s, "run")}
        assert not packed["loss/3"] and not packed["eval/fid"] and sum(packed.values()) == 19
        assert sorted(s.scalars(select(Series.key).where(Series.run_ref == run_ref("run")))) == [
            "eval/fid", "long", "loss/3"]
        assert s.scalar(select(Pack.n_series).where(Pack.run_id == "run")) == 19
        assert s.scalar(select(Run.packed_at).where(Run.id == "run")) is None  # due for packing again
        points = run_points(s, "run")
        n_points = {e.key: e.n_points for e in series_of(s, "run")}
    assert points["loss/3"].step.tolist() == list(range(101)) and points["loss/3"].value[-1] == 7.0
    assert points["eval/fid"].step.tolist() == [0, 10, 20, 30, 40, 50, 55, 60, 70, 80, 90]
    assert all(len(points[k]) == n_points[k] for k in points)
    with sessions() as s:  # packed again, everything in the pack
        pack_run(s, "run")
        s.commit()
        assert s.scalar(select(Pack.n_series).where(Pack.run_id == "run")) == 21


def test_gc_erases_a_packed_run_and_counts_its_points(sessions):
    fill(sessions)
    fill(sessions, "other")
    finish(sessions)
    with sessions() as s:
        pack_run(s, "run")
        runs_store.set_deleted(s, "run", True)
        s.commit()
    with sessions() as s:
        report = gc_data(s)
        s.commit()
        assert report.points == 2010 + PACK_POINTS + 1
        assert s.scalar(select(Pack.run_id)) is None
        assert len(run_points(s, "other")) == 22  # the other run untouched


def test_the_packer_packs_runs_finished_long_enough_ago(sessions):
    from sqd.server.packer import pack_finished
    from sqd.settings import Settings

    fill(sessions)
    fill(sessions, "other")
    finish(sessions, "run", at=1000.0)
    ctx = SimpleNamespace(settings=Settings(server={"pack_after_s": 600}), sessions=sessions)
    assert pack_finished(ctx, now=1500.0) == {}  # finished 500 s ago: its evaluations may still come
    assert list(pack_finished(ctx, now=1700.0)) == ["run"]  # the running one is never packed
    assert pack_finished(ctx, now=1800.0) == {}


def test_downgrade_puts_packed_points_back_into_chunks(sessions, db_url):
    from alembic import command

    fill(sessions)
    finish(sessions)
    before = snapshot(sessions)
    with sessions() as s:
        pack_run(s, "run")
        s.commit()
    engine = make_engine(db_url)
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0007")
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT series_id, data FROM chunks").all()
    assert sum(len(decode_points(data)) for _, data in rows) == 2010 + PACK_POINTS + 1
    migrate.upgrade(engine)
    engine.dispose()
    assert same(snapshot(sessions), before)


@pytest.mark.slow
def test_db_pack_command(tmp_path):
    env = {"SQD_HOME": str(tmp_path), "SQD_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    engine = make_engine(env["SQD_DATABASE_URL"])
    migrate.upgrade(engine)
    factory = session_factory(engine)
    with factory() as s:
        s.add_all([Run(id="done", status="finished", finished_at=1.0), Run(id="live", status="running")])
        s.commit()
    fill(factory, "done")
    fill(factory, "live")
    engine.dispose()
    code, out, err = sqd("db", "pack", env=env)
    assert code == 0 and "1 runs packed: 21 series, 2,010 points" in out, err
    code, out, err = sqd("db", "pack", env=env)
    assert code == 0 and "0 runs packed" in out, err
    code, out, err = sqd("db", "pack", "live", env=env)
    assert code == 0 and "1 runs packed: 21 series" in out, err
    code, _, err = sqd("db", "pack", "nope", env=env)
    assert code == 1 and "no run 'nope'" in err


def test_packing_while_ingest_runs_loses_and_doubles_nothing(sessions):
    """Ingest keeps adding steps to a run's series (in transactions of their own, retried when SQLite refuses a
    stale snapshot, as the consumer does) while the run is packed over and over: every point is stored once, and
    the series counts agree with what is read back."""
    stop, errors, sent = threading.Event(), [], {"steps": 0}
    keys = [f"k{i}" for i in range(8)]

    def feed():
        step = 0
        while not stop.is_set() and not errors and step < 400:
            batch = MetricBatch.from_points("run", [(k, step + i, float(step + i), 0, 1.0) for i in range(5)
                                                    for k in keys])
            try:
                with sessions() as s, s.begin():
                    store_points(s, [batch])
            except OperationalError:
                continue
            except Exception as exc:  # noqa: BLE001 - reported by the test
                errors.append(exc)
            step += 5
            sent["steps"] = step

    thread = threading.Thread(target=feed, daemon=True)
    thread.start()
    packed = 0
    try:
        while thread.is_alive() and not errors:
            try:
                with sessions() as s, s.begin():
                    packed += pack_run(s, "run").series
            except OperationalError:
                continue
    finally:
        stop.set()
        thread.join(30)
    assert not errors and sent["steps"] == 400 and packed > 0
    with sessions() as s:
        points = run_points(s, "run")
        counts = {e.key: e.n_points for e in series_of(s, "run")}
    for k in keys:
        assert points[k].step.tolist() == list(range(400)) and counts[k] == 400


def test_a_live_server_packs_a_finished_run_and_serves_it_unchanged(tmp_path, external_redis_url, db_url, prefix):
    """Through real HTTP: a run's points, its keys, export, summaries, run filters and the runs table read the
    same after the server's packer has packed the run, and a late point still lands."""
    import httpx
    from server_support import AUTH, LiveServer, make_settings, wait_for

    settings = make_settings(tmp_path / "home", external_redis_url, db_url, prefix, pack_after_s=0.5,
                             pack_check_s=0.2)
    with LiveServer(settings) as server:
        http = httpx.Client(base_url=f"{server.url}/api/v1", headers=AUTH, timeout=30)
        run_id = http.post("/runs", json={"name": "to pack"}).json()["id"]
        points = [{"key": f"loss/{k}", "step": s, "value": float(np.float32(s / (k + 1))), "epoch": s // 10}
                  for s in range(60) for k in range(5)]
        points += [{"key": "eval/fid", "step": s, "value": v, "epoch": s // 10}
                   for s, v in zip(range(0, 60, 10), [80.0, "NaN", 60.0, "Infinity", 45.5, 41.0], strict=True)]
        assert http.post(f"/runs/{run_id}/metrics", json={"points": points}).status_code == 200

        def reads():
            return (http.get(f"/runs/{run_id}/metrics", params={"max_points": 16}).json(),
                    http.get(f"/runs/{run_id}/metrics").json(),
                    http.get(f"/runs/{run_id}/keys").json(),
                    http.get(f"/runs/{run_id}/export", params={"format": "csv"}).text,
                    http.get("/summaries", params={"run_id": run_id}).json(),
                    [r["id"] for r in http.get("/runs", params={"filter": "eval/fid < 42"}).json()["data"]])

        before = reads()
        assert before[5] == [run_id]
        assert http.patch(f"/runs/{run_id}", json={"status": "finished"}).status_code == 200
        engine = make_engine(settings.resolved_database_url)
        with session_factory(engine)() as s:
            packed = wait_for(lambda: s.scalar(select(Pack.n_series).where(Pack.run_id == run_id)),
                              what="the packer to pack the run")
            s.rollback()
        engine.dispose()
        assert packed == 6
        assert reads() == before
        late = {"points": [{"key": "eval/fid", "step": 60, "value": 39.0}]}
        assert http.post(f"/runs/{run_id}/metrics", json=late).status_code == 200
        assert http.get(f"/runs/{run_id}/metrics", params={"keys": "eval/fid"}).json()["series"]["eval/fid"][
            "step"] == [0, 10, 20, 30, 40, 50, 60]


def test_a_damaged_pack_is_named_and_skipped_and_other_runs_still_pack(sessions, caplog):
    from sqd.server.packer import pack_finished
    from sqd.settings import Settings

    fill(sessions)
    fill(sessions, "other")
    finish(sessions, "run", at=1.0)
    with sessions() as s:
        pack_run(s, "run")
        blob = bytearray(s.scalar(select(Pack.data).where(Pack.run_id == "run")))
        blob[-1] ^= 0xFF
        s.execute(update(Pack).where(Pack.run_id == "run").values(data=bytes(blob)))
        s.execute(update(Run).where(Run.id == "run").values(packed_at=None))
        s.commit()
    store(sessions, "run", [("loss/new", 0, 1.0, 0, 0.0)])  # a new small series: packing must read the pack
    finish(sessions, "other", at=1.0)
    ctx = SimpleNamespace(settings=Settings(server={"pack_after_s": 0}), sessions=sessions)
    assert list(pack_finished(ctx, now=10.0)) == ["other"]
    assert "run run cannot be packed" in caplog.text
    assert pack_finished(ctx, now=10.0) == {}  # not tried again every pass
    with sessions() as s:
        with pytest.raises(CorruptChunk, match="run pack: the blob does not match its CRC-32"):
            window_points(s, series_of(s, "run", ["loss/3"])[0])
        assert len(run_points(s, "run", ["long"])["long"]) == PACK_POINTS + 1  # what is in chunks still reads
        assert len(run_points(s, "other")) == 22


def test_run_filters_read_infinite_last_values_from_a_pack(sessions):
    store(sessions, "run", [("eval/up", 0, 1.0, 0, 0.0), ("eval/up", 1, float("inf"), 0, 1.0),
                            ("eval/down", 0, float("-inf"), 0, 0.0), ("eval/nan", 0, float("nan"), 0, 0.0)])
    finish(sessions)

    def matches():
        with sessions() as s:
            return [[r.id for r in runs_store.list_runs(s, RunFilter(filter=f)).data]
                    for f in ("eval/up > 1e308", "eval/down < -1e308", "eval/nan < 0", "eval/nan >= 0")]

    assert matches() == [["run"], ["run"], [], []]
    with sessions() as s:
        assert pack_run(s, "run").series == 3
        s.commit()
        assert s.scalar(select(Series.id)) is None
    assert matches() == [["run"], ["run"], [], []]
    with sessions() as s:
        last = {e.key: v for e, v in last_points(s, series_of(s, "run")).items()}
    assert last["eval/up"] == (1, float("inf")) and last["eval/down"] == (0, float("-inf"))
    assert np.isnan(last["eval/nan"][1])


def test_a_damaged_directory_is_named_and_the_points_of_other_runs_still_read(sessions):
    fill(sessions)
    fill(sessions, "other")
    finish(sessions)
    with sessions() as s:
        pack_run(s, "run")
        s.execute(update(Pack).where(Pack.run_id == "run").values(directory={"loss/3": "not an entry"}))
        s.commit()
    with sessions() as s:
        with pytest.raises(CorruptChunk, match="run pack of run: its directory does not parse"):
            series_of(s, "run")
        assert len(run_points(s, "other")) == 22
    with pytest.raises(CorruptChunk, match="its directory does not parse"):  # ingest refuses, stores nothing
        store(sessions, "run", [("loss/3", 100, 1.0, 10, 0.0)])
    with sessions() as s:
        assert s.scalar(select(Series.id).where(Series.run_ref == run_ref("run"), Series.key == "loss/3")) is None


def test_a_reader_that_listed_series_before_they_moved_still_reads_each_key_its_own_points(sessions):
    """Series listed, then moved before their points are read: a late point gives `a` its chunk back (the pack
    renumbers `b` and `c`), the packer packs the series listed as chunks. Each key still reads its own points."""
    pts = [(k, st, float(v * 100 + st), 0, 1.0) for v, k in enumerate("abc") for st in range(5)]
    store(sessions, "run", pts)
    finish(sessions)
    with sessions() as s:
        pack_run(s, "run")
        s.commit()
    expected = {k: [float(v * 100 + st) for st in range(5)] for v, k in enumerate("abc")}
    with sessions() as reader:
        listed = {e.key: e for e in series_of(reader, "run")}
        assert all(e.packed for e in listed.values())
        store(sessions, "run", [("a", 9, 9.0, 0, 1.0)])  # committed by another session
        assert {k: window_points(reader, e).value.tolist() for k, e in listed.items()} == {
            **expected, "a": expected["a"] + [9.0]}
        assert query_series(reader, "run", ["b"], max_points=16)["b"].value == expected["b"]
    with sessions() as reader:
        listed = {e.key: e for e in series_of(reader, "run")}
        assert not listed["a"].packed
        with sessions() as s:
            pack_run(s, "run")
            s.commit()
        assert window_points(reader, listed["a"]).value.tolist() == expected["a"] + [9.0]


def test_a_directory_entry_names_infinities_and_stores_nan_as_null():
    from sqd.server.store.packs import PackedSeries

    entries = [PackedSeries(0, 0, 9, 10, v).entry(3) for v in (1.5, float("inf"), float("-inf"), float("nan"), None)]
    assert [e[4] for e in entries] == [1.5, "Infinity", "-Infinity", None, None] and entries[0][0] == 3
    assert [PackedSeries.of(e).last_value for e in entries[:3]] == [1.5, float("inf"), float("-inf")]


def test_a_reader_of_many_packed_keys_reads_and_indexes_the_pack_once(sessions):
    """An export (or a run page) of a packed run reads the pack once per transaction, not once per key (it was
    ~6 s for 1,000 keys), and exports what the chunks held."""
    store(sessions, "run", [(f"k{i:03}", st, float(i * 1000 + st), 0, 1.7e9 + st) for i in range(300)
                            for st in range(20)])
    finish(sessions)
    before = b"".join(csv_chunks(sessions, "run", None))
    with sessions() as s:
        pack_run(s, "run")
        s.commit()
    statements: list[str] = []

    def note(conn, cursor, statement, parameters, context, executemany):
        statements.append(" ".join(statement.split()))

    engine = sessions.kw["bind"]
    sa_event.listen(engine, "before_cursor_execute", note)
    try:
        export = b"".join(csv_chunks(sessions, "run", None))
    finally:
        sa_event.remove(engine, "before_cursor_execute", note)
    assert sum(1 for st in statements if "packs.data" in st) == 1
    assert export == before and len(export.splitlines()) == 1 + 300 * 20


def test_a_pack_indexed_by_a_session_is_read_again_after_it_changes(sessions):
    """The pack a session indexed is forgotten when that session writes a pack, and at its next transaction; a
    key the indexed pack lacks is looked up afresh."""
    store(sessions, "run", [(k, st, float(v * 100 + st), 0, 1.0) for v, k in enumerate("abc") for st in range(5)])
    finish(sessions)
    with sessions() as s:
        pack_run(s, "run")
        s.commit()
    with sessions() as s:
        listed = {e.key: e for e in series_of(s, "run")}
        assert window_points(s, listed["b"]).value.tolist() == [100.0 + st for st in range(5)]
        # a late point unpacks `a` in this session's own transaction: the pack is rewritten, b and c renumbered
        store_points(s, [MetricBatch.from_points("run", [("a", 9, 9.0, 0, 1.0)])])
        assert window_points(s, listed["c"]).value.tolist() == [200.0 + st for st in range(5)]
        assert window_points(s, listed["a"]).value.tolist() == [float(st) for st in range(5)] + [9.0]
        s.commit()
    with sessions() as reader:
        assert run_points(reader, "run", ["b"])["b"].value.tolist() == [100.0 + st for st in range(5)]
        reader.commit()  # the next transaction reads the pack again
        store(sessions, "run", [("b", 9, 19.0, 0, 1.0)])  # another session unpacks `b`
        with sessions() as s:
            pack_run(s, "run")  # and packs the run again: `a` and `b` back in, all renumbered
            s.commit()
        assert run_points(reader, "run")["b"].value.tolist() == [100.0 + st for st in range(5)] + [19.0]
        assert run_points(reader, "run")["c"].value.tolist() == [200.0 + st for st in range(5)]

"""Revision 0006 converts a database made by the previous schema (points + rollups tables) in place, on SQLite and
PostgreSQL: every point comes back (NaN stored as NULL included, ±inf, no-epoch points), and queries and export
answer as a brute-force computation over the original rows."""

from __future__ import annotations

import numpy as np
import pytest
from server_support import brute_buckets, same_float
from sqlalchemy import inspect, text

from sqd.server.store import migrate
from sqd.server.store.chunk_read import run_points
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.export import csv_chunks
from sqd.server.store.series_query import bucket_level, query_series

OLD = "0002_alert_rules"
KEYS = {"loss/D": 9000, "angle/G": 5000, "eval/fid": 40}


def old_rows(rng: np.random.Generator):
    """(series id, key, steps, values, epochs) as the previous schema stored them: NaN as NULL, epoch nullable."""
    out = []
    for sid, (key, n) in enumerate(KEYS.items(), start=1):
        stride = 250 if key.startswith("eval") else 1
        steps = np.arange(n, dtype=np.int64) * stride
        values = rng.normal(size=n) if key != "eval/fid" else 30 - np.arange(n) * 0.5
        values[rng.choice(n, max(1, n // 100))] = np.nan
        values[1] = np.inf
        values[2] = -np.inf
        epochs = [None if key == "angle/G" else int(s) // 1000 for s in steps.tolist()]
        out.append((sid, key, steps, values, epochs))
    return out


@pytest.fixture
def old_database(db_url):
    engine = make_engine(db_url)
    migrate.upgrade(engine, OLD)
    rows = old_rows(np.random.default_rng(3))
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO runs (id, name, status, kind, config, created_at, updated_at) "
                          "VALUES ('old', 'old', 'finished', 'external', '{}', 1.0, 1.0)"))
        for sid, key, steps, values, epochs in rows:
            conn.execute(text("INSERT INTO series (id, run_id, key, first_step, last_step, n_points) "
                              "VALUES (:id, 'old', :key, :first, :last, :n)"),
                         {"id": sid, "key": key, "first": int(steps[0]), "last": int(steps[-1]), "n": len(steps)})
            conn.execute(text("INSERT INTO points (series_id, step, value, epoch, wall_time) "
                              "VALUES (:sid, :step, :value, :epoch, :wall)"),
                         [{"sid": sid, "step": s, "value": None if v != v else v, "epoch": e, "wall": 1.7e9 + s}
                          for s, v, e in zip(steps.tolist(), values.tolist(), epochs, strict=True)])
    yield engine, rows
    engine.dispose()


def test_upgrade_converts_every_point_in_place(old_database):
    engine, rows = old_database
    before, after = migrate.upgrade(engine)
    assert before == OLD and after == migrate.head_revision()
    tables = set(inspect(engine).get_table_names())
    assert "chunks" in tables and not {"points", "rollups"} & tables
    assert "deleted_at" in {c["name"] for c in inspect(engine).get_columns("runs")}
    sessions = session_factory(engine)
    with sessions() as s:
        stored = run_points(s, "old")
    for _sid, key, steps, values, epochs in rows:
        p = stored[key]
        assert p.step.tolist() == steps.tolist()
        assert np.array_equal(np.isnan(p.value), np.isnan(values))
        assert p.value[~np.isnan(values)].tolist() == values[~np.isnan(values)].tolist()
        assert p.epoch.tolist() == [-1 if e is None else e for e in epochs]
        assert p.wall_time.tolist() == (1.7e9 + steps).tolist()
        for max_points in (7, 100, 100_000):
            with sessions() as s:
                got = query_series(s, "old", [key], max_points)[key]
            lo, hi = int(steps[0]), int(steps[-1])
            level = 0 if len(steps) <= max_points else bucket_level(lo, hi, max_points)
            want = brute_buckets(steps, values, lo, hi, level)
            assert [(st, n, nn) for st, _, _, _, n, nn in want] == list(zip(got.step, got.count, got.nan, strict=True))
            answered = zip(got.value, got.min, got.max, strict=True)
            assert all(same_float(a, b) for w, g in zip(want, answered, strict=True)
                       for a, b in zip(w[1:4], g, strict=True))
    csv = b"".join(csv_chunks(sessions, "old", ["angle/G"])).decode().splitlines()
    assert csv[1:4] == [f"angle/G,0,{float(rows[1][3][0])!r},,1700000000.0", "angle/G,1,Infinity,,1700000001.0",
                        "angle/G,2,-Infinity,,1700000002.0"]


def test_downgrade_restores_points_and_rollups(old_database):
    engine, rows = old_database
    migrate.upgrade(engine)
    from alembic import command

    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, OLD)
    with engine.connect() as conn:
        n = conn.execute(text("SELECT count(*), count(value) FROM points")).one()
        level4 = conn.execute(text("SELECT sum(n), sum(n_nan) FROM rollups WHERE level = 4")).one()
    total = sum(len(r[2]) for r in rows)
    nans = sum(int(np.isnan(r[3]).sum()) for r in rows)
    assert tuple(n) == (total, total - nans) and tuple(level4) == (total, nans)

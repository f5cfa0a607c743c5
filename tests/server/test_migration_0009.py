"""Migration 0009 converts `series.run_id` into integer run references in place, on SQLite and PostgreSQL: a
database filled by revision 0008's schema reads back every point by run afterwards, takes new points, cascades a
run's deletion to its series, and goes back down with its run ids."""

from __future__ import annotations

import numpy as np
from alembic import command
from sqlalchemy import column, delete, select, table

from sqd.protocol import MetricBatch
from sqd.server.store import migrate
from sqd.server.store.chunk_codec import Points, chunk_row
from sqd.server.store.chunk_read import run_points
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.models import Run, RunRef, Series
from sqd.server.store.points_store import store_points


def _at(engine, revision, direction):
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        direction(cfg, revision)


def test_run_ids_become_refs_and_back(db_url):
    engine = make_engine(db_url)
    _at(engine, "0008", command.upgrade)
    with engine.begin() as conn:
        for run in ("b-run", "a-run", "empty"):
            conn.exec_driver_sql("INSERT INTO runs (id, name, status, kind, config, created_at, updated_at, tags, "
                                 f"notes) VALUES ('{run}', '{run}', 'finished', 'external', '{{}}', 0, 0, '[]', '')")
        for value, (run, key) in enumerate([("b-run", "loss/D"), ("a-run", "loss/D"), ("a-run", "eval/fid")], 1):
            conn.exec_driver_sql("INSERT INTO series (run_id, key, first_step, last_step, n_points, last_value) "
                                 f"VALUES ('{run}', '{key}', 0, 9, 10, {value}.0)")
            sid = conn.exec_driver_sql(f"SELECT id FROM series WHERE run_id = '{run}' AND key = '{key}'").scalar()
            p = Points(np.arange(10), np.full(10, float(value)), np.zeros(10, np.int64), np.arange(10.0))
            row = chunk_row(sid, p)
            conn.execute(table("chunks", *(column(c) for c in row)).insert(), row)
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        assert dict(s.execute(select(RunRef.run_id, RunRef.ref)).all()) == {"a-run": 1, "b-run": 2}
        a, b = run_points(s, "a-run"), run_points(s, "b-run")
        assert sorted(a) == ["eval/fid", "loss/D"] and list(b) == ["loss/D"]
        assert a["eval/fid"].value.tolist() == [3.0] * 10 and b["loss/D"].value.tolist() == [1.0] * 10
        store_points(s, [MetricBatch.from_points("empty", [("loss/G", 0, 0.5, 0, 0.0)]),
                         MetricBatch.from_points("a-run", [("loss/D", 10, 9.0, 1, 0.0)])])
        s.commit()
        assert run_points(s, "a-run")["loss/D"].value.tolist() == [2.0] * 10 + [9.0]
        s.execute(delete(Run).where(Run.id == "b-run"))  # cascades through run_refs to the series
        s.commit()
        assert s.scalar(select(Series.id).where(Series.key == "loss/D", Series.last_value == 1.0)) is None
    _at(engine, "0008", command.downgrade)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT run_id, key, n_points FROM series ORDER BY run_id, key").all()
    assert [tuple(r) for r in rows] == [("a-run", "eval/fid", 10), ("a-run", "loss/D", 11), ("empty", "loss/G", 1)]
    migrate.upgrade(engine)
    engine.dispose()

"""Migration 0010 moves packed series out of `series` into their pack's directory in place, on SQLite and
PostgreSQL: a database packed under revision 0009's schema reads back every point, last value and run filter the
same afterwards, takes a late point for a packed series, packs again, and goes back down with every point."""

from __future__ import annotations

import numpy as np
from alembic import command
from sqlalchemy import column, select, table

from sqd.protocol import MetricBatch
from sqd.server.schemas import RunFilter
from sqd.server.store import migrate, runs_store
from sqd.server.store.chunk_codec import Points, chunk_row
from sqd.server.store.chunk_read import run_points
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.models import Pack, Series
from sqd.server.store.pack_codec import encode_pack
from sqd.server.store.packs import pack_run
from sqd.server.store.points_store import store_points
from sqd.server.store.series_catalog import series_of


def _at(engine, revision, direction):
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        direction(cfg, revision)


def _points(value: float, n: int = 10) -> Points:
    return Points(np.arange(n), np.full(n, value), np.zeros(n, np.int64), np.arange(float(n)))


def test_packed_series_move_into_directories_and_back(db_url):
    """Revision 0009: run `packed` has two packed series (in its pack, by series id) and one in chunks."""
    engine = make_engine(db_url)
    _at(engine, "0009", command.upgrade)
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO runs (id, name, status, kind, config, created_at, updated_at, tags, notes, "
                             "finished_at, packed_at) VALUES ('packed', 'p', 'finished', 'external', '{}', 0, 0, '[]', "
                             "'', 1, 2)")
        conn.exec_driver_sql("INSERT INTO run_refs (run_id) VALUES ('packed')")
        ids = {}
        series = table("series", *(column(c) for c in ("run_ref", "key", "first_step", "last_step", "n_points",
                                                        "last_value", "packed")))
        for key, value, packed in (("eval/fid", 40.0, True), ("loss/D", float("inf"), True), ("long", 3.0, False)):
            conn.execute(series.insert().values(run_ref=1, key=key, first_step=0, last_step=9, n_points=10,
                                                last_value=value, packed=packed))
            ids[key] = conn.exec_driver_sql(f"SELECT id FROM series WHERE key = '{key}'").scalar()
        row = chunk_row(ids["long"], _points(3.0))
        conn.execute(table("chunks", *(column(c) for c in row)).insert(), row)
        blob = encode_pack({ids["eval/fid"]: _points(40.0), ids["loss/D"]: _points(float("inf"))})
        conn.execute(table("packs", column("run_id"), column("n_series"), column("n_points"), column("data")).insert(),
                     {"run_id": "packed", "n_series": 2, "n_points": 20, "data": blob})
    migrate.upgrade(engine)
    sessions = session_factory(engine)
    with sessions() as s:
        assert s.scalars(select(Series.key)).all() == ["long"]
        assert sorted(s.scalar(select(Pack.directory))) == ["eval/fid", "loss/D"]
        entries = {e.key: e for e in series_of(s, "packed")}
        assert {k: (e.packed, e.n_points, e.last_value) for k, e in entries.items()} == {
            "eval/fid": (True, 10, 40.0), "loss/D": (True, 10, float("inf")), "long": (False, 10, 3.0)}
        points = run_points(s, "packed")
        assert [points[k].value[-1] for k in ("eval/fid", "loss/D", "long")] == [40.0, float("inf"), 3.0]
        assert [r.id for r in runs_store.list_runs(s, RunFilter(filter="eval/fid < 41", view="all")).data] == [
            "packed"]
        store_points(s, [MetricBatch.from_points("packed", [("eval/fid", 10, 39.0, 1, 10.0)])])
        s.commit()
        assert run_points(s, "packed", ["eval/fid"])["eval/fid"].value.tolist() == [40.0] * 10 + [39.0]
        assert pack_run(s, "packed").series == 2  # eval/fid joins the pack again, and `long` (10 points) too
        s.commit()
    _at(engine, "0009", command.downgrade)
    with engine.connect() as conn:
        rows = conn.exec_driver_sql("SELECT key, n_points, packed FROM series ORDER BY key").all()
        assert [(k, n, bool(p)) for k, n, p in rows] == [("eval/fid", 11, True), ("long", 10, True),
                                                         ("loss/D", 10, True)]
    _at(engine, "0007", command.downgrade)  # 0008's downgrade puts the packs' points back into chunks by id
    with engine.connect() as conn:
        n = conn.exec_driver_sql("SELECT count(*) FROM chunks").scalar()
    assert n == 3
    migrate.upgrade(engine)
    with sessions() as s:
        points = run_points(s, "packed")
        assert {k: len(p) for k, p in points.items()} == {"eval/fid": 11, "loss/D": 10, "long": 10}
    engine.dispose()

"""Columnar chunked series: `points` and `rollups` become `chunks` (server/store/chunk_codec.py), converted in
place.

The conversion streams `points` in (series, step) order, 200,000 rows at a time, and writes each series' points as
chunks of CHUNK_POINTS (NULL values become NaN, NULL epochs "no epoch"); the series rows keep their counts and step
range. Downgrade decodes the chunks back into `points` and recomputes `rollups` with SQL.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import sqlalchemy as sa
from alembic import op

from sqd.server.store.chunk_codec import Points, chunk_row
from sqd.server.store.points_store import CHUNK_POINTS

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

FETCH = 200_000
ROLLUP_LEVELS = tuple(range(4, 32, 2))  # the levels revision 0001's rollups kept


def _series_points(conn: sa.Connection) -> Iterator[tuple[int, Points]]:
    """Every series' points, in order, from the old `points` table."""
    result = conn.exec_driver_sql(
        "SELECT series_id, step, value, epoch, wall_time FROM points ORDER BY series_id, step",
        execution_options={"stream_results": True})
    carry: list[tuple[int, int, float | None, int | None, float]] = []
    with result:
        yield from _split_series(result, carry)


def _split_series(result: sa.CursorResult[object], carry: list[tuple[int, int, float | None, int | None, float]]
                  ) -> Iterator[tuple[int, Points]]:
    while True:
        rows: list[Any] = carry + [tuple(r) for r in result.fetchmany(FETCH)]
        if not rows:
            return
        done = len(rows) == len(carry)
        sid = np.array([r[0] for r in rows], np.int64)
        cut = len(rows) if done else int(np.searchsorted(sid, sid[-1]))  # the last series may go on
        carry = rows[cut:]
        if cut:
            steps = np.array([r[1] for r in rows[:cut]], np.int64)
            values = np.array([r[2] for r in rows[:cut]], np.float64)  # None → NaN
            epochs = np.array([-1 if r[3] is None else r[3] for r in rows[:cut]], np.int64)
            walls = np.array([r[4] for r in rows[:cut]], np.float64)
            bounds = np.flatnonzero(np.r_[True, sid[1:cut] != sid[:cut - 1], True])
            for a, b in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
                yield int(sid[a]), Points(steps[a:b], values[a:b], epochs[a:b], walls[a:b])
        if done:
            return


def upgrade() -> None:
    chunks = op.create_table(
        "chunks",
        sa.Column("series_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("first_step", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n_nan", sa.Integer(), nullable=False),
        sa.Column("vmin", sa.Float(), nullable=True),
        sa.Column("vmax", sa.Float(), nullable=True),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.Column("width", sa.Integer(), nullable=False),
        sa.Column("rollups", sa.LargeBinary(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "first_step"),
    )
    conn = op.get_bind()
    rows = []
    for sid, points in _series_points(conn):
        rows += [chunk_row(sid, points.take(slice(i, i + CHUNK_POINTS))) for i in range(0, len(points), CHUNK_POINTS)]
        if len(rows) >= 500:
            conn.execute(chunks.insert(), rows)
            rows = []
    if rows:
        conn.execute(chunks.insert(), rows)
    op.drop_table("rollups")
    op.drop_table("points")


_ROLLUPS_FROM_POINTS = """
INSERT INTO rollups (series_id, level, bucket, n, n_nan, vmin, vmax, last_step, last_value)
SELECT g.series_id, {level}, g.b, g.n, g.n_nan, g.vmin, g.vmax, g.ls,
       (SELECT p.value FROM points p WHERE p.series_id = g.series_id AND p.step = g.ls)
FROM (SELECT series_id, step / {width} AS b, count(*) AS n, count(*) - count(value) AS n_nan, min(value) AS vmin,
             max(value) AS vmax, max(step) AS ls FROM points GROUP BY series_id, step / {width}) g"""


def downgrade() -> None:
    from sqd.server.store.chunk_codec import decode_points

    conn = op.get_bind()
    points = op.create_table(
        "points",
        sa.Column("series_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("step", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("value", sa.Float(), nullable=True),
        sa.Column("epoch", sa.Integer(), nullable=True),
        sa.Column("wall_time", sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint("series_id", "step"),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "rollups",
        sa.Column("series_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("n", sa.Integer(), nullable=False),
        sa.Column("n_nan", sa.Integer(), nullable=False),
        sa.Column("vmin", sa.Float(), nullable=True),
        sa.Column("vmax", sa.Float(), nullable=True),
        sa.Column("last_step", sa.BigInteger(), nullable=False),
        sa.Column("last_value", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("series_id", "level", "bucket"),
        sqlite_with_rowid=False,
    )
    for sid, data in conn.exec_driver_sql("SELECT series_id, data FROM chunks ORDER BY series_id, first_step"):
        p = decode_points(data)
        conn.execute(points.insert(), [
            {"series_id": sid, "step": s, "value": None if v != v else v, "epoch": None if e < 0 else e,
             "wall_time": w} for s, v, e, w in zip(p.step.tolist(), p.value.tolist(), p.epoch.tolist(),
                                                   p.wall_time.tolist(), strict=True)])
    for level in ROLLUP_LEVELS:
        conn.exec_driver_sql(_ROLLUPS_FROM_POINTS.format(level=level, width=1 << level))
    op.drop_table("chunks")

"""Packed series leave `series`: a run pack's `directory` holds what their rows held (key → [number in the blob,
first step, last step, points, last value]), and the blob numbers its series by their place in the pack instead of
by series id (server/store/packs.py). A packed series then costs no row and no index entries: on PostgreSQL the
1,000 runs × 100 keys × 100 steps of bench/server_storage.py drop from ~4.7 to ~3.6 bytes a point. Converted in
place: each pack gets its directory from the `series` rows marked packed, those rows go, and `series.packed` is
dropped. The downgrade gives every packed series its row back.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import logging

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

log = logging.getLogger(__name__)

_DIRECTORY = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
_packs = sa.table("packs", sa.column("run_id"), sa.column("n_series"), sa.column("n_points"), sa.column("data"),
                  sa.column("directory", _DIRECTORY))
_series = sa.table("series", *(sa.column(c) for c in ("id", "run_ref", "key", "first_step", "last_step",
                                                       "n_points", "last_value", "packed")))


def upgrade() -> None:
    from sqd.server.store.pack_codec import decode_pack, encode_pack
    from sqd.server.store.packs import PackedSeries

    op.add_column("packs", sa.Column("directory", _DIRECTORY, nullable=False, server_default="{}"))
    conn = op.get_bind()
    moved: list[int] = []
    for run_id, data in conn.execute(sa.text("SELECT run_id, data FROM packs")).all():
        rows = conn.execute(sa.text(
            "SELECT s.id, s.key, s.first_step, s.last_step, s.n_points, s.last_value FROM series s "
            "JOIN run_refs r ON r.ref = s.run_ref WHERE r.run_id = :run AND s.packed ORDER BY s.key"),
            {"run": run_id}).all()
        points = decode_pack(data)
        present = [r for r in rows if r.id in points]
        if len(present) != len(rows) or len(points) != len(present):
            log.warning("run %s: %d series marked packed, %d series in its pack; those in both are kept", run_id,
                        len(rows), len(points))
        if present:
            blob = encode_pack({i: points[r.id] for i, r in enumerate(present)})
            directory = {r.key: PackedSeries(i, r.first_step, r.last_step, r.n_points, r.last_value).entry(i)
                         for i, r in enumerate(present)}
            n_points = sum(len(points[r.id]) for r in present)
            conn.execute(_packs.update().where(_packs.c.run_id == run_id).values(
                data=blob, directory=directory, n_series=len(present), n_points=n_points))
        else:
            conn.execute(_packs.delete().where(_packs.c.run_id == run_id))
        moved += [r.id for r in present]
    for i in range(0, len(moved), 500):
        conn.execute(_series.delete().where(_series.c.id.in_(moved[i:i + 500])))
    op.drop_column("series", "packed")  # SQLite ≥ 3.35 drops a column in place


def downgrade() -> None:
    """Every packed series gets its `series` row back (marked packed), and its pack numbers it by that id."""
    from sqd.server.store.pack_codec import decode_pack, encode_pack
    from sqd.server.store.packs import directory_of

    op.add_column("series", sa.Column("packed", sa.Boolean(), nullable=False, server_default=sa.false()))
    conn = op.get_bind()
    for run_id, data, raw in conn.execute(sa.select(_packs.c.run_id, _packs.c.data, _packs.c.directory)).all():
        ref = conn.execute(sa.text("SELECT ref FROM run_refs WHERE run_id = :run"), {"run": run_id}).scalar()
        if ref is None:
            conn.execute(sa.text("INSERT INTO run_refs (run_id) VALUES (:run)"), {"run": run_id})
            ref = conn.execute(sa.text("SELECT ref FROM run_refs WHERE run_id = :run"), {"run": run_id}).scalar()
        directory = directory_of(run_id, raw)
        points = decode_pack(data)
        renumbered = {}
        for key, e in sorted(directory.items()):
            conn.execute(_series.insert().values(run_ref=ref, key=key, first_step=e.first_step, last_step=e.last_step,
                                                 n_points=e.n_points, last_value=e.last_value, packed=True))
            sid = conn.execute(sa.select(_series.c.id).where(_series.c.run_ref == ref, _series.c.key == key)).scalar()
            renumbered[sid] = points[e.number]
        conn.execute(_packs.update().where(_packs.c.run_id == run_id).values(data=encode_pack(renumbered)))
    op.drop_column("packs", "directory")

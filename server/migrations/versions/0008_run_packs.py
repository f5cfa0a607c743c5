"""Run packs (server/store/packs.py): `packs` holds a finished run's small series in one blob, `series.packed` says
which series live there rather than in `chunks`, `runs.packed_at` when the run was last packed. Existing data
stays in `chunks`; the server's packer (server/packer.py) or `sqd db pack` packs finished runs afterwards.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "packs",
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
        sa.Column("n_series", sa.Integer(), nullable=False),
        sa.Column("n_points", sa.BigInteger(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
    )
    # in place, never by copying: SQLite would drop `runs` to copy it, and its foreign keys would cascade
    op.add_column("series", sa.Column("packed", sa.Boolean(), nullable=False, server_default=sa.false()))
    op.add_column("runs", sa.Column("packed_at", sa.Float(), nullable=True))


def downgrade() -> None:
    """Unpacks every pack into chunks first, so no point is lost."""
    from sqd.server.store.chunk_codec import chunk_row
    from sqd.server.store.pack_codec import decode_pack

    conn = op.get_bind()
    chunks = sa.table("chunks", *(sa.column(c) for c in ("series_id", "first_step", "last_step", "n", "n_nan",
                                                          "vmin", "vmax", "last_value", "width", "rollups", "data")))
    for (data,) in conn.execute(sa.text("SELECT data FROM packs")):
        rows = [chunk_row(sid, p) for sid, p in decode_pack(data).items()]
        if rows:
            conn.execute(chunks.insert(), rows)
    op.drop_column("runs", "packed_at")  # SQLite ≥ 3.35 drops a column in place
    op.drop_column("series", "packed")
    op.drop_table("packs")

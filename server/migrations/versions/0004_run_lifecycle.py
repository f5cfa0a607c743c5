"""Run lifecycle: tags, notes, archived_at, deleted_at on runs; the last value of every series on `series` (what
run filters and sorts on metrics read), filled from the stored points.

Revision ID: 0004
Revises: 0002_alert_rules
Create Date: 2026-12-04 16:00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002_alert_rules"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMN, not a batch (copy-and-rename) alteration: SQLite runs with foreign_keys=ON, and dropping the
    # old `runs` table during a copy would cascade-delete every series, evaluation and alert of every run.
    op.add_column("runs", sa.Column("tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
    op.add_column("runs", sa.Column("notes", sa.Text(), nullable=False, server_default=""))
    op.add_column("runs", sa.Column("archived_at", sa.Float(), nullable=True))
    op.add_column("runs", sa.Column("deleted_at", sa.Float(), nullable=True))
    op.add_column("series", sa.Column("last_value", sa.Float(), nullable=True))
    if "points" in sa.inspect(op.get_bind()).get_table_names():
        op.execute("UPDATE series SET last_value = (SELECT p.value FROM points p "
                   "WHERE p.series_id = series.id AND p.step = series.last_step)")


def downgrade() -> None:
    # SQLite ≥ 3.35 drops a column in place (no table copy, so no cascade either)
    for table, column in (("series", "last_value"), ("runs", "deleted_at"), ("runs", "archived_at"),
                          ("runs", "notes"), ("runs", "tags")):
        op.drop_column(table, column)

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
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("tags", sa.JSON(), nullable=False, server_default=sa.text("'[]'")))
        batch.add_column(sa.Column("notes", sa.Text(), nullable=False, server_default=""))
        batch.add_column(sa.Column("archived_at", sa.Float(), nullable=True))
        batch.add_column(sa.Column("deleted_at", sa.Float(), nullable=True))
    with op.batch_alter_table("series") as batch:
        batch.add_column(sa.Column("last_value", sa.Float(), nullable=True))
    if "points" in sa.inspect(op.get_bind()).get_table_names():
        op.execute("UPDATE series SET last_value = (SELECT p.value FROM points p "
                   "WHERE p.series_id = series.id AND p.step = series.last_step)")


def downgrade() -> None:
    with op.batch_alter_table("series") as batch:
        batch.drop_column("last_value")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("deleted_at")
        batch.drop_column("archived_at")
        batch.drop_column("notes")
        batch.drop_column("tags")

"""Integer run references in `series`: `run_refs` gives every run that has series a small integer, and `series`
names its run by it (`run_ref`) instead of the 32-character id — about 60 bytes less per series row and its
(run, key) index entry (server/store/models.py RunRef). Converted in place: a ref for every run id in `series`,
filled into `series.run_ref`, then `series.run_id` dropped (SQLite copies `series`, which no foreign key points
at). The downgrade puts the run ids back.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "run_refs",
        sa.Column("ref", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("run_id", sa.String(64), sa.ForeignKey("runs.id", ondelete="CASCADE"), nullable=False,
                  unique=True),
    )
    op.execute("INSERT INTO run_refs (run_id) SELECT DISTINCT run_id FROM series ORDER BY run_id")
    op.add_column("series", sa.Column("run_ref", sa.Integer(), nullable=True))
    op.execute("UPDATE series SET run_ref = (SELECT ref FROM run_refs WHERE run_refs.run_id = series.run_id)")
    with op.batch_alter_table("series") as batch:
        batch.drop_constraint("uq_series_run_key", type_="unique")
        batch.drop_column("run_id")  # and its foreign key
        batch.alter_column("run_ref", existing_type=sa.Integer(), nullable=False)
        batch.create_foreign_key("fk_series_run_ref", "run_refs", ["run_ref"], ["ref"], ondelete="CASCADE")
        batch.create_unique_constraint("uq_series_run_key", ["run_ref", "key"])


def downgrade() -> None:
    op.add_column("series", sa.Column("run_id", sa.String(64), nullable=True))
    op.execute("UPDATE series SET run_id = (SELECT run_id FROM run_refs WHERE run_refs.ref = series.run_ref)")
    with op.batch_alter_table("series") as batch:
        batch.drop_constraint("uq_series_run_key", type_="unique")
        batch.drop_constraint("fk_series_run_ref", type_="foreignkey")
        batch.drop_column("run_ref")
        batch.alter_column("run_id", existing_type=sa.String(64), nullable=False)
        batch.create_foreign_key("series_run_id_fkey", "runs", ["run_id"], ["id"], ondelete="CASCADE")
        batch.create_unique_constraint("uq_series_run_key", ["run_id", "key"])
    op.drop_table("run_refs")

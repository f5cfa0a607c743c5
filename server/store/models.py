"""Database tables. Typed ORM models for runs, evaluations, checkpoints, alerts and tokens; `chunks` is written by
server/store/points_store.py and only declared here.

Long series (DESIGN.md): `series` maps (run, key) to an integer id — the run named by its `run_refs.ref`;
`chunks` holds each series' points in compressed chunks of consecutive steps (server/store/chunk_codec.py), keyed
(series_id, first_step), with their step ranges never overlapping. The summary columns of a chunk (count, NaN
count, min/max over the non-NaN values, the value at `last_step`) store NaN as NULL, as SQL aggregates want;
inside the blobs NaN is kept bit for bit.

`series.last_value` is the value at `series.last_step` (NULL = NaN, or no point yet when `n_points` is 0): the
per-series summary that run filters and sorts on metrics read (`eval/fid < 50`). A finished run's small series
have no `series` row: their run's `packs` row holds their points and the same summary (server/store/packs.py).
A run's lifecycle (migration 0004): `tags` (a JSON list of labels), `notes`, `archived_at` (hidden from the
default listing) and `deleted_at` (a soft delete: hidden everywhere but recoverable until `gc` erases it).
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Float,
    ForeignKey,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
    select,
)
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.selectable import ScalarSelect

RUN_ID = String(64)
DIRECTORY = JSON().with_variant(postgresql.JSONB(), "postgresql")

class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[str]: JSON}

def now() -> float:
    return time.time()

class Run(Base):
    __tablename__ = "runs"

    id: Mapped[str] = mapped_column(RUN_ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    kind: Mapped[str] = mapped_column(String(16), default="external")  # launched | external
    preset: Mapped[str | None] = mapped_column(String(100))
    config: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now, index=True)
    updated_at: Mapped[float] = mapped_column(Float, default=now)
    started_at: Mapped[float | None] = mapped_column(Float)
    finished_at: Mapped[float | None] = mapped_column(Float)
    host: Mapped[str | None] = mapped_column(String(200))
    device: Mapped[str | None] = mapped_column(String(64))
    agent: Mapped[str | None] = mapped_column(String(200))
    pid: Mapped[int | None] = mapped_column(Integer)
    steps: Mapped[int | None] = mapped_column(BigInteger)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    last_epoch: Mapped[int | None] = mapped_column(Integer)
    error: Mapped[str | None] = mapped_column(Text)
    traceback: Mapped[str | None] = mapped_column(Text)
    tags: Mapped[list[str]] = mapped_column(default=list)
    notes: Mapped[str] = mapped_column(Text, default="")
    archived_at: Mapped[float | None] = mapped_column(Float)
    deleted_at: Mapped[float | None] = mapped_column(Float)
    packed_at: Mapped[float | None] = mapped_column(Float)  # when packs.pack_run last ran (NULL: since unpacked)
    sweep_id: Mapped[str | None] = mapped_column(RUN_ID, index=True)  # the sweep that made it (sweeps/models.py)

class RunRef(Base):
    """A small integer for each run that has series: `series` rows name their run by it, not by the 32-character
    id (migration 0009: a series row and its (run, key) index entry cost ~60 bytes less — most of what a short
    series costs besides its points)."""

    __tablename__ = "run_refs"

    ref: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"), unique=True)


def run_ref(run_id: str) -> ScalarSelect[int]:
    """The `run_refs.ref` of a run id, for `Series.run_ref == run_ref(run_id)`."""
    return select(RunRef.ref).where(RunRef.run_id == run_id).scalar_subquery()


class Series(Base):
    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("run_ref", "key", name="uq_series_run_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_ref: Mapped[int] = mapped_column(Integer, ForeignKey("run_refs.ref", ondelete="CASCADE",
                                                             name="fk_series_run_ref"))
    key: Mapped[str] = mapped_column(String(200))
    first_step: Mapped[int | None] = mapped_column(BigInteger)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    n_points: Mapped[int] = mapped_column(BigInteger, default=0)
    last_value: Mapped[float | None] = mapped_column(Float)  # at last_step; NULL = NaN (or no point yet)

class Chunk(Base):
    __tablename__ = "chunks"

    # no foreign key: the store creates (and locks) the series row in the same transaction, and gc deletes chunks
    # with their series
    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    first_step: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    last_step: Mapped[int] = mapped_column(BigInteger)
    n: Mapped[int] = mapped_column(Integer)  # points, counting those a downsampling dropped
    n_nan: Mapped[int] = mapped_column(Integer)
    vmin: Mapped[float | None] = mapped_column(Float)  # over non-NaN values; NULL when all are NaN
    vmax: Mapped[float | None] = mapped_column(Float)
    last_value: Mapped[float | None] = mapped_column(Float)  # NULL = NaN
    width: Mapped[int] = mapped_column(Integer, default=1)  # 1, or the bucket width a downsampling kept
    rollups: Mapped[bytes] = mapped_column(LargeBinary)  # small, read by downsampled queries: before `data`
    data: Mapped[bytes] = mapped_column(LargeBinary)

class Pack(Base):
    """A finished run's small series, whole (server/store/packs.py): their points in one blob, and in `directory`
    (jsonb on PostgreSQL: run filters read one key of it) what a `series` row says of each — key → [its number in
    the blob, first step, last step, points, last value (null = NaN; "Infinity" / "-Infinity")]. Packed series
    have no `series` row: one per series cost more than their points."""

    __tablename__ = "packs"

    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    n_series: Mapped[int] = mapped_column(Integer)
    n_points: Mapped[int] = mapped_column(BigInteger)
    directory: Mapped[dict[str, Any]] = mapped_column(DIRECTORY)
    data: Mapped[bytes] = mapped_column(LargeBinary)


class Evaluation(Base):
    __tablename__ = "evaluations"
    __table_args__ = (UniqueConstraint("run_id", "checkpoint_step", name="uq_evaluation_run_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"))
    event_id: Mapped[str] = mapped_column(String(64))
    checkpoint_step: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(Integer)
    status: Mapped[str] = mapped_column(String(16))
    metrics: Mapped[dict[str, Any]] = mapped_column(default=dict)
    n_samples: Mapped[int] = mapped_column(Integer, default=0)
    timings_s: Mapped[dict[str, Any]] = mapped_column(default=dict)
    checkpoint_uri: Mapped[str | None] = mapped_column(String(500))
    grid_uri: Mapped[str | None] = mapped_column(String(500))
    error: Mapped[str | None] = mapped_column(Text)
    worker: Mapped[str | None] = mapped_column(String(200))
    created_at: Mapped[float] = mapped_column(Float, default=now)

class Checkpoint(Base):
    __tablename__ = "checkpoints"
    __table_args__ = (UniqueConstraint("run_id", "step", name="uq_checkpoint_run_step"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"))
    step: Mapped[int] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(Integer)
    uri: Mapped[str] = mapped_column(String(500))
    sha256: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(BigInteger)
    profile: Mapped[str] = mapped_column(String(32))
    generator: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[float] = mapped_column(Float, default=now)

class Alert(Base):
    __tablename__ = "alerts"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    event_id: Mapped[str] = mapped_column(String(64), unique=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    rule: Mapped[str] = mapped_column(String(200))
    step: Mapped[int | None] = mapped_column(BigInteger)
    epoch: Mapped[int | None] = mapped_column(Integer)
    signals: Mapped[list[str]] = mapped_column(default=list)
    scores: Mapped[dict[str, Any]] = mapped_column(default=dict)
    explanation: Mapped[str] = mapped_column(Text, default="")
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    created_at: Mapped[float] = mapped_column(Float, default=now, index=True)

class Token(Base):
    __tablename__ = "tokens"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    hash: Mapped[str] = mapped_column(String(64), unique=True)  # sha256 hex of the secret
    created_at: Mapped[float] = mapped_column(Float, default=now)
    revoked_at: Mapped[float | None] = mapped_column(Float)

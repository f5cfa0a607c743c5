"""Database tables. Typed ORM models for runs, evaluations, checkpoints, alerts and tokens; `points` and `rollups`
are written with Core bulk statements (server/store/points_store.py) and only declared here.

Long series (DESIGN.md): `series` maps (run, key) to an integer id; `points` is keyed (series_id, step) and
clustered on that key (SQLite WITHOUT ROWID), so a window of one series is one range scan. A NaN value is stored
as NULL (SQLite turns NaN into NULL anyway, and PostgreSQL sorts NaN above +inf, which would break max()); since
every point has a value, NULL means NaN and nothing else. ±inf are stored as they are.
`rollups` keeps min/max/last/count per bucket of 2^level steps for the levels in ROLLUP_LEVELS.
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
    SmallInteger,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

# Every second power of two from 16 steps up: a query reads at most 4× the buckets it returns (16× the points
# below the first level), and ingest writes about one rollup row per 12 points.
ROLLUP_LEVELS: tuple[int, ...] = tuple(range(4, 32, 2))

RUN_ID = String(64)

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
    sweep_id: Mapped[str | None] = mapped_column(RUN_ID, index=True)  # the sweep that made it (sweeps/models.py)

class Series(Base):
    __tablename__ = "series"
    __table_args__ = (UniqueConstraint("run_id", "key", name="uq_series_run_key"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"))
    key: Mapped[str] = mapped_column(String(200))
    first_step: Mapped[int | None] = mapped_column(BigInteger)
    last_step: Mapped[int | None] = mapped_column(BigInteger)
    n_points: Mapped[int] = mapped_column(BigInteger, default=0)

class PointRow(Base):
    __tablename__ = "points"
    __table_args__ = {"sqlite_with_rowid": False}

    # no foreign key on the two hot tables: PostgreSQL checks one per inserted row, which halves COPY speed; the
    # store creates (and locks) the series row in the same transaction, and deletes cascade in runs_store
    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    step: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    value: Mapped[float | None] = mapped_column(Float)  # NULL = NaN
    epoch: Mapped[int | None] = mapped_column(Integer)
    wall_time: Mapped[float] = mapped_column(Float)

class Rollup(Base):
    __tablename__ = "rollups"
    __table_args__ = {"sqlite_with_rowid": False}

    series_id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    level: Mapped[int] = mapped_column(SmallInteger, primary_key=True, autoincrement=False)
    bucket: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    n: Mapped[int] = mapped_column(Integer)
    n_nan: Mapped[int] = mapped_column(Integer)
    vmin: Mapped[float | None] = mapped_column(Float)  # over non-NaN values; NULL when all are NaN
    vmax: Mapped[float | None] = mapped_column(Float)
    last_step: Mapped[int] = mapped_column(BigInteger)
    last_value: Mapped[float | None] = mapped_column(Float)

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

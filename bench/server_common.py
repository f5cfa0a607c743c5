"""Shared setup for the server benchmarks: a private database (SQLite file or PostgreSQL schema) and bus prefix."""

from __future__ import annotations

import contextlib
import os
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy

from sqd.bus import drop_prefix
from sqd.settings import BusSettings, Settings

REDIS_URL = os.environ.get("SQD_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("SQD_BENCH_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
TOKEN = "bench-token"


@contextlib.contextmanager
def database(kind: str, home: Path) -> Iterator[str]:
    """A fresh database URL: a SQLite file under `home`, or a PostgreSQL schema dropped afterwards."""
    if kind == "sqlite":
        yield f"sqlite:///{home / 'bench.db'}"
        return
    schema = f"sqdbench_{uuid.uuid4().hex[:10]}"
    engine = sqlalchemy.create_engine(POSTGRES_URL)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{POSTGRES_URL}?options=-csearch_path%3D{schema}"
    finally:
        with engine.begin() as conn:
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


@contextlib.contextmanager
def bench_settings(kind: str) -> Iterator[Settings]:
    prefix = f"bench-{uuid.uuid4().hex[:8]}"
    with tempfile.TemporaryDirectory(prefix="sqd-bench-") as tmp:
        home = Path(tmp)
        with database(kind, home) as url:
            yield Settings(home=home, redis_url=REDIS_URL, database_url=url, token=TOKEN,
                           artifacts_url=str(home / "artifacts"),
                           bus=BusSettings(prefix=prefix, block_ms=50))
    drop_prefix(REDIS_URL, prefix)


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q / 100 * (len(ordered) - 1))))]

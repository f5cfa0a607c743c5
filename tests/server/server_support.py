"""Helpers the server tests import by name (a module of its own: `conftest` is ambiguous when the whole suite
runs, since every test folder has one)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import sqlalchemy

from sqd.server.app import create_app
from sqd.settings import BusSettings, ServerSettings, Settings

ADMIN = "admin-secret-for-tests"
AUTH = {"Authorization": f"Bearer {ADMIN}"}


@contextlib.contextmanager
def pg_schema(pg_url: str) -> Iterator[str]:
    """A private schema on the shared `test` database: yields a URL that uses it, then drops it. Connections are
    named after the schema, so any a test left open (a thread that outlived its app) are ended first: otherwise
    DROP SCHEMA waits on their locks or deadlocks with them."""
    schema = f"sqdtest_{uuid.uuid4().hex[:12]}"
    engine = sqlalchemy.create_engine(pg_url)
    with engine.begin() as conn:
        conn.exec_driver_sql(f"CREATE SCHEMA {schema}")
    try:
        yield f"{pg_url}?options=-csearch_path%3D{schema}&application_name={schema}"
    finally:
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                                         "WHERE application_name = :name"), {"name": schema})
            conn.exec_driver_sql(f"DROP SCHEMA {schema} CASCADE")
        engine.dispose()


def make_settings(home: Path, redis_url: str, db: str, prefix: str, **server: object) -> Settings:
    return Settings(home=home, redis_url=redis_url, database_url=db, token=ADMIN,
                    artifacts_url=str(home / "artifacts"),
                    bus=BusSettings(prefix=prefix, block_ms=100, min_idle_ms=500),
                    server=ServerSettings(**server))  # type: ignore[arg-type]


def wait_for(predicate, timeout_s: float = 10.0, what: str = "condition"):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s}s waiting for {what}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class LiveServer:
    """uvicorn in a thread on a free port (for SSE and the CLI, which need real HTTP)."""

    def __init__(self, settings: Settings):
        import uvicorn

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(create_app(settings), host="127.0.0.1", port=self.port, log_level="warning",
                                timeout_graceful_shutdown=2)  # open SSE streams never finish by themselves
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)

    def __enter__(self) -> LiveServer:
        import httpx

        self.thread.start()
        wait_for(lambda: self._up(httpx), 30, "the server to answer /api/v1/health")
        return self

    def _up(self, httpx) -> bool:  # type: ignore[no-untyped-def]
        try:
            return httpx.get(f"{self.url}/api/v1/health", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(15)


def brute_buckets(steps, values, lo, hi, level):  # type: ignore[no-untyped-def]
    """Buckets of 2^level steps over [lo, hi] widened to whole buckets, computed point by point in numpy:
    (last step, last value, min, max, count, NaN count), for checking the store's downsampling."""
    import math

    import numpy as np

    order = np.argsort(steps)
    steps, values = steps[order], values[order]
    inside = ((steps >> level) >= (lo >> level)) & ((steps >> level) <= (hi >> level))
    steps, values = steps[inside], values[inside]
    out = []
    for b in np.unique(steps >> level):
        sel = (steps >> level) == b
        v = values[sel]
        finite = v[~np.isnan(v)]
        out.append((int(steps[sel][-1]), v[-1], finite.min() if finite.size else math.nan,
                    finite.max() if finite.size else math.nan, int(sel.sum()), int(np.isnan(v).sum())))
    return out


def same_float(a: float, b: float) -> bool:
    return (a != a and b != b) or a == b


# written by format 1 (one zstd frame of byte-shuffled columns), which databases made before format 2 still hold
V1_FLOAT64 = ("01020600000028b52ffd20c0850200e4030603020203ba00070001020002000c00f4f4e8e892d0010103033bca009f0017000300"
              "9c0001000000750088003c00e40000e0f8f03700003f7fff7e80000a10008103de78e2c081053f64105e8d")
V1_FLOAT32 = ("01030500000028b52ffd208c350100b00004000266606464d0ca9f1703804080003f3e3f3f4006006005c4816010a20a4151140c"
              "01")

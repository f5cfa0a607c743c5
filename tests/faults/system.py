"""A system under test made of real processes: an embedded Valkey, `sqd server`, `sqd agent`, `sqd worker`,
training processes; plus exact counts read straight from the database."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.orm import Session

from sqd.bus import Bus
from sqd.embedded_redis import EmbeddedRedis, free_port
from sqd.server.store.chunk_read import run_points
from sqd.settings import Settings

TOKEN = "fault-suite-admin-token"


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, every_s: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout_s
    last_error: Exception | None = None
    while time.monotonic() < deadline:
        try:
            if result := predicate():
                return result
        except Exception as exc:  # a probe may fail while a component is down; keep probing
            last_error = exc
        time.sleep(every_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what} (last error: {last_error})")


@dataclass
class System:
    root: Path
    database_url: str
    valkey: EmbeddedRedis = field(init=False)
    port: int = field(default_factory=free_port)
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.valkey = EmbeddedRedis(self.root / "valkey")
        self.valkey.start()
        self.engine = sa.create_engine(self.database_url)

    @property
    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith("SQD_")}
        env.update({"SQD_HOME": str(self.root / "home"), "SQD_REDIS_URL": self.valkey.url, "SQD_TOKEN": TOKEN,
                    "SQD_DATABASE_URL": self.database_url, "SQD_ARTIFACTS_URL": str(self.root / "artifacts"),
                    "SQD_SERVER__PORT": str(self.port), "SQD_URL": self.base_url, "PYTHONUNBUFFERED": "1",
                    # small timeouts so recovery happens within a test's patience
                    "SQD_BUS__MIN_IDLE_MS": "2000", "SQD_BUS__BLOCK_MS": "200"})
        return env

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def api(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url + "/api/v1", headers={"Authorization": f"Bearer {TOKEN}"},
                            timeout=10)

    def bus(self) -> Bus:
        return Bus.connect(Settings(redis_url=self.valkey.url))

    def start(self, name: str, *argv: str, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        logs = self.root / "logs"
        logs.mkdir(exist_ok=True)
        with open(logs / f"{name}.log", "ab") as log:
            proc = subprocess.Popen([sys.executable, *argv], env=env or self.env, stdout=log, stderr=subprocess.STDOUT,
                                    start_new_session=True)
        self.procs[name] = proc
        return proc

    def log(self, name: str) -> str:
        return (self.root / "logs" / f"{name}.log").read_text(errors="replace")

    def start_server(self) -> None:
        self.start("server", "-m", "sqd", "server", "--port", str(self.port))
        wait_until(lambda: httpx.get(self.base_url + "/api/v1/health", timeout=1).status_code == 200, 60,
                   "the server to answer /health")

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs[name]
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            pass
        proc.wait(30)

    def health(self) -> dict[str, Any]:
        return dict(httpx.get(self.base_url + "/api/v1/health", timeout=5).json())

    def count_points(self, run_id: str, key: str | None = None) -> int:
        with Session(self.engine) as session:
            return sum(len(p) for p in run_points(session, run_id, None if key is None else [key]).values())

    def steps(self, run_id: str, key: str) -> list[int]:
        with Session(self.engine) as session:
            points = run_points(session, run_id, [key])
        return points[key].step.tolist() if key in points else []

    def run_row(self, run_id: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(sa.text("SELECT * FROM runs WHERE id = :id"), {"id": run_id}).mappings().first()
        return dict(row) if row else None

    def rows(self, table: str, run_id: str) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            return [dict(r) for r in conn.execute(sa.text(f"SELECT * FROM {table} WHERE run_id = :id"),  # noqa: S608
                                                  {"id": run_id}).mappings()]

    def stop(self) -> None:
        for proc in self.procs.values():  # all at once: each may take seconds to shut down
            try:
                os.killpg(proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        for name in list(self.procs):
            self.kill(name, signal.SIGTERM)
        self.valkey.stop()
        self.engine.dispose()

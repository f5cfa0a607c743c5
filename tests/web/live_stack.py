"""A real SQD server for the dashboard's browser tests and benchmarks, and the events a training run sends.

`DashboardServer` runs create_app under uvicorn in a thread on a free port (SQLite under a temporary home, a
private stream prefix on a real Redis, an admin token); `RunFeed` publishes what a trainer and an evaluation
worker would (RunStarted, MetricBatch, EvaluationResult with a sample grid in the artifact store, AlertRaised,
RunFinished) on the real bus, so the browser sees them through ingest and SSE like any run.
"""

from __future__ import annotations

import io
import math
import os
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from sqd.artifacts import ArtifactStore
from sqd.bus import INGEST, Bus, drop_prefix
from sqd.protocol import AlertRaised, EvaluationResult, MetricBatch, RunFinished, RunStarted
from sqd.settings import BusSettings, ServerSettings, Settings

TOKEN = "dashboard-test-token"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync"]


def wait(predicate: Callable[[], Any], timeout_s: float = 45.0, what: str = "a condition") -> Any:
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(0.05)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class DashboardServer:
    """uvicorn + create_app in a daemon thread; `with DashboardServer(...) as srv:` waits for /api/v1/health."""

    def __init__(self, home: Path, redis_url: str, prefix: str, open_reads: bool = True):
        import uvicorn

        from sqd.server.app import create_app

        self.settings = Settings(home=home, redis_url=redis_url, database_url=f"sqlite:///{home / 'sqd.db'}",
                                 artifacts_url=str(home / "artifacts"), token=TOKEN,
                                 bus=BusSettings(prefix=prefix, block_ms=50, min_idle_ms=500),
                                 server=ServerSettings(open_reads_on_localhost=open_reads))  # type: ignore[arg-type]
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.server = uvicorn.Server(uvicorn.Config(create_app(self.settings), host="127.0.0.1", port=self.port,
                                                    log_level="warning", timeout_graceful_shutdown=1))
        self.thread = threading.Thread(target=self.server.run, daemon=True, name="dashboard-server")
        self.bus = Bus.connect(self.settings)
        self.artifacts = ArtifactStore(self.settings.resolved_artifacts_url)
        self.http = httpx.Client(base_url=f"{self.url}/api/v1", headers={"Authorization": f"Bearer {TOKEN}"},
                                 timeout=30)

    def __enter__(self) -> DashboardServer:
        self.thread.start()
        wait(self._healthy, 30, f"the server on {self.url} to answer /api/v1/health")
        return self

    def _healthy(self) -> bool:
        try:
            return self.http.get("/health").status_code == 200
        except httpx.HTTPError:
            return False

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(10)
        self.http.close()
        self.bus.close()

    def publish(self, *events: Any) -> None:
        self.bus.publish(INGEST, list(events))

    def run_row(self, run_id: str) -> dict[str, Any]:
        resp = self.http.get(f"/runs/{run_id}")
        resp.raise_for_status()
        return dict(resp.json())


@contextmanager
def trainer_agent(server: DashboardServer, agent_id: str) -> Iterator[subprocess.Popen[bytes]]:
    """A real `sqd agent` process on the server's bus, artifact store and data dir: it trains real `sqd train`
    subprocesses for the launches the server sends; terminated afterwards. When the test fails inside, the ends
    of the agent's log and of its runs' logs are printed (pytest shows them with the failure)."""
    s = server.settings
    env = {**os.environ, "SQD_HOME": str(s.home), "SQD_REDIS_URL": s.resolved_redis_url,
           "SQD_BUS__PREFIX": s.bus.prefix, "SQD_ARTIFACTS_URL": s.resolved_artifacts_url}
    agent_log = s.home / f"agent-{agent_id}.log"
    with agent_log.open("wb") as out:
        agent = subprocess.Popen([sys.executable, "-m", "sqd", "agent", "--id", agent_id], env=env,
                                 stdout=out, stderr=subprocess.STDOUT)
        try:
            yield agent
        except BaseException:
            for log in [agent_log, *sorted((s.home / "agent" / agent_id / "logs").glob("*.log"))]:
                print(f"--- {log} (end) ---\n{log.read_text(errors='replace')[-3000:]}")
            raise
        finally:
            agent.terminate()
            agent.wait(30)


@contextmanager
def serve(home: Path, redis_url: str, open_reads: bool = True) -> Iterator[DashboardServer]:
    """A DashboardServer under a fresh stream prefix, whose keys are deleted afterwards."""
    prefix = f"webtest-{uuid.uuid4().hex[:10]}"
    try:
        with DashboardServer(home, redis_url, prefix, open_reads=open_reads) as server:
            yield server
    finally:
        drop_prefix(redis_url, prefix)


def grid_png(step: int, size: int = 64) -> bytes:
    """A small picture that changes with the step, standing in for a worker's sample grid."""
    from PIL import Image, ImageDraw

    img = Image.new("RGB", (size, size), (10, 10, 10))
    draw = ImageDraw.Draw(img)
    shade = (step * 37) % 200 + 55
    for i in range(4):
        for j in range(4):
            if (i + j + step // 100) % 2:
                draw.rectangle([i * 16, j * 16, i * 16 + 15, j * 16 + 15], fill=(shade, 255 - shade, 120))
    out = io.BytesIO()
    img.save(out, format="PNG")
    return out.getvalue()


def angle(step: int, turning: int | None, phase: float = 0.0) -> float:
    """A weight angle that decays as training settles and jumps past the turning point (SPEC §1)."""
    base = 0.02 / math.sqrt(1 + step / 50) * (1 + 0.15 * math.sin(step / 7 + phase))
    return base * (12 if turning is not None and step >= turning else 1)


@dataclass
class RunFeed:
    """Publishes one simulated run: `steps(a, b)` sends angles and losses for steps [a, b) (an epoch every
    `epoch_len` steps, with its per-epoch angles), `evaluate(step)` an evaluation with a sample grid."""

    server: DashboardServer
    run_id: str
    name: str = "simulated"
    preset: str | None = None
    epoch_len: int = 100
    turning: int | None = None
    wall: float = field(default_factory=time.time)

    def start(self) -> None:
        self.server.publish(RunStarted(run_id=self.run_id, name=self.name, preset=self.preset, host="test-host",
                                       config={"dataset": {"name": "stacked_digits"}, "eval": {"profile": "digits"}}))

    def steps(self, first: int, last: int) -> None:
        rows: list[tuple[str, int, float, int | None, float]] = []
        for s in range(first, last):
            epoch = s // self.epoch_len
            rows += [("angle/G", s, angle(s, self.turning), epoch, self.wall),
                     ("angle/D", s, angle(s, self.turning, 1.0) * 1.5, epoch, self.wall),
                     ("loss/D", s, 1.2 + 0.2 * math.sin(s / 9), epoch, self.wall),
                     ("loss/G", s, 0.8 + 0.3 * math.cos(s / 11), epoch, self.wall)]
            if (s + 1) % self.epoch_len == 0:
                rows += [("angle_epoch/G", s, 20 * angle(s, self.turning), epoch, self.wall),
                         ("angle_epoch/D", s, 30 * angle(s, self.turning), epoch, self.wall)]
        self.server.publish(MetricBatch.from_points(self.run_id, rows))

    def evaluate(self, step: int, quality: float, diversity: float, fid: float) -> None:
        key = f"runs/{self.run_id}/samples/step-{step:09d}.png"
        self.server.artifacts.put_bytes(key, grid_png(step))
        self.server.publish(EvaluationResult(
            run_id=self.run_id, checkpoint_step=step, epoch=step // self.epoch_len, status="ok", n_samples=2000,
            metrics={"quality": quality, "diversity": diversity, "diversity_plugin": diversity * 0.9, "fid": fid,
                     "modes_covered": 600.0}, grid_uri=key, worker="test-worker", timings_s={"total": 1.5}))

    def alert(self, step: int, explanation: str) -> AlertRaised:
        event = AlertRaised(run_id=self.run_id, rule="turning_point", step=step, epoch=step // self.epoch_len,
                            signals=["angle/G", "angle/D"], scores={"angle/G": 11.5}, explanation=explanation,
                            severity="critical")
        self.server.publish(event)
        return event

    def finish(self, status: str = "finished", step: int | None = None) -> None:
        self.server.publish(RunFinished(run_id=self.run_id, status=status, step=step))  # type: ignore[arg-type]

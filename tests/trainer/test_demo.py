"""`sqd demo`'s launch step: through the real server's REST API, or straight onto the bus without that route."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from agent_support import drop_prefix
from monitor_support import events

from sqd.bus import Bus
from sqd.settings import BusSettings, Settings
from sqd.stack import Stack
from sqd.trainer.demo import DEMO_RUNS, launch_demo_runs

TOKEN = "demo-test-token"


@pytest.fixture
def settings(tmp_path: Path, external_redis_url: str) -> Iterator[Settings]:
    s = Settings(home=tmp_path / "home", redis_url=external_redis_url, token=TOKEN,
                 database_url=f"sqlite:///{tmp_path / 'sqd.db'}", bus=BusSettings(prefix=f"demo-{time.time_ns()}"))
    yield s
    drop_prefix(s)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def serve_in_thread(server: object, run: object, port: int) -> None:
    threading.Thread(target=run, daemon=True).start()  # type: ignore[arg-type]
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=1)
            return
        except httpx.HTTPError:
            time.sleep(0.1)
    raise AssertionError("the test server did not start")


def test_demo_runs_go_through_the_rest_api(settings: Settings) -> None:
    import uvicorn

    from sqd.server.app import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_level="warning"))
    serve_in_thread(server, server.run, port)
    try:
        stack = Stack(settings, port, token=TOKEN)
        run_ids = launch_demo_runs(stack)
        runs = [httpx.get(f"{stack.base_url}/api/v1/runs/{r}", headers={"Authorization": f"Bearer {TOKEN}"}).json()
                for r in run_ids]
    finally:
        server.should_exit = True
    assert [r["preset"] for r in runs] == [d.preset for d in DEMO_RUNS]
    assert [r["name"] for r in runs] == [d.name for d in DEMO_RUNS]
    bus = Bus.connect(settings)
    launches = [e for e in events(bus, "control") if e.type == "launch"]
    bus.close()
    assert [(e.run_id, e.preset) for e in launches] == [(r, d.preset) for r, d in zip(run_ids, DEMO_RUNS, strict=True)]


class NoLaunchRoute(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.end_headers()

    def do_POST(self) -> None:
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


def test_demo_falls_back_to_the_bus(settings: Settings) -> None:
    port = free_port()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), NoLaunchRoute)
    serve_in_thread(httpd, httpd.serve_forever, port)
    try:
        run_ids = launch_demo_runs(Stack(settings, port, token=TOKEN))
    finally:
        httpd.shutdown()
    bus = Bus.connect(settings)
    launches = [e for e in events(bus, "control") if e.type == "launch"]
    bus.close()
    assert [(e.run_id, e.preset, e.name) for e in launches] == [
        (r, d.preset, d.name) for r, d in zip(run_ids, DEMO_RUNS, strict=True)]

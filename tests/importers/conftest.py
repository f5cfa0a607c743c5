"""Importer fixtures: a real SQD server (uvicorn thread, SQLite, the pre-started Redis under a private prefix) and
the `sqd import …` command run as a user runs it, against that server (SQD_URL, SQD_TOKEN)."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))  # the server tests' LiveServer
from server_support import ADMIN, AUTH, LiveServer, make_settings  # noqa: E402

from sqd.bus import drop_prefix  # noqa: E402


@pytest.fixture
def server(tmp_path: Path, external_redis_url: str) -> Iterator[LiveServer]:
    prefix = f"imptest-{uuid.uuid4().hex[:10]}"
    settings = make_settings(tmp_path / "home", external_redis_url, f"sqlite:///{tmp_path / 'sqd.db'}", prefix)
    try:
        with LiveServer(settings) as live:
            yield live
    finally:
        drop_prefix(external_redis_url, prefix)


@pytest.fixture
def api(server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server.url}/api/v1", headers=AUTH, timeout=30) as client:
        yield client


@pytest.fixture
def sqd_import(server: LiveServer):  # type: ignore[no-untyped-def]
    """Run `sqd import ARGS…` in a subprocess against the server; returns (exit code, stdout + stderr)."""
    def run(*args: str) -> tuple[int, str]:
        env = {**os.environ, "SQD_URL": server.url, "SQD_TOKEN": ADMIN, "COLUMNS": "200"}
        out = subprocess.run([sys.executable, "-m", "sqd", "import", *args], capture_output=True, text=True,
                             timeout=300, env=env)
        return out.returncode, out.stdout + out.stderr
    return run

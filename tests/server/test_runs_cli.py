"""`sqd runs …` lifecycle commands as a user runs them, against a live server (SQD_URL, SQD_TOKEN)."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from server_support import ADMIN, AUTH

pytestmark = pytest.mark.slow


@pytest.fixture
def sqd(live_server):  # type: ignore[no-untyped-def]
    def run(*args: str, stdin: str | None = None) -> tuple[int, str, str]:
        env = {**os.environ, "SQD_URL": live_server.url, "SQD_TOKEN": ADMIN, "COLUMNS": "250"}
        out = subprocess.run([sys.executable, "-m", "sqd", "runs", *args], capture_output=True, text=True,
                             timeout=120, env=env, input=stdin)
        return out.returncode, out.stdout, out.stderr
    return run


def test_the_lifecycle_from_the_command_line(live_server, sqd):  # type: ignore[no-untyped-def]
    api = httpx.Client(base_url=f"{live_server.url}/api/v1", headers=AUTH, timeout=30)
    ids = [api.post("/runs", json={"name": f"cli-{i}", "config": {"lr": lr}}).json()["id"]
           for i, lr in enumerate((1e-4, 1e-3))]
    api.post(f"/runs/{ids[1]}/metrics", json={"points": [{"key": "eval/fid", "step": 3, "value": 41.5}]})
    assert sqd("finish", ids[0])[:2] == (0, f"finished {ids[0]} (cli-0)\n")
    code, out, _ = sqd("finish", ids[1], "--failed", "--error", "diverged")
    assert code == 0 and api.get(f"/runs/{ids[1]}").json()["error"] == "diverged"
    assert sqd("rename", ids[0], "baseline run")[:2] == (0, f"renamed {ids[0]} (baseline run)\n")
    code, out, _ = sqd("tag", ids[0], "baseline", "paper")
    assert code == 0 and "tags: baseline, paper" in out
    code, out, _ = sqd("tag", ids[0], "paper", "--remove")
    assert code == 0 and "tags: baseline" in out
    assert sqd("note", ids[0], "the reference")[0] == 0
    code, out, err = sqd("ls", "--filter", "config.lr >= 1e-3 or tag = baseline", "--sort", "config.lr",
                         "--col", "config.lr", "--col", "eval/fid")
    assert code == 0, err
    assert "2 runs" in out and out.index("baseline run") < out.index("cli-1") and "41.5" in out and "0.001" in out
    code, _, err = sqd("ls", "--filter", "eval/fid <")
    assert code == 1 and "expected a value after '<' but found the end of the filter at position 10" in err
    assert sqd("archive", ids[1])[0] == 0 and "cli-1" not in sqd("ls")[1]
    assert "cli-1" in sqd("ls", "--view", "archived")[1]
    assert sqd("unarchive", ids[1])[0] == 0
    assert sqd("rm", ids[0])[:2] == (0, f"deleted {ids[0]} (baseline run)\n")
    assert "baseline run" in sqd("ls", "--view", "deleted")[1]
    assert sqd("restore", ids[0])[0] == 0 and api.get(f"/runs/{ids[0]}").json()["deleted_at"] is None
    code, out, _ = sqd("rm", ids[1], "--hard", stdin="n\n")
    assert code == 1 and api.get(f"/runs/{ids[1]}").status_code == 200  # asked, and the answer was no
    code, out, _ = sqd("rm", ids[1], "--hard", "--yes")
    assert code == 0 and "1 points, 1 series" in out and api.get(f"/runs/{ids[1]}").status_code == 404
    sqd("rm", ids[0])
    assert sqd("gc")[:2] == (0, "erased 1 run(s), 0 points\n")
    code, _, err = sqd("finish", "nope")
    assert code == 1 and "404 run 'nope' not found" in err
    code, _, err = sqd("finish", ids[0], "--error", "x")
    assert code == 1 and "--error goes with --failed" in err

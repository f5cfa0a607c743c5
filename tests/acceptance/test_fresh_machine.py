"""Fresh-machine acceptance: clone the repository, run the README's two commands exactly as written (the demo in
the background), wait for the dashboard, launch a run over REST, see evaluations and an alert arrive, shut down
cleanly. The nested test command is narrowed with PYTEST_ADDOPTS (the command text stays as written) so it does
not run this suite again."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from sqd.embedded_redis import free_port

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def readme_commands() -> tuple[str, str]:
    block = re.search(r"```bash\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert block, "README.md must start with a bash block holding the two commands"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines() if line.strip()]
    assert len(lines) == 2, lines
    return lines[0], lines[1]


def wait_for(predicate, timeout_s: float, what: str, proc: subprocess.Popen | None = None):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the demo exited (code {proc.returncode}) while waiting for {what}")
        try:
            result = predicate()
            if result:
                return result
        except httpx.HTTPError:
            pass
        time.sleep(1.0)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")


def leftover_processes(marker: str) -> list[str]:
    out = subprocess.run(["pgrep", "-af", marker], capture_output=True, text=True).stdout
    return [line for line in out.splitlines() if "pgrep" not in line]


@pytest.mark.timeout(1800)  # a fresh .venv, the nested tests, the demo, a run trained and evaluated (~4 min here)
@pytest.mark.skipif(os.environ.get("SQD_ACCEPTANCE_NESTED") == "1", reason="already inside the acceptance test")
def test_readme_commands_on_a_fresh_clone(tmp_path: Path) -> None:
    demo_cmd, test_cmd = readme_commands()
    clone = tmp_path / "sqd"
    subprocess.run(["git", "clone", "-q", "--no-hardlinks", str(ROOT), str(clone)], check=True)
    home, port = tmp_path / "home", free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SQD_", "VIRTUAL_ENV", "PYTEST"))}
    # A third CPU slot so the launched run need not wait for the two demo runs to finish.
    env.update({"SQD_HOME": str(home), "SQD_SERVER__PORT": str(port), "SQD_ACCEPTANCE_NESTED": "1",
                "SQD_TRAINER__CPU_RUNS": "3",
                "PATH": ":".join(p for p in env["PATH"].split(":") if ".venv" not in p)})

    tests = subprocess.run(test_cmd, shell=True, cwd=clone, capture_output=True, text=True, timeout=1500,
                           env={**env, "PYTEST_ADDOPTS": "-q -p no:cacheprovider tests/core/test_protocol.py"})
    assert tests.returncode == 0, tests.stdout[-3000:] + tests.stderr[-3000:]
    assert re.search(r"\d+ passed", tests.stdout)

    log = open(tmp_path / "demo.log", "w")  # noqa: SIM115 - closed in finally
    # bash, as a terminal user runs it: on Ctrl-C it waits for `sqd demo` to stop and takes its exit status
    # (dash, /bin/sh here, kills itself with the SIGINT instead)
    demo = subprocess.Popen(demo_cmd, shell=True, executable="/bin/bash", cwd=clone, env=env, stdout=log,
                            stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        page = wait_for(lambda: (r := httpx.get(base + "/", timeout=2)).status_code == 200 and r.text, 900,
                        "the dashboard", demo)
        assert "<html" in page.lower()
        token = (home / "token").read_text().strip()
        api = httpx.Client(base_url=base + "/api/v1", headers={"Authorization": f"Bearer {token}"}, timeout=10)
        wait_for(lambda: {r["preset"] for r in api.get("/runs").json()["data"]} >= {"demo-stable", "demo-turning"},
                 120, "both demo runs", demo)

        rule = api.post("/rules", json={"name": "acceptance: first evaluation", "preset": "demo-stable",
                                        "expression": "eval/quality < 2 for 1 evaluations"})
        assert rule.status_code == 201, rule.text
        launched = api.post("/runs", json={"preset": "demo-stable", "name": "acceptance run", "steps": 300,
                                           "overrides": {"train.checkpoint_every": 100}})
        assert launched.status_code == 202, launched.text
        run_id = launched.json()["id"]
        evaluations = wait_for(lambda: [e for e in api.get(f"/runs/{run_id}/evaluations").json()["data"]
                                        if e["status"] == "ok"], 600, "an evaluation of the launched run", demo)
        assert 0.0 <= evaluations[0]["metrics"]["eval/quality"] <= 1.0
        alerts = wait_for(lambda: api.get("/alerts", params={"run_id": run_id}).json()["data"], 120,
                          "an alert on the launched run", demo)
        assert alerts[0]["rule"].startswith("acceptance")
        wait_for(lambda: api.get(f"/runs/{run_id}").json()["status"] == "finished", 600, "the run to finish", demo)
    finally:
        os.killpg(demo.pid, signal.SIGINT)
        try:
            demo.wait(90)
        finally:
            log.close()
    output = (tmp_path / "demo.log").read_text()
    assert demo.returncode == 0, f"exit status {demo.returncode}: {output[-3000:]}"
    assert "stopped." in output
    assert leftover_processes(str(home)) == [] and leftover_processes(f"--port {port}") == []

"""The README's examples run as written against a real server (embedded Valkey + SQLite): the Monitor loop, the
curl calls and the Python client."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from faults.system import System, wait_until

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def readme_block(name: str) -> str:
    match = re.search(rf"<!-- tested: {name} -->\n```\w+\n(.*?)```", (ROOT / "README.md").read_text(), re.S)
    assert match, f"README.md has no block marked <!-- tested: {name} -->"
    return match.group(1)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    root = tmp_path_factory.mktemp("readme")
    sut = System(root, f"sqlite:///{root / 'sqd.db'}")
    sut.start_server()
    yield sut
    sut.stop()


def run(system: System, argv: list[str]) -> str:
    out = subprocess.run(argv, env=system.env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return out.stdout


def test_monitor_example_reports_a_run(system: System) -> None:
    code = readme_block("monitor")
    assert len([line for line in code.splitlines() if line.rstrip().endswith("# added")]) <= 10
    run(system, [sys.executable, "-c", code])
    runs = system.api().get("/runs", params={"q": "my 2-d GAN"}).json()["data"]
    assert runs, "the Monitor's run did not reach the server"
    run_id = runs[0]["id"]
    wait_until(lambda: system.count_points(run_id, "angle/G") == 300, 30, "all 300 angle points")
    assert system.count_points(run_id, "loss/D") == 300
    wait_until(lambda: system.run_row(run_id)["status"] == "finished", 30, "the run to finish")


def test_curl_examples(system: System) -> None:
    out = run(system, ["bash", "-euo", "pipefail", "-c", readme_block("curl")])
    assert '"loss/D"' in out and "NaN" in out  # the metrics answer keeps the NaN point
    assert "key,step" in out.replace(" ", "") or "loss/D,0" in out  # the CSV export
    assert '"status":"queued"' in out.replace(" ", "")  # the launch was accepted


def test_python_client_example(system: System) -> None:
    out = run(system, [sys.executable, "-c", readme_block("python-client")])
    buckets = re.match(r"(\d+) buckets; min of the first: ([\d.]+)$", out.splitlines()[0])
    assert buckets and 50 <= int(buckets.group(1)) <= 100 and float(buckets.group(2)) < 1.0
    assert out.splitlines()[1].endswith("queued")

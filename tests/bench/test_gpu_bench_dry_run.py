"""The GPU bench (bench/gpu/run.py) is what a session lent a GPU runs once, on a budget of minutes: its CPU dry run
(`--device cpu --quick`, the same code paths on narrow nets) must keep working between such sessions."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gpu_bench_dry_run_reports_every_section(tmp_path):
    done = subprocess.run([sys.executable, str(ROOT / "bench/gpu/run.py"), "--device", "cpu", "--quick", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_report.json").read_text())
    failed = [r for r in report["rows"] if r["figure"] == "section failed"]
    assert not failed, "\n".join(n for n in report["notes"] if "Traceback" in n or "Error" in n)
    assert {r["section"] for r in report["rows"]} == {"monitor", "zoo", "eval"}
    assert not [r for r in report["rows"] if r["met"] is False]  # the accuracy checks hold on the CPU too
    # the host-time breakdown a GPU session reads before changing the probe
    phases = [n for n in report["notes"] if "host time by phase" in n]
    assert len(phases) == 3 and all("mon.step" in n and "moved" in n for n in phases)
    assert (tmp_path / "gpu_report.md").read_text().startswith("# SQD GPU bench")

"""`sqd worker` command line: a bad --preload fails at start with the allowed profile names."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def test_unknown_preload_profile_fails_at_start(tmp_path: Path) -> None:
    env = {**os.environ, "SQD_HOME": str(tmp_path), "SQD_REDIS_URL": "redis://127.0.0.1:1/0"}
    proc = subprocess.run([sys.executable, "-m", "sqd", "worker", "--preload", "cifar"], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert "error: evaluation profile 'cifar' is not one of digits, faces (or 'none')" in proc.stderr

"""The dashboard's pure JavaScript (downsampling merge, formatting, routes, epochs, launch-form logic) under
node's built-in test runner, so CI runs it through pytest."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

JS_TESTS = Path(__file__).parent / "js"


def test_js_units() -> None:
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed: the dashboard's JS unit tests need node >= 20 (`node --test`)")
    files = sorted(str(p) for p in JS_TESTS.glob("*.test.mjs"))
    assert files, f"no JS tests found in {JS_TESTS}"
    proc = subprocess.run([node, "--test", *files], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"node --test failed:\n{proc.stdout[-6000:]}\n{proc.stderr[-2000:]}"
    assert "# fail 0" in proc.stdout

"""A `sqd worker` process SIGKILLed mid-evaluation: another worker reclaims the checkpoint and finishes it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from worker_support import RunningWorker, publish_checkpoints, put_checkpoint, results, wait_until

from sqd.artifacts import ArtifactStore
from sqd.bus import Bus
from sqd.settings import Settings
from sqd.worker.grid import grid_key
from sqd.worker.loop import GROUP


@pytest.mark.slow
@pytest.mark.parametrize("redis_url", ["external"], indirect=True)  # one Redis flavour: it starts a process
def test_killed_worker_is_finished_by_another(bus: Bus, wsettings: Settings, store: ArtifactStore, tmp_path: Path,
                                              start_worker: Callable[..., RunningWorker]) -> None:
    event = put_checkpoint(store, "run-k", 700)
    env = {**os.environ, "SQD_HOME": str(wsettings.home), "SQD_REDIS_URL": str(wsettings.redis_url),
           "SQD_BUS__PREFIX": bus.settings.prefix, "SQD_BUS__BLOCK_MS": "100",
           "SQD_WORKER__MODELS_DIR": str(wsettings.models_dir),
           "SQD_WORKER__SAMPLES": "100000"}  # a minute of work: it is still evaluating when killed
    log = (tmp_path / "victim.log").open("wb")
    victim = subprocess.Popen([sys.executable, "-m", "sqd", "worker", "--name", "victim"], env=env,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        publish_checkpoints(bus, [event])
        # the grid is written before the profile runs: once it is there, the victim is mid-evaluation
        assert wait_until(lambda: store.exists(grid_key("run-k", 700)), timeout_s=120), \
            (tmp_path / "victim.log").read_text()
        victim.send_signal(signal.SIGKILL)
        victim.wait(timeout=30)
    finally:
        if victim.poll() is None:
            victim.kill()
        log.close()
    pending = bus.client.xpending_range(bus.key("checkpoints"), GROUP, "-", "+", 10)
    assert [p["consumer"] for p in pending] == [b"victim"]
    assert results(bus) == []

    (result,) = start_worker("rescuer").wait_for(1)  # reclaims after bus.min_idle_ms (500 ms in tests)
    assert result.status == "ok" and result.worker == "rescuer" and result.checkpoint_step == 700
    assert wait_until(lambda: bus.client.xpending(bus.key("checkpoints"), GROUP)["pending"] == 0)
    assert len(results(bus)) == 1  # stored once

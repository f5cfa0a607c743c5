"""Agent test helpers: settings on the real Redis, agents in threads, waiting for events."""

from __future__ import annotations

import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from monitor_support import events

from sqd.bus import Bus
from sqd.bus import drop_prefix as drop_bus_prefix
from sqd.protocol import LaunchRequest
from sqd.settings import BusSettings, Settings, TrainerSettings
from sqd.trainer.agent import Agent
from sqd.trainer.gpus import Slots

FAKE_TRAIN = str(Path(__file__).with_name("fake_train.py"))


def agent_settings(tmp_path: Path, redis_url: str) -> Settings:
    return Settings(home=tmp_path / "home", redis_url=redis_url,
                    bus=BusSettings(prefix=f"test-{uuid.uuid4().hex[:10]}", block_ms=100, min_idle_ms=500),
                    trainer=TrainerSettings(cancel_grace_s=1.0))


def drop_prefix(settings: Settings) -> None:
    drop_bus_prefix(settings.resolved_redis_url, settings.bus.prefix)


def fake_command(request: LaunchRequest) -> list[str]:
    argv = [sys.executable, FAKE_TRAIN, request.preset, "--run-id", request.run_id]
    for key, value in request.overrides.items():
        argv += ["--set", f"{key}={value}"]
    return argv + (["--steps", str(request.steps)] if request.steps else [])


@contextmanager
def running_agent(settings: Settings, agent_id: str = "agent-a", cpu_runs: int = 2,
                  **kw: Any) -> Iterator[Agent]:
    kw.setdefault("command", fake_command)
    kw.setdefault("slots", Slots(["cpu"], cpu_runs))
    agent = Agent(settings, agent_id, **kw)
    stop = threading.Event()
    thread = threading.Thread(target=agent.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield agent
    finally:
        stop.set()
        thread.join(30)
        assert not thread.is_alive(), "the agent did not stop"
        agent.bus.close()


def wait_for(bus: Bus, found: Callable[[list[Any]], Any], timeout_s: float = 90.0, what: str = "") -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        evts = events(bus, "ingest")
        result = found(evts)
        if result:
            return evts if result is True else result
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}; ingest has "
                         f"{[(e.type, getattr(e, 'status', '')) for e in events(bus, 'ingest')]}")


def finished(run_id: str) -> Callable[[list[Any]], list[Any]]:
    return lambda evts: [e for e in evts if e.type == "run_finished" and e.run_id == run_id]


def started(run_id: str) -> Callable[[list[Any]], list[Any]]:
    return lambda evts: [e for e in evts if e.type == "run_started" and e.run_id == run_id]

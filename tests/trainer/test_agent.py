"""The trainer agent on the real Redis with real child processes (a tiny Monitor-instrumented trainer): launch,
failures, cancel, queueing, two agents, and an agent that stops, dies or restarts."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from agent_support import agent_settings, drop_prefix, finished, running_agent, started, wait_for
from monitor_support import events

from sqd.artifacts import ArtifactStore
from sqd.bus import CONTROL, Bus
from sqd.protocol import CancelRequest, LaunchRequest
from sqd.settings import Settings
from sqd.trainer.agent import train_command
from sqd.trainer.gpus import Slots


@pytest.fixture
def settings(tmp_path: Path, external_redis_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Agent tests use the pre-started Redis only (they start real processes; twice would double their time)."""
    s = agent_settings(tmp_path, external_redis_url)
    monkeypatch.setenv("FAKE_TRAIN_MARKS", str(tmp_path / "marks.txt"))
    yield s
    drop_prefix(s)


@pytest.fixture
def bus(settings: Settings) -> Iterator[Bus]:
    b = Bus.connect(settings)
    yield b
    b.close()


def marks(tmp_path: Path) -> list[list[str]]:
    path = tmp_path / "marks.txt"
    return [line.split() for line in path.read_text().splitlines()] if path.exists() else []


def launch(bus: Bus, preset: str, **kw: object) -> str:
    request = LaunchRequest(run_id=f"run-{preset}-{time.monotonic_ns()}", preset=preset, **kw)  # type: ignore[arg-type]
    bus.publish(CONTROL, [request])
    return request.run_id


def test_launch_runs_and_finishes(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    with running_agent(settings) as agent:
        run_id = launch(bus, "ok", steps=12, overrides={"lr": 0.002})
        (end,) = wait_for(bus, finished(run_id), what="the run to finish")
        (start,) = started(run_id)(wait_for(bus, started(run_id)))
        assert end.status == "finished" and end.step == 11
        assert start.agent == "agent-a" and start.pid is not None
        assert marks(tmp_path) == [[run_id, "''", "agent-a", "lr=0.002"]]  # CPU: no GPU visible
        wait_for(bus, lambda _: not agent.records, what="the agent to drop the run")
    log = ArtifactStore.from_settings(settings).get_bytes(f"runs/{run_id}/train.log").decode()
    assert "fake training done" in log
    assert not bus.client.hlen(agent.table_key)


def test_crash_is_reported_with_its_traceback(settings: Settings, bus: Bus) -> None:
    with running_agent(settings):
        run_id = launch(bus, "crash", steps=3)
        ends = wait_for(bus, lambda e: len(finished(run_id)(e)) >= 2, what="the Monitor's and the agent's reports")
    by_agent = [e for e in finished(run_id)(ends) if e.step is None]
    assert by_agent and by_agent[0].status == "failed"
    assert by_agent[0].error == "ValueError: boom from the fake trainer (exited with code 1)"
    assert "Traceback (most recent call last)" in by_agent[0].traceback and "fake_train.py" in by_agent[0].traceback


def test_process_killed_before_its_monitor_started(settings: Settings, bus: Bus) -> None:
    with running_agent(settings):
        run_id = launch(bus, "vanish")
        (end,) = wait_for(bus, finished(run_id), what="the failure")
    assert end.status == "failed" and "killed by signal 9 (SIGKILL)" in end.error
    assert "the fake trainer vanishes" in end.traceback


def test_cancel_a_running_run(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    with running_agent(settings) as agent:
        run_id = launch(bus, "hang")
        wait_for(bus, started(run_id), what="the run to start")
        bus.publish(CONTROL, [CancelRequest(run_id=run_id, reason="stop it")])
        ends = wait_for(bus, lambda e: len(finished(run_id)(e)) >= 2, what="cancelled from both sides")
        assert {e.status for e in finished(run_id)(ends)} == {"cancelled"}
        assert any(e.error == "stop it" for e in ends if e.type == "run_finished")
        wait_for(bus, lambda _: not agent.procs, what="the agent to forget the run")
    pid = int(next(e for e in started(run_id)(ends)).pid)
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_cancel_escalates_to_sigkill(settings: Settings, bus: Bus) -> None:
    with running_agent(settings):
        run_id = launch(bus, "stubborn")
        wait_for(bus, started(run_id), what="the run to start")
        bus.publish(CONTROL, [CancelRequest(run_id=run_id)])
        (end,) = wait_for(bus, finished(run_id), what="the kill")
    assert end.status == "cancelled"


def test_cancel_before_launch_never_starts(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    with running_agent(settings, cpu_runs=1):
        blocker = launch(bus, "hang")
        wait_for(bus, started(blocker), what="the first run")
        queued = launch(bus, "ok")
        bus.publish(CONTROL, [CancelRequest(run_id=queued)])
        (end,) = wait_for(bus, finished(queued), what="the queued run to be cancelled")
        assert end.status == "cancelled"
        bus.publish(CONTROL, [CancelRequest(run_id=blocker)])
        wait_for(bus, finished(blocker))
    assert [m[0] for m in marks(tmp_path)] == [blocker]


def test_runs_queue_when_the_slots_are_full(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    with running_agent(settings, cpu_runs=1):
        first, second = launch(bus, "ok", steps=30), launch(bus, "ok", steps=5)
        ingest = wait_for(bus, lambda e: bool(finished(first)(e) and finished(second)(e)), what="both runs")
    order = [(e.type, e.run_id) for e in ingest if e.type in ("run_started", "run_finished")]
    assert order.index(("run_finished", first)) < order.index(("run_started", second))
    assert [m[0] for m in marks(tmp_path)] == [first, second]


def test_runs_get_a_gpu_each(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    """Two (pretend) GPUs, one run each: CUDA_VISIBLE_DEVICES names a different one per concurrent run."""
    with running_agent(settings, slots=Slots(["0", "1"], per_device=1)):
        run_ids = [launch(bus, "ok", steps=3) for _ in range(3)]
        wait_for(bus, lambda e: all(finished(r)(e) for r in run_ids), what="three runs on two GPUs")
    devices = {m[0]: m[1] for m in marks(tmp_path)}
    assert devices[run_ids[0]] == "'0'" and devices[run_ids[1]] == "'1'"  # the third waited for a free one
    assert devices[run_ids[2]] in ("'0'", "'1'")


def test_two_agents_launch_each_run_once(settings: Settings, bus: Bus, tmp_path: Path) -> None:
    with running_agent(settings, "agent-a"), running_agent(settings, "agent-b"):
        run_ids = [launch(bus, "ok", steps=3) for _ in range(4)]
        bus.publish(CONTROL, [LaunchRequest(run_id=run_ids[0], preset="ok")])  # the same run, asked twice
        wait_for(bus, lambda e: all(finished(r)(e) for r in run_ids), what="all four runs")
    launched = [m[0] for m in marks(tmp_path)]
    assert sorted(launched) == sorted(run_ids)
    owners = {bus.client.get(f"{settings.bus.prefix}:claim:{r}").decode() for r in run_ids}
    assert owners <= {"agent-a", "agent-b"}


def start_and_leave(settings: Settings, bus: Bus, preset: str) -> tuple[str, int]:
    """An agent that starts a run and stops while keeping it alive (as if it had crashed)."""
    with running_agent(settings, keep_runs_on_exit=True):
        run_id = launch(bus, preset)
        (start,) = wait_for(bus, started(run_id), what="the run to start")
    return run_id, int(start.pid)


def test_restarted_agent_reattaches_and_can_cancel(settings: Settings, bus: Bus) -> None:
    run_id, pid = start_and_leave(settings, bus, "hang")
    os.kill(pid, 0)  # still training without its agent
    with running_agent(settings) as agent:
        wait_for(bus, lambda _: run_id in agent.procs, what="re-attachment")
        bus.publish(CONTROL, [CancelRequest(run_id=run_id, reason="after restart")])
        ends = wait_for(bus, lambda e: len(finished(run_id)(e)) >= 2, what="the cancel")
    assert {e.status for e in finished(run_id)(ends)} == {"cancelled"}


def test_run_gone_while_the_agent_was_away_is_marked_failed(settings: Settings, bus: Bus) -> None:
    run_id, pid = start_and_leave(settings, bus, "hang")
    os.killpg(os.getpgid(pid), signal.SIGKILL)  # the shell wrapper dies too: no exit status is recorded
    time.sleep(0.5)
    with running_agent(settings) as agent:
        (end,) = wait_for(bus, finished(run_id), what="the orphan to be reported")
        wait_for(bus, lambda _: not agent.records, what="the agent to drop the orphan")  # it reports first
    assert end.status == "failed" and end.error.startswith("agent restarted; process gone.")
    assert "ended without an exit status" in end.error


def test_run_that_finished_while_the_agent_was_away_is_not_reported_twice(settings: Settings, bus: Bus) -> None:
    with running_agent(settings, keep_runs_on_exit=True):
        run_id = launch(bus, "ok", steps=5)
        wait_for(bus, started(run_id), what="the run to start")
    wait_for(bus, finished(run_id), what="the run to finish on its own")
    time.sleep(1.0)  # let the process exit after its Monitor reported
    with running_agent(settings) as agent:  # the table (in Redis) still lists the run until the agent drops it
        wait_for(bus, lambda _: bus.client.hlen(agent.table_key) == 0, what="the agent to drop the run")
    assert len(finished(run_id)(wait_for(bus, finished(run_id)))) == 1


def test_stopping_an_agent_stops_its_runs(settings: Settings, bus: Bus) -> None:
    with running_agent(settings):
        run_id = launch(bus, "hang")
        (start,) = wait_for(bus, started(run_id), what="the run to start")
    ends = finished(run_id)(wait_for(bus, finished(run_id)))
    assert {e.status for e in ends} == {"cancelled"}
    assert any(e.error == "agent agent-a stopped" for e in ends)
    with pytest.raises(ProcessLookupError):
        os.kill(int(start.pid), 0)


@pytest.mark.slow
def test_real_sqd_train_through_the_agent(settings: Settings, bus: Bus) -> None:
    """The real `python -m sqd train` on a stacked-digits preset: started, checkpoints, finished."""
    with running_agent(settings, command=train_command):
        run_id = launch(bus, "sqd-nsgan-digits", steps=6, name="agent e2e",
                        overrides={"train.checkpoint_every": 5, "train.log_every": 2})
        bad = launch(bus, "sqd-nsgan-digits", overrides={"optim.lr_g": "fast"})
        (end,) = wait_for(bus, finished(run_id), timeout_s=180, what="the real training to finish")
        (failed,) = wait_for(bus, finished(bad), timeout_s=180, what="the bad override to fail")
    (start,) = started(run_id)(events(bus, "ingest"))
    assert start.name == "agent e2e" and start.preset == "sqd-nsgan-digits" and start.agent == "agent-a"
    assert end.status == "finished" and end.step == 5
    assert [c.step for c in events(bus, "checkpoints") if c.run_id == run_id] == [0, 5]
    assert failed.status == "failed" and "optim.lr_g" in failed.error and "exited with code 1" in failed.error

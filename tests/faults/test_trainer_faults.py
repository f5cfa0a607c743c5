"""Faults around training: the bus restarted while a trainer publishes, the trainer agent killed while its runs
train, and an artifact store that refuses writes."""

from __future__ import annotations

import time
from pathlib import Path

from faults.system import System, wait_until
from sqd.bus import CONTROL

HERE = Path(__file__).resolve().parent


def test_bus_restarted_while_a_trainer_publishes_loses_nothing(system: System) -> None:
    system.start_server()
    steps = 1500
    trainer = system.start("trainer", str(HERE / "tiny_trainer.py"), "r-bus", str(steps), "0.004")
    wait_until(lambda: system.count_points("r-bus", "loss/D") > 100, 60, "the trainer's first points")
    system.valkey.stop()  # SIGTERM: Valkey writes its AOF and exits; the trainer keeps training meanwhile
    time.sleep(3)
    assert trainer.poll() is None, "training must not crash while the bus is away"
    system.valkey.start()  # same socket, same AOF
    assert trainer.wait(180) == 0, system.log("trainer")
    wait_until(lambda: system.count_points("r-bus", "loss/D") == steps, 60, "every step to reach the database")
    for key in ("loss/D", "loss/G", "angle/G", "angle/D"):
        assert system.steps("r-bus", key) == list(range(steps)), key
    wait_until(lambda: (system.run_row("r-bus") or {}).get("status") == "finished", 30, "the run to finish")


def test_agent_killed_while_a_run_trains_is_reattached_or_failed_never_left_running(system: System) -> None:
    system.start_server()
    system.start("agent", "-m", "sqd", "agent")
    run = system.api().post("/runs", json={"preset": "demo-stable", "name": "agent fault", "steps": 400}).json()
    wait_until(lambda: (system.run_row(run["id"]) or {}).get("status") == "running", 120, "the run to start")
    system.kill("agent")  # SIGKILL: the agent cannot tidy up; its training process may live on
    system.start("agent", "-m", "sqd", "agent")
    final = wait_until(lambda: (r := system.run_row(run["id"]))["status"] in ("finished", "failed") and r, 300,
                       "the orphaned run to be re-attached and finish, or be marked failed")
    if final["status"] == "failed":
        assert "agent" in (final["error"] or ""), final["error"]


def test_read_only_artifact_store_reports_and_training_goes_on(system: System) -> None:
    system.start_server()
    env = {**system.env, "SQD_ARTIFACTS_URL": "/sys/sqd-artifacts"}  # sysfs refuses to create anything
    trainer = system.start("train", "-m", "sqd", "train", "demo-stable", "--run-id", "r-ro", "--steps", "60",
                           "--set", "train.checkpoint_every=20", env=env)
    assert trainer.wait(300) == 0, system.log("train")
    wait_until(lambda: (system.run_row("r-ro") or {}).get("status") == "finished", 30, "the run to finish")
    assert system.steps("r-ro", "loss/D") == list(range(60))
    alerts = wait_until(lambda: [a for a in system.rows("alerts", "r-ro") if a["rule"] == "checkpoint_failed"], 30,
                        "a checkpoint_failed alert")
    assert "/sys/sqd-artifacts" in alerts[0]["explanation"] or alerts[0]["explanation"]
    assert system.count_points("r-ro", "health/checkpoint_failed") >= 1
    assert system.rows("checkpoints", "r-ro") == []


def test_launch_requests_are_not_lost_while_no_agent_runs(system: System) -> None:
    system.start_server()
    run = system.api().post("/runs", json={"preset": "demo-stable", "name": "late agent", "steps": 30}).json()
    time.sleep(1)
    assert system.run_row(run["id"])["status"] == "queued"
    system.start("agent", "-m", "sqd", "agent")
    wait_until(lambda: system.run_row(run["id"])["status"] == "finished", 240, "the queued run to be trained")
    assert system.bus().dead_letters(CONTROL) == []

"""An evaluation worker SIGKILLed mid-evaluation: another worker completes it and the result is stored once; the
checkpoints it skipped are backfilled, so in the end every one has its evaluation and its points, once."""

from __future__ import annotations

from faults.system import System, wait_until
from sqd.bus import CHECKPOINTS


def pending_of(system: System, consumer: str) -> int:
    bus = system.bus()
    try:
        rows = bus.client.xinfo_consumers(bus.key(CHECKPOINTS), "workers")
    finally:
        bus.close()
    return sum(int(r["pending"]) for r in rows if r["name"] in (consumer, consumer.encode()))


def test_worker_killed_mid_evaluation_is_finished_by_another_and_stored_once(system: System) -> None:
    system.start_server()
    trainer = system.start("train", "-m", "sqd", "train", "demo-stable", "--run-id", "r-eval", "--steps", "41",
                           "--set", "train.checkpoint_every=20")
    assert trainer.wait(300) == 0, system.log("train")
    checkpoints = wait_until(lambda: system.rows("checkpoints", "r-eval"), 30, "the checkpoints to be recorded")
    steps = sorted(c["step"] for c in checkpoints)

    system.start("worker-a", "-m", "sqd", "worker", "--name", "worker-a")
    # the first worker reads a checkpoint and is killed before it can publish and ack
    wait_until(lambda: pending_of(system, "worker-a") > 0, 120, "worker A to take a checkpoint", 0.02)
    system.kill("worker-a")
    assert system.rows("evaluations", "r-eval") == [] or len(system.rows("evaluations", "r-eval")) < len(steps)

    system.start("worker-b", "-m", "sqd", "worker", "--name", "worker-b")
    evaluations = wait_until(lambda: (rows := system.rows("evaluations", "r-eval")) and
                             {r["checkpoint_step"] for r in rows} == set(steps) and rows, 240,
                             "every checkpoint to be evaluated (or skipped) by worker B")
    assert len(evaluations) == len(steps)  # stored once each
    assert any(r["status"] == "ok" for r in evaluations)
    assert all(r["status"] in ("ok", "skipped") for r in evaluations), [r["error"] for r in evaluations]
    # nothing new waits: worker B evaluates what it skipped, each "skipped" becomes "ok" in place
    evaluations = wait_until(lambda: (rows := system.rows("evaluations", "r-eval")) and
                             all(r["status"] == "ok" for r in rows) and rows, 240, "the skipped ones backfilled")
    assert sorted(r["checkpoint_step"] for r in evaluations) == steps
    assert wait_until(lambda: system.steps("r-eval", "eval/quality") == steps, 30, "a quality point per checkpoint")
    assert wait_until(lambda: system.health()["workers"]["backfill_waiting"] == 0, 30, "an empty backfill")


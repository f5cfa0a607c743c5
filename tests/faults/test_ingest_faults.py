"""The server killed during ingest, and the database away for 30 s: nothing lost, nothing stored twice."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from faults.system import System, wait_until
from sqd.bus import INGEST
from sqd.protocol import MetricBatch, RunStarted

KEYS = ("loss/D", "loss/G", "angle/G", "angle/D")


def publish_steps(system: System, run_id: str, first: int, last: int, per_message: int = 50,
                  pause_s: float = 0.0) -> None:
    """Steps [first, last) of four series, `per_message` steps a message, as a trainer would send them."""
    bus = system.bus()
    for start in range(first, last, per_message):
        stop = min(last, start + per_message)
        bus.publish(INGEST, [MetricBatch.from_points(run_id, [(k, s, s * 0.5, s // 100, time.time())
                                                               for s in range(start, stop) for k in KEYS])])
        time.sleep(pause_s)
    bus.close()


def assert_exactly(system: System, run_id: str, n_steps: int) -> None:
    for key in KEYS:
        assert system.steps(run_id, key) == list(range(n_steps)), key


def test_server_killed_during_ingest_loses_and_duplicates_nothing(system: System) -> None:
    system.start_server()
    system.bus().publish(INGEST, [RunStarted(run_id="r-kill", name="kill test")])
    n_steps = 40_000
    publisher = threading.Thread(target=publish_steps, args=(system, "r-kill", 0, n_steps, 50, 0.002))
    publisher.start()
    wait_until(lambda: system.count_points("r-kill") > 20_000, 60, "ingest to be under way")
    system.kill("server")  # SIGKILL mid-batch: whatever it had read but not acked is still pending
    stored_at_kill = system.count_points("r-kill")
    assert 0 < stored_at_kill < len(KEYS) * n_steps
    publisher.join()
    system.start_server()
    wait_until(lambda: system.count_points("r-kill") == len(KEYS) * n_steps, 120, "every point to be stored")
    assert_exactly(system, "r-kill", n_steps)
    time.sleep(1.0)  # anything redelivered after the restart must not add a row
    assert system.count_points("r-kill") == len(KEYS) * n_steps


def test_database_away_for_30s_pauses_ingest_then_resumes(tmp_path, pg_database) -> None:
    database_url, admin = pg_database
    name = database_url.rsplit("/", 1)[1]
    system = System(tmp_path, database_url)
    try:
        system.start_server()
        system.bus().publish(INGEST, [RunStarted(run_id="r-db", name="db outage")])
        publish_steps(system, "r-db", 0, 1000)
        wait_until(lambda: system.count_points("r-db") == 4000, 30, "the first points")

        with admin.connect() as conn:  # the database goes away: no new connections, existing ones cut
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
            conn.execute(sa.text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                         {"n": name})
        outage_started = time.monotonic()
        publisher = threading.Thread(target=publish_steps, args=(system, "r-db", 1000, 3000, 50, 0.2))
        publisher.start()
        degraded = wait_until(lambda: (h := system.health())["status"] == "degraded" and h, 25,
                              "/health to report degraded")
        assert degraded["database"]["ok"] is False
        time.sleep(max(0.0, 30 - (time.monotonic() - outage_started)))
        with admin.connect() as conn:
            conn.execute(sa.text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
        publisher.join()

        system.engine.dispose()
        wait_until(lambda: system.count_points("r-db") == 4 * 3000, 90, "ingest to catch up after the outage")
        assert_exactly(system, "r-db", 3000)
        wait_until(lambda: system.health()["status"] == "ok", 30, "/health to be ok again")
        assert system.bus().dead_letters(INGEST) == []  # an outage is not the messages' fault
    finally:
        system.stop()

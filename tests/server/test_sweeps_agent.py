"""A sweep end to end with a real trainer agent and real child processes (the tiny Monitor-instrumented trainer of
the agent tests): the cap holds while runs start and end, a failing configuration does not stop the others and
keeps its error, and cancelling the sweep stops the running runs and never starts the waiting ones."""

from __future__ import annotations

import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_support import AUTH, wait_for
from sqlalchemy import func, select

from sqd.protocol import LaunchRequest
from sqd.server.app import create_app
from sqd.server.store.models import Run
from sqd.settings import Settings, TrainerSettings

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "trainer"))
from agent_support import fake_command, running_agent  # noqa: E402

pytestmark = [pytest.mark.slow, pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)]


def by_loss(behaviour: dict[str, str]):  # type: ignore[no-untyped-def]
    """The fake trainer's behaviour (ok, crash, hang) chosen by the run's loss.name."""
    def command(request: LaunchRequest) -> list[str]:
        what = behaviour.get(str(request.overrides.get("loss.name")), "ok")
        return fake_command(request.model_copy(update={"preset": what}))
    return command


@pytest.fixture
def settings(api_settings: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("FAKE_TRAIN_MARKS", str(tmp_path / "marks.txt"))
    return api_settings.model_copy(update={"trainer": TrainerSettings(cancel_grace_s=1.0)})


@pytest.fixture
def client(settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def starts(tmp_path: Path) -> list[str]:
    path = tmp_path / "marks.txt"
    return [line.split()[0] for line in path.read_text().splitlines()] if path.exists() else []


class Watch(threading.Thread):
    """Samples how many of the sweep's runs are training (status "running" in the database) until stopped. (The
    agent may briefly hold more: a run whose Monitor reported its end is still exiting when the next arrives.)"""

    def __init__(self, client: TestClient):
        super().__init__(daemon=True)
        self.ctx, self.most, self.stop = client.app.state.ctx, 0, threading.Event()  # type: ignore[attr-defined]

    def run(self) -> None:
        while not self.stop.wait(0.02):
            with self.ctx.sessions() as session:
                running = session.scalar(select(func.count()).select_from(Run).where(
                    Run.sweep_id.is_not(None), Run.status == "running")) or 0
            self.most = max(self.most, running)


def test_the_cap_holds_and_a_failed_run_stops_nothing(client: TestClient, settings: Settings,
                                                      tmp_path: Path) -> None:
    with running_agent(settings, command=by_loss({"wgan": "crash"}), cpu_runs=3):
        watch = Watch(client)
        watch.start()
        r = client.post("/api/v1/sweeps", headers=AUTH, json={
            "preset": "sqd-nsgan-digits", "grid": {"loss.name": ["nsgan", "hinge", "wgan"]}, "seeds": 2,
            "steps": 12, "max_concurrent": 2})
        assert r.status_code == 201, r.text
        sweep_id = r.json()["id"]
        done = wait_for(lambda: (s := client.get(f"/api/v1/sweeps/{sweep_id}").json())["status"] == "finished" and s,
                        180, "every run of the sweep to end")
        watch.stop.set()
    assert done["counts"] == {"finished": 4, "failed": 2}
    assert 1 <= watch.most <= 2  # the agent had 3 slots: the sweep's cap kept it to 2 at a time
    assert sorted(starts(tmp_path)) == sorted(r["id"] for r in done["runs"])  # each run started once
    failed = [r for r in done["runs"] if r["status"] == "failed"]
    assert {r["params"]["loss.name"] for r in failed} == {"wgan"}
    assert all("boom from the fake trainer" in r["error"] for r in failed)
    rows = client.get(f"/api/v1/sweeps/{sweep_id}/results").json()["data"]
    assert all(row["last_step"] == 11 for row in rows if row["status"] == "finished")
    assert [row["error"] is not None for row in rows] == [r["status"] == "failed" for r in done["runs"]]


def test_cancelling_the_sweep_stops_running_runs_and_starts_no_more(client: TestClient, settings: Settings,
                                                                   tmp_path: Path) -> None:
    with running_agent(settings, command=by_loss({"nsgan": "hang", "hinge": "hang"}), cpu_runs=4):
        r = client.post("/api/v1/sweeps", headers=AUTH, json={
            "preset": "sqd-nsgan-digits", "grid": {"loss.name": ["nsgan", "hinge"]}, "seeds": 3, "max_concurrent": 2})
        sweep_id = r.json()["id"]
        wait_for(lambda: client.get(f"/api/v1/sweeps/{sweep_id}").json()["counts"].get("running") == 2, 120,
                 "two runs running")
        r = client.post(f"/api/v1/sweeps/{sweep_id}/cancel", headers=AUTH)
        # the two running runs read "cancelling" until their agent reports them cancelled — which a quick agent
        # and ingest may have done before this response re-read the sweep
        counts = r.json()["counts"]
        assert r.status_code == 202 and set(counts) <= {"cancelling", "cancelled"}, counts
        assert counts.get("cancelling", 0) + counts["cancelled"] == 6 and counts["cancelled"] >= 4, counts
        done = wait_for(lambda: (s := client.get(f"/api/v1/sweeps/{sweep_id}").json())["status"] == "cancelled" and s,
                        120, "the sweep to be cancelled")
    assert done["counts"] == {"cancelled": 6}
    assert len(starts(tmp_path)) == 2  # the four waiting runs never started

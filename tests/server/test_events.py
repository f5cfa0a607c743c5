"""Server-Sent Events over real HTTP: new points arrive, the run filter holds, Last-Event-ID resumes."""

from __future__ import annotations

import threading
import time

import httpx
from server_support import AUTH

from sqd.bus import INGEST
from sqd.client import Client
from sqd.protocol import AlertRaised, MetricBatch, RunFinished


def batch(run, start=0, n=3):
    return MetricBatch.from_points(run, [("loss/D", start + i, float(i), 0, 0.0) for i in range(n)])


class Collector(threading.Thread):
    """Follows /events in the background until it has `n` events (or its reads time out)."""

    def __init__(self, url, n, run_ids=None, last_event_id=None):
        super().__init__(daemon=True)
        self.url, self.n, self.run_ids, self.last_event_id = url, n, run_ids, last_event_id
        self.events, self.error = [], None
        self.connected = threading.Event()

    def run(self):
        try:
            with Client(self.url, token=AUTH["Authorization"].split()[1]) as client:
                for event in client.events(self.run_ids, self.last_event_id, timeout=8.0,
                                           on_open=self.connected.set):
                    self.events.append(event)
                    if len(self.events) >= self.n:
                        return
        except httpx.ReadTimeout:
            pass
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def result(self, timeout=15.0):
        self.join(timeout)
        assert self.error is None, self.error
        return self.events


def test_new_points_are_pushed_and_filtered_by_run(live_server, api_bus):
    follower = Collector(live_server.url, 2, run_ids=["e1"])
    follower.start()
    assert follower.connected.wait(15)  # the server has taken the stream position
    api_bus.publish(INGEST, [batch("other"), batch("e1")])
    events = follower.result()
    kinds = {e.event: e for e in events}
    assert set(kinds) == {"points", "run"}, events  # the new run, then its points; nothing of "other"
    assert kinds["points"].data == {"run_id": "e1", "series": {"loss/D": {"step": [0, 1, 2], "value": [0.0, 1.0, 2.0]}}}
    assert kinds["run"].data["id"] == "e1" and kinds["run"].data["status"] == "running"
    assert all(e.id and "-" in e.id for e in events)


def test_resume_with_last_event_id(live_server, api_bus):
    api_bus.publish(INGEST, [batch("e2", 0)])
    first = Collector(live_server.url, 2, run_ids=["e2"], last_event_id="0-0")  # run + points
    first.start()
    seen = first.result()
    assert {e.event for e in seen} == {"points", "run"}
    api_bus.publish(INGEST, [batch("e2", 3), AlertRaised(run_id="e2", rule="r", step=4, scores={"x": float("nan")}),
                             RunFinished(run_id="e2", status="finished")])  # while nobody listens
    time.sleep(0.5)
    resumed = Collector(live_server.url, 3, run_ids=["e2"], last_event_id=seen[-1].id)
    resumed.start()
    events = resumed.result()
    by_kind = {e.event: e.data for e in events}
    assert sorted(by_kind) == ["alert", "points", "run"]
    assert by_kind["alert"]["scores"] == {"x": "NaN"}
    assert by_kind["points"]["series"]["loss/D"]["step"] == [3, 4, 5]
    assert by_kind["run"]["status"] == "finished"
    assert all(e.id > seen[-1].id for e in events)


def test_sse_headers_and_auth(live_server):
    with httpx.stream("GET", f"{live_server.url}/api/v1/events", timeout=5) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert next(r.iter_lines()) == "retry: 1000"


def test_replicas_share_live_events_through_redis(api_settings, live_server):
    """A second replica that runs no ingest consumer still streams what the first one committed."""
    from server_support import LiveServer

    replica = api_settings.model_copy(update={"server": api_settings.server.model_copy(
        update={"ingest_in_process": False})})
    with LiveServer(replica) as other:
        follower = Collector(other.url, 1, run_ids=["r-x"])
        follower.start()
        assert follower.connected.wait(15)
        run = httpx.post(f"{live_server.url}/api/v1/runs", json={"name": "x", "id": "r-x"}, headers=AUTH).json()
        assert run["id"] == "r-x"
        [event] = follower.result()
        assert (event.event, event.data["id"]) == ("run", "r-x")
        assert httpx.get(f"{other.url}/api/v1/health").json()["ingest"]["in_process"] is False

"""Webhooks delivered to a real local HTTP receiver: the payload, a retry after a failure, giving up after the
configured attempts, and ingest never waiting for the receiver."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from fastapi.testclient import TestClient
from server_support import AUTH, free_port, make_settings, wait_for

from sqd.server.alerts.webhooks import backoff_s
from sqd.server.app import create_app
from sqd.settings import AlertSettings


class Receiver:
    """An HTTP server that answers the queued status codes in turn (then 200) and records every request; with
    `hold` set it answers nothing until `release` is set."""

    def __init__(self, statuses: list[int], hold: bool = False) -> None:
        self.statuses, self.requests = list(statuses), []
        self.release = threading.Event()
        if not hold:
            self.release.set()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                body = self.rfile.read(int(self.headers["Content-Length"]))
                receiver.requests.append((dict(self.headers), json.loads(body)))
                receiver.release.wait(30)
                self.send_response(receiver.statuses.pop(0) if receiver.statuses else 200)
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fast_client(tmp_path, external_redis_url, db_url, prefix) -> Iterator[TestClient]:
    settings = make_settings(tmp_path / "home", external_redis_url, db_url, prefix).model_copy(update={
        "alerts": AlertSettings(webhook_attempts=3, webhook_backoff_s=0.2, webhook_timeout_s=5)})
    with TestClient(create_app(settings)) as c:
        yield c


def _fire(client: TestClient, url: str) -> tuple[str, dict]:
    run = client.post("/api/v1/runs", json={"name": "hooked"}, headers=AUTH).json()["id"]
    rule = client.post("/api/v1/rules", headers=AUTH, json={
        "expression": "loss/D > 5", "run_id": run, "name": "D loss blew up", "webhook_url": url}).json()
    points = [{"key": "loss/D", "step": 7, "value": 1.0, "epoch": 0},
              {"key": "loss/D", "step": 8, "value": 9.5, "epoch": 0}]
    r = client.post(f"/api/v1/runs/{run}/metrics", headers=AUTH, json={"points": points})
    assert r.status_code == 200, r.text
    return run, rule


def _actions(client: TestClient, run: str) -> list[dict]:
    alerts = client.get("/api/v1/alerts", params={"run_id": run}).json()["data"]
    return client.get(f"/api/v1/alerts/{alerts[0]['id']}/actions").json() if alerts else []


def test_webhook_is_retried_after_a_failure_and_names_run_step_rule_evidence(fast_client: TestClient) -> None:
    receiver = Receiver([500])
    try:
        run, rule = _fire(fast_client, receiver.url)
        wait_for(lambda: [a for a in _actions(fast_client, run) if a["status"] == "delivered"], 20, "delivery")
        assert len(receiver.requests) == 2  # 500, then 200 after the backoff
        (h1, first), (h2, second) = receiver.requests
        assert first == second and h1["X-SQD-Event-Id"] == h2["X-SQD-Event-Id"] == first["alert"]["event_id"]
        assert h1["Content-Type"] == "application/json"
        assert first["type"] == "sqd.alert" and first["severity"] == first["alert"]["severity"] == "warning"
        assert first["run"]["id"] == run and first["run"]["name"] == "hooked"
        assert first["alert"]["step"] == 8 and first["alert"]["rule"] == "D loss blew up"
        assert first["rule"] == {"id": rule["id"], "name": "D loss blew up", "kind": "threshold"}
        assert first["evidence"] == {"key": "loss/D", "value": 9.5}
        assert first["dashboard"].endswith(f"/#/run/{run}")
        (action,) = _actions(fast_client, run)
        assert (action["kind"], action["attempts"], action["last_error"]) == ("webhook", 2, None)
        assert action["target"] == receiver.url and action["detail"] == {}
    finally:
        receiver.close()


def test_webhook_gives_up_after_the_configured_attempts(fast_client: TestClient) -> None:
    dead = f"http://127.0.0.1:{free_port()}/nobody-listens"
    run, _ = _fire(fast_client, dead)
    (action,) = wait_for(lambda: [a for a in _actions(fast_client, run) if a["status"] == "failed"], 30,
                         "the delivery to be given up")
    assert action["attempts"] == 3 and "ConnectError" in action["last_error"]


def test_ingest_does_not_wait_for_a_slow_receiver(fast_client: TestClient) -> None:
    receiver = Receiver([], hold=True)
    try:
        run, _ = _fire(fast_client, receiver.url)  # returned although the receiver has not answered
        wait_for(lambda: receiver.requests, 20, "the receiver to be called")
        assert [a["status"] for a in _actions(fast_client, run)] == ["pending"]
        receiver.release.set()
        wait_for(lambda: [a for a in _actions(fast_client, run) if a["status"] == "delivered"], 20, "delivery")
    finally:
        receiver.close()


def test_backoff_doubles_up_to_the_cap() -> None:
    s = AlertSettings(webhook_backoff_s=2, webhook_backoff_max_s=10)
    assert [backoff_s(n, s) for n in (1, 2, 3, 4)] == [2, 4, 8, 10]

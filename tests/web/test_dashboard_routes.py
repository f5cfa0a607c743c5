"""The routes the dashboard added (server/api/dashboard.py): /whoami, /summaries, /runs/{id}/epochs — happy paths,
NaN, unknown runs, bad input and closed reads, over real HTTP."""

from __future__ import annotations

import math
import uuid
from pathlib import Path

import httpx
import pytest
from live_stack import TOKEN, DashboardServer, RunFeed, serve, wait

from sqd.protocol import MetricBatch


def fed_run(server: DashboardServer, epoch_len: int = 100, steps: int = 300) -> RunFeed:
    run = RunFeed(server, f"routes-{uuid.uuid4().hex[:8]}", epoch_len=epoch_len)
    run.start()
    run.steps(0, steps)
    run.evaluate(steps, 0.9, 6.0, 40.0)
    wait(lambda: server.http.get(f"/runs/{run.run_id}/keys").status_code == 200
         and server.http.get(f"/runs/{run.run_id}/keys").json()["count"] >= 9, what="ingest")
    return run


def test_whoami_tells_the_token_apart(server: DashboardServer) -> None:
    anon = httpx.get(f"{server.url}/api/v1/whoami").json()
    assert anon == {"signed_in": False, "reads_open": True}
    assert server.http.get("/whoami").json()["signed_in"] is True
    bad = httpx.get(f"{server.url}/api/v1/whoami", headers={"Authorization": "Bearer nope"}).json()
    assert bad["signed_in"] is False
    assert httpx.get(f"{server.url}/api/v1/whoami", params={"access_token": TOKEN}).json()["signed_in"] is True


def test_summaries_latest_values_alerts_and_nan(server: DashboardServer) -> None:
    run = fed_run(server)
    other = fed_run(server)
    server.publish(MetricBatch.from_points(other.run_id, [("eval/fid", 400, math.nan, 4, 0.0)]))
    run.alert(250, "first")
    run.alert(280, "second")
    wait(lambda: server.http.get("/alerts", params={"run_id": run.run_id}).json()["count"] == 2, what="alerts")
    wait(lambda: any(k["key"] == "eval/fid" and k["last_step"] == 400
                     for k in server.http.get(f"/runs/{other.run_id}/keys").json()["data"]), what="the NaN FID")
    resp = server.http.get("/summaries", params={"run_id": f"{run.run_id},{other.run_id},missing"})
    assert resp.status_code == 200
    data = {s["run_id"]: s for s in resp.json()["data"]}
    assert data[run.run_id]["latest"]["eval/quality"] == {"step": 300, "value": 0.9}
    assert data[run.run_id]["alerts"] == 2 and data[run.run_id]["last_alert"]["explanation"] == "second"
    assert data[other.run_id]["latest"]["eval/fid"] == {"step": 400, "value": "NaN"}  # NaN travels as a string
    assert data["missing"] == {"run_id": "missing", "latest": {}, "alerts": 0, "alerts_by_severity": {},
                               "last_alert": None}
    custom = server.http.get("/summaries", params={"run_id": run.run_id, "keys": "loss/G"}).json()["data"][0]
    assert list(custom["latest"]) == ["loss/G"] and custom["latest"]["loss/G"]["step"] == 299
    missing = server.http.get("/summaries")
    assert missing.status_code == 422
    assert missing.json()["detail"][0]["loc"] == ["query", "run_id"]


def test_epochs_from_the_per_epoch_series_or_the_longest(server: DashboardServer) -> None:
    run = fed_run(server, epoch_len=100, steps=300)
    body = server.http.get(f"/runs/{run.run_id}/epochs").json()
    assert body == {"run_id": run.run_id, "key": "angle_epoch/D", "epoch": [0, 1, 2], "last_step": [99, 199, 299]}
    plain = f"plain-{uuid.uuid4().hex[:8]}"  # a script's run: epochs on its points, no per-epoch angles
    server.http.post("/runs", json={"id": plain, "name": "plain"}).raise_for_status()
    points = [{"key": "loss", "step": s, "value": 1.0, "epoch": s // 10} for s in range(25)]
    server.http.post(f"/runs/{plain}/metrics", json={"points": points}).raise_for_status()
    body = server.http.get(f"/runs/{plain}/epochs").json()
    assert (body["key"], body["epoch"], body["last_step"]) == ("loss", [0, 1, 2], [9, 19, 24])
    no_epochs = f"none-{uuid.uuid4().hex[:8]}"
    server.http.post("/runs", json={"id": no_epochs}).raise_for_status()
    server.http.post(f"/runs/{no_epochs}/metrics", json={"points": [{"key": "x", "step": 1, "value": 2.0}]})
    assert server.http.get(f"/runs/{no_epochs}/epochs").json()["epoch"] == []
    unknown = server.http.get("/runs/no-such-run/epochs")
    assert unknown.status_code == 404 and unknown.json()["detail"] == "run 'no-such-run' not found"


def test_closed_reads_need_a_token(tmp_path_factory: pytest.TempPathFactory, external_redis_url: str) -> None:
    home: Path = tmp_path_factory.mktemp("closed-routes")
    with serve(home, external_redis_url, open_reads=False) as closed:
        assert httpx.get(f"{closed.url}/api/v1/whoami").json() == {"signed_in": False, "reads_open": False}
        for path in ("/summaries?run_id=a", "/runs/a/epochs"):
            resp = httpx.get(f"{closed.url}/api/v1{path}")
            assert resp.status_code == 401, path
        assert closed.http.get("/summaries", params={"run_id": "a"}).status_code == 200
        assert httpx.get(f"{closed.url}/api/v1/summaries", params={"run_id": "a", "access_token": TOKEN}
                         ).status_code == 200

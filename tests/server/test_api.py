"""REST v1 on SQLite and PostgreSQL: runs, launch/cancel, metrics, export, evaluations, samples, logs, errors."""

from __future__ import annotations

import math
import sys
import types

import pytest
from server_support import AUTH, wait_for

from sqd.bus import CONTROL, INGEST
from sqd.errors import ConfigError
from sqd.protocol import AlertRaised, EvaluationResult, MetricBatch, RunFinished, RunStarted
from sqd.wire import decode


def external_run(client, name="script", **extra):
    r = client.post("/api/v1/runs", json={"name": name, **extra}, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()


def test_runs_list_filter_paginate_and_404(client):
    ids = [external_run(client, name=f"run-{i}")["id"] for i in range(5)]
    page = client.get("/api/v1/runs", params={"limit": 2, "offset": 1}).json()
    assert page["count"] == 5 and [r["id"] for r in page["data"]] == ids[::-1][1:3]
    assert client.get("/api/v1/runs", params={"q": "run-3"}).json()["data"][0]["id"] == ids[3]
    assert client.get("/api/v1/runs", params={"status": ["finished"]}).json() == {"data": [], "count": 0}
    assert client.get("/api/v1/runs", params={"status": ["running", "queued"]}).json()["count"] == 5
    r = client.get("/api/v1/runs/nope")
    assert r.status_code == 404 and r.json() == {"detail": "run 'nope' not found"}
    r = client.get("/api/v1/runs", params={"limit": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]


def test_external_run_with_client_id_and_conflict(client):
    run = external_run(client, id="my-run.1", config={"lr": 0.1})
    assert (run["id"], run["kind"], run["status"], run["config"]) == ("my-run.1", "external", "running", {"lr": 0.1})
    r = client.post("/api/v1/runs", json={"id": "my-run.1"}, headers=AUTH)
    assert r.status_code == 409 and "already exists" in r.json()["detail"]
    r = client.post("/api/v1/runs", json={"id": "../etc"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "id"]


@pytest.fixture
def fake_presets(monkeypatch):
    """Stands in for sqd.presets (owned by the GAN zoo) so launch validation is tested on its own."""
    module = types.ModuleType("sqd.presets")

    def resolve_config(preset, overrides):
        bad = [k for k in overrides if k != "lr"]
        if bad:
            exc = ConfigError(f"unknown override {bad[0]!r}; allowed: lr")
            exc.errors = [{"loc": [bad[0]], "msg": f"unknown override {bad[0]!r}; allowed: lr"}]
            raise exc
        if not isinstance(overrides.get("lr", 0.1), float):
            raise ConfigError("lr must be a float")
        return types.SimpleNamespace(model_dump=lambda mode=None: {"preset": preset, "lr": 0.1, **overrides})

    module.list_presets = lambda: [types.SimpleNamespace(name="digits-wgan", seed="003", dataset="digits",
                                                         description="demo", family="sqd")]
    module.resolve_config = resolve_config
    monkeypatch.setitem(sys.modules, "sqd.presets", module)


def control_events(bus):
    return [decode(f) for _, f in bus.client.xrange(bus.key(CONTROL))]


def test_launch_validates_queues_and_publishes(client, api_bus, fake_presets):
    assert client.get("/api/v1/presets").json()[0]["name"] == "digits-wgan"
    r = client.post("/api/v1/runs", json={"preset": "digits-wgan", "overrides": {"lr": 0.2}, "steps": 50},
                    headers=AUTH)
    assert r.status_code == 202, r.text
    run = r.json()
    assert (run["status"], run["kind"], run["config"]["lr"]) == ("queued", "launched", 0.2)
    [launch] = control_events(api_bus)
    assert (launch.type, launch.run_id, launch.overrides, launch.steps) == ("launch", run["id"], {"lr": 0.2}, 50)

    r = client.post("/api/v1/runs", json={"preset": "digits-wgan", "overrides": {"betas": 1}}, headers=AUTH)
    assert r.status_code == 422
    assert r.json()["detail"] == [{"loc": ["body", "overrides", "betas"],
                                   "msg": "unknown override 'betas'; allowed: lr"}]
    r = client.post("/api/v1/runs", json={"preset": "digits-wgan", "overrides": {"lr": "fast"}}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["msg"] == "lr must be a float"
    r = client.post("/api/v1/runs", json={"preset": "nope"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "preset"]
    assert "digits-wgan" in r.json()["detail"][0]["msg"]
    assert len(control_events(api_bus)) == 1  # nothing published for rejected launches

    r = client.post(f"/api/v1/runs/{run['id']}/cancel", json={"reason": "enough"}, headers=AUTH)
    assert r.status_code == 202 and r.json()["status"] == "cancelling"
    cancel = control_events(api_bus)[-1]
    assert (cancel.type, cancel.run_id, cancel.reason) == ("cancel", run["id"], "enough")
    api_bus.publish(INGEST, [RunFinished(run_id=run["id"], status="cancelled")])
    wait_for(lambda: client.get(f"/api/v1/runs/{run['id']}").json()["status"] == "cancelled", what="cancelled")


def test_real_presets_listed_when_present(client):
    pytest.importorskip("sqd.presets")
    presets = client.get("/api/v1/presets").json()
    assert presets and all(p["name"] for p in presets)
    r = client.post("/api/v1/runs", json={"preset": presets[0]["name"], "overrides": {"no_such_key": 1}},
                    headers=AUTH)
    assert r.status_code == 422 and "no_such_key" in str(r.json()["detail"])


def test_cancel_external_run_is_immediate(client):
    run = external_run(client)
    assert client.post(f"/api/v1/runs/{run['id']}/cancel", headers=AUTH).json()["status"] == "cancelled"
    assert client.post("/api/v1/runs/nope/cancel", headers=AUTH).status_code == 404


def test_http_ingest_query_and_nan_round_trip(client):
    run = external_run(client)
    points = [{"key": "loss/D", "step": i, "value": float(i)} for i in range(2000)]
    points[7]["value"] = "NaN"
    points[8]["value"] = "Infinity"
    points[9]["value"] = "-Infinity"
    r = client.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": points}, headers=AUTH)
    assert r.json() == {"received": 2000, "stored": 2000}
    r = client.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": points[:10]}, headers=AUTH)
    assert r.json() == {"received": 10, "stored": 0}
    full = client.get(f"/api/v1/runs/{run['id']}/metrics", params={"keys": "loss/D", "start": 5, "end": 10}).json()
    assert full["series"]["loss/D"]["value"] == [5.0, 6.0, "NaN", "Infinity", "-Infinity", 10.0]
    down = client.get(f"/api/v1/runs/{run['id']}/metrics", params={"max_points": 10}).json()["series"]["loss/D"]
    assert len(down["step"]) <= 10 and down["max"][0] == "Infinity" and down["min"][0] == "-Infinity"
    assert sum(down["count"]) == 2000 and down["nan"][0] == 1
    assert client.get(f"/api/v1/runs/{run['id']}").json()["last_step"] == 1999
    keys = client.get(f"/api/v1/runs/{run['id']}/keys").json()
    assert keys == {"data": [{"key": "loss/D", "first_step": 0, "last_step": 1999, "points": 2000}], "count": 1}
    r = client.get(f"/api/v1/runs/{run['id']}/metrics", params={"start": 10, "end": 5})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "end"]
    r = client.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": [{"key": "x", "step": -1, "value": 1}]},
                    headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "points", 0, "step"]
    assert client.post("/api/v1/runs/nope/metrics", json={"points": points[:1]}, headers=AUTH).status_code == 404


def test_export_csv_and_json(client):
    run = external_run(client)
    pts = [{"key": "a,b", "step": 1, "value": "NaN", "epoch": 3, "wall_time": 5.0},
           {"key": "loss/G", "step": 2, "value": 0.5, "wall_time": 6.0},
           {"key": "loss/G", "step": 3, "value": "-Infinity", "wall_time": 7.0}]
    client.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": pts}, headers=AUTH)
    csv = client.get(f"/api/v1/runs/{run['id']}/export", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv")
    assert csv.text.splitlines() == ["key,step,value,epoch,wall_time", '"a,b",1,NaN,3,5.0', "loss/G,2,0.5,,6.0",
                                     "loss/G,3,-Infinity,,7.0"]
    data = client.get(f"/api/v1/runs/{run['id']}/export", params={"format": "json", "keys": "loss/G"}).json()
    assert data == {"run_id": run["id"], "series": {"loss/G": {"step": [2, 3], "value": [0.5, "-Infinity"],
                                                               "epoch": [None, None], "wall_time": [6.0, 7.0]}}}


def test_bus_events_become_runs_evaluations_alerts(client, api_bus, api_settings):
    grid = api_settings.home / "artifacts" / "runs" / "m1" / "samples"
    grid.mkdir(parents=True)
    (grid / "step-000000050.png").write_bytes(b"\x89PNG fake")
    log = api_settings.home / "artifacts" / "runs" / "m1" / "train.log"
    log.write_text("".join(f"line {i}\n" for i in range(10)))
    api_bus.publish(INGEST, [
        RunStarted(run_id="m1", name="monitor", preset="p", config={"a": 1}),
        MetricBatch.from_points("m1", [("loss/D", i, 1.0, 0, 0.0) for i in range(100)]),
        EvaluationResult(run_id="m1", checkpoint_step=50, status="skipped"),
        EvaluationResult(run_id="m1", checkpoint_step=50, status="ok", metrics={"quality": 0.9, "fid": math.nan},
                         grid_uri="runs/m1/samples/step-000000050.png"),
        EvaluationResult(run_id="m1", checkpoint_step=50, status="failed", error="late duplicate"),
        AlertRaised(run_id="m1", rule="turning-point", step=60, signals=["angle/G"], scores={"z": math.inf}),
        RunFinished(run_id="m1", status="failed", error="boom", traceback="Traceback: boom"),
    ])
    run = wait_for(lambda: (r := client.get("/api/v1/runs/m1")).status_code == 200 and r.json()["status"] == "failed"
                   and r.json(), what="run m1 failed")
    assert (run["name"], run["preset"], run["traceback"], run["last_step"]) == ("monitor", "p", "Traceback: boom", 99)
    [ev] = client.get("/api/v1/runs/m1/evaluations").json()["data"]
    assert (ev["status"], ev["metrics"]) == ("ok", {"quality": 0.9, "fid": "NaN"})
    series = client.get("/api/v1/runs/m1/metrics", params={"keys": "eval/quality,eval/fid"}).json()["series"]
    assert series["eval/quality"]["value"] == [0.9] and series["eval/fid"]["value"] == ["NaN"]
    [alert] = client.get("/api/v1/alerts", params={"run_id": "m1"}).json()["data"]
    assert (alert["rule"], alert["signals"], alert["scores"]) == ("turning-point", ["angle/G"], {"z": "Infinity"})
    assert client.get("/api/v1/runs/m1/samples").json()["data"] == [
        {"step": 50, "url": "/api/v1/runs/m1/samples/50.png", "status": "ok"}]
    png = client.get("/api/v1/runs/m1/samples/50.png")
    assert png.headers["content-type"] == "image/png" and png.content == b"\x89PNG fake"
    assert client.get("/api/v1/runs/m1/samples/51.png").status_code == 404
    logs = client.get("/api/v1/runs/m1/logs", params={"tail": 3}).json()
    assert logs == {"run_id": "m1", "lines": ["line 7", "line 8", "line 9"], "truncated": True}


def test_sample_paths_never_come_from_the_request(client, api_bus):
    api_bus.publish(INGEST, [EvaluationResult(run_id="evil", checkpoint_step=1, status="ok",
                                              grid_uri="runs/other/samples/x.png"),
                             EvaluationResult(run_id="evil", checkpoint_step=2, status="ok",
                                              grid_uri="../../etc/passwd")])
    wait_for(lambda: client.get("/api/v1/runs/evil/evaluations").json().get("count") == 2, what="evaluations")
    for step in (1, 2):
        r = client.get(f"/api/v1/runs/evil/samples/{step}.png")
        assert r.status_code == 404, r.text
    assert client.get("/api/v1/runs/%2E%2E/logs").status_code == 404
    assert client.get("/api/v1/runs/x/samples/..%2F..%2Fetc%2Fpasswd.png").status_code in (404, 422)


def test_errors_are_json_limits_and_cors_closed(client, api_settings):
    r = client.get("/api/v1/nowhere")
    assert r.status_code == 404 and r.json() == {"detail": "Not Found"}
    big = b"x" * (api_settings.server.max_request_bytes + 1)
    r = client.post("/api/v1/runs", content=big, headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 413 and "exceeds" in r.json()["detail"]
    r = client.post("/api/v1/runs", content=b"{not json", headers={**AUTH, "content-type": "application/json"})
    assert r.status_code == 422 and isinstance(r.json()["detail"], list)
    r = client.get("/api/v1/runs", headers={"Origin": "https://evil.example"})
    assert "access-control-allow-origin" not in r.headers
    assert client.get("/openapi.json").json()["info"]["title"] == "SQD"
    assert client.get("/docs").status_code == 200


def test_static_dashboard_and_plotly(client):
    js = client.get("/static/plotly.min.js")
    assert js.status_code == 200 and js.headers["content-type"].startswith("text/javascript")
    assert b"plotly" in js.content[:2000].lower()
    assert client.get("/__init__.py").status_code in (200, 404)  # static files only from the web package


def test_health_and_prometheus(client, api_bus):
    api_bus.publish(INGEST, [MetricBatch.from_points("h1", [("loss/D", i, 1.0, 0, 0.0) for i in range(10)])])
    wait_for(lambda: client.get("/api/v1/runs/h1").status_code == 200, what="run h1")
    health = client.get("/api/v1/health").json()
    assert health["status"] == "ok" and health["database"]["ok"] and health["bus"]["ok"] and health["ingest"]["running"]
    text = client.get("/metrics").text
    assert "sqd_ingest_points_total" in text and 'sqd_runs{status="running"}' in text
    assert 'sqd_stream_lag{group="server",stream="ingest"}' in text
    assert client.get("/api/v1/metrics").text.startswith("# HELP")

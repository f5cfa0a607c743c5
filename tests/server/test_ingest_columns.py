"""HTTP ingest's column-wise body (`{"series": {key: {step, value, epoch?, wall_time?}}}`) on SQLite and
PostgreSQL: stored like the point list, idempotent, and refused whole with the field named when anything is wrong."""

from __future__ import annotations

import pytest
from server_support import AUTH

from sqd.client import Client


def run_id(client) -> str:
    return client.post("/api/v1/runs", json={"name": "columns"}, headers=AUTH).json()["id"]


def test_columns_are_stored_like_points(client):
    run = run_id(client)
    body = {"series": {"loss/D": {"step": [0, 1, 2], "value": [0.5, "NaN", "-Infinity"], "epoch": [0, 0, None],
                                  "wall_time": [10.0, 11.0, 12.0]},
                       "loss/G": {"step": [2, 1], "value": [1.0, 2.0]}}}
    assert client.post(f"/api/v1/runs/{run}/metrics", json=body, headers=AUTH).json() == {"received": 5, "stored": 5}
    assert client.post(f"/api/v1/runs/{run}/metrics", json=body, headers=AUTH).json() == {"received": 5, "stored": 0}
    data = client.get(f"/api/v1/runs/{run}/export", params={"format": "json"}).json()["series"]
    assert data["loss/D"] == {"step": [0, 1, 2], "value": [0.5, "NaN", "-Infinity"], "epoch": [0, 0, None],
                              "wall_time": [10.0, 11.0, 12.0]}
    assert data["loss/G"]["step"] == [1, 2] and data["loss/G"]["value"] == [2.0, 1.0]


@pytest.mark.parametrize(("series", "loc", "text"), [
    ({"k": {"step": [1, 2], "value": [1]}}, ["body", "series", "k"], "'value' has 1 entries"),
    ({"k": {"step": [1, 2**62], "value": [1, 2]}}, ["body", "series", "k", "step", 1], "less than"),
    ({"k": {"step": [1], "value": [1], "epoch": [-1]}}, ["body", "series", "k", "epoch", 0], "greater"),
    ({"k": {"step": [1], "value": [1], "wall_time": ["NaN"]}}, ["body", "series", "k", "wall_time", 0], "finite"),
    ({"k": {"step": [1], "value": [1], "colour": [1]}}, ["body", "series", "k", "colour"], "Extra"),
    ({"k": {"step": list(range(60_000)), "value": [0] * 60_000},
      "j": {"step": list(range(60_000)), "value": [0] * 60_000}}, ["body"], "at most 100000"),
])
def test_bad_columns_are_refused_whole(client, series, loc, text):
    run = run_id(client)
    good = {"ok": {"step": [1], "value": [1.0]}}
    r = client.post(f"/api/v1/runs/{run}/metrics", json={"series": {**good, **series}}, headers=AUTH)
    assert r.status_code == 422, r.text
    detail = r.json()["detail"][0]
    assert detail["loc"] == loc and text in detail["msg"], detail
    assert client.get(f"/api/v1/runs/{run}/keys").json()["count"] == 0  # nothing half stored


def test_client_log_metrics_sends_columns(live_server):
    with Client(live_server.url, "admin-secret-for-tests") as sqd:
        run = sqd.create_run("client")["id"]
        points = [("loss/D", s, s / 7, s // 100) for s in range(250_000)] + [("loss/G", 3, float("nan"))]
        assert sqd.log_metrics(run, points) == {"received": 250_001, "stored": 250_001}
        assert sqd.log_metrics(run, points[:10]) == {"received": 10, "stored": 0}
        keys = {k["key"]: k["points"] for k in sqd.keys(run)}
    assert keys == {"loss/D": 250_000, "loss/G": 1}

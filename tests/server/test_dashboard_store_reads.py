"""The dashboard's own routes read the chunk store: /summaries (each series' last value) and /runs/{id}/epochs
(the last step of every epoch), on SQLite and PostgreSQL."""

from __future__ import annotations

from server_support import AUTH


def test_summaries_and_epoch_ends(client):
    run = client.post("/api/v1/runs", json={"name": "dash"}, headers=AUTH).json()["id"]
    steps = list(range(10_000))
    body = {"series": {"eval/quality": {"step": [999, 1999, 2999], "value": [0.5, 0.7, "NaN"]},
                       "loss/D": {"step": steps, "value": [s / 10 for s in steps], "epoch": [s // 3000 for s in steps]},
                       "angle_epoch/G": {"step": [2999, 5999], "value": [0.1, 0.2], "epoch": [0, 1]}}}
    assert client.post(f"/api/v1/runs/{run}/metrics", json=body, headers=AUTH).json()["stored"] == 10_005
    late = {"series": {"loss/D": {"step": [10_500], "value": [7.0], "epoch": [3]}}}
    client.post(f"/api/v1/runs/{run}/metrics", json=late, headers=AUTH)
    summary = client.get("/api/v1/summaries", params={"run_id": [run, "no-such-run"],
                                                      "keys": "eval/quality,loss/D"}).json()["data"]
    assert summary[0]["latest"] == {"eval/quality": {"step": 2999, "value": "NaN"},
                                    "loss/D": {"step": 10_500, "value": 7.0}}
    assert summary[1]["latest"] == {}
    epochs = client.get(f"/api/v1/runs/{run}/epochs").json()
    assert (epochs["key"], epochs["epoch"], epochs["last_step"]) == ("angle_epoch/G", [0, 1], [2999, 5999])
    client.post(f"/api/v1/runs/{run}/metrics", json={"series": {"angle_epoch/G": {"step": [1], "value": [1.0]}}},
                headers=AUTH)  # a point without an epoch does not count
    assert client.get(f"/api/v1/runs/{run}/epochs").json()["epoch"] == [0, 1]

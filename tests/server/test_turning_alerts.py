"""The turning-point detector on ingest: alerts stored once, state kept between batches (online = offline on the
server too), actions (best before collapse, stop), live `alert` events. SQLite and PostgreSQL."""

from __future__ import annotations

import httpx
import numpy as np
from server_support import AUTH, wait_for
from test_events import Collector
from test_turning import SPE, make_run

from sqd.bus import INGEST
from sqd.client import Client
from sqd.protocol import CheckpointReady, MetricBatch
from sqd.server.alerts import engine
from sqd.server.alerts.models import TurningState
from sqd.server.alerts.turning import detect_turning_points
from sqd.server.ingest.consumer import IngestHandler


class AlertFollower(Collector):
    """Follows /events until the first `alert` event (a long idle timeout: on a loaded machine the alert can come
    many seconds after the last points)."""

    def __init__(self, url: str, run_ids: list[str]) -> None:
        super().__init__(url, 1, run_ids)

    def run(self) -> None:
        try:
            with Client(self.url, token=AUTH["Authorization"].split()[1]) as client:
                stream = client.events(self.run_ids, timeout=90.0, on_open=self.connected.set)
                self.events = [next(e for e in stream if e.event == "alert")]
        except Exception as exc:  # noqa: BLE001 - reported by the test
            self.error = exc

    def result(self, timeout: float = 120.0):  # type: ignore[no-untyped-def]
        (event,) = super().result(timeout)
        return event


def points_between(series: dict, lo: int, hi: int) -> list[dict]:
    out = []
    for key, (steps, values, epochs) in series.items():
        m = (steps >= lo) & (steps < hi)
        out += [{"key": key, "step": int(s), "value": float(v), "epoch": int(e)}
                for s, v, e in zip(steps[m], values[m], epochs[m], strict=True)]
    return out


def feed(client, run_id: str, series: dict, every: int = 10 * SPE) -> None:
    """POST the run batch by batch, then wait until the alerting thread has checked everything."""
    end = max(int(v[0][-1]) for v in series.values()) + 1
    for lo in range(0, end, every):
        r = client.post(f"/api/v1/runs/{run_id}/metrics", json={"points": points_between(series, lo, lo + every)},
                        headers=AUTH)
        assert r.status_code == 200, r.text
    assert engine.start(client.app.state.ctx).wait_idle(60)


def new_run(client, name: str) -> str:
    r = client.post("/api/v1/runs", json={"name": name}, headers=AUTH)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def test_turning_point_alerts_once_matching_the_offline_detector(client):
    """The jump is an "instability" warning first, then the turning point once the angles stayed up: two alerts,
    as the offline detector reports them; the summaries count them per severity."""
    series = make_run(jump_epoch=30.0)
    run_id = new_run(client, "collapsing")
    feed(client, run_id, series)
    alerts = client.get("/api/v1/alerts", params={"run_id": run_id}).json()
    assert alerts["count"] == 2, alerts
    warning, critical = sorted(alerts["data"], key=lambda a: a["id"])
    offline = detect_turning_points(series)
    assert [tp.severity for tp in offline] == ["warning", "critical"]
    assert (warning["rule"], warning["severity"]) == ("instability", "warning")
    assert warning["explanation"].startswith("Not a turning point:")
    assert critical["rule"] == "turning point" and critical["severity"] == "critical"
    for alert, tp in zip((warning, critical), offline, strict=True):
        assert (alert["step"], alert["epoch"], alert["signals"]) == (tp.step, tp.epoch, tp.signals)
        assert alert["explanation"] == tp.explanation and alert["scores"] == tp.scores
    feed(client, run_id, series)  # the same batches again: stored once, nothing new raised
    assert client.get("/api/v1/alerts", params={"run_id": run_id}).json()["count"] == 2
    with client.app.state.ctx.sessions() as s:
        state = s.get(TurningState, run_id)
        assert state is not None and state.state["found"][0]["step"] == offline[0].step
    (summary,) = client.get("/api/v1/summaries", params={"run_id": run_id}).json()["data"]
    assert summary["alerts"] == 2 and summary["alerts_by_severity"] == {"critical": 1, "warning": 1}


def test_a_freeze_with_a_collapse_is_a_turning_point_through_the_server(client):
    """The derived `angle_drop/*` family lives in the server's detector state like any key: fed batch by batch it
    names the freeze and raises the critical alert the offline detector gives; a rule can turn it off."""
    series = make_run(diversity_drop_epoch=40.0, lr_drop_epoch=40.0)
    run_id = new_run(client, "frozen")
    feed(client, run_id, series)
    (alert,) = client.get("/api/v1/alerts", params={"run_id": run_id}).json()["data"]
    (tp,) = detect_turning_points(series)
    assert alert["severity"] == "critical" and alert["signals"] == tp.signals
    assert {"angle_drop/G", "angle_drop/D"} <= set(alert["signals"]) and "fell to" in alert["explanation"]
    off = new_run(client, "frozen, freeze ignored")
    r = client.post("/api/v1/rules", headers=AUTH, json={"kind": "turning_point", "run_id": off,
                                                        "params": {"groups": {"angle_drop": {"coef": 0}}}})
    assert r.status_code == 201, r.text
    feed(client, off, series)
    (alert,) = client.get("/api/v1/alerts", params={"run_id": off}).json()["data"]
    assert alert["severity"] == "warning" and "no angle jump or drop" in alert["explanation"]


def test_evaluations_backfilled_behind_the_cursor_are_replayed_in_place(client):
    """The worker skipped the evaluations of epochs 30-31 (busy) and backfills them once later ones were read: they
    land behind the detector's cursor, so the server replays the run. The diversity dip they hold turns the D
    spike's warning into the turning point the offline detector finds; what was raised is not raised again."""
    run = make_run(2)
    for key in ("angle/D", "angle_epoch/D"):
        steps, values, epochs = run[key]
        run[key] = (steps, np.where(steps // SPE == 30, values * 8, values), epochs)
    steps, values, epochs = run["eval/diversity"]
    run["eval/diversity"] = (steps, np.where((epochs >= 30) & (epochs < 32), values - 3.0, values), epochs)
    skipped = {key: (s, v, e) for key, (s, v, e) in run.items()}
    for key in ("eval/quality", "eval/diversity"):
        steps, values, epochs = run[key]
        kept = (epochs < 30) | (epochs >= 32)
        skipped[key] = (steps[kept], values[kept], epochs[kept])
    run_id = new_run(client, "backfilled")
    feed(client, run_id, skipped)
    alerts = client.get("/api/v1/alerts", params={"run_id": run_id}).json()["data"]
    assert [(a["severity"], a["step"]) for a in alerts] == [("warning", 30 * SPE)]  # the spike alone, live
    late = [p for p in points_between(run, 30 * SPE, 32 * SPE) if p["key"].startswith("eval/")]
    r = client.post(f"/api/v1/runs/{run_id}/metrics", json={"points": late}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert engine.start(client.app.state.ctx).wait_idle(60)
    offline = detect_turning_points(run)
    assert [tp.severity for tp in offline] == ["warning", "critical"]
    alerts = client.get("/api/v1/alerts", params={"run_id": run_id}).json()["data"]
    assert sorted((a["severity"], a["step"]) for a in alerts) == sorted((tp.severity, tp.step) for tp in offline)
    with client.app.state.ctx.sessions() as s:  # live = replay: the state is the offline detector's
        state = s.get(TurningState, run_id).state
    assert [(tp["severity"], tp["step"], tp["detected_step"]) for tp in state["found"]] == [
        (tp.severity, tp.step, tp.detected_step) for tp in offline]
    feed(client, run_id, run)  # everything again: nothing behind the cursor now, nothing new
    assert client.get("/api/v1/alerts", params={"run_id": run_id}).json()["count"] == 2


def test_a_rule_with_params_changes_what_is_detected(client):
    """Angles must stay up for 50 epochs to corroborate a jump: in a 60-epoch run, the jump at 30 stays a warning."""
    run_id = new_run(client, "tuned")
    r = client.post("/api/v1/rules", headers=AUTH, json={"kind": "turning_point", "run_id": run_id,
                                                        "params": {"sustain_epochs": 50}})
    assert r.status_code == 201, r.text
    feed(client, run_id, make_run(jump_epoch=30.0))
    alerts = client.get("/api/v1/alerts", params={"run_id": run_id}).json()["data"]
    assert [(a["rule"], a["severity"]) for a in alerts] == [("instability", "warning")]


def test_stable_run_raises_nothing_and_disabling_the_builtin_rule_silences_it(client):
    run_id = new_run(client, "stable")
    feed(client, run_id, make_run(1))
    assert client.get("/api/v1/alerts", params={"run_id": run_id}).json()["count"] == 0
    builtin = next(r for r in client.get("/api/v1/rules").json()["data"] if r["builtin"])
    assert client.delete(f"/api/v1/rules/{builtin['id']}", headers=AUTH).status_code == 204
    assert client.get(f"/api/v1/rules/{builtin['id']}").json()["enabled"] is False
    silent = new_run(client, "collapsing, unwatched")
    feed(client, silent, make_run(jump_epoch=30.0))
    assert client.get("/api/v1/alerts", params={"run_id": silent}).json()["count"] == 0


def test_actions_keep_the_best_checkpoint_and_stop_the_run(client, api_bus):
    run_id = new_run(client, "with actions")
    r = client.post("/api/v1/rules", headers=AUTH, json={
        "kind": "turning_point", "run_id": run_id, "name": "collapse: stop and keep",
        "actions": {"stop_run": True, "keep_best": True}})
    assert r.status_code == 201, r.text
    checkpoints = [CheckpointReady(run_id=run_id, step=s, epoch=s // SPE, uri=f"runs/{run_id}/checkpoints/{s}.pt",
                                   sha256="0" * 64, size_bytes=1, profile="none", generator={})
                   for s in (200, 400, 580, 700)]
    IngestHandler(client.app.state.ctx).apply(checkpoints)
    feed(client, run_id, make_run(jump_epoch=30.0))
    alerts = client.get("/api/v1/alerts", params={"run_id": run_id}).json()["data"]
    (alert,) = [a for a in alerts if a["severity"] == "critical"]
    assert alert["rule"] == "collapse: stop and keep"  # the run's own rule is the most specific
    (warning,) = [a for a in alerts if a["severity"] == "warning"]
    assert client.get(f"/api/v1/alerts/{warning['id']}/actions").json() == []  # a warning is only notified
    best = client.get(f"/api/v1/runs/{run_id}/best-before-collapse").json()
    assert best["checkpoint_step"] == max(s for s in (200, 400, 580, 700) if s < alert["step"])
    assert best["alert_id"] == alert["id"]
    actions = {a["kind"]: a for a in client.get(f"/api/v1/alerts/{alert['id']}/actions").json()}
    assert actions["keep_best"]["status"] == "done" and actions["stop_run"]["status"] == "done"
    assert client.get(f"/api/v1/runs/{run_id}").json()["status"] == "cancelled"  # external: cancelled at once
    assert client.get("/api/v1/runs/nope/best-before-collapse").status_code == 404


def test_alert_is_pushed_over_sse_and_bus_ingest_uses_the_same_path(live_server, api_bus):
    run_id = "sse-turning"
    follower = AlertFollower(live_server.url, [run_id])
    follower.start()
    assert follower.connected.wait(15)  # the server has taken the stream position
    series = make_run(jump_epoch=30.0)
    end = max(int(v[0][-1]) for v in series.values()) + 1
    batches = []
    for lo in range(0, end, 5 * SPE):  # as a Monitor would publish: one MetricBatch per flush
        pts = points_between(series, lo, lo + 5 * SPE)
        batches.append(MetricBatch.from_points(run_id, [(p["key"], p["step"], p["value"], p["epoch"], 0.0)
                                                        for p in pts]))
    api_bus.publish(INGEST, batches)
    alerts = wait_for(lambda: httpx.get(f"{live_server.url}/api/v1/alerts", params={"run_id": run_id}).json()["data"],
                      120, "the turning-point alert")
    first = min(alerts, key=lambda a: a["id"])
    assert first["severity"] == "warning" and np.isclose(first["step"] / SPE, 30, atol=1)
    seen = follower.result()
    assert seen.data["id"] == first["id"] and seen.data["explanation"] == first["explanation"]

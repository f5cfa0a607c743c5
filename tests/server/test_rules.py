"""Alert rules: validation, evaluation, the REST routes, and user rules firing on ingest (SQLite and PostgreSQL)."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from fastapi.testclient import TestClient
from server_support import AUTH, make_settings, wait_for
from sqlalchemy import select

from sqd.errors import ConfigError
from sqd.protocol import CheckpointReady, EvaluationResult, MetricBatch
from sqd.server.alerts import engine
from sqd.server.alerts.models import AlertRule, RuleState, TurningState
from sqd.server.alerts.rules import RuleCreate, RuleSpec, evaluate, normalize, replay_rule
from sqd.server.app import create_app
from sqd.server.ingest.consumer import IngestHandler
from sqd.server.store import migrate, runs_store
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.points_store import CHUNK_POINTS, store_points
from sqd.server.store.retention import downsample_run
from sqd.settings import AlertSettings


# ---- validation and evaluation (no database) ------------------------------------------------------------------
def test_expression_and_defaults() -> None:
    f = normalize(RuleCreate(expression="eval/quality < 0.5 for 3 evaluations"))
    assert (f["kind"], f["key"], f["op"], f["value"], f["count"]) == ("threshold", "eval/quality", "<", 0.5, 3)
    assert f["name"] == "eval/quality < 0.5 for 3 points"
    assert normalize(RuleCreate(kind="nan"))["key"] == "loss/*"
    assert normalize(RuleCreate(kind="stalled", minutes=5))["name"] == "no new step for 5 min"


@pytest.mark.parametrize(("body", "loc", "msg"), [
    ({"expression": "quality is bad"}, "expression", "cannot read 'quality is bad'"),
    ({"kind": "trend", "expression": "loss/D > 1"}, "expression", "kind must be 'threshold'"),
    ({"kind": "threshold", "op": "<", "value": 1}, "key", "needs key, op and value"),
    ({"kind": "trend", "key": "loss/D", "op": "<", "value": -1}, "window", "needs window"),
    ({"kind": "stalled"}, "minutes", "needs minutes"),
    ({"kind": "nan", "run_id": "a", "preset": "b"}, "preset", "not both"),
    ({"kind": "turning_point", "params": {"sustain_epoch": 2}}, "params", "unknown key 'sustain_epoch'"),
    ({"kind": "turning_point", "params": {"groups": {"quality": {"kappa": -1}}}}, "params",
     "groups.quality.kappa: must be a number ≥ 0"),
    ({"kind": "nan", "params": {"sustain_epochs": 2}}, "params", "only a turning_point rule takes params"),
])
def test_invalid_rules_name_the_field(body: dict, loc: str, msg: str) -> None:
    with pytest.raises(ConfigError, match=msg) as err:
        normalize(RuleCreate(**body))
    assert err.value.errors[0]["loc"] == ["body", loc]


def _run(spec: RuleSpec, values: list[float], chunk: int = 2) -> list[int]:
    """Steps where the rule fires, feeding the values in chunks (state carried over, as between batches)."""
    state: dict = {}
    hits = []
    for lo in range(0, len(values), chunk):
        steps = np.arange(lo, min(lo + chunk, len(values)))
        hits += [h.step for h in evaluate(spec, state, "k", steps, np.asarray(values[lo:lo + chunk]),
                                          [None] * len(steps))]
    return hits


def test_threshold_fires_once_per_bad_stretch() -> None:
    spec = RuleSpec("threshold", "<", 0.5, 3, None)
    values = [0.9, 0.4, 0.3, 0.2, 0.1, 0.1, 0.8, 0.4, 0.4, 0.9, 0.3, 0.3, 0.3]
    assert _run(spec, values) == [3, 12]
    assert _run(spec, values, chunk=1) == _run(spec, values, chunk=13)


def test_nan_and_trend_rules() -> None:
    assert _run(RuleSpec("nan", None, None, 1, None), [1.0, math.nan, math.nan, 2.0, math.inf]) == [1, 4]
    falling = RuleSpec("trend", "<", -2.0, 1, 5)
    values = [10, 10, 10, 10, 10, 9, 8, 7, 6, 5, 5, 5]
    hits = _run(falling, [float(v) for v in values], chunk=3)
    assert hits == [7]  # steps 3..7 (10 10 9 8 7) fit a change of −3.2; steps 2..6 only −2.0


def test_hits_carry_the_stretch_they_fired_in() -> None:
    state: dict = {}
    hits = evaluate(RuleSpec("threshold", "<", 0.5, 2, None), state, "k", np.arange(0, 80, 10),
                    np.asarray([0.9, 0.4, 0.3, 0.2, 0.9, 0.4, 0.4, 0.4]), [None] * 8)
    assert [(h.step, h.since, h.until) for h in hits] == [(20, 10, 30), (60, 50, 70)]
    assert state["since"] == 50  # the open stretch goes on in the next points
    (more,) = evaluate(RuleSpec("threshold", "<", 0.5, 1, None), {"run": 1, "armed": True, "since": 50}, "k",
                       np.asarray([80]), np.asarray([0.1]), [None])
    assert (more.step, more.since, more.until) == (80, 50, 80)


@pytest.mark.parametrize(("count", "seen", "late", "new"), [
    (2, {0: 0.9, 20: 0.4, 30: 0.3, 40: 0.9}, (10, 0.4), []),  # lengthens the stretch that fired at 30: nothing new
    (2, {0: 0.9, 10: 0.4, 30: 0.9, 40: 0.9}, (20, 0.3), [20]),  # completes a stretch that never fired
    (1, {0: 0.4, 20: 0.4, 30: 0.9}, (10, 0.9), [20]),  # splits the stretch that fired at 0 in two
])
def test_a_late_point_replays_the_rule_and_raises_only_new_stretches(count: int, seen: dict, late: tuple,
                                                                      new: list[int]) -> None:
    spec = RuleSpec("threshold", "<", 0.5, count, None)
    live: dict = {"fed": 0}
    fired = [h.step for h in evaluate(spec, live, "k", np.asarray(list(seen)), np.asarray(list(seen.values())),
                                      [None] * len(seen))]
    full = dict(sorted({**seen, late[0]: late[1]}.items()))
    steps, values = np.asarray(list(full)), np.asarray(list(full.values()))
    state, hits = replay_rule(spec, "k", fired, steps, values, [None] * len(full))
    assert [h.step for h in hits] == new
    in_order: dict = {"fed": 0}
    evaluate(spec, in_order, "k", steps, values, [None] * len(full))
    assert state == {**in_order, "fired": fired}  # as if the late point had come in order
    assert live["fed"] == len(seen) and state["fed"] == len(full)


# ---- REST -----------------------------------------------------------------------------------------------------
def test_rules_rest_routes(client: TestClient) -> None:
    body = {"expression": "eval/quality < 0.5 for 3 evaluations"}
    assert client.post("/api/v1/rules", json=body).status_code == 401
    r = client.post("/api/v1/rules", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    rule = r.json()
    assert rule["key"] == "eval/quality" and rule["builtin"] is False and rule["actions"] == {
        "stop_run": False, "keep_best": False}
    listed = client.get("/api/v1/rules").json()
    assert listed["count"] == 2 and listed["data"][0]["builtin"] is True
    assert client.get(f"/api/v1/rules/{rule['id']}").json() == rule
    bad = client.post("/api/v1/rules", json={"kind": "threshold", "key": "x"}, headers=AUTH)
    assert bad.status_code == 422
    assert bad.json() == {"detail": [{"loc": ["body", "op"], "msg": "a threshold rule needs key, op and value"}]}
    hook = client.post("/api/v1/rules", json={"kind": "nan", "webhook_url": "not a url"}, headers=AUTH)
    assert hook.status_code == 422 and hook.json()["detail"][0]["loc"] == ["body", "webhook_url"]
    assert client.delete(f"/api/v1/rules/{rule['id']}").status_code == 401
    assert client.delete(f"/api/v1/rules/{rule['id']}", headers=AUTH).status_code == 204
    assert client.get(f"/api/v1/rules/{rule['id']}").json() == {"detail": f"rule {rule['id']} not found"}
    assert client.delete(f"/api/v1/rules/{rule['id']}", headers=AUTH).json() == {
        "detail": f"rule {rule['id']} not found"}
    assert client.get("/api/v1/rules/0").status_code == 422
    tuned = client.post("/api/v1/rules", headers=AUTH, json={"kind": "turning_point", "preset": "demo-stable",
                                                            "params": {"sustain_epochs": 5}})
    assert tuned.status_code == 201 and tuned.json()["params"] == {"sustain_epochs": 5}
    bad_params = client.post("/api/v1/rules", headers=AUTH, json={"kind": "turning_point",
                                                                  "params": {"groups": {"angles": {}}}})
    assert bad_params.status_code == 422
    assert bad_params.json()["detail"][0]["loc"] == ["body", "params"]
    assert "unknown family 'angles'" in bad_params.json()["detail"][0]["msg"]


def _points(key: str, values: list[float], start: int = 0) -> list[dict]:
    return [{"key": key, "step": start + i * 10, "value": v, "epoch": i} for i, v in enumerate(values)]


def test_user_rules_created_over_rest_trigger_on_ingest(client: TestClient) -> None:
    run = client.post("/api/v1/runs", json={"name": "watched"}, headers=AUTH).json()["id"]
    other = client.post("/api/v1/runs", json={"name": "not watched"}, headers=AUTH).json()["id"]
    quality = client.post("/api/v1/rules", headers=AUTH, json={
        "expression": "eval/quality < 0.5 for 3 evaluations", "run_id": run, "severity": "critical"}).json()
    nan = client.post("/api/v1/rules", headers=AUTH, json={"kind": "nan", "name": "NaN loss"}).json()
    client.post("/api/v1/rules", headers=AUTH, json={"kind": "nan", "key": "loss/*", "preset": "elsewhere"})
    for rid in (run, other):
        for lo in (0, 3):  # two batches: the rule's count carries over between them
            vals = [0.9, 0.4, 0.3, 0.2, 0.45, 0.9][lo:lo + 3]
            pts = _points("eval/quality", vals, start=lo * 10)
            r = client.post(f"/api/v1/runs/{rid}/metrics", json={"points": pts}, headers=AUTH)
            assert r.status_code == 200, r.text
        client.post(f"/api/v1/runs/{rid}/metrics", headers=AUTH,
                    json={"points": _points("loss/D", [0.5, "NaN", 0.4])})  # type: ignore[list-item]
    assert engine.start(client.app.state.ctx).wait_idle(60)
    alerts = client.get("/api/v1/alerts", params={"run_id": run}).json()["data"]
    by_rule = {a["rule"]: a for a in alerts}
    assert set(by_rule) == {quality["name"], "NaN loss"}, alerts
    q = by_rule[quality["name"]]
    assert (q["step"], q["signals"], q["severity"]) == (30, ["eval/quality"], "critical")
    assert q["explanation"] == "eval/quality = 0.2 < 0.5 for 3 points in a row"
    assert by_rule["NaN loss"]["step"] == 10 and by_rule["NaN loss"]["scores"] == {"loss/D": "NaN"}
    assert [a["rule"] for a in client.get("/api/v1/alerts", params={"run_id": other}).json()["data"]] == [
        nan["name"]]  # the quality rule is the other run's business only


def test_evaluations_finished_out_of_order_are_all_seen_in_step_order(client: TestClient) -> None:
    """Two workers: the evaluation of checkpoint 500 lands before those of 250 and 0. The rules (and the detector)
    read evaluations only up to the oldest one still outstanding, so each is seen, in step order."""
    run = client.post("/api/v1/runs", json={"name": "two workers"}, headers=AUTH).json()["id"]
    rule = client.post("/api/v1/rules", headers=AUTH, json={
        "expression": "eval/quality < 0.5 for 2 evaluations", "run_id": run}).json()
    ingest = IngestHandler(client.app.state.ctx)
    ingest.apply([CheckpointReady(run_id=run, step=s, epoch=s // 100, uri=f"runs/{run}/checkpoints/{s}.pt",
                                  sha256="0" * 64, size_bytes=1, profile="digits", generator={})
                  for s in (0, 250, 500)])

    def evaluated(step: int, quality: float) -> None:
        ingest.apply([EvaluationResult(run_id=run, checkpoint_step=step, epoch=step // 100, status="ok",
                                       metrics={"quality": quality})])
        assert engine.start(client.app.state.ctx).wait_idle(60)

    evaluated(500, 0.3)  # held: 0 and 250 are outstanding
    evaluated(0, 0.9)  # read; 500 still held behind 250
    assert client.get("/api/v1/alerts", params={"run_id": run}).json()["count"] == 0
    evaluated(250, 0.4)  # 250 and 500 read in order: two in a row below 0.5
    (alert,) = client.get("/api/v1/alerts", params={"run_id": run}).json()["data"]
    assert (alert["rule"], alert["step"]) == (rule["name"], 500)
    assert alert["explanation"] == "eval/quality = 0.3 < 0.5 for 2 points in a row"


def test_an_evaluation_that_never_comes_holds_nothing_back_for_long(client: TestClient) -> None:
    run = client.post("/api/v1/runs", json={"name": "a lost evaluation"}, headers=AUTH).json()["id"]
    ingest = IngestHandler(client.app.state.ctx)
    announced = time.time()
    ingest.apply([CheckpointReady(run_id=run, step=s, uri=f"runs/{run}/checkpoints/{s}.pt", sha256="0" * 64,
                                  size_bytes=1, profile=profile, generator={}, ts=announced)
                  for s, profile in ((0, "digits"), (100, "none"), (200, "digits"))])
    ingest.apply([EvaluationResult(run_id=run, checkpoint_step=200, status="ok", metrics={"quality": 0.8})])
    client.post(f"/api/v1/runs/{run}/metrics", headers=AUTH, json={"points": _points("loss/D", [0.5, 0.4])})
    with client.app.state.ctx.sessions() as session:
        held = engine.PointReader.for_run(session, run, now=announced + 1, eval_wait_s=60)
        assert held.series["eval/quality"][1] is None and held.held_until == announced + 60
        assert held.series["loss/D"][1] == 10  # only evaluations wait
        lapsed = engine.PointReader.for_run(session, run, now=announced + 61, eval_wait_s=60)
        assert lapsed.series["eval/quality"][1] == 200 and lapsed.held_until is None
        assert engine.PointReader.for_run(session, run).series["eval/quality"][1] == 200  # no wait asked
    own = client.post("/api/v1/runs", json={"name": "its own evaluations"}, headers=AUTH).json()["id"]
    ingest.apply([CheckpointReady(run_id=own, step=0, uri=f"runs/{own}/checkpoints/0.pt", sha256="0" * 64,
                                  size_bytes=1, generator={}, ts=announced)])
    client.post(f"/api/v1/runs/{own}/metrics", headers=AUTH, json={"points": _points("eval/fid", [90.0, 80.0])})
    with client.app.state.ctx.sessions() as session:  # no worker evaluates it: nothing is held
        assert engine.PointReader.for_run(session, own, now=announced + 1, eval_wait_s=60).held_until is None


def test_a_point_backfilled_behind_a_rules_cursor_is_evaluated(client: TestClient) -> None:
    """A worker backfills the FID of a skipped checkpoint after later ones were read: the rules replay the key.
    A point that makes a new bad stretch raises its alert; one that only lengthens a stretch that fired raises
    nothing; re-sending everything raises nothing."""
    run = client.post("/api/v1/runs", json={"name": "backfilled FID"}, headers=AUTH).json()["id"]
    high = client.post("/api/v1/rules", headers=AUTH, json={"expression": "eval/fid > 100", "run_id": run}).json()
    twice = client.post("/api/v1/rules", headers=AUTH, json={"expression": "eval/fid > 55 for 2",
                                                             "run_id": run}).json()

    def send(points: list[dict]) -> list[tuple[str, int]]:
        r = client.post(f"/api/v1/runs/{run}/metrics", json={"points": points}, headers=AUTH)
        assert r.status_code == 200, r.text
        assert engine.start(client.app.state.ctx).wait_idle(60)
        return sorted((a["rule"], a["step"]) for a in client.get("/api/v1/alerts", params={"run_id": run})
                      .json()["data"])

    fid = _points("eval/fid", [50.0, 150.0, 60.0, 70.0])
    assert send([fid[i] for i in (0, 2, 3)]) == [(twice["name"], 30)]
    assert send([fid[1]]) == [(high["name"], 10), (twice["name"], 30)]  # 150 > 100; the stretch 10-30 fired before
    assert send(fid) == [(high["name"], 10), (twice["name"], 30)]
    with client.app.state.ctx.sessions() as session:
        states = {r.rule_id: r.state["eval/fid"] for r in session.scalars(select(RuleState).where(
            RuleState.run_id == run))}
    assert states[high["id"]]["fed"] == states[twice["id"]]["fed"] == 4
    assert states[high["id"]]["fired"] == [10] and states[twice["id"]]["fired"] == [30]


def test_a_replay_over_downsampled_chunks_happens_once(db_url, monkeypatch) -> None:
    """Retention keeps one point per 256 steps of a run's old chunks but their count: a replay reads fewer points
    than are stored, and must not take that for points behind its cursor at every later check."""
    eng = make_engine(db_url)
    migrate.upgrade(eng)
    sessions = session_factory(eng)
    replays = {"detector": 0, "rule": 0}
    for name, attr in (("detector", "replay"), ("rule", "replay_rule")):
        real = getattr(engine, attr)

        def counting(*args, _real=real, _name=name):
            replays[_name] += 1
            return _real(*args)

        monkeypatch.setattr(engine, attr, counting)
    late, n = 2 * CHUNK_POINTS + 1000, 2 * CHUNK_POINTS + 2000

    def send(steps, value: float) -> list[tuple[str, int]]:
        rows = [("angle/D", int(s), value, int(s) // 1000, 1.7e9 + int(s)) for s in steps]
        with sessions() as s, s.begin():
            store_points(s, [MetricBatch.from_points("run", rows)])
        with sessions() as s, s.begin():
            return [(r.alert.rule, r.alert.step) for r in engine.check_run(s, "run")]

    try:
        with sessions() as s, s.begin():
            runs_store.create_run(s, name="run", kind="external", status="running", run_id="run")
            s.add(AlertRule(name="angle/D > 1", kind="threshold", key="angle/D", op=">", value=1.0, count=1,
                            severity="warning", actions={}, builtin=False, enabled=True, created_at=time.time()))
        assert send([s for s in range(n) if s != late], 1e-3) == []
        with sessions() as s, s.begin():
            downsample_run(s, "run", before_step=2 * CHUNK_POINTS)
        assert send([late], 5.0) == [("angle/D > 1", late)]  # behind both cursors: replayed, the rule fires
        assert replays == {"detector": 1, "rule": 1}
        assert send([n], 1e-3) == []
        assert replays == {"detector": 1, "rule": 1}  # the kept points are not taken for late ones
        with sessions() as s:
            assert s.get(TurningState, "run").state["trackers"]["angle/D"]["fed"] == n + 1
    finally:
        eng.dispose()


def test_stalled_rule_fires_once_per_silence(tmp_path, external_redis_url, db_url, prefix) -> None:
    settings = make_settings(tmp_path / "home", external_redis_url, db_url, prefix).model_copy(
        update={"alerts": AlertSettings(stalled_check_s=0.2)})
    with TestClient(create_app(settings)) as client:
        run = client.post("/api/v1/runs", json={"name": "quiet"}, headers=AUTH).json()["id"]
        client.post(f"/api/v1/runs/{run}/metrics", json={"points": _points("loss/D", [1.0])}, headers=AUTH)
        client.post("/api/v1/rules", headers=AUTH, json={"kind": "stalled", "minutes": 0.005, "run_id": run})
        alert = wait_for(lambda: client.get("/api/v1/alerts", params={"run_id": run}).json()["data"], 20,
                         "the stalled alert")[0]
        assert alert["rule"] == "no new step for 0.005 min" and alert["step"] == 0
        assert "has had no new step for" in alert["explanation"]
        ctx = client.app.state.ctx
        with ctx.sessions() as s, s.begin():  # the same silence later: nothing new
            assert engine.check_stalled(s, time.time() + 3600) == []
        client.post(f"/api/v1/runs/{run}/metrics", json={"points": _points("loss/D", [1.0], 100)}, headers=AUTH)
        wait_for(lambda: client.get("/api/v1/alerts", params={"run_id": run}).json()["count"] == 2, 20,
                 "a second alert after the run moved and went quiet again")

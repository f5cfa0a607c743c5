"""/sweeps on SQLite and PostgreSQL with the real presets: planning, the capped release queue (as runs end, after a
restart, across two replicas), cancel, results and their export, and bad input that leaves nothing behind."""

from __future__ import annotations

import threading

import httpx
import pytest
from fastapi.testclient import TestClient
from server_support import AUTH, LiveServer, wait_for

from sqd.bus import CONTROL, INGEST
from sqd.client import Client
from sqd.protocol import AlertRaised, EvaluationResult, MetricBatch, RunFinished, RunStarted
from sqd.server.app import create_app
from sqd.server.context import ServerContext
from sqd.server.store.models import Run
from sqd.server.sweeps import queue
from sqd.settings import SweepSettings
from sqd.wire import decode

GRID = {"loss.name": ["nsgan", "hinge"], "reg.names": ["none", "gp"]}


def control(bus):
    return [decode(f) for _, f in bus.client.xrange(bus.key(CONTROL))]


def launches(bus):
    return [e for e in control(bus) if e.type == "launch"]


def create(client, **body):
    r = client.post("/api/v1/sweeps", json=body, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()


def nothing_stored(client, bus):
    assert client.get("/api/v1/sweeps").json()["count"] == 0
    assert client.get("/api/v1/runs").json()["count"] == 0
    assert control(bus) == []


def test_grid_makes_runs_and_releases_up_to_the_cap(client, api_bus):
    sweep = create(client, preset="sqd-nsgan-digits", grid=GRID, seeds=3, steps=40, max_concurrent=5, name="grid")
    assert (sweep["name"], sweep["n_runs"], sweep["status"]) == ("grid", 12, "queued")
    assert sweep["dimensions"] == ["loss.name", "reg.names"]
    runs = sweep["runs"]
    assert [(r["label"], r["seed"]) for r in runs[:4]] == [
        ("loss.name=nsgan · reg.names=none", 0), ("loss.name=nsgan · reg.names=none", 1),
        ("loss.name=nsgan · reg.names=none", 2), ("loss.name=nsgan · reg.names=gp", 0)]
    assert runs[5]["params"] == {"loss.name": "nsgan", "reg.names": ["gp"]} and runs[5]["config_index"] == 1
    assert all(r["status"] == "queued" and r["sweep_id"] == sweep["id"] and r["steps"] == 40 for r in runs)
    assert [r["released"] for r in runs] == [True] * 5 + [False] * 7
    assert runs[11]["config"]["loss"]["name"] == "hinge" and runs[11]["config"]["train"]["seed"] == 2
    sent = launches(api_bus)
    assert [e.run_id for e in sent] == [r["id"] for r in runs[:5]]
    assert sent[3].overrides == {"loss.name": "nsgan", "reg.names": "gp", "train.seed": 0} and sent[3].steps == 40
    assert sent[3].name == "loss.name=nsgan · reg.names=gp · seed 0" and sent[3].preset == "sqd-nsgan-digits"
    # the runs table filters by sweep; the list counts per status
    assert client.get("/api/v1/runs", params={"sweep": sweep["id"]}).json()["count"] == 12
    assert client.get("/api/v1/runs", params={"sweep": "other"}).json()["count"] == 0
    listed = client.get("/api/v1/sweeps").json()
    assert listed["count"] == 1 and listed["data"][0]["counts"] == {"queued": 12} and "runs" not in listed["data"][0]


def test_several_presets_and_explicit_sets(client, api_bus):
    twins = ["sqd-nsgan-digits", "sqd-nsgan-gp-digits", "sqd-wgan-digits", "sqd-wgan-gp-digits"]
    sweep = create(client, presets=twins, seeds=1)
    assert sweep["dimensions"] == ["loss.name", "reg.names"] and sweep["name"] == "4 presets"
    assert [r["label"] for r in sweep["runs"]] == twins and [r["preset"] for r in sweep["runs"]] == twins
    sets = create(client, preset="sqd-nsgan-digits", grid={"optim.lr_g": ["1e-3", "2e-3"]},
                  configs=[{"loss.name": "hinge"}, {"loss.name": "lsgan", "optim.lr_d": 5e-4}],
                  overrides={"train.batch": 32}, seeds=2)
    assert sets["n_runs"] == 8 and sets["dimensions"] == ["optim.lr_g", "loss.name", "optim.lr_d"]
    assert sets["runs"][2]["label"] == "optim.lr_g=1e-3 · loss.name=lsgan · optim.lr_d=0.0005"
    assert all(r["config"]["train"]["batch"] == 32 for r in sets["runs"])
    assert sets["runs"][2]["params"] == {"optim.lr_g": 0.001, "loss.name": "lsgan", "optim.lr_d": 0.0005}


@pytest.mark.parametrize(("body", "loc", "words"), [
    ({"preset": "sqd-nsgan-digits", "grid": {"loss.name": ["nsgan", "hinge", "minimax"]}},
     ["body", "grid", "loss.name", 2], ["loss.name", "'minimax'", "not one of"]),
    ({"preset": "sqd-nsgan-digits", "grid": {"reg.names": ["none", "gp"], "optim.lr_g": [1e-3, -1]}},
     ["body", "grid", "optim.lr_g", 1], ["optim.lr_g", "-1"]),
    ({"preset": "sqd-nsgan-digits", "configs": [{"loss.name": "hinge"}, {"optim.betas": "[0.5, 1.5]"}]},
     ["body", "configs", 1, "optim.betas"], ["betas", "[0, 1)"]),
    ({"preset": "sqd-nsgan-digits", "grid": {"loss.nmae": ["hinge"]}},
     ["body", "grid", "loss.nmae"], ["unknown key 'loss.nmae'", "did you mean 'loss.name'"]),
    ({"preset": "sqd-nsgan-digits", "grid": {"reg.names": ["gran_d"], "loss.name": ["nsgan", "hinge"]}},
     ["body", "grid", "reg.names", 0], ["gran_d is paired with loss.name=nsgan", "not hinge"]),
    ({"preset": "no-such-preset", "seeds": 2}, ["body", "preset"], ["unknown preset 'no-such-preset'"]),
    ({"presets": ["sqd-nsgan-digits", "nope"]}, ["body", "presets", 1], ["unknown preset 'nope'"]),
    ({"presets": []}, ["body", "preset"], ["give a preset"]),
    ({"preset": "sqd-nsgan-digits", "grid": {"train.seed": [1, 2]}, "seeds": 3}, ["body", "seeds"],
     ["train.seed is swept"]),
    ({"preset": "sqd-nsgan-digits", "grid": {"loss.name": []}}, ["body", "grid", "loss.name"],
     ["at least one value"]),
    ({"preset": "sqd-nsgan-digits", "grid": {"optim.lr_g": [i / 1000 for i in range(1, 68)]}, "seeds": 3},
     ["body", "confirm"], ["201 runs", '"confirm": true', "--yes"]),
])
def test_any_bad_value_rejects_the_whole_sweep(client, api_bus, body, loc, words):
    r = client.post("/api/v1/sweeps", json=body, headers=AUTH)
    assert r.status_code == 422, r.text
    found = [e for e in r.json()["detail"] if e["loc"] == loc]
    assert found, r.json()["detail"]
    assert all(w in found[0]["msg"] for w in words), found[0]["msg"]
    nothing_stored(client, api_bus)


def test_every_bad_value_is_named_once(client, api_bus):
    body = {"preset": "sqd-nsgan-digits", "seeds": 3,
            "grid": {"loss.name": ["nsgan", "foo", "bar"], "optim.lr_g": [1e-3, 0], "reg.names": ["none", "gp"]}}
    detail = client.post("/api/v1/sweeps", json=body, headers=AUTH).json()["detail"]
    assert sorted(tuple(e["loc"][2:]) for e in detail) == [("loss.name", 1), ("loss.name", 2), ("optim.lr_g", 1)]
    assert [e["msg"] for e in detail if e["loc"][2:] == ["optim.lr_g", 1]] == [
        "grid optim.lr_g: value 0 is invalid: optim.lr_g: Input should be greater than 0 (got 0)"]
    nothing_stored(client, api_bus)


def test_big_sweep_with_confirm_and_unauthenticated_writes(client, api_bus):
    grid = {"optim.lr_g": [i / 1000 for i in range(1, 68)]}
    r = client.post("/api/v1/sweeps", json={"preset": "sqd-nsgan-digits", "grid": grid, "seeds": 3})
    assert r.status_code == 401
    sweep = create(client, preset="sqd-nsgan-digits", grid=grid, seeds=3, confirm=True, max_concurrent=2)
    assert sweep["n_runs"] == 201 and len(launches(api_bus)) == 2
    r = client.post(f"/api/v1/sweeps/{sweep['id']}/cancel")
    assert r.status_code == 401
    assert client.get("/api/v1/sweeps/nope").json() == {"detail": "sweep 'nope' not found"}
    assert client.post("/api/v1/sweeps/nope/cancel", headers=AUTH).status_code == 404


def finish(bus, run_id, status="finished"):
    bus.publish(INGEST, [RunStarted(run_id=run_id, name="x"), RunFinished(run_id=run_id, status=status)])


def test_runs_are_released_as_others_end_and_a_failure_stops_nothing(client, api_bus):
    sweep = create(client, preset="sqd-nsgan-digits", grid=GRID, seeds=1, max_concurrent=2)
    ids = [r["id"] for r in sweep["runs"]]
    assert [e.run_id for e in launches(api_bus)] == ids[:2]
    finish(api_bus, ids[0], "failed")
    wait_for(lambda: [e.run_id for e in launches(api_bus)] == ids[:3], what="the third run's release")
    finish(api_bus, ids[1])
    finish(api_bus, ids[2])
    wait_for(lambda: [e.run_id for e in launches(api_bus)] == ids, what="the last run's release")
    finish(api_bus, ids[3])
    done = wait_for(lambda: (s := client.get(f"/api/v1/sweeps/{sweep['id']}").json())["status"] == "finished" and s,
                    what="the sweep to finish")
    assert done["counts"] == {"failed": 1, "finished": 3}
    assert len(launches(api_bus)) == 4  # nothing released twice


def test_cancel_the_whole_sweep(client, api_bus):
    sweep = create(client, preset="sqd-nsgan-digits", grid=GRID, seeds=2, max_concurrent=3)
    ids = [r["id"] for r in sweep["runs"]]
    api_bus.publish(INGEST, [RunStarted(run_id=ids[0], name="x")])
    wait_for(lambda: client.get(f"/api/v1/runs/{ids[0]}").json()["status"] == "running", what="run 0 running")
    r = client.post(f"/api/v1/sweeps/{sweep['id']}/cancel", json={"reason": "enough"}, headers=AUTH)
    assert r.status_code == 202
    body = r.json()
    assert body["status"] == "cancelling" and body["counts"] == {"cancelling": 3, "cancelled": 5}
    held = body["runs"][3]
    assert (held["status"], held["error"], held["released"]) == ("cancelled", "enough", False)
    cancels = [e for e in control(api_bus) if e.type == "cancel"]
    assert sorted(e.run_id for e in cancels) == sorted(ids) and cancels[0].reason == "enough"
    for run_id in ids[:3]:
        api_bus.publish(INGEST, [RunFinished(run_id=run_id, status="cancelled")])
    wait_for(lambda: client.get(f"/api/v1/sweeps/{sweep['id']}").json()["status"] == "cancelled", what="cancelled")
    assert len(launches(api_bus)) == 3  # a cancelled sweep releases nothing more


def test_cancelling_one_waiting_run_is_immediate(client, api_bus):
    sweep = create(client, preset="sqd-nsgan-digits", grid=GRID, seeds=1, max_concurrent=1)
    waiting = sweep["runs"][2]["id"]
    r = client.post(f"/api/v1/runs/{waiting}/cancel", headers=AUTH)
    assert r.status_code == 202 and r.json()["status"] == "cancelled"
    running = sweep["runs"][0]["id"]
    assert client.post(f"/api/v1/runs/{running}/cancel", headers=AUTH).json()["status"] == "cancelling"
    api_bus.publish(INGEST, [RunFinished(run_id=running, status="cancelled")])
    ids = [r["id"] for r in sweep["runs"]]
    wait_for(lambda: [e.run_id for e in launches(api_bus)] == [ids[0], ids[1]], what="the next run")
    assert waiting not in [e.run_id for e in launches(api_bus)]


def test_release_survives_a_restart_and_two_replicas_keep_the_cap(api_settings, api_bus):
    with TestClient(create_app(api_settings)) as first:
        sweep = create(first, preset="sqd-nsgan-digits", grid={"optim.lr_g": [1e-3, 2e-3, 3e-3, 4e-3, 5e-3]},
                       seeds=4, max_concurrent=3)
        ids = [r["id"] for r in sweep["runs"]]
    # runs end while no server runs: their RunFinished wait on the bus; a new server ingests them and releases
    for run_id in ids[:3]:
        finish(api_bus, run_id)
    with TestClient(create_app(api_settings)) as second:
        wait_for(lambda: [e.run_id for e in launches(api_bus)] == ids[:6], what="the release after a restart")
        assert second.get(f"/api/v1/sweeps/{sweep['id']}").json()["counts"] == {"finished": 3, "queued": 17}
    # two replicas releasing at once (threads on two server contexts) never exceed the cap
    contexts = [ServerContext.open(api_settings) for _ in range(2)]
    try:
        with contexts[0].sessions() as session, session.begin():  # three runs ended, nobody released yet
            for run_id in ids[3:6]:
                session.get(Run, run_id).status = "finished"
        released: list[str] = []
        barrier = threading.Barrier(8)

        def race(ctx: ServerContext) -> None:
            barrier.wait()
            released.extend(queue.release(ctx, sweep["id"]))

        threads = [threading.Thread(target=race, args=(contexts[i % 2],)) for i in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert sorted(released) == sorted(ids[6:9])
        assert [e.run_id for e in launches(api_bus)] == ids[:9]  # 6 ended, 3 with the agents: the cap
    finally:
        for ctx in contexts:
            ctx.close()


def test_reconciler_releases_what_a_missed_hook_left(api_settings, api_bus):
    quiet = api_settings.model_copy(update={"sweeps": SweepSettings(reconcile_s=3600)})  # only the calls below
    with TestClient(create_app(quiet)) as client:
        sweep = create(client, preset="sqd-nsgan-digits", grid=GRID, seeds=1, max_concurrent=1)
        ids = [r["id"] for r in sweep["runs"]]
        ctx = client.app.state.ctx
        with ctx.sessions() as session, session.begin():  # a run ended, but its release never happened
            session.get(Run, ids[0]).status = "finished"
        assert queue.Reconciler(ctx).once() == [ids[1]]
        assert [e.run_id for e in launches(api_bus)] == ids[:2]
        client.post(f"/api/v1/sweeps/{sweep['id']}/cancel", headers=AUTH)
        assert queue.Reconciler(ctx).once() == []


def test_results_table_and_its_export(client, api_bus):
    sweep = create(client, preset="sqd-nsgan-digits", grid={"loss.name": ["nsgan", "wgan"]}, seeds=1)
    ok, bad = (r["id"] for r in sweep["runs"])
    rows = [("angle/G", s, 0.01, s // 10, 0.0) for s in range(40)]
    api_bus.publish(INGEST, [
        RunStarted(run_id=ok, name="ok"), MetricBatch.from_points(ok, rows),
        *[EvaluationResult(run_id=ok, checkpoint_step=s, epoch=s // 10, status="ok",
                           metrics={"quality": q, "diversity": d, "fid": f, "modes_covered": m})
          for s, q, d, f, m in ((10, 0.5, 4.0, 90.0, 300.0), (20, 0.8, 6.5, 40.0, 640.0), (30, 0.7, 6.0, 45.0, 600.0))],
        AlertRaised(run_id=ok, rule="turning point", step=25, epoch=2, severity="critical", explanation="jump"),
        AlertRaised(run_id=ok, rule="q drop", step=20, epoch=2, severity="warning"),
        RunFinished(run_id=ok, status="finished", step=39),
        RunStarted(run_id=bad, name="bad"),
        RunFinished(run_id=bad, status="failed", error="ValueError: boom", traceback="Traceback…")])
    wait_for(lambda: client.get(f"/api/v1/sweeps/{sweep['id']}").json()["status"] == "finished", what="both ended")
    res = client.get(f"/api/v1/sweeps/{sweep['id']}/results").json()
    first, second = res["data"]
    assert res["dimensions"] == ["loss.name"] and first["params"] == {"loss.name": "nsgan"}
    assert (first["final_quality"], first["best_quality"], first["final_fid"], first["best_fid"]) == (0.7, 0.8, 45, 40)
    assert (first["final_diversity"], first["best_diversity"], first["final_modes"], first["best_modes"]) == \
        (6.0, 6.5, 600, 640)
    assert (first["turning_epoch"], first["turning_step"], first["alerts"], first["evaluations"]) == (2, 25, 2, 3)
    assert first["status"] == "finished" and first["duration_s"] >= 0 and first["last_step"] == 39
    assert (second["status"], second["error"], second["final_quality"]) == ("failed", "ValueError: boom", None)
    csv = client.get(f"/api/v1/sweeps/{sweep['id']}/results", params={"format": "csv"})
    assert csv.headers["content-type"].startswith("text/csv") and "attachment" in csv.headers["content-disposition"]
    lines = csv.text.splitlines()
    assert lines[0].startswith("loss.name,run_id,name,config_index,label,seed,status,final_quality,best_quality")
    assert lines[1].startswith(f"nsgan,{ok},") and ",0.7,0.8," in lines[1] and lines[2].endswith("ValueError: boom")
    as_json = client.get(f"/api/v1/sweeps/{sweep['id']}/results", params={"format": "json"}).json()
    assert as_json["data"][0]["best_quality"] == 0.8 and as_json["count"] == 2
    series = client.get(f"/api/v1/sweeps/{sweep['id']}/metrics", params={"max_points": 10}).json()["runs"]
    assert set(series) == {ok, bad} and series[ok]["angle/G"]["bucket_width"] == 4
    assert series[ok]["eval/quality"]["value"] == [0.5, 0.8, 0.7] and series[bad] == {}
    alerts = client.get(f"/api/v1/sweeps/{sweep['id']}/alerts").json()
    assert [a["rule"] for a in alerts["data"]] == ["q drop", "turning point"]
    assert client.get("/api/v1/sweeps/builtin").json()[0]["title"] == "SQD grid (seed 003)"


def test_events_filtered_by_sweep(api_settings, api_bus):
    with LiveServer(api_settings) as server, httpx.Client(base_url=server.url, headers=AUTH) as http:
        sweep = http.post("/api/v1/sweeps", json={"preset": "sqd-nsgan-digits", "grid": GRID}).json()
        mine = sweep["runs"][1]["id"]
        got = []
        opened = threading.Event()

        def follow():
            with Client(server.url, token=AUTH["Authorization"].split()[1]) as client:
                for event in client.events(timeout=8.0, sweep=sweep["id"], on_open=opened.set):
                    got.append(event)
                    return

        t = threading.Thread(target=follow, daemon=True)
        t.start()
        assert opened.wait(15)  # the server has taken the stream position
        api_bus.publish(INGEST, [MetricBatch.from_points("other", [("loss/D", 0, 1.0, 0, 0.0)])])
        api_bus.publish(INGEST, [MetricBatch.from_points(mine, [("loss/D", 0, 1.0, 0, 0.0)])])
        t.join(15)
        assert got and got[0].data["run_id"] == mine


def test_migration_adds_sweeps_without_touching_stored_runs(api_settings):
    """0005 adds `runs.sweep_id` in place: a table copy on SQLite would cascade-delete every series and point."""
    from alembic import command

    from sqd.server.store import migrate
    from sqd.server.store.db import make_engine

    engine = make_engine(api_settings.resolved_database_url)
    migrate.upgrade(engine, "0002_alert_rules")
    with engine.begin() as conn:
        conn.exec_driver_sql("INSERT INTO runs (id, name, status, kind, config, created_at, updated_at) "
                             "VALUES ('old', 'old run', 'finished', 'external', '{}', 1, 1)")
        conn.exec_driver_sql("INSERT INTO series (run_id, key, n_points) VALUES ('old', 'loss/D', 0)")
    migrate.upgrade(engine)
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT id, sweep_id FROM runs").all() == [("old", None)]
        assert conn.exec_driver_sql("SELECT count(*) FROM series").scalar() == 1
    cfg = migrate.alembic_config()
    with engine.begin() as conn:  # and back
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002_alert_rules")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM series").scalar() == 1
    engine.dispose()

"""The run lifecycle over REST v1 on SQLite and PostgreSQL: PATCH (rename, end, tags, notes, archive), soft delete /
restore, erase (hard delete) with everything a run owns, gc; each with its 401 / 404 / 409 / 422 and exact detail."""

from __future__ import annotations

import math

import pytest
from server_support import AUTH, wait_for
from sqlalchemy import func, select

from sqd.bus import INGEST
from sqd.protocol import AlertRaised, CheckpointReady, EvaluationResult, MetricBatch, RunFinished, RunStarted
from sqd.server.store.db import make_engine, session_factory
from sqd.server.store.models import Alert, Checkpoint, Chunk, Evaluation, Run, Series, run_ref


def external_run(client, name="script", **extra):
    r = client.post("/api/v1/runs", json={"name": name, **extra}, headers=AUTH)
    assert r.status_code == 201, r.text
    return r.json()


def patch(client, run_id, body, headers=AUTH):
    return client.patch(f"/api/v1/runs/{run_id}", json=body, headers=headers)


def test_create_with_tags_notes_and_patch_everything(client):
    run = external_run(client, tags=["baseline", " lr-sweep ", "baseline"], notes="first try", started_at=1000.0)
    assert (run["tags"], run["notes"], run["started_at"]) == (["baseline", "lr-sweep"], "first try", 1000.0)
    r = patch(client, run["id"], {"name": "renamed", "tags": ["paper:fig3"], "notes": "kept for the paper"})
    assert r.status_code == 200, r.text
    assert (r.json()["name"], r.json()["tags"], r.json()["notes"], r.json()["status"]) == (
        "renamed", ["paper:fig3"], "kept for the paper", "running")
    assert client.get(f"/api/v1/runs/{run['id']}").json()["name"] == "renamed"


def test_finish_and_fail_an_external_run(client):
    """The 1,000-runs complaint: a script's run can be ended, and the end stands."""
    run = external_run(client)
    r = patch(client, run["id"], {"status": "finished", "finished_at": 2000.0})
    assert (r.json()["status"], r.json()["finished_at"], r.json()["error"]) == ("finished", 2000.0, None)
    assert patch(client, run["id"], {"status": "finished"}).status_code == 200  # again: nothing changes
    r = patch(client, run["id"], {"status": "failed"})
    assert r.status_code == 409
    assert r.json() == {"detail": f"run {run['id']!r} is already finished; a final status is not changed"}
    other = external_run(client)
    r = patch(client, other["id"], {"status": "failed", "error": "diverged at step 900"})
    assert (r.json()["status"], r.json()["error"]) == ("failed", "diverged at step 900")
    assert isinstance(r.json()["finished_at"], float)


def test_patch_errors(client):
    run = external_run(client)
    r = patch(client, run["id"], {"name": "x"}, headers={})
    assert r.status_code == 401 and r.json() == {"detail": "missing bearer token (Authorization: Bearer <token>)"}
    r = patch(client, "nope", {"name": "x"})
    assert r.status_code == 404 and r.json() == {"detail": "run 'nope' not found"}
    cases = [
        ({}, ["body"], "Value error, nothing to change: give any of name, status, error, finished_at, tags, notes, "
                       "archived"),
        ({"status": "running"}, ["body", "status"], "Input should be 'finished' or 'failed'"),
        ({"error": "boom"}, ["body"], "Value error, 'error' goes with \"status\": \"failed\""),
        ({"finished_at": 5.0}, ["body"], "Value error, 'finished_at' goes with a status"),
        ({"tags": ["a,b"]}, ["body", "tags", 0], "String should match pattern '^[^\\x00-\\x1f\\x7f,]+$'"),
        ({"tags": [f"t{i}" for i in range(51)]}, ["body", "tags"], "List should have at most 50 items after "
                                                                   "validation, not 51"),
        ({"colour": "red"}, ["body", "colour"], "Extra inputs are not permitted"),
    ]
    for body, loc, msg in cases:
        r = patch(client, run["id"], body)
        assert r.status_code == 422, body
        assert (r.json()["detail"][0]["loc"], r.json()["detail"][0]["msg"]) == (loc, msg), body
    assert client.get(f"/api/v1/runs/{run['id']}").json()["status"] == "running"  # nothing was changed


@pytest.fixture
def fake_presets(monkeypatch):
    import sys
    import types

    module = types.ModuleType("sqd.presets")
    module.list_presets = lambda: [types.SimpleNamespace(name="p", seed=None, dataset=None, description="",
                                                         family=None)]
    module.resolve_config = lambda preset, overrides: types.SimpleNamespace(model_dump=lambda mode=None: {})
    monkeypatch.setitem(sys.modules, "sqd.presets", module)


def test_a_launched_run_is_its_agents_until_it_ends(client, api_bus, fake_presets):
    r = client.post("/api/v1/runs", json={"preset": "p", "tags": ["grid"]}, headers=AUTH)
    run = r.json()
    assert run["tags"] == ["grid"]
    hint = f"stop it with POST /api/v1/runs/{run['id']}/cancel"
    r = patch(client, run["id"], {"status": "finished"})
    assert r.status_code == 409 and r.json()["detail"] == (
        f"run {run['id']!r} was launched and its agent still owns it (queued); {hint}")
    assert patch(client, run["id"], {"name": "fine", "tags": ["grid", "x"]}).status_code == 200
    for params in ({}, {"hard": "true"}):
        r = client.delete(f"/api/v1/runs/{run['id']}", params=params, headers=AUTH)
        assert r.status_code == 409 and r.json()["detail"] == (
            f"run {run['id']!r} is queued under its agent; cancel it first (POST /api/v1/runs/{run['id']}/cancel)")
    api_bus.publish(INGEST, [RunFinished(run_id=run["id"], status="cancelled")])
    wait_for(lambda: client.get(f"/api/v1/runs/{run['id']}").json()["status"] == "cancelled", what="cancelled")
    assert client.delete(f"/api/v1/runs/{run['id']}", headers=AUTH).status_code == 200


def test_monitor_tags_join_the_runs_tags(client, api_bus):
    external_run(client, id="mon-1", tags=["from-post"])
    api_bus.publish(INGEST, [RunStarted(run_id="mon-1", name="m", tags=["gan", "from-post"])])
    wait_for(lambda: client.get("/api/v1/runs/mon-1").json()["tags"] == ["from-post", "gan"], what="tags")


def test_archive_hides_from_the_default_list(client):
    a, b = external_run(client, name="a"), external_run(client, name="b")
    r = patch(client, a["id"], {"archived": True})
    stamp = r.json()["archived_at"]
    assert isinstance(stamp, float)
    assert patch(client, a["id"], {"archived": True}).json()["archived_at"] == stamp  # archiving again: same time
    names = {view: [x["name"] for x in client.get("/api/v1/runs", params={"view": view}).json()["data"]]
             for view in ("active", "archived", "all", "deleted")}
    assert names == {"active": ["b"], "archived": ["a"], "all": ["b", "a"], "deleted": []}
    assert client.get("/api/v1/runs").json()["count"] == 1
    assert patch(client, a["id"], {"archived": False}).json()["archived_at"] is None
    assert client.get("/api/v1/runs").json()["count"] == 2
    r = client.get("/api/v1/runs", params={"view": "old"})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "view"]
    assert b["id"]


def test_soft_delete_and_restore(client):
    run = external_run(client)
    client.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": [{"key": "loss/D", "step": 1, "value": 1}]},
                headers=AUTH)
    assert client.delete(f"/api/v1/runs/{run['id']}").status_code == 401
    r = client.delete(f"/api/v1/runs/{run['id']}", headers=AUTH)
    assert r.status_code == 200 and isinstance(r.json()["deleted_at"], float)
    assert client.get("/api/v1/runs", params={"view": "all"}).json()["count"] == 0
    assert [x["id"] for x in client.get("/api/v1/runs", params={"view": "deleted"}).json()["data"]] == [run["id"]]
    assert client.get(f"/api/v1/runs/{run['id']}").json()["deleted_at"] is not None  # still readable by id
    r = client.post(f"/api/v1/runs/{run['id']}/restore", headers=AUTH)
    assert r.status_code == 200 and r.json()["deleted_at"] is None
    assert client.get(f"/api/v1/runs/{run['id']}/metrics").json()["series"]["loss/D"]["value"] == [1.0]
    assert client.delete("/api/v1/runs/nope", headers=AUTH).status_code == 404
    assert client.post("/api/v1/runs/nope/restore", headers=AUTH).status_code == 404


def _counts(db_url, run_id):
    engine = make_engine(db_url)
    with session_factory(engine)() as s:
        sids = select(Series.id).where(Series.run_ref == run_ref(run_id)).scalar_subquery()
        out = {name: s.scalar(q) for name, q in {
            "series": select(func.count()).select_from(Series).where(Series.run_ref == run_ref(run_id)),
            "points": select(func.coalesce(func.sum(Chunk.n), 0)).where(Chunk.series_id.in_(sids)),
            "chunks": select(func.count()).select_from(Chunk).where(Chunk.series_id.in_(sids)),
            "evaluations": select(func.count()).select_from(Evaluation).where(Evaluation.run_id == run_id),
            "checkpoints": select(func.count()).select_from(Checkpoint).where(Checkpoint.run_id == run_id),
            "alerts": select(func.count()).select_from(Alert).where(Alert.run_id == run_id)}.items()}
        all_points = s.scalar(select(func.coalesce(func.sum(Chunk.n), 0)))
    engine.dispose()
    return out, all_points


def _feed(api_bus, api_settings, run_id):
    art = api_settings.home / "artifacts" / "runs" / run_id
    (art / "samples").mkdir(parents=True)
    (art / "samples" / "step-000000050.png").write_bytes(b"\x89PNG")
    (art / "checkpoints").mkdir()
    (art / "checkpoints" / "step-000000050.pt").write_bytes(b"ckpt")
    api_bus.publish(INGEST, [
        RunStarted(run_id=run_id, name=run_id),
        MetricBatch.from_points(run_id, [("loss/D", i, float(i), 0, 0.0) for i in range(200)]),
        CheckpointReady(run_id=run_id, step=50, uri=f"runs/{run_id}/checkpoints/step-000000050.pt", sha256="0" * 64,
                        size_bytes=4, generator={"arch": "x"}),
        EvaluationResult(run_id=run_id, checkpoint_step=50, status="ok", metrics={"fid": 12.0},
                         grid_uri=f"runs/{run_id}/samples/step-000000050.png"),
        AlertRaised(run_id=run_id, rule="turning_point", step=60),
        RunFinished(run_id=run_id, status="finished"),
    ])


def test_hard_delete_erases_everything_the_run_owns(client, api_bus, api_settings):
    for run_id in ("gone", "kept"):
        _feed(api_bus, api_settings, run_id)
    for run_id in ("gone", "kept"):
        wait_for(lambda r=run_id: client.get(f"/api/v1/alerts?run_id={r}").json()["count"] == 1
                 and client.get(f"/api/v1/runs/{r}").json()["status"] == "finished", what=f"run {run_id} stored")
    before, total = _counts(api_settings.resolved_database_url, "gone")
    assert before == {"series": 2, "points": 201, "chunks": 2, "evaluations": 1, "checkpoints": 1, "alerts": 1}
    r = client.delete("/api/v1/runs/gone", params={"hard": "true"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json() == {"id": "gone", "series": 2, "points": 201, "artifacts": 2, "artifacts_error": None}
    after, total_after = _counts(api_settings.resolved_database_url, "gone")
    assert after == {"series": 0, "points": 0, "chunks": 0, "evaluations": 0, "checkpoints": 0, "alerts": 0}
    assert total_after == total - 201  # the other run's points are all still there
    assert not (api_settings.home / "artifacts" / "runs" / "gone").exists()
    assert (api_settings.home / "artifacts" / "runs" / "kept" / "samples" / "step-000000050.png").exists()
    assert client.get("/api/v1/runs/gone").status_code == 404
    assert client.get("/api/v1/runs/kept/metrics").json()["series"]["loss/D"]["count"] != []
    assert client.delete("/api/v1/runs/gone", params={"hard": "true"}, headers=AUTH).status_code == 404
    r = client.delete("/api/v1/runs/kept", params={"hard": "maybe"}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "hard"]


def test_gc_erases_soft_deleted_runs_only(client):
    old, keep = external_run(client, name="old"), external_run(client, name="keep")
    client.delete(f"/api/v1/runs/{old['id']}", headers=AUTH)
    assert client.post("/api/v1/runs/gc", json={"older_than_s": 3600}, headers=AUTH).json() == {"data": [],
                                                                                               "count": 0}
    r = client.post("/api/v1/runs/gc", headers=AUTH)
    assert r.status_code == 200 and [e["id"] for e in r.json()["data"]] == [old["id"]]
    assert client.get(f"/api/v1/runs/{old['id']}").status_code == 404
    assert client.get(f"/api/v1/runs/{keep['id']}").status_code == 200
    assert client.post("/api/v1/runs/gc", headers={}).status_code == 401
    r = client.post("/api/v1/runs/gc", json={"older_than_s": -1}, headers=AUTH)
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "older_than_s"]


def test_series_last_value_follows_the_last_step(client, api_settings):
    """What metric filters read: the value at the series' last step, whatever order points arrive in."""
    run = external_run(client)

    def send(*points):
        client.post(f"/api/v1/runs/{run['id']}/metrics", headers=AUTH,
                    json={"points": [{"key": "k/x", "step": s, "value": "NaN" if v != v else v} for s, v in points]})

    def last():
        engine = make_engine(api_settings.resolved_database_url)
        with session_factory(engine)() as s:
            value = s.scalar(select(Series.last_value).where(Series.run_ref == run_ref(run["id"])))
        engine.dispose()
        return value

    send((5, 1.0), (9, 2.0))
    assert last() == 2.0
    send((3, 7.0))  # an earlier step arriving late does not move it
    assert last() == 2.0
    send((12, math.nan))
    assert last() is None  # NaN, stored as NULL
    send((12, 4.0))  # the first value stored for a step wins
    assert last() is None
    send((20, 3.5))
    assert last() == 3.5


def test_migration_fills_last_values_from_stored_points(api_settings):
    """A database from before 0004 gets `series.last_value` from its points, and its runs no tags."""
    from alembic import command

    from sqd.server.store import migrate

    engine = make_engine(api_settings.resolved_database_url)
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0002_alert_rules")
        conn.exec_driver_sql("INSERT INTO runs (id, name, status, kind, config, created_at, updated_at) "
                             "VALUES ('old', 'old', 'finished', 'external', '{}', 0, 0)")
        conn.exec_driver_sql("INSERT INTO series (id, run_id, key, first_step, last_step, n_points) "
                             "VALUES (1, 'old', 'eval/fid', 0, 7, 2), (2, 'old', 'loss/D', 3, 3, 1)")
        conn.exec_driver_sql("INSERT INTO points (series_id, step, value, epoch, wall_time) "
                             "VALUES (1, 0, 90.0, NULL, 0), (1, 7, 35.5, NULL, 0), (2, 3, NULL, NULL, 0)")
    migrate.upgrade(engine)
    with session_factory(engine)() as s:
        assert dict(s.execute(select(Series.key, Series.last_value)).all()) == {"eval/fid": 35.5, "loss/D": None}
        assert s.execute(select(Run.tags, Run.notes, Run.deleted_at)).one() == ([], "", None)
    engine.dispose()


def test_downgrade_and_upgrade_keep_every_runs_data(client, api_settings):
    """0004 alters `runs` in place: a copy-and-rename would cascade-delete series on SQLite (foreign keys on)."""
    from alembic import command

    from sqd.server.store import migrate

    run = external_run(client, tags=["kept"])
    client.post(f"/api/v1/runs/{run['id']}/metrics", json={"points": [{"key": "loss/D", "step": 1, "value": 2.0}]},
                headers=AUTH)
    engine = make_engine(api_settings.resolved_database_url)
    cfg = migrate.alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0002_alert_rules")
    migrate.upgrade(engine)
    with session_factory(engine)() as s:
        assert s.execute(select(Series.key, Series.n_points, Series.last_value)).all() == [("loss/D", 1, 2.0)]
    engine.dispose()

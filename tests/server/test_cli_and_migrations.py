"""`sqd db upgrade`, `sqd token ...`, `sqd runs ls`, `sqd metrics get --csv` as a user runs them, and migrations
(the server upgrades an older database when it starts)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from alembic import command
from fastapi.testclient import TestClient
from server_support import ADMIN, AUTH

from sqd.server.app import create_app
from sqd.server.store import migrate
from sqd.server.store.db import make_engine


def sqd(*args, env):
    out = subprocess.run([sys.executable, "-m", "sqd", *args], capture_output=True, text=True, timeout=120,
                         env={**os.environ, **env})
    return out.returncode, out.stdout, out.stderr


def test_server_upgrades_an_older_database_on_start(api_settings):
    engine = make_engine(api_settings.resolved_database_url)
    migrate.upgrade(engine)
    cfg = migrate.alembic_config()
    with engine.begin() as conn:  # back to an empty (older) schema
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "base")
    assert migrate.current_revision(engine) is None
    with TestClient(create_app(api_settings)) as client:
        assert client.get("/api/v1/runs").json() == {"data": [], "count": 0}
    assert migrate.current_revision(engine) == migrate.head_revision()
    engine.dispose()


@pytest.mark.slow
def test_db_and_token_commands(tmp_path):
    env = {"SQD_HOME": str(tmp_path), "SQD_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    code, out, err = sqd("db", "upgrade", env=env)
    assert code == 0 and f"empty → {migrate.head_revision()}" in out, err
    code, out, _ = sqd("db", "upgrade", env=env)
    assert code == 0 and "already at" in out
    code, out, _ = sqd("token", "create", "ci", env=env)
    assert code == 0 and out.splitlines()[-1].startswith("sqd_")
    code, out, _ = sqd("token", "list", env=env)
    assert code == 0 and "ci" in out and "sqd_" not in out  # secrets are never shown again
    assert sqd("token", "revoke", "1", env=env)[:2] == (0, "token 1 revoked\n")
    code, _, err = sqd("token", "revoke", "99", env=env)
    assert code == 1 and "no token with id 99" in err


@pytest.mark.slow
def test_gc_and_downsample_commands(tmp_path):
    from sqd.protocol import MetricBatch
    from sqd.server.store.db import session_factory
    from sqd.server.store.models import Run
    from sqd.server.store.points_store import CHUNK_POINTS, store_points

    n = 2 * CHUNK_POINTS + 1808  # two full chunks and an open one
    env = {"SQD_HOME": str(tmp_path), "SQD_DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    engine = make_engine(env["SQD_DATABASE_URL"])
    migrate.upgrade(engine)
    with session_factory(engine)() as s:
        s.add_all([Run(id="keep", status="finished"), Run(id="gone", status="finished", deleted_at=1.0)])
        s.flush()
        store_points(s, [MetricBatch.from_points(r, [("loss/D", i, 0.5, 0, 0.0) for i in range(n)])
                         for r in ("keep", "gone")])
        s.commit()
    engine.dispose()
    code, out, err = sqd("db", "downsample", "keep", "--before-step", str(2 * CHUNK_POINTS), env=env)
    assert code == 0 and f"2 chunks downsampled, {2 * CHUNK_POINTS:,} → {2 * CHUNK_POINTS // 256} points" in out, err
    code, out, err = sqd("gc", env=env)
    assert code == 0 and f"data: freed 1 deleted runs: {n:,} points in 3 chunks" in out, err
    code, _, err = sqd("db", "downsample", "nope", "--before-step", "10", env=env)
    assert code == 1 and "no run 'nope'" in err


@pytest.mark.slow
def test_runs_ls_and_metrics_get_csv(live_server):
    import httpx

    run = httpx.post(f"{live_server.url}/api/v1/runs", json={"name": "cli-run"}, headers=AUTH).json()
    points = [{"key": "loss/D", "step": i, "value": "Infinity" if i == 3 else i / 2} for i in range(6)]
    httpx.post(f"{live_server.url}/api/v1/runs/{run['id']}/metrics", json={"points": points}, headers=AUTH)
    env = {"SQD_URL": live_server.url, "SQD_TOKEN": ADMIN}
    code, out, err = sqd("runs", "ls", env=env)
    assert code == 0 and "cli-run" in out and "running" in out, err
    code, out, err = sqd("metrics", "get", run["id"], "loss/D", "--csv", env=env)
    assert code == 0, err
    assert out.splitlines() == ["step,value,min,max", "0,0.0,0.0,0.0", "1,0.5,0.5,0.5", "2,1.0,1.0,1.0",
                                "3,Infinity,Infinity,Infinity", "4,2.0,2.0,2.0", "5,2.5,2.5,2.5"]
    code, _, err = sqd("metrics", "get", "nope", "loss/D", env=env)
    assert code == 1 and "404 run 'nope' not found" in err

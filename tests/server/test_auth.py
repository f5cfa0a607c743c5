"""Auth: every write route refuses missing, wrong and revoked tokens; reads are open only on localhost."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from server_support import AUTH, make_settings
from sqlalchemy import select

from sqd.server.app import create_app
from sqd.server.auth import create_token, hash_token, revoke_token
from sqd.server.store.models import Token

WRITE_METHODS = {"POST", "PUT", "PATCH", "DELETE"}


def write_routes(app):
    """Every write operation the app documents (new routes are covered without touching this test)."""
    for path, operations in app.openapi()["paths"].items():
        for method in operations:
            if method.upper() in WRITE_METHODS:
                yield method.upper(), path


def new_token(client, name="t"):
    with client.app.state.ctx.sessions() as s:
        row, secret = create_token(s, name)
        s.commit()
        return row.id, secret


def test_every_write_route_rejects_missing_wrong_and_revoked_tokens(client):
    run_id = client.post("/api/v1/runs", json={"name": "x"}, headers=AUTH).json()["id"]
    token_id, secret = new_token(client)
    with client.app.state.ctx.sessions() as s:
        revoke_token(s, token_id)
        s.commit()
    routes = sorted(write_routes(client.app))
    assert ("POST", "/api/v1/runs") in routes and ("POST", "/api/v1/runs/{run_id}/metrics") in routes
    cases = {"missing": {}, "wrong": {"Authorization": "Bearer not-a-token"},
             "revoked": {"Authorization": f"Bearer {secret}"}, "not bearer": {"Authorization": f"Basic {secret}"}}
    for method, path in routes:
        url = re.sub(r"\{[a-z_]+\}", "1", path.replace("{run_id}", run_id))
        for case, headers in cases.items():
            r = client.request(method, url, json={}, headers=headers)
            assert r.status_code == 401, (method, path, case, r.text)
            assert r.json()["detail"] in ("missing bearer token (Authorization: Bearer <token>)",
                                          "invalid or revoked token")
            assert r.headers["www-authenticate"] == "Bearer"


def test_created_token_works_until_revoked_and_is_stored_hashed(client):
    token_id, secret = new_token(client, "ci")
    headers = {"Authorization": f"Bearer {secret}"}
    assert client.post("/api/v1/runs", json={"name": "by token"}, headers=headers).status_code == 201
    with client.app.state.ctx.sessions() as s:
        row = s.scalar(select(Token).where(Token.id == token_id))
        assert row.hash == hash_token(secret) and secret not in (row.hash, row.name)
        revoke_token(s, token_id)
        s.commit()
    r = client.post("/api/v1/runs", json={"name": "after revoke"}, headers=headers)
    assert r.status_code == 401 and r.json() == {"detail": "invalid or revoked token"}


@pytest.fixture
def public_client(tmp_path, external_redis_url, db_url, prefix):
    settings = make_settings(tmp_path / "home", external_redis_url, db_url, prefix, host="0.0.0.0")
    with TestClient(create_app(settings)) as c:
        yield c


def test_reads_need_a_token_when_not_bound_to_localhost(public_client):
    r = public_client.get("/api/v1/runs")
    assert r.status_code == 401 and r.json()["detail"].startswith("missing bearer token")
    assert public_client.get("/api/v1/runs", headers=AUTH).status_code == 200
    token = AUTH["Authorization"].split()[1]
    assert public_client.get("/api/v1/runs", params={"access_token": token}).status_code == 200
    assert public_client.get("/api/v1/runs", params={"access_token": "wrong"}).status_code == 401
    assert public_client.get("/api/v1/health").status_code == 200  # liveness probes need no token
    # a write never takes the query-string token (it would end up in access logs)
    r = public_client.post("/api/v1/runs", params={"access_token": token}, json={})
    assert r.status_code == 401


def test_reads_can_be_closed_on_localhost_too(tmp_path, external_redis_url, db_url, prefix):
    settings = make_settings(tmp_path / "home", external_redis_url, db_url, prefix, open_reads_on_localhost=False)
    with TestClient(create_app(settings)) as c:
        assert c.get("/api/v1/runs").status_code == 401
        assert c.get("/api/v1/runs", headers=AUTH).status_code == 200

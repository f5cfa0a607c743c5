"""Server fixtures: the API suite runs on SQLite (a tmp file) and on the pre-started PostgreSQL (a schema of its
own per test, dropped afterwards, since other suites share the `test` database)."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_support import LiveServer, make_settings, pg_schema
from sqlalchemy.orm import Session, sessionmaker

from sqd.bus import Bus, drop_prefix
from sqd.server.app import create_app
from sqd.server.store import migrate, runs_store
from sqd.server.store.db import make_engine, session_factory
from sqd.settings import Settings


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'sqd.db'}"
        return
    with pg_schema(request.getfixturevalue("pg_url")) as url:
        yield url


@pytest.fixture
def store_sessions(db_url: str) -> Iterator[sessionmaker[Session]]:
    """A migrated database holding two empty running runs, "run" and "other", for the store's tests."""
    engine = make_engine(db_url)
    migrate.upgrade(engine)
    factory = session_factory(engine)
    with factory() as s:
        for run in ("run", "other"):
            runs_store.create_run(s, name=run, kind="external", status="running", run_id=run)
        s.commit()
    yield factory
    engine.dispose()


@pytest.fixture
def prefix(external_redis_url: str) -> Iterator[str]:
    """A private stream prefix on the pre-started Redis, deleted afterwards."""
    value = f"srvtest-{uuid.uuid4().hex[:10]}"
    yield value
    drop_prefix(external_redis_url, value)


@pytest.fixture
def api_settings(tmp_path: Path, external_redis_url: str, db_url: str, prefix: str) -> Settings:
    return make_settings(tmp_path / "home", external_redis_url, db_url, prefix)


@pytest.fixture
def client(api_settings: Settings) -> Iterator[TestClient]:
    with TestClient(create_app(api_settings)) as c:
        yield c


@pytest.fixture
def api_bus(api_settings: Settings) -> Iterator[Bus]:
    b = Bus.connect(api_settings)
    yield b
    b.close()


@pytest.fixture
def live_server(api_settings: Settings) -> Iterator[LiveServer]:
    with LiveServer(api_settings) as server:
        yield server

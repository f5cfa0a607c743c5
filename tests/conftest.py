"""Shared fixtures: real services only.

* `redis_url` / `bus`: parametrized over the pre-started Redis (127.0.0.1:6379) and the embedded Valkey that
  `sqd up` uses; every test gets its own stream prefix, deleted afterwards.
* `pg_url`: the pre-started PostgreSQL test database (skips with the reason when it is not there).
* `settings`: a Settings object with a private SQD_HOME under tmp_path, pointing at the chosen Redis.
* `moto_s3`: a real S3 API (moto's server mode) on loopback, for the session; one bucket per test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from s3_server import MotoServer

from sqd.bus import Bus, drop_prefix
from sqd.embedded_redis import EmbeddedRedis
from sqd.settings import BusSettings, Settings

EXTERNAL_REDIS = os.environ.get("SQD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("SQD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
ARTIFACT_DIR = Path(os.environ.get("SQD_TEST_ARTIFACTS", Path(__file__).resolve().parent.parent / "test-artifacts"))


@pytest.fixture(scope="session")
def embedded_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("valkey"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def external_redis_url() -> str:
    try:
        redis.Redis.from_url(EXTERNAL_REDIS, socket_timeout=1).ping()
    except redis.RedisError as exc:
        pytest.fail(f"the pre-started Redis at {EXTERNAL_REDIS} does not answer ({exc}); start it with "
                    "`redis-server --daemonize yes --port 6379` or set SQD_TEST_REDIS_URL")
    return EXTERNAL_REDIS


@pytest.fixture(params=["external", "embedded"])
def redis_url(request: pytest.FixtureRequest) -> str:
    if request.param == "external":
        return str(request.getfixturevalue("external_redis_url"))
    return str(request.getfixturevalue("embedded_redis").url)


@pytest.fixture
def stream_prefix(redis_url: str) -> Iterator[str]:
    prefix = f"test-{uuid.uuid4().hex[:10]}"
    yield prefix
    drop_prefix(redis_url, prefix)


@pytest.fixture
def settings(tmp_path: Path, redis_url: str, stream_prefix: str) -> Settings:
    settings = Settings(home=tmp_path / "home", redis_url=redis_url,
                        bus=BusSettings(prefix=stream_prefix, block_ms=100, min_idle_ms=500))
    # the CPU Monitor's worker thread is off by default: the in-process tests run its path (test_probe_worker compares
    # it with the default's, row for row)
    settings.trainer.monitor_thread = True
    return settings


@pytest.fixture
def bus(settings: Settings) -> Iterator[Bus]:
    b = Bus.connect(settings)
    yield b
    b.close()


@pytest.fixture(scope="session")
def pg_url() -> str:
    import sqlalchemy

    try:
        engine = sqlalchemy.create_engine(POSTGRES_URL)
        with engine.connect():
            pass
        engine.dispose()
    except Exception as exc:
        pytest.skip(f"PostgreSQL test database {POSTGRES_URL} unavailable: {exc}")
    return POSTGRES_URL


@pytest.fixture(scope="session")
def artifact_dir() -> Path:
    """Where tests save screenshots and other artifacts a person may want to look at."""
    ARTIFACT_DIR.mkdir(parents=True, exist_ok=True)
    return ARTIFACT_DIR


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `cuda` need a CUDA GPU; without one they skip and say so (torch is imported only if any is
    collected, so server-only runs stay light)."""
    marked = [item for item in items if item.get_closest_marker("cuda")]
    if not marked:
        return
    import torch

    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU (torch.cuda.is_available() is False); run `pytest -m cuda` "
                                   "on a GPU machine")
    for item in marked:
        item.add_marker(skip)

@pytest.fixture(scope="session")
def moto_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    """moto's S3 server on a free loopback port, for the session; `moto_s3.new_bucket()` per test."""
    server = MotoServer(tmp_path_factory.mktemp("moto") / "moto.log")
    server.start()
    yield server
    server.stop()

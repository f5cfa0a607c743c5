from pathlib import Path

from sqd.settings import Settings


def test_env_and_nested_env(monkeypatch, tmp_path):
    monkeypatch.setenv("SQD_HOME", str(tmp_path))
    monkeypatch.setenv("SQD_WORKER__SAMPLES", "500")
    monkeypatch.setenv("SQD_DATABASE_URL", "postgres://u@h/db")
    s = Settings()
    assert s.home == tmp_path and s.worker.samples == 500
    assert s.resolved_database_url == "postgresql+psycopg://u@h/db"


def test_embedded_defaults_live_under_home(tmp_path):
    s = Settings(home=tmp_path)
    assert s.uses_embedded_redis and s.resolved_redis_url == f"unix://{tmp_path}/valkey/valkey.sock"
    assert s.resolved_database_url == f"sqlite:///{tmp_path}/sqd.db"
    assert Path(s.resolved_artifacts_url) == tmp_path / "artifacts"

"""The one settings object: every `SQD_*` variable (and `.env`) is read here and nowhere else.

Nested sections use `__` in the variable name: `SQD_WORKER__SAMPLES=500`.
Unset URLs mean "the embedded default under SQD_HOME" and are resolved by the `*_url` properties.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_PORT = 8765


class BusSettings(BaseModel):
    """Redis Streams behaviour shared by every role."""

    prefix: str = "sqd"
    maxlen: int = Field(1_000_000, ge=1000, description="approximate cap per stream (XADD MAXLEN ~)")
    block_ms: int = Field(1000, ge=1)
    batch: int = Field(256, ge=1, description="messages per XREADGROUP")
    min_idle_ms: int = Field(30_000, ge=100, description="pending this long → reclaimed from a dead consumer")
    max_deliveries: int = Field(5, ge=1, description="failures before a message goes to the dead-letter stream")


class ServerSettings(BaseModel):
    host: str = "127.0.0.1"
    port: int = Field(DEFAULT_PORT, ge=1, le=65535)
    open_reads_on_localhost: bool = True
    cors_origins: list[str] = []
    max_request_bytes: int = 16 * 1024 * 1024
    ingest_in_process: bool = True


class WorkerSettings(BaseModel):
    samples: int = Field(2000, ge=10, description="generated images per evaluation (diversity)")
    quality_samples: int = Field(1000, ge=10)
    fid_samples: int = Field(10_000, ge=10)
    batch_size: int = Field(250, ge=1)
    transient_retries: int = Field(20, ge=1, description="tries of a checkpoint whose artifact store is unreachable "
                                                          "before it is reported failed and dead-lettered")
    models_dir: Path | None = None  # default: $SQD_HOME/models
    face_embedder: Literal["arcface", "dlib"] = Field(
        "arcface", description="faces profile: ArcFace ONNX (seed 003) or dlib's 128-d ResNet (ships its weights)")
    arcface_model: Path | None = Field(
        None, description="ArcFace ONNX file; default: <models_dir>/arcface/w600k_r50.onnx or the buffalo_l layout")
    inception_weights: Path | None = Field(
        None, description="FID Inception-v3 weights; default: <models_dir>/pt_inception-2015-12-05-6726825d.pth")
    normalize_embeddings: bool = Field(
        False, description="L2-normalise face embeddings and centroids before the nearest-identity search "
                           "(off: Euclidean on raw embeddings, as seed 003)")


class TrainerSettings(BaseModel):
    runs_per_gpu: int = Field(1, ge=1)
    cancel_grace_s: float = Field(10.0, ge=0)
    spool_max_events: int = Field(10_000, ge=1, description="events kept in memory before spooling to disk")
    agent_id: str | None = Field(None, description="set by the trainer agent for the runs it starts")
    cpu_runs: int = Field(2, ge=1, description="runs an agent without a GPU trains at once")


class AlertSettings(BaseModel):
    webhook_attempts: int = Field(8, ge=1, description="deliveries tried before a webhook is marked failed")
    webhook_backoff_s: float = Field(2.0, gt=0, description="first retry delay; doubles after each failure")
    webhook_backoff_max_s: float = Field(600.0, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    stalled_check_s: float = Field(30.0, gt=0, description="how often runs are checked for stalled rules")


class SweepSettings(BaseModel):
    max_concurrent: int = Field(8, ge=1, description="runs of one sweep handed to the agents at once (default)")
    confirm_above: int = Field(200, ge=1, description="a sweep of more runs needs an explicit confirmation")
    max_runs: int = Field(5000, ge=1, description="the most runs one sweep may make")
    reconcile_s: float = Field(10.0, gt=0, description="how often the server re-checks every sweep's queue")


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="SQD_", env_file=".env", env_nested_delimiter="__", extra="ignore"
    )

    home: Path = Path("~/.sqd")
    redis_url: str | None = None
    database_url: str | None = None
    artifacts_url: str | None = None
    token: SecretStr | None = None
    url: str | None = None  # SQD_URL: where clients (sqd.client, `sqd runs ls`) reach the server
    bus: BusSettings = BusSettings()
    server: ServerSettings = ServerSettings()
    worker: WorkerSettings = WorkerSettings()
    trainer: TrainerSettings = TrainerSettings()
    alerts: AlertSettings = AlertSettings()
    sweeps: SweepSettings = SweepSettings()

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, v: Path) -> Path:
        return v.expanduser().resolve()

    @field_validator("database_url", mode="after")
    @classmethod
    def _driver_url(cls, v: str | None) -> str | None:
        # Heroku-style URLs name no driver; SQLAlchemy needs one, and we ship psycopg 3.
        if v is None:
            return v
        for bare in ("postgres://", "postgresql://"):
            if v.startswith(bare):
                return "postgresql+psycopg://" + v[len(bare):]
        return v

    @property
    def embedded_redis_socket(self) -> Path:
        return self.home / "valkey" / "valkey.sock"

    @property
    def resolved_redis_url(self) -> str:
        return self.redis_url or f"unix://{self.embedded_redis_socket}"

    @property
    def resolved_url(self) -> str:
        return (self.url or f"http://127.0.0.1:{self.server.port}").rstrip("/")

    @property
    def resolved_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.home / 'sqd.db'}"

    @property
    def resolved_artifacts_url(self) -> str:
        return self.artifacts_url or str(self.home / "artifacts")

    @property
    def models_dir(self) -> Path:
        return (self.worker.models_dir or self.home / "models").expanduser()

    @property
    def uses_embedded_redis(self) -> bool:
        return self.redis_url is None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return Settings()

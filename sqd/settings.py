"""The one settings object: every `SQD_*` variable (and `.env`) is read here and nowhere else.

Nested sections use `__` in the variable name: `SQD_WORKER__SAMPLES=500`.
Unset URLs mean "the embedded default under SQD_HOME" and are resolved by the `*_url` properties.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal

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
    pack_after_s: float = Field(3600.0, ge=0, description="a run finished this long ago has its small series packed "
                                "(server/store/packs.py); its late evaluations have arrived by then")
    pack_check_s: float = Field(60.0, gt=0, description="how often the server looks for runs to pack")


class WorkerSettings(BaseModel):
    samples: int = Field(2000, ge=10, description="generated images per evaluation (diversity)")
    quality_samples: int = Field(1000, ge=10)
    fid_samples: int = Field(10_000, ge=10)
    batch_size: int = Field(250, ge=1, description="images per batch on a CPU worker")
    gpu_batch_size: int = Field(500, ge=1, description="images per batch on a CUDA worker (generator, MTCNN, ArcFace, "
                                                       "Inception); lower it on a GPU with little memory")
    transient_retries: int = Field(20, ge=1, description="tries of a checkpoint whose artifact store is unreachable "
                                                          "before it is reported failed and dead-lettered")
    backfill: bool = Field(
        True, description="evaluate the checkpoints skipped under backpressure once no new checkpoint waits, so "
                          "every checkpoint gets its point in the end (the turning-point detector replays the run, "
                          "and each point rule the key, to take these late points in)")
    models_dir: Path | None = None  # default: $SQD_HOME/models
    face_embedder: Literal["arcface", "dlib"] = Field(
        "arcface", description="faces profile: ArcFace ONNX (seed 003) or dlib's 128-d ResNet (ships its weights)")
    arcface_model: Path | None = Field(
        None, description="ArcFace ONNX file; default: <models_dir>/arcface/w600k_r50.onnx or the buffalo_l layout")
    inception_weights: Path | None = Field(
        None, description="FID Inception-v3 weights; default: <models_dir>/pt_inception-2015-12-05-6726825d.pth")
    arcface_runtime: Literal["auto", "torch", "onnxruntime"] = Field(
        "auto", description="ArcFace runs as a PyTorch IResNet built from the ONNX file's weights ('torch'), or on "
                            "onnxruntime; 'auto': torch on a CUDA worker, onnxruntime on the CPU")
    tf32: bool = Field(
        True, description="CUDA: let cuDNN use TF32 tensor cores for the evaluation networks' convolutions (torch's "
                          "default); false = strict IEEE float32, as StyleGAN3's metric code runs")
    normalize_embeddings: bool = Field(
        False, description="L2-normalise face embeddings and centroids before the nearest-identity search "
                           "(off: Euclidean on raw embeddings, as seed 003)")

    def batch_for(self, device_type: str) -> int:
        """Images per batch on a device of this type ("cuda", "cpu", …)."""
        return self.gpu_batch_size if device_type == "cuda" else self.batch_size


class TrainerSettings(BaseModel):
    runs_per_gpu: int = Field(1, ge=1)
    cancel_grace_s: float = Field(10.0, ge=0)
    spool_max_events: int = Field(10_000, ge=1, description="events kept in memory before spooling to disk")
    agent_id: str | None = Field(None, description="set by the trainer agent for the runs it starts")
    cpu_runs: int = Field(2, ge=1, description="runs an agent without a GPU trains at once")
    system_metrics_s: float = Field(5.0, ge=0, description="the Monitor samples sys/… metrics this often (0: never)")
    cuda_graphs: bool = Field(True, description="the Monitor replays its per-step GPU work as a CUDA graph")
    monitor_thread: bool = Field(False, description="on a CPU, the Monitor measures each step in a background thread "
                                 "(less time in the training thread, more process CPU, no faster training measured)")


class AlertSettings(BaseModel):
    webhook_attempts: int = Field(8, ge=1, description="deliveries tried before a webhook is marked failed")
    webhook_backoff_s: float = Field(2.0, gt=0, description="first retry delay; doubles after each failure")
    webhook_backoff_max_s: float = Field(600.0, gt=0)
    webhook_timeout_s: float = Field(10.0, gt=0)
    stalled_check_s: float = Field(30.0, gt=0, description="how often runs are checked for stalled rules")
    eval_wait_s: float = Field(1800.0, ge=0, description="how long a run's later evaluations wait, for the "
                               "detector and the rules, for an earlier checkpoint's evaluation (workers finish "
                               "out of order); 0: never wait")


class ArtifactSettings(BaseModel):
    """How to reach an object store named by SQD_ARTIFACTS_URL (`s3://bucket/prefix`). Unset fields fall back to
    botocore's own chain (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and
    ~/.aws, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL, AWS_DEFAULT_REGION, instance roles), which botocore reads
    itself; SQD reads only the SQD_ARTIFACTS__* variables, here."""

    endpoint_url: str | None = Field(None, description="S3 API endpoint, e.g. http://minio:9000 (default: AWS)")
    region: str | None = Field(None, description="S3 region name (default: botocore's)")
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    options: dict[str, Any] = Field({}, description="further fsspec storage options as JSON, passed to the "
                                                    "filesystem as they are (any protocol)")

    @field_validator("endpoint_url", "region", "access_key_id", "secret_access_key", mode="before")
    @classmethod
    def _empty_is_unset(cls, v: object) -> object:
        # docker compose and .env files write unset values as empty strings
        return None if v == "" else v

    def env(self) -> dict[str, str]:
        """The SQD_ARTIFACTS__* variables that give a child process these settings (only those set)."""
        values = {"ENDPOINT_URL": self.endpoint_url, "REGION": self.region, "ACCESS_KEY_ID": self.access_key_id,
                  "SECRET_ACCESS_KEY": self.secret_access_key.get_secret_value() if self.secret_access_key else None,
                  "OPTIONS": json.dumps(self.options) if self.options else None}
        return {f"SQD_ARTIFACTS__{k}": v for k, v in values.items() if v is not None}


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
    artifacts: ArtifactSettings = ArtifactSettings()
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

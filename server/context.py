"""What one server process holds for its lifetime, created and closed in the app's lifespan (or by
`sqd server --ingest-only`). Routes reach it through api/deps.py; the ingest consumer and
`sqd.server.alerts.engine.after_ingest(ctx, run_ids)` receive it directly."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from sqd.artifacts import ArtifactStore
from sqd.bus import Bus
from sqd.server.observability import ServerMetrics
from sqd.server.store.db import make_engine, session_factory
from sqd.settings import Settings

if TYPE_CHECKING:
    import redis.asyncio as aioredis


@dataclass
class IngestStatus:
    """Liveness of the in-process consumer, read by /health and /metrics."""

    running: bool = False
    last_batch_at: float | None = None
    last_error: str | None = None
    db_ok: bool = True


@dataclass
class ServerContext:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    bus: Bus  # synchronous client: publishing control requests, the ingest consumer, live fan-out
    artifacts: ArtifactStore
    aredis: aioredis.Redis | None = None  # asyncio client for SSE reads, opened in the lifespan
    ingest: IngestStatus = field(default_factory=IngestStatus)
    metrics: ServerMetrics = field(default_factory=ServerMetrics)
    stop: threading.Event = field(default_factory=threading.Event)

    @property
    def live_key(self) -> str:
        return self.bus.key("live")

    @classmethod
    def open(cls, settings: Settings) -> ServerContext:
        engine = make_engine(settings.resolved_database_url)
        ctx = cls(settings=settings, engine=engine, sessions=session_factory(engine), bus=Bus.connect(settings),
                  artifacts=ArtifactStore.from_settings(settings))
        ctx.metrics.attach(ctx)
        return ctx

    def close(self) -> None:
        self.stop.set()
        self.bus.close()
        self.engine.dispose()

"""Builds the FastAPI app: lifespan (database, bus clients, ingest consumer), routers, static dashboard."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from importlib.resources import files
from pathlib import Path

import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

import sqd
from sqd.server.alerts import engine
from sqd.server.api import api_router, ops
from sqd.server.context import ServerContext
from sqd.server.errors import install_error_handlers
from sqd.server.ingest.consumer import start_consumer_thread
from sqd.server.limits import BodySizeLimit
from sqd.server.packer import Packer
from sqd.server.store import migrate
from sqd.server.sweeps.queue import Reconciler
from sqd.settings import Settings

log = logging.getLogger(__name__)


def plotly_js() -> Path:
    import plotly

    return Path(plotly.__file__).parent / "package_data" / "plotly.min.js"


def create_app(settings: Settings) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        ctx = ServerContext.open(settings)
        before, after = migrate.upgrade(ctx.engine)
        if before != after:
            log.info("database %s upgraded from %s to %s", ctx.engine.url.render_as_string(), before, after)
        ctx.aredis = aioredis.Redis.from_url(settings.resolved_redis_url, socket_connect_timeout=5)
        app.state.ctx = ctx
        consumer = start_consumer_thread(ctx) if settings.server.ingest_in_process else None
        alerts = engine.start(ctx)  # webhook deliveries and the stalled-run timer
        sweeps = Reconciler(ctx).start()  # releases sweep runs whose release was missed (restart, bus outage)
        packer = Packer(ctx).start()  # finished runs' small series into one blob per run
        try:
            yield
        finally:
            ctx.stop.set()
            if consumer is not None:
                await asyncio.to_thread(consumer.join, 10.0)  # finishes the batch in hand, acks it
            await asyncio.to_thread(alerts.join, 10.0)
            await asyncio.to_thread(sweeps.join, 10.0)
            await asyncio.to_thread(packer.join, 10.0)
            await ctx.aredis.aclose()
            ctx.close()

    app = FastAPI(title="SQD", version=sqd.__version__, lifespan=lifespan,
                  description="Stability / Quality / Diversity monitoring of GAN training. NaN and ±inf travel as "
                              'the strings "NaN", "Infinity", "-Infinity".')
    app.state.settings = settings
    install_error_handlers(app)
    app.add_middleware(BodySizeLimit, max_bytes=settings.server.max_request_bytes)
    if settings.server.cors_origins:  # closed unless configured
        app.add_middleware(CORSMiddleware, allow_origins=settings.server.cors_origins,
                           allow_methods=["GET", "POST", "PATCH", "DELETE"],
                           allow_headers=["Authorization", "Content-Type", "Last-Event-ID"])
    app.include_router(api_router, prefix="/api/v1")
    app.include_router(ops.router, include_in_schema=False)  # Prometheus' conventional /metrics as well

    @app.get("/static/plotly.min.js", include_in_schema=False)
    def plotly() -> FileResponse:
        return FileResponse(plotly_js(), media_type="text/javascript",
                            headers={"Cache-Control": "public, max-age=86400"})

    app.mount("/", StaticFiles(directory=str(files("sqd.web")), html=True), name="web")
    return app

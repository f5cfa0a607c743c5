"""Liveness of what the server depends on: database, bus, the ingest consumer, evaluation workers."""

from __future__ import annotations

import time
from typing import Any

import redis
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

import sqd
from sqd.bus import BACKFILL, CHECKPOINTS, INGEST
from sqd.server.context import ServerContext
from sqd.server.schemas import Health

INGEST_GROUP = "server"
STALE_S = 30.0


def _database(ctx: ServerContext) -> dict[str, Any]:
    started = time.perf_counter()
    try:
        with ctx.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return {"ok": False, "dialect": ctx.engine.dialect.name, "error": str(exc.__cause__ or exc)[:300]}
    latency_ms = round(1000 * (time.perf_counter() - started), 2)
    return {"ok": True, "dialect": ctx.engine.dialect.name, "latency_ms": latency_ms}


def group_info(ctx: ServerContext, stream: str) -> list[dict[str, Any]]:
    """XINFO GROUPS of a stream, decoded; empty when the stream does not exist yet."""
    try:
        groups = ctx.bus.client.xinfo_groups(ctx.bus.key(stream))
    except redis.ResponseError:
        return []
    return [{(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in g.items()} for g in groups]


def _consumers(ctx: ServerContext, stream: str, group: str) -> list[dict[str, Any]]:
    try:
        rows = ctx.bus.client.xinfo_consumers(ctx.bus.key(stream), group)
    except redis.ResponseError:
        return []
    return [{"name": r["name"].decode() if isinstance(r["name"], bytes) else r["name"], "idle_ms": r["idle"],
             "pending": r["pending"]} for r in rows]


def _bus(ctx: ServerContext) -> dict[str, Any]:
    if not ctx.bus.ping():
        return {"ok": False, "error": "the bus does not answer PING"}
    ingest = next((g for g in group_info(ctx, INGEST) if g["name"] == INGEST_GROUP), None)
    return {"ok": True, "ingest_lag": None if ingest is None else ingest.get("lag"),
            "ingest_pending": None if ingest is None else ingest.get("pending")}


def _ingest(ctx: ServerContext) -> dict[str, Any]:
    status = ctx.ingest
    info: dict[str, Any] = {"in_process": ctx.settings.server.ingest_in_process, "running": status.running,
                            "database_ok": status.db_ok, "last_error": status.last_error,
                            "last_batch_age_s": None if status.last_batch_at is None
                            else round(time.time() - status.last_batch_at, 3)}
    info["ok"] = (status.running and status.db_ok) if ctx.settings.server.ingest_in_process else True
    return info


def _workers(ctx: ServerContext) -> dict[str, Any]:
    """Evaluation workers are alive when some consumer of `checkpoints` was active recently."""
    consumers = [c for g in group_info(ctx, CHECKPOINTS) for c in _consumers(ctx, CHECKPOINTS, g["name"])]
    alive = [c for c in consumers if c["idle_ms"] < STALE_S * 1000]
    return {"evaluation_consumers": len(consumers), "active": len(alive), "backfill_waiting": _backfill_waiting(ctx)}


def _backfill_waiting(ctx: ServerContext) -> int | None:
    """Skipped checkpoints not yet evaluated after all (read or not); None when the bus cannot tell (no lag)."""
    groups = group_info(ctx, BACKFILL)
    if not groups:  # no worker has read it yet
        return ctx.bus.length(BACKFILL)
    if any(g.get("lag") is None for g in groups):
        return None
    return sum(int(g["lag"]) + int(g["pending"]) for g in groups)


def check_health(ctx: ServerContext) -> Health:
    database, bus, ingest = _database(ctx), _bus(ctx), _ingest(ctx)
    workers = _workers(ctx) if bus["ok"] else {"evaluation_consumers": None, "active": None, "backfill_waiting": None}
    ok = database["ok"] and bus["ok"] and ingest["ok"]
    return Health(status="ok" if ok else "degraded", version=sqd.__version__, database=database, bus=bus,
                  ingest=ingest, workers=workers)

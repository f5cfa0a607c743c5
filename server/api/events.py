"""/events: Server-Sent Events of committed changes (points, evaluation, alert, run), per-run filter,
resumable with Last-Event-ID. Fed by the Redis live stream, so it works behind several replicas."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Annotated

import redis.asyncio as aioredis
from fastapi import APIRouter, Header, Query
from fastapi.responses import StreamingResponse

from sqd.server import live
from sqd.server.api.deps import CtxDep, ReadDep
from sqd.server.sweeps import store as sweeps_store

log = logging.getLogger(__name__)
router = APIRouter(tags=["events"])
RETRY_MS = 1000


@router.get("/events", dependencies=[ReadDep], response_class=StreamingResponse,
            responses={200: {"content": {"text/event-stream": {}}}})
async def events(ctx: CtxDep,
                 run_id: Annotated[list[str] | None, Query(max_length=100, description="repeatable or a,b")] = None,
                 last_event_id: Annotated[str | None, Header(max_length=64)] = None,
                 since: Annotated[str | None, Query(max_length=64, description="like Last-Event-ID")] = None,
                 sweep: Annotated[str | None, Query(max_length=64, description="only this sweep's runs")] = None,
                 ) -> StreamingResponse:
    """`event:` points | evaluation | alert | run (and `reset` when a resume point is too old), `id:` the live-stream
    id, `data:` JSON. Keep-alive comments every 15 s."""
    runs = {r for value in run_id for r in value.split(",") if r} if run_id else None
    if sweep is not None:  # a sweep makes all its runs when it is created, so the set is fixed
        with ctx.sessions() as session:
            runs = (runs or set()) | set(sweeps_store.run_ids(session, sweep))
    assert ctx.aredis is not None
    start = await live.start_point(ctx.aredis, ctx.live_key, live.valid_event_id(last_event_id or since))

    async def stream() -> AsyncIterator[str]:
        yield f"retry: {RETRY_MS}\n\n"
        try:
            async for message in live.follow(ctx.aredis, ctx.live_key, start, runs):  # type: ignore[arg-type]
                yield ": keep-alive\n\n" if message is None else message
        except (aioredis.TimeoutError, aioredis.ConnectionError) as exc:
            # A browser closing the page cancels the blocked read, and a bus restart breaks it: either way the
            # stream ends and EventSource reconnects with Last-Event-ID, so nothing is lost and nothing is wrong.
            log.info("live stream ended: %s", exc)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})

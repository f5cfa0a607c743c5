"""Live events through Redis, so every server replica sees every change: ingest appends each committed change to
the capped stream `<prefix>:live`; each SSE connection reads that stream (XREAD BLOCK) from its own position,
which is the SSE `id:` — so a browser that reconnects with Last-Event-ID resumes where it left off.

Entry fields: `event` (points | evaluation | alert | run; SSE also sends `reset` when a resume point was
trimmed away), `run_id`, `data` (JSON, NaN/±inf as strings).
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis

from sqd.bus import Bus
from sqd.server.store.db import jsonable

LIVE_MAXLEN = 20_000  # entries kept for resuming; a client further behind re-reads over REST
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")


@dataclass(frozen=True)
class LiveEvent:
    event: str
    run_id: str
    data: dict[str, Any]
    json_ready: bool = False  # non-finite floats already replaced (big point batches do it in numpy)


def publish(bus: Bus, stream_key: str, events: Sequence[LiveEvent]) -> None:
    if not events:
        return
    pipe = bus.client.pipeline(transaction=False)
    for e in events:
        data = e.data if e.json_ready else jsonable(e.data)
        try:
            body = orjson.dumps(data)
        except TypeError:  # orjson refuses integers beyond 64 bits, which a run's config may hold
            body = json.dumps(data, allow_nan=False).encode()
        pipe.xadd(stream_key, {"event": e.event, "run_id": e.run_id, "data": body}, maxlen=LIVE_MAXLEN,
                  approximate=True)
    pipe.execute()


def valid_event_id(value: str | None) -> str | None:
    """A Last-Event-ID we can resume from (a stream id), or None to start with new events only."""
    return value if value is not None and _STREAM_ID.match(value) else None


def _id_tuple(stream_id: str) -> tuple[int, int]:
    ms, seq = stream_id.split("-")
    return int(ms), int(seq)


async def _max_deleted_id(client: aioredis.Redis, stream_key: str) -> tuple[int, int]:
    """The newest id MAXLEN trimmed away (Redis >= 7 / Valkey report it), else (0, 0)."""
    try:
        info: Any = await client.xinfo_stream(stream_key)
    except aioredis.ResponseError:  # no such stream yet
        return (0, 0)
    raw = info.get("max-deleted-entry-id", b"0-0")
    return _id_tuple(raw.decode() if isinstance(raw, bytes) else str(raw))


def sse_message(stream_id: str, event: str, data: str) -> str:
    return f"id: {stream_id}\nevent: {event}\ndata: {data}\n\n"


@dataclass(frozen=True)
class StartPoint:
    stream_id: str
    trimmed: bool  # entries after a resume point were trimmed away: the client must reload over REST


async def start_point(client: aioredis.Redis, stream_key: str, last_id: str | None) -> StartPoint:
    """Where a connection starts reading: after `last_id`, or after the newest entry when it is None. Taken
    before the response opens, so a client holding the response misses nothing committed after that."""
    if last_id is None:
        # "$" would lose what arrives between two reads; start from the current last entry instead
        newest: Any = await client.xrevrange(stream_key, count=1)
        return StartPoint(newest[0][0].decode() if newest else "0-0", trimmed=False)
    return StartPoint(last_id, trimmed=_id_tuple(last_id) < await _max_deleted_id(client, stream_key))


async def follow(client: aioredis.Redis, stream_key: str, start: StartPoint, run_ids: set[str] | None,
                 block_ms: int = 15_000) -> AsyncIterator[str | None]:
    """SSE messages after `start`, filtered by run; yields None after an idle block so the caller can send a
    keep-alive comment."""
    last_id = start.stream_id
    if start.trimmed:
        yield sse_message(last_id, "reset", json.dumps({"reason": "Last-Event-ID is older than the live buffer"}))
    while True:
        try:
            resp: Any = await client.xread({stream_key: last_id}, count=500, block=block_ms)
        except aioredis.ResponseError as exc:
            if "UNBLOCKED" not in str(exc):
                raise
            resp = None  # the stream was deleted under us; the next XADD recreates it

        if not resp:
            yield None
            continue
        for _stream, entries in resp:
            for entry_id, fields in entries:
                last_id = entry_id.decode()
                run_id = fields.get(b"run_id", b"").decode()
                if run_ids is None or run_id in run_ids:
                    yield sse_message(last_id, fields[b"event"].decode(), fields[b"data"].decode())

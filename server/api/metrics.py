"""/runs/{id}/metrics (batch ingest for scripts, downsampled query), /runs/{id}/keys, /runs/{id}/export."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Coroutine
from typing import Annotated, Any, Literal

import orjson
from fastapi import APIRouter, HTTPException, Query, Request, Response, status
from fastapi.responses import StreamingResponse
from fastapi.routing import APIRoute

from sqd.protocol import MetricBatch, wall_ms
from sqd.server.api.deps import CtxDep, ReadDep, RunDep, SessionDep, TokenDep
from sqd.server.ingest.consumer import IngestHandler
from sqd.server.schemas import IngestAck, MetricsIn, MetricsPublic, SeriesKey, SeriesKeysPublic, SeriesPublic
from sqd.server.store import export, series_query


class _OrjsonRequest(Request):
    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            try:
                self._json = orjson.loads(body)
            except orjson.JSONDecodeError:  # NaN tokens, lone surrogates: parsed (or refused) as before
                self._json = json.loads(body)
        return self._json


class OrjsonRoute(APIRoute):
    """Request bodies parsed by orjson (several times faster than json for long number lists), falling back to
    json for what orjson refuses, so every input is accepted or refused exactly as before."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def parse_with_orjson(request: Request) -> Response:
            return await handler(_OrjsonRequest(request.scope, request.receive))

        return parse_with_orjson


router = APIRouter(prefix="/runs/{run_id}", tags=["metrics"], route_class=OrjsonRoute)

KeysQuery = Annotated[str | None, Query(max_length=10_000, description="comma-separated keys (default: all)")]


def _keys(keys: str | None) -> list[str] | None:
    return None if keys is None else [k for k in (p.strip() for p in keys.split(",")) if k]


def _batch(run_id: str, body: MetricsIn) -> MetricBatch:
    """The body as one MetricBatch; already validated, so built without validating every value again."""
    now = wall_ms(time.time())
    if body.points is not None:
        return MetricBatch.from_points(run_id, ((p.key, p.step, p.value, p.epoch, p.wall_time or now)
                                                for p in body.points))
    keys: list[str] = []
    key_index: list[int] = []
    step: list[int] = []
    value: list[float] = []
    epoch: list[int | None] = []
    wall: list[float] = []
    for i, (key, s) in enumerate((body.series or {}).items()):
        n = len(s.step)
        keys.append(key)
        key_index += [i] * n
        step += s.step
        value += s.value
        epoch += s.epoch if s.epoch is not None else [None] * n
        wall += s.wall_time if s.wall_time is not None else [now] * n
    return MetricBatch.model_construct(run_id=run_id, keys=keys, key_index=key_index, step=step, value=value,
                                       epoch=epoch, wall_time=wall)


@router.post("/metrics", response_model=IngestAck, dependencies=[TokenDep])
def ingest_metrics(ctx: CtxDep, run: RunDep, body: MetricsIn) -> IngestAck:
    """Store points synchronously (same path as the bus: idempotent on (key, step), fanned out live). The body is
    `{"points": [{key, step, value, epoch?, wall_time?}, ...]}` or, faster, columns per key:
    `{"series": {key: {"step": [...], "value": [...], "epoch"?: [...], "wall_time"?: [...]}}}`."""
    result = IngestHandler(ctx).apply([_batch(run.id, body)])
    return IngestAck(received=len(body), stored=result.points)


@router.get("/metrics", response_model=MetricsPublic, dependencies=[ReadDep])
def get_metrics(session: SessionDep, run: RunDep, keys: KeysQuery = None,
                max_points: Annotated[int, Query(ge=1, le=100_000, description="buckets per series at most")] = 1000,
                start: Annotated[int | None, Query(ge=0, lt=2**62, description="first step of the window")] = None,
                end: Annotated[int | None, Query(ge=0, lt=2**62, description="last step of the window")] = None,
                ) -> MetricsPublic:
    """Per series at most `max_points` buckets (power-of-two widths), each with its last value, min and max, so a
    one-step spike survives any `max_points`; a window of at most `max_points` steps is at full resolution."""
    if start is not None and end is not None and end < start:
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT,
                            [{"loc": ["query", "end"], "msg": f"end ({end}) is before start ({start})"}])
    data = series_query.query_series(session, run.id, _keys(keys), max_points, start, end)
    return MetricsPublic(run_id=run.id, series={k: SeriesPublic(**vars(v)) for k, v in data.items()})


@router.get("/keys", response_model=SeriesKeysPublic, dependencies=[ReadDep])
def list_keys(session: SessionDep, run: RunDep) -> SeriesKeysPublic:
    rows = [SeriesKey.model_validate(r) for r in series_query.list_keys(session, run.id)]
    return SeriesKeysPublic(data=rows, count=len(rows))


@router.get("/export", dependencies=[ReadDep], response_class=StreamingResponse,
            responses={200: {"content": {"text/csv": {}, "application/json": {}}}})
def export_run(ctx: CtxDep, run: RunDep, format: Literal["csv", "json"] = "csv",
               keys: KeysQuery = None) -> StreamingResponse:
    """Every point at full resolution: CSV `key,step,value,epoch,wall_time` or JSON columns per key."""
    chunks = export.csv_chunks if format == "csv" else export.json_chunks
    media = "text/csv" if format == "csv" else "application/json"
    return StreamingResponse(chunks(ctx.sessions, run.id, _keys(keys)), media_type=media, headers={
        "Content-Disposition": f'attachment; filename="run-{run.id}.{format}"'})

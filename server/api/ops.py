"""Prometheus metrics: ingest points/s, stream lag, evaluation latency, runs by status."""

from __future__ import annotations

from fastapi import APIRouter, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sqd.server.api.deps import CtxDep, ReadDep

router = APIRouter(tags=["operations"])


@router.get("/metrics", response_class=Response, dependencies=[ReadDep],
            responses={200: {"content": {CONTENT_TYPE_LATEST: {}}}})
def prometheus(ctx: CtxDep) -> Response:
    return Response(generate_latest(ctx.metrics.registry), media_type=CONTENT_TYPE_LATEST)

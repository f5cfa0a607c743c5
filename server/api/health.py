"""/health: bus, database and ingest-worker liveness."""

from __future__ import annotations

from fastapi import APIRouter

from sqd.server.api.deps import CtxDep
from sqd.server.health import check_health
from sqd.server.schemas import Health

router = APIRouter(tags=["operations"])


@router.get("/health", response_model=Health)
def health(ctx: CtxDep) -> Health:
    """Always 200 while the process serves; `status` is "degraded" when the database, the bus or ingest is down."""
    return check_health(ctx)

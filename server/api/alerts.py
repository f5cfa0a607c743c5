"""/alerts: alerts raised by the turning-point detector and the rules, newest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from sqd.server.api.deps import ReadDep, SessionDep
from sqd.server.schemas import AlertsPublic
from sqd.server.store import records_store

router = APIRouter(tags=["alerts"])


@router.get("/alerts", response_model=AlertsPublic, dependencies=[ReadDep])
def list_alerts(session: SessionDep,
                run_id: Annotated[str | None, Query(min_length=1, max_length=64)] = None,
                limit: Annotated[int, Query(ge=1, le=1000)] = 100,
                offset: Annotated[int, Query(ge=0, le=10**9)] = 0) -> AlertsPublic:
    return records_store.list_alerts(session, run_id, limit, offset)

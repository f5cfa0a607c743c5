"""A run's lifecycle from REST: edit (PATCH), archive, soft delete / restore, erase for good, gc. Each change is
committed, then told to live clients as a `run` event (an erased run's last event carries `deleted_at`, so pages
drop it).

A launched run that its agent still owns (queued / running / cancelling) cannot be ended, deleted or erased here:
409, cancel it first. External runs (a script's, a Monitor's, an import) have no owner, so anything goes; if
events for an erased run arrive later, ingest creates a bare run of that id again (as for any unknown run).
"""

from __future__ import annotations

import time

from fastapi import HTTPException, status
from sqlalchemy.orm import Session

from sqd.server.context import ServerContext
from sqd.server.launch import notify
from sqd.server.schemas import GcResult, RunErased, RunPublic, RunUpdate
from sqd.server.store import run_erase, runs_store
from sqd.server.store.runs_store import LifecycleConflict, live_launched


def _conflict(exc: LifecycleConflict) -> HTTPException:
    return HTTPException(status.HTTP_409_CONFLICT, str(exc))


def update(ctx: ServerContext, session: Session, run: RunPublic, change: RunUpdate) -> RunPublic:
    try:
        updated = runs_store.update_run(session, run.id, change)
    except LifecycleConflict as exc:
        raise _conflict(exc) from exc
    assert updated is not None  # RunDep found it in this session
    session.commit()
    notify(ctx, updated)
    return updated


def set_deleted(ctx: ServerContext, session: Session, run: RunPublic, deleted: bool) -> RunPublic:
    try:
        updated = runs_store.set_deleted(session, run.id, deleted)
    except LifecycleConflict as exc:
        raise _conflict(exc) from exc
    assert updated is not None
    session.commit()
    notify(ctx, updated)
    return updated


def erase(ctx: ServerContext, session: Session, run: RunPublic) -> RunErased:
    if live_launched(run):
        raise HTTPException(status.HTTP_409_CONFLICT, f"run {run.id!r} is {run.status} under its agent; cancel it "
                                                      f"first (POST /api/v1/runs/{run.id}/cancel)")
    session.close()  # the erase runs in a transaction of its own
    erased = run_erase.erase_run(ctx.sessions, ctx.artifacts, run.id)
    if erased is None:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run.id!r} not found")
    notify(ctx, run.model_copy(update={"deleted_at": time.time()}))
    return erased


def gc(ctx: ServerContext, session: Session, older_than_s: float) -> GcResult:
    """Erase every run soft-deleted at least `older_than_s` ago."""
    ids = runs_store.deleted_before(session, time.time() - older_than_s)
    session.close()
    data = [e for e in (run_erase.erase_run(ctx.sessions, ctx.artifacts, i) for i in ids) if e is not None]
    return GcResult(data=data, count=len(data))

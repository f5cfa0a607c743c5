"""Runs: list (filter language, sort, views), create, status changes, the lifecycle edits (PATCH, archive, soft
delete, restore). Returns schemas; rows stay here. Erasing a run for good is run_erase.py.

`list_runs` raises FilterError (from filter_syntax / run_query) for a filter or sort that does not parse or names
an unknown field; the route turns it into a 422.
"""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from sqd.protocol import TERMINAL_STATUSES, new_id
from sqd.server.schemas import RunFilter, RunPublic, RunsPublic, RunUpdate
from sqd.server.store.filter_syntax import parse_filter
from sqd.server.store.models import Run
from sqd.server.store.run_query import compile_filter, parse_sort

VIEWS = {
    "active": (Run.archived_at.is_(None), Run.deleted_at.is_(None)),
    "archived": (Run.archived_at.is_not(None), Run.deleted_at.is_(None)),
    "all": (Run.deleted_at.is_(None),),
    "deleted": (Run.deleted_at.is_not(None),),
}


def list_runs(session: Session, f: RunFilter) -> RunsPublic:
    dialect = session.get_bind().dialect.name
    where = compile_filter(parse_filter(f.filter or ""), dialect)
    order = parse_sort(f.sort or "-created", dialect)
    query = select(Run).where(where, *VIEWS[f.view])
    if f.status:
        query = query.where(Run.status.in_(f.status))
    if f.preset:
        query = query.where(Run.preset == f.preset)
    if f.kind:
        query = query.where(Run.kind == f.kind)
    if f.sweep:
        query = query.where(Run.sweep_id == f.sweep)
    if f.q:
        like = f"%{f.q}%"
        query = query.where(or_(Run.name.ilike(like), Run.id.ilike(like)))
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(*order, Run.created_at.desc(), Run.id).limit(f.limit).offset(f.offset))
    return RunsPublic(data=[RunPublic.model_validate(r) for r in rows], count=count)


def get_run(session: Session, run_id: str) -> RunPublic | None:
    row = session.get(Run, run_id)
    return None if row is None else RunPublic.model_validate(row)


def run_exists(session: Session, run_id: str) -> bool:
    return session.scalar(select(Run.id).where(Run.id == run_id)) is not None


def create_run(session: Session, *, name: str, kind: str, status: str, preset: str | None = None,
               config: dict[str, Any] | None = None, steps: int | None = None, run_id: str | None = None,
               tags: list[str] | None = None, notes: str = "", started_at: float | None = None,
               sweep_id: str | None = None) -> RunPublic:
    run = Run(id=run_id or new_id(), name=name, kind=kind, status=status, preset=preset, config=config or {},
              steps=steps, tags=tags or [], notes=notes, started_at=started_at, sweep_id=sweep_id)
    session.add(run)
    session.flush()
    return RunPublic.model_validate(run)


def mark_cancelled(session: Session, run_id: str, at_once: bool = False) -> RunPublic | None:
    """A cancel was requested. A launched run reads `cancelling` until its agent's RunFinished(cancelled) arrives
    (the agent owns the process, so only it can say the run stopped); an external run — or one no agent has yet
    (`at_once`: a sweep's run waiting behind its cap) — is cancelled at once. Terminal runs are left as they are."""
    run = session.get(Run, run_id)
    if run is None:
        return None
    if run.status not in TERMINAL_STATUSES:
        run.updated_at = time.time()
        if run.kind == "launched" and not at_once:
            run.status = "cancelling"
        else:
            run.status, run.finished_at = "cancelled", run.updated_at
    session.flush()
    return RunPublic.model_validate(run)


def fail_run(session: Session, run_id: str, error: str) -> None:
    run = session.get(Run, run_id)
    if run is not None:
        run.status, run.error, run.finished_at = "failed", error, time.time()


class LifecycleConflict(Exception):
    """The change cannot apply to the run as it is (the route answers 409 with this message)."""


def live_launched(run: Run | RunPublic) -> bool:
    """A launched run its agent still owns: only the agent (after a cancel) may end it or let it go."""
    return run.kind == "launched" and run.status not in TERMINAL_STATUSES


def update_run(session: Session, run_id: str, change: RunUpdate) -> RunPublic | None:
    """Apply a PATCH. Ending a run (finished / failed) is for runs no agent owns; a final status stands (setting the
    same one again changes nothing). Raises LifecycleConflict."""
    run = session.get(Run, run_id)
    if run is None:
        return None
    now = time.time()
    if change.status is not None and change.status != run.status:
        if run.status in TERMINAL_STATUSES:
            raise LifecycleConflict(f"run {run_id!r} is already {run.status}; a final status is not changed")
        if live_launched(run):
            raise LifecycleConflict(f"run {run_id!r} was launched and its agent still owns it ({run.status}); "
                                    f"stop it with POST /api/v1/runs/{run_id}/cancel")
        run.status, run.finished_at = change.status, change.finished_at or now
        run.error = change.error if change.status == "failed" else None
    elif change.error is not None:
        run.error = change.error  # the run already failed: a better message
    if change.name is not None:
        run.name = change.name
    if change.tags is not None:
        run.tags = change.tags
    if change.notes is not None:
        run.notes = change.notes
    if change.archived is not None:
        run.archived_at = (run.archived_at or now) if change.archived else None
    run.updated_at = now
    session.flush()
    return RunPublic.model_validate(run)


def set_deleted(session: Session, run_id: str, deleted: bool) -> RunPublic | None:
    """Soft delete (hidden everywhere, kept until gc) or restore. Raises LifecycleConflict for a launched run its
    agent still runs."""
    run = session.get(Run, run_id)
    if run is None:
        return None
    if deleted and live_launched(run):
        raise LifecycleConflict(f"run {run_id!r} is {run.status} under its agent; cancel it first "
                                f"(POST /api/v1/runs/{run_id}/cancel)")
    now = time.time()
    run.deleted_at = (run.deleted_at or now) if deleted else None
    run.updated_at = now
    session.flush()
    return RunPublic.model_validate(run)


def deleted_before(session: Session, cutoff: float) -> list[str]:
    """Ids of runs soft-deleted at or before `cutoff` (what gc erases)."""
    return list(session.scalars(select(Run.id).where(Run.deleted_at <= cutoff).order_by(Run.deleted_at)))

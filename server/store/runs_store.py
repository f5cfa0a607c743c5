"""Runs: list/filter/paginate, create, status changes. Returns schemas; rows stay here."""

from __future__ import annotations

import time
from typing import Any

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from sqd.protocol import TERMINAL_STATUSES, new_id
from sqd.server.schemas import RunFilter, RunPublic, RunsPublic
from sqd.server.store.models import Run


def list_runs(session: Session, f: RunFilter) -> RunsPublic:
    query = select(Run)
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
    rows = session.scalars(query.order_by(Run.created_at.desc(), Run.id).limit(f.limit).offset(f.offset))
    return RunsPublic(data=[RunPublic.model_validate(r) for r in rows], count=count)


def get_run(session: Session, run_id: str) -> RunPublic | None:
    row = session.get(Run, run_id)
    return None if row is None else RunPublic.model_validate(row)


def run_exists(session: Session, run_id: str) -> bool:
    return session.scalar(select(Run.id).where(Run.id == run_id)) is not None


def create_run(session: Session, *, name: str, kind: str, status: str, preset: str | None = None,
               config: dict[str, Any] | None = None, steps: int | None = None, run_id: str | None = None,
               sweep_id: str | None = None) -> RunPublic:
    run = Run(id=run_id or new_id(), name=name, kind=kind, status=status, preset=preset, config=config or {},
              steps=steps, sweep_id=sweep_id)
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

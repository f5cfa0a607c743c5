"""Creating, reading, listing and cancelling sweeps. Routes call these; rows stay here.

Create: the whole request is planned (every value validated, server/sweeps/plan.py) and each launch request
checked to be encodable before anything is written; then the sweep, its runs (status "queued", `sweep_id` set)
and their places in the sweep are committed in one transaction, and the first `max_concurrent` are released
(server/sweeps/queue.py). A 422 therefore leaves the database and the bus untouched. If the bus is down at that
moment the sweep still exists, its runs wait, and the queue's reconciler releases them once the bus is back.

Cancel: the sweep stops releasing; runs that never reached an agent are cancelled at once; runs with an agent
read "cancelling" until it confirms; a cancel request is published for every unfinished run (also the held ones,
so a launch request sent just before a crash cannot start a run later).
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Any

from fastapi import HTTPException, status
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sqd.bus import CONTROL
from sqd.errors import BusError
from sqd.protocol import TERMINAL_STATUSES, CancelRequest, LaunchRequest, new_id
from sqd.server import live
from sqd.server.context import ServerContext
from sqd.server.schemas import RunPublic
from sqd.server.store import runs_store
from sqd.server.store.models import Run
from sqd.server.sweeps import queue
from sqd.server.sweeps.models import Sweep, SweepRun
from sqd.server.sweeps.plan import Plan, PlanError, SweepSpec, plan
from sqd.server.sweeps.schemas import (
    SweepCreate,
    SweepPublic,
    SweepRunPublic,
    SweepsPublic,
    SweepStatus,
    SweepSummary,
)
from sqd.wire import encode

log = logging.getLogger(__name__)


def default_name(spec: SweepSpec) -> str:
    """"sqd-nsgan-digits × loss.name × reg.names", "3 presets × optim.lr_g"."""
    head = spec.presets[0] if len(spec.presets) == 1 else f"{len(spec.presets)} presets"
    return " × ".join([head, *spec.grid] + (["configs"] if spec.configs else []))


def _unprocessable(errors: list[dict[str, Any]]) -> HTTPException:
    return HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, errors)


def _requests(planned: Plan, steps: int | None) -> list[LaunchRequest]:
    requests = [LaunchRequest(run_id=new_id(), preset=r.preset, overrides=r.overrides, name=r.name, steps=steps)
                for r in planned.runs]
    for r in requests:
        try:
            encode(r)  # what the bus cannot carry (an int beyond 64 bits) is refused before a row exists
        except BusError as exc:
            raise _unprocessable([{"loc": ["body"], "msg": f"run {r.name!r} cannot be sent to a trainer agent "
                                                           f"({exc})"}]) from exc
    return requests


def create(ctx: ServerContext, session: Session, body: SweepCreate) -> SweepPublic:
    spec = body.spec()
    settings = ctx.settings.sweeps
    name = body.name.strip() or default_name(spec)
    try:
        planned = plan(spec, confirm=body.confirm, confirm_above=settings.confirm_above,
                       max_runs=settings.max_runs)
    except PlanError as exc:
        raise _unprocessable(exc.errors) from exc
    requests = _requests(planned, spec.steps)
    sweep = Sweep(id=new_id(), name=name, state="active", spec=spec.as_json(), dimensions=planned.dimensions,
                  n_runs=len(planned.runs), max_concurrent=body.max_concurrent or settings.max_concurrent)
    session.add(sweep)
    session.flush()
    for r, req in zip(planned.runs, requests, strict=True):
        runs_store.create_run(session, name=req.name, kind="launched", status="queued", preset=r.preset,
                              config=r.config, steps=spec.steps, run_id=req.run_id, sweep_id=sweep.id)
        session.add(SweepRun(run_id=req.run_id, sweep_id=sweep.id, position=r.position,
                             config_index=r.config_index, label=r.label, params=r.params, seed=r.seed,
                             request=req.model_dump(mode="json", include={"preset", "overrides", "name", "steps"})))
    session.commit()
    try:
        queue.release(ctx, sweep.id)
    except (BusError, OSError) as exc:
        log.warning("sweep %s: first release failed (%s); the queue retries it", sweep.id, exc)
    public = get(session, sweep.id)
    assert public is not None
    _notify(ctx, public.runs)
    return public


def _notify(ctx: ServerContext, runs: list[SweepRunPublic] | list[RunPublic]) -> None:
    """Tell live clients about runs created or changed here (after the commit); best effort, as for launches."""
    try:
        live.publish(ctx.bus, ctx.live_key, [live.LiveEvent("run", r.id, RunPublic.model_validate(
            r.model_dump(include=set(RunPublic.model_fields))).model_dump()) for r in runs])
    except BusError as exc:
        log.warning("live fan-out of %d sweep runs failed: %s", len(runs), exc)


def sweep_status(state: str, counts: Counter[str]) -> SweepStatus:
    unfinished = sum(n for s, n in counts.items() if s not in TERMINAL_STATUSES)
    if state == "cancelled":
        return "cancelling" if unfinished else "cancelled"
    if not unfinished:
        return "finished"
    return "running" if counts["running"] or counts["cancelling"] else "queued"


def _counts(session: Session, sweep_ids: list[str]) -> dict[str, Counter[str]]:
    out: dict[str, Counter[str]] = {s: Counter() for s in sweep_ids}
    for sweep_id, run_status, n in session.execute(
            select(Run.sweep_id, Run.status, func.count()).where(Run.sweep_id.in_(sweep_ids))
            .group_by(Run.sweep_id, Run.status)):
        out[sweep_id][run_status] = n
    return out


def _summary(sweep: Sweep, counts: Counter[str]) -> dict[str, Any]:
    return {"id": sweep.id, "name": sweep.name, "status": sweep_status(sweep.state, counts),
            "max_concurrent": sweep.max_concurrent, "spec": sweep.spec, "dimensions": sweep.dimensions,
            "n_runs": sweep.n_runs, "counts": dict(counts), "created_at": sweep.created_at,
            "updated_at": sweep.updated_at, "cancelled_at": sweep.cancelled_at}


def sweep_runs(session: Session, sweep_id: str) -> list[SweepRunPublic]:
    rows = session.execute(select(Run, SweepRun).join(SweepRun, SweepRun.run_id == Run.id)
                           .where(SweepRun.sweep_id == sweep_id).order_by(SweepRun.position)
                           .execution_options(populate_existing=True))  # a release elsewhere may have changed them
    return [SweepRunPublic(**RunPublic.model_validate(run).model_dump(), config_index=sr.config_index,
                           label=sr.label, params=sr.params, seed=sr.seed, released=sr.released_at is not None)
            for run, sr in rows]


def get(session: Session, sweep_id: str) -> SweepPublic | None:
    sweep = session.get(Sweep, sweep_id, populate_existing=True)
    if sweep is None:
        return None
    return SweepPublic(**_summary(sweep, _counts(session, [sweep_id])[sweep_id]),
                       runs=sweep_runs(session, sweep_id))


def summary(session: Session, sweep_id: str) -> SweepSummary | None:
    sweep = session.get(Sweep, sweep_id, populate_existing=True)
    return None if sweep is None else SweepSummary(**_summary(sweep, _counts(session, [sweep_id])[sweep_id]))


def run_ids(session: Session, sweep_id: str) -> list[str]:
    return list(session.scalars(select(SweepRun.run_id).where(SweepRun.sweep_id == sweep_id)
                                .order_by(SweepRun.position)))


def list_sweeps(session: Session, limit: int, offset: int) -> SweepsPublic:
    total = session.scalar(select(func.count()).select_from(Sweep)) or 0
    sweeps = session.scalars(select(Sweep).order_by(Sweep.created_at.desc(), Sweep.id).limit(limit).offset(offset))
    rows = list(sweeps)
    counts = _counts(session, [s.id for s in rows])
    return SweepsPublic(data=[SweepSummary(**_summary(s, counts[s.id])) for s in rows], count=total)


def cancel(ctx: ServerContext, sweep_id: str, reason: str) -> list[RunPublic]:
    """Cancel the sweep and every unfinished run of it; returns the runs changed. 404 if there is no such sweep,
    503 (nothing changed) if the bus refuses the cancel requests."""
    now = time.time()
    with ctx.sessions() as session, session.begin():
        if not queue.lock_sweep(session, sweep_id, active_only=False):
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"sweep {sweep_id!r} not found")
        sweep = session.get(Sweep, sweep_id)
        assert sweep is not None
        sweep.state, sweep.cancelled_at = "cancelled", sweep.cancelled_at or now
        rows = session.execute(select(Run, SweepRun.released_at).join(SweepRun, SweepRun.run_id == Run.id)
                               .where(SweepRun.sweep_id == sweep_id, Run.status.not_in(TERMINAL_STATUSES))
                               .order_by(SweepRun.position)).all()
        for run, released_at in rows:
            run.updated_at = now
            if released_at is None:
                run.status, run.finished_at, run.error = "cancelled", now, reason
            else:
                run.status = "cancelling"
        session.flush()
        changed = [RunPublic.model_validate(run) for run, _ in rows]
        if rows:
            try:
                ctx.bus.publish(CONTROL, [CancelRequest(run_id=run.id, reason=reason) for run, _ in rows])
            except BusError as exc:
                raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, f"the bus is unavailable: {exc}") from exc
    _notify(ctx, changed)
    return changed

"""A sweep's queue: at most `max_concurrent` of its runs are with the agents at once; the rest wait as "queued"
runs with no launch request sent, and are released — in launch order — as others end.

Releasing is one transaction per sweep: its first statement updates the sweep row, which serialises releases and
cancels of that sweep across threads and server replicas (PostgreSQL: a row lock held to the commit; SQLite: the
database write lock). Inside it, the runs with the agents are counted (running or cancelling, or queued and
already released), the next unreleased queued runs are marked released, and their launch requests are published
*before* the commit: if the bus refuses them, the transaction rolls back and they stay unreleased; if the server
dies after the publish but before the commit, they are published again later — harmless, since an agent claims a
run id once (trainer/agent.py). So no run is ever marked released without its request having been sent.

Releases happen when a sweep is created, after every ingest batch that ended a sweep's run (`after_ingest`), and
every `SQD_SWEEPS__RECONCILE_S` seconds for every sweep with runs waiting (`Reconciler`): the last covers a server
that stopped between committing a run's end and releasing the next, and sweeps created while the bus was down.
A cancelled sweep (state "cancelled") releases nothing more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

from sqlalchemy import and_, func, or_, select, update
from sqlalchemy.orm import Session

from sqd.bus import CONTROL
from sqd.protocol import TERMINAL_STATUSES, LaunchRequest
from sqd.server.context import ServerContext
from sqd.server.live import LiveEvent
from sqd.server.periodic import Periodic
from sqd.server.store.models import Run
from sqd.server.sweeps.models import Sweep, SweepRun

log = logging.getLogger(__name__)
WITH_AGENTS = ("running", "cancelling")


def lock_sweep(session: Session, sweep_id: str, *, active_only: bool) -> bool:
    """Touch the sweep row first thing in the transaction (the lock above); False if it is not there (or, with
    `active_only`, cancelled)."""
    cond = [Sweep.id == sweep_id] + ([Sweep.state == "active"] if active_only else [])
    result = session.execute(update(Sweep).where(*cond).values(updated_at=time.time())
                             .execution_options(synchronize_session=False))
    return bool(result.rowcount)  # type: ignore[attr-defined]


def release(ctx: ServerContext, sweep_id: str) -> list[str]:
    """Hand the agents as many of the sweep's waiting runs as its cap allows; returns their ids."""
    with ctx.sessions() as session, session.begin():
        if not lock_sweep(session, sweep_id, active_only=True):
            return []
        cap = session.scalar(select(Sweep.max_concurrent).where(Sweep.id == sweep_id)) or 0
        joined = select(func.count()).select_from(SweepRun).join(Run, Run.id == SweepRun.run_id)
        busy = session.scalar(joined.where(SweepRun.sweep_id == sweep_id, or_(
            Run.status.in_(WITH_AGENTS), and_(Run.status == "queued", SweepRun.released_at.is_not(None))))) or 0
        if busy >= cap:
            return []
        picks = session.scalars(select(SweepRun).join(Run, Run.id == SweepRun.run_id)
                                .where(SweepRun.sweep_id == sweep_id, SweepRun.released_at.is_(None),
                                       Run.status == "queued")
                                .order_by(SweepRun.position).limit(cap - busy)).all()
        if not picks:
            return []
        now = time.time()
        for p in picks:
            p.released_at = now
        session.flush()
        ctx.bus.publish(CONTROL, [LaunchRequest(run_id=p.run_id, **p.request) for p in picks])
    log.info("sweep %s: released %d run(s) (%d were with the agents, cap %d)", sweep_id, len(picks), busy, cap)
    return [p.run_id for p in picks]


def waiting_sweeps(session: Session) -> list[str]:
    """Active sweeps that still have runs waiting to be released."""
    return list(session.scalars(
        select(SweepRun.sweep_id).join(Run, Run.id == SweepRun.run_id).join(Sweep, Sweep.id == SweepRun.sweep_id)
        .where(SweepRun.released_at.is_(None), Run.status == "queued", Sweep.state == "active").distinct()))


def is_held(session: Session, run_id: str) -> bool:
    """The run waits behind its sweep's cap: no agent has it, so a cancel takes effect at once."""
    released = session.execute(select(SweepRun.released_at).where(SweepRun.run_id == run_id)).first()
    return released is not None and released[0] is None


def ended_sweeps(live: Sequence[LiveEvent]) -> set[str]:
    """Sweeps one of whose runs an ingest batch just ended (from its committed `run` events)."""
    return {str(e.data["sweep_id"]) for e in live if e.event == "run" and e.data.get("sweep_id")
            and e.data.get("status") in TERMINAL_STATUSES}


def after_ingest(ctx: ServerContext, live: Sequence[LiveEvent]) -> None:
    """Called by ingest after each committed batch: a run of a sweep ended, so the next may start."""
    for sweep_id in sorted(ended_sweeps(live)):
        release(ctx, sweep_id)


class Reconciler(Periodic):
    """Re-checks every waiting sweep every `reconcile_s` (and at once on start), until ctx.stop is set."""

    name = "sqd-sweeps"

    def every_s(self) -> float:
        return self.ctx.settings.sweeps.reconcile_s

    def once(self) -> list[str]:
        with self.ctx.sessions() as session:
            ids = waiting_sweeps(session)
        return [run_id for sweep_id in ids for run_id in release(self.ctx, sweep_id)]

"""Applying a batch of ingest events inside one transaction (the consumer and HTTP ingest share it).

Runs that an event names but the database does not know (a Monitor run started outside the server, or an event
that overtook its RunStarted) are created as external runs. Status follows RunStarted / RunFinished by the
producer's timestamp, so a redelivered old RunStarted cannot reopen a finished run. Evaluation metrics are also
stored as points (`eval/<name>` unless the name has a `/`) at the checkpoint step, so they plot like any series.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import select, update
from sqlalchemy.orm import Session

from sqd.protocol import (
    NO_EPOCH,
    TERMINAL_STATUSES,
    AlertRaised,
    CheckpointReady,
    EvaluationResult,
    MetricBatch,
    PackedMetrics,
    RunFinished,
    RunStarted,
)
from sqd.server.live import LiveEvent
from sqd.server.schemas import RunPublic
from sqd.server.store import records_store
from sqd.server.store.db import is_sqlite
from sqd.server.store.models import Run
from sqd.server.store.points_store import store_points


@dataclass
class ApplyResult:
    live: list[LiveEvent] = field(default_factory=list)
    run_ids: set[str] = field(default_factory=set)
    points: int = 0
    event_counts: Counter[str] = field(default_factory=Counter)
    evaluation_latencies: list[float] = field(default_factory=list)


def _ensure_runs(session: Session, events: Sequence[object]) -> tuple[dict[str, Run], set[str]]:
    """The runs the events name, creating unknown ones; also returns the ids created.

    The runs are locked before anything is read, as gc locks a run before erasing it: on SQLite a write comes
    first (it takes the database write lock, so no commit can slip between what this transaction reads and
    writes — a run erased in between would fail the series' foreign key); on PostgreSQL the run rows are locked
    in id order before any series row and before they are written, the order gc and every other batch take them in
    (an UPDATE first would lock them in the order its plan meets them, and two batches could deadlock)."""
    ids = {e.run_id for e in events}  # type: ignore[attr-defined]
    touch = update(Run).where(Run.id.in_(ids)).values(updated_at=time.time())
    sqlite = is_sqlite(session.get_bind())
    if sqlite:
        session.execute(touch)
    existing = {r.id: r for r in session.scalars(select(Run).where(Run.id.in_(ids)).order_by(Run.id)
                                                 .with_for_update())}
    if not sqlite:
        session.execute(touch)
    runs = dict(existing)
    for e in events:
        run_id = e.run_id  # type: ignore[attr-defined]
        if run_id not in runs:
            name = e.name if isinstance(e, RunStarted) else ""
            runs[run_id] = Run(id=run_id, name=name or run_id[:12], kind="external", status="running",
                               created_at=e.ts, updated_at=time.time())  # type: ignore[attr-defined]
            session.add(runs[run_id])
    session.flush()
    return runs, set(runs) - set(existing)


def _started(run: Run, e: RunStarted) -> bool:
    if run.status in TERMINAL_STATUSES and (run.finished_at or 0) > e.ts:
        return False  # an old RunStarted delivered again after the run finished
    run.status, run.started_at = "running", e.ts
    run.name = e.name or run.name
    run.preset = e.preset or run.preset
    run.config = e.config or run.config
    run.tags = list(dict.fromkeys([*(run.tags or []), *e.tags]))  # the Monitor's tags join any given at creation
    run.host, run.pid, run.device, run.agent = e.host or run.host, e.pid, e.device, e.agent
    run.finished_at = run.error = run.traceback = None
    return True


def _finished(run: Run, e: RunFinished) -> bool:
    if run.status in TERMINAL_STATUSES:
        # The first final word stands: the same RunFinished delivered again, or a second reporter (the agent
        # noticing the exit after the trainer's own Monitor said "finished") must not rewrite the outcome.
        return False
    run.status, run.finished_at, run.error, run.traceback = e.status, e.ts, e.error, e.traceback
    if e.step is not None:
        run.last_step = max(run.last_step or 0, e.step)
    run.last_epoch = e.epoch if e.epoch is not None else run.last_epoch
    return True


def _eval_points(e: EvaluationResult) -> MetricBatch | None:
    if e.status != "ok" or not e.metrics:
        return None
    keys = [k if "/" in k else f"eval/{k}" for k in e.metrics]
    n = len(keys)
    return MetricBatch(run_id=e.run_id, keys=keys, key_index=list(range(n)), step=[e.checkpoint_step] * n,
                       value=list(e.metrics.values()), epoch=[e.epoch] * n, wall_time=[e.ts] * n)


def apply_events(session: Session, events: Sequence[object]) -> ApplyResult:
    result = ApplyResult()
    if not events:
        return result
    runs, changed = _ensure_runs(session, events)
    batches: list[MetricBatch | PackedMetrics] = []
    for e in events:
        result.event_counts[e.type] += 1  # type: ignore[attr-defined]
        run = runs[e.run_id]  # type: ignore[attr-defined]
        result.run_ids.add(run.id)
        if isinstance(e, MetricBatch | PackedMetrics):
            batches.append(e)
        elif isinstance(e, RunStarted):
            changed.update([run.id] if _started(run, e) else [])
        elif isinstance(e, RunFinished):
            changed.update([run.id] if _finished(run, e) else [])
        elif isinstance(e, CheckpointReady):
            records_store.record_checkpoint(session, e)
        elif isinstance(e, EvaluationResult):
            stored = records_store.record_evaluation(session, e)
            if stored is not None:
                result.live.append(LiveEvent("evaluation", run.id, stored.model_dump()))
                latency = records_store.evaluation_latency_s(session, e)
                result.evaluation_latencies += [latency] if latency is not None else []
            batches += [b for b in [_eval_points(e)] if b is not None]
        elif isinstance(e, AlertRaised):
            alert = records_store.record_alert(session, e)
            if alert is not None:
                result.live.append(LiveEvent("alert", run.id, alert.model_dump()))
    # a run marked deleted takes no more points (gc may be removing its data)
    stored_points = store_points(session, [b for b in batches if runs[b.run_id].deleted_at is None])
    result.points = len(stored_points.new)
    for run_id, series in stored_points.by_run().items():
        run = runs[run_id]
        last = max(steps[-1] for steps, _ in series.values())
        if run.last_step is None or last > run.last_step:
            run.last_step = last
        result.live.append(LiveEvent("points", run_id, {"run_id": run_id, "series": {
            key: {"step": steps, "value": values} for key, (steps, values) in series.items()}}, json_ready=True))
    for b in batches:
        top = int(b.columns().epoch.max())  # NO_EPOCH (none) is the smallest int64
        if top != NO_EPOCH and (runs[b.run_id].last_epoch or -1) < top:
            runs[b.run_id].last_epoch = top
    now = time.time()
    for run in runs.values():
        run.updated_at = now
    session.flush()
    result.live += [LiveEvent("run", rid, RunPublic.model_validate(runs[rid]).model_dump()) for rid in sorted(changed)]
    return result

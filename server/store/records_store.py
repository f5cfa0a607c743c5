"""Evaluations, checkpoints and alerts: written by ingest (idempotently), read by the API."""

from __future__ import annotations

from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sqd.protocol import AlertRaised, CheckpointReady, EvaluationResult
from sqd.server.schemas import AlertPublic, AlertsPublic, CheckpointPublic, EvaluationPublic
from sqd.server.store.models import Alert, Checkpoint, Evaluation
from sqd.server.store.points_store import insert_ignore

# An evaluation is stored once per (run, checkpoint step). A later "ok" replaces a "skipped" or "failed" one (a
# worker retried, or caught up on a checkpoint it had skipped); an "ok" is never replaced, and a repeated delivery
# changes nothing.
REPLACEABLE = frozenset({"skipped", "failed"})


def record_evaluation(session: Session, event: EvaluationResult) -> EvaluationPublic | None:
    """Store the result; returns it when it changed what is stored (so it is fanned out once)."""
    row = session.scalar(select(Evaluation).where(Evaluation.run_id == event.run_id,
                                                  Evaluation.checkpoint_step == event.checkpoint_step)
                         .with_for_update())
    fields: dict[str, Any] = event.model_dump(include={
        "event_id", "checkpoint_step", "epoch", "status", "metrics", "n_samples", "timings_s", "checkpoint_uri",
        "grid_uri", "error", "worker"})
    if row is None:
        row = Evaluation(run_id=event.run_id, created_at=event.ts, **fields)
        session.add(row)
    elif row.event_id != event.event_id and row.status in REPLACEABLE and event.status == "ok":
        for name, value in fields.items():
            setattr(row, name, value)
        row.created_at = event.ts
    else:
        return None
    session.flush()
    return EvaluationPublic.model_validate(row)


def evaluation_latency_s(session: Session, event: EvaluationResult) -> float | None:
    """Seconds from the checkpoint's announcement to its evaluation result, when the checkpoint is known."""
    created = session.scalar(select(Checkpoint.created_at).where(Checkpoint.run_id == event.run_id,
                                                                 Checkpoint.step == event.checkpoint_step))
    return None if created is None else max(0.0, event.ts - created)


def record_checkpoint(session: Session, event: CheckpointReady) -> None:
    insert_ignore(session, Checkpoint, [{
        "run_id": event.run_id, "step": event.step, "epoch": event.epoch, "uri": event.uri, "sha256": event.sha256,
        "size_bytes": event.size_bytes, "profile": event.profile, "generator": event.generator,
        "created_at": event.ts}])


def record_alert(session: Session, event: AlertRaised) -> AlertPublic | None:
    """Store the alert once per event_id; returns it when new."""
    if session.scalar(select(Alert.id).where(Alert.event_id == event.event_id)) is not None:
        return None
    row = Alert(event_id=event.event_id, run_id=event.run_id, rule=event.rule, step=event.step, epoch=event.epoch,
                signals=list(event.signals), scores=dict(event.scores), explanation=event.explanation,
                severity=event.severity, created_at=event.ts)
    session.add(row)
    session.flush()
    return AlertPublic.model_validate(row)


def list_evaluations(session: Session, run_id: str) -> list[EvaluationPublic]:
    rows = session.scalars(select(Evaluation).where(Evaluation.run_id == run_id)
                           .order_by(Evaluation.checkpoint_step))
    return [EvaluationPublic.model_validate(r) for r in rows]


def get_evaluation(session: Session, run_id: str, step: int) -> EvaluationPublic | None:
    row = session.scalar(select(Evaluation).where(Evaluation.run_id == run_id, Evaluation.checkpoint_step == step))
    return None if row is None else EvaluationPublic.model_validate(row)


def list_checkpoints(session: Session, run_id: str) -> list[CheckpointPublic]:
    rows = session.scalars(select(Checkpoint).where(Checkpoint.run_id == run_id).order_by(Checkpoint.step))
    return [CheckpointPublic.model_validate(r) for r in rows]


def list_alerts(session: Session, run_id: str | None, limit: int, offset: int) -> AlertsPublic:
    query = select(Alert)
    if run_id is not None:
        query = query.where(Alert.run_id == run_id)
    count = session.scalar(select(func.count()).select_from(query.subquery())) or 0
    rows = session.scalars(query.order_by(Alert.created_at.desc(), Alert.id.desc()).limit(limit).offset(offset))
    return AlertsPublic(data=[AlertPublic.model_validate(r) for r in rows], count=count)

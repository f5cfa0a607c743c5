"""Raising an alert inside the ingest transaction, with what its rules ask for: the alert row, the "best before
collapse" checkpoint, a pending stop request, one webhook delivery per distinct URL. What must happen after the
commit (live fan-out, the stop itself, waking the webhook thread) is returned as a `Raised`."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from sqd.artifacts import ArtifactStore, check_key
from sqd.errors import ArtifactError
from sqd.protocol import AlertRaised
from sqd.server.alerts.models import AlertAction, AlertRule
from sqd.server.schemas import AlertPublic
from sqd.server.store import records_store
from sqd.server.store.db import jsonable
from sqd.server.store.models import Checkpoint, Run
from sqd.server.store.samples import read_artifact


@dataclass
class Finding:
    """What a detector or rule found, before it becomes an alert."""

    identity: str  # stable for the same finding, so a repeated batch raises nothing new
    step: int | None
    epoch: int | None
    signals: list[str]
    scores: dict[str, float]
    explanation: str
    evidence: dict[str, Any] = field(default_factory=dict)
    severity: str | None = None  # None: the rule's
    title: str | None = None  # the alert's rule name; None: the rule's
    actions: bool = True  # False: notify only (live stream, webhooks), no stop / keep-best


@dataclass
class Raised:
    alert: AlertPublic
    stop_action_id: int | None = None
    webhooks: int = 0


def event_id(identity: str) -> str:
    return "alert-" + hashlib.sha1(identity.encode()).hexdigest()[:32]


def raise_alert(session: Session, run: Run, rules: Sequence[AlertRule], finding: Finding,
                dashboard_url: str | None = None) -> Raised | None:
    """Store the alert (named after rules[0], the most specific) and the actions of every rule; None when this
    finding was raised before."""
    named = rules[0]
    alert = records_store.record_alert(session, AlertRaised(
        event_id=event_id(finding.identity), run_id=run.id, rule=finding.title or named.name, step=finding.step,
        epoch=finding.epoch, signals=finding.signals, scores=finding.scores, explanation=finding.explanation,
        severity=finding.severity or named.severity))
    if alert is None:
        return None
    raised = Raised(alert)
    wants = {name for r in rules for name, on in (r.actions or {}).items() if on} if finding.actions else set()
    best = keep_best(session, run, alert) if "keep_best" in wants else None
    if "stop_run" in wants:
        stop = AlertAction(alert_id=alert.id, run_id=run.id, kind="stop_run", status="pending", detail={})
        session.add(stop)
        session.flush()
        raised.stop_action_id = stop.id
    payload = webhook_payload(alert, run, named, finding, best, dashboard_url)
    for url in dict.fromkeys(r.webhook_url for r in rules if r.webhook_url):
        session.add(AlertAction(alert_id=alert.id, run_id=run.id, kind="webhook", status="pending", target=url,
                                detail=payload, next_attempt_at=time.time()))
        raised.webhooks += 1
    session.flush()
    return raised


def keep_best(session: Session, run: Run, alert: AlertPublic) -> dict[str, Any] | None:
    """Mark the last checkpoint strictly before the alert's step as "best before collapse"."""
    query = select(Checkpoint).where(Checkpoint.run_id == run.id)
    if alert.step is not None:
        query = query.where(Checkpoint.step < alert.step)
    ckpt = session.scalar(query.order_by(Checkpoint.step.desc()).limit(1))
    if ckpt is None:
        where = f" before step {alert.step}" if alert.step is not None else ""
        session.add(AlertAction(alert_id=alert.id, run_id=run.id, kind="keep_best", status="failed", detail={},
                                last_error=f"run {run.id} has no checkpoint{where}"))
        return None
    detail = {"checkpoint_step": ckpt.step, "epoch": ckpt.epoch, "uri": ckpt.uri, "sha256": ckpt.sha256}
    session.add(AlertAction(alert_id=alert.id, run_id=run.id, kind="keep_best", status="done", detail=detail))
    return detail


def webhook_payload(alert: AlertPublic, run: Run, rule: AlertRule, finding: Finding, best: dict[str, Any] | None,
                    dashboard_url: str | None) -> dict[str, Any]:
    payload = {
        "type": "sqd.alert",
        "severity": alert.severity,
        "alert": alert.model_dump(mode="json"),
        "run": {"id": run.id, "name": run.name, "preset": run.preset, "status": run.status,
                "last_step": run.last_step},
        "rule": {"id": rule.id, "name": rule.name, "kind": rule.kind},
        "evidence": finding.evidence,
        "best_before_collapse": best,
    }
    if dashboard_url:
        payload["dashboard"] = f"{dashboard_url.rstrip('/')}/#/run/{quote(run.id, safe='')}"
    out: dict[str, Any] = jsonable(payload)
    return out


def best_before_collapse(session: Session, run_id: str) -> dict[str, Any] | None:
    """The newest checkpoint kept as "best before collapse" for the run, with the alert that kept it."""
    row = session.scalar(select(AlertAction).where(AlertAction.run_id == run_id, AlertAction.kind == "keep_best",
                                                   AlertAction.status == "done")
                         .order_by(AlertAction.id.desc()).limit(1))
    return None if row is None else {**row.detail, "alert_id": row.alert_id}


def read_checkpoint(artifacts: ArtifactStore, run_id: str, uri: str, sha256: str) -> bytes:
    """The bytes of a kept checkpoint; only keys under the run's own artifacts are read."""
    key = check_key(uri)
    if not key.startswith(f"runs/{run_id}/"):
        raise ArtifactError(f"the checkpoint recorded for run {run_id!r} ({uri}) lies outside its artifacts")
    return read_artifact(artifacts, key, sha256=sha256)


def actions_of(session: Session, alert_ids: Sequence[int]) -> list[AlertAction]:
    if not alert_ids:
        return []
    return list(session.scalars(select(AlertAction).where(AlertAction.alert_id.in_(alert_ids))
                                .order_by(AlertAction.id)))

"""Tables of the alerting side (migration 0002): rules, their per-run state, the turning-point detector's state
per run, and the actions an alert started (webhook deliveries with their retries, run stops, "best before collapse"
checkpoints). Alerts themselves live in `alerts` (server/store/models.py)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Boolean, Float, ForeignKey, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from sqd.server.store.models import RUN_ID, Base, now


class AlertRule(Base):
    __tablename__ = "alert_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(32))  # turning_point | threshold | trend | nan | stalled
    builtin: Mapped[bool] = mapped_column(Boolean, default=False)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    run_id: Mapped[str | None] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    preset: Mapped[str | None] = mapped_column(String(100))
    key: Mapped[str | None] = mapped_column(String(200))
    op: Mapped[str | None] = mapped_column(String(4))
    value: Mapped[float | None] = mapped_column(Float)
    count: Mapped[int] = mapped_column(Integer, default=1)
    window: Mapped[int | None] = mapped_column(Integer)
    minutes: Mapped[float | None] = mapped_column(Float)
    severity: Mapped[str] = mapped_column(String(16), default="warning")
    actions: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    params: Mapped[dict[str, Any] | None] = mapped_column(JSON)  # turning_point: TurningParams overrides (0007)
    webhook_url: Mapped[str | None] = mapped_column(String(1000))
    created_at: Mapped[float] = mapped_column(Float, default=now)


class RuleState(Base):
    """Where a rule is with one run: per-key cursors and counters, so ingest resumes where it stopped."""

    __tablename__ = "rule_states"

    rule_id: Mapped[int] = mapped_column(Integer, ForeignKey("alert_rules.id", ondelete="CASCADE"),
                                         primary_key=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class TurningState(Base):
    """The online turning-point detector of one run (TurningDetector.to_state())."""

    __tablename__ = "turning_states"

    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    updated_at: Mapped[float] = mapped_column(Float, default=now)


class AlertAction(Base):
    """One thing an alert set off: a webhook delivery (kept with its payload until delivered or out of attempts),
    a stop request, or the checkpoint kept as "best before collapse"."""

    __tablename__ = "alert_actions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(Integer, ForeignKey("alerts.id", ondelete="CASCADE"), index=True)
    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # webhook | stop_run | keep_best
    status: Mapped[str] = mapped_column(String(16), index=True)  # pending | delivered | failed | done
    target: Mapped[str | None] = mapped_column(String(1000))
    detail: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[float | None] = mapped_column(Float)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[float] = mapped_column(Float, default=now)
    updated_at: Mapped[float] = mapped_column(Float, default=now)

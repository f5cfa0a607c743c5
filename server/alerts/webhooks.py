"""Webhook delivery: a JSON POST per (alert, webhook URL), retried with exponential backoff, never on the ingest
thread.

A delivery is an `alert_actions` row (kind "webhook") written in the same transaction as its alert, holding the
payload, so nothing is lost when the server restarts before it is sent. `WebhookSender` (one thread per server)
picks due rows, claims each one by moving its `next_attempt_at` forward (a compare-and-set, so two replicas never
send the same attempt), POSTs it, and records the outcome: 2xx → delivered; anything else → retried after
backoff_s · 2^(attempt−1) (capped) until `webhook_attempts`, then failed with the last error. Receivers can
de-duplicate on the `X-SQD-Event-Id` header (the alert's event id), since an attempt whose answer was lost is
repeated.
"""

from __future__ import annotations

import logging
import threading
import time

import httpx
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from sqd.server.alerts.models import AlertAction
from sqd.server.store.db import dumps
from sqd.settings import AlertSettings

log = logging.getLogger(__name__)
BATCH = 20
USER_AGENT = "sqd-alerts/1"


def backoff_s(attempt: int, settings: AlertSettings) -> float:
    """Delay after the `attempt`-th failed try (1-based)."""
    return float(min(settings.webhook_backoff_max_s, settings.webhook_backoff_s * 2 ** (attempt - 1)))


def post(url: str, body: str, event_id: str, timeout_s: float) -> str | None:
    """One attempt; None when the receiver answered 2xx, else the reason."""
    try:
        r = httpx.post(url, content=body, timeout=timeout_s, headers={
            "Content-Type": "application/json", "User-Agent": USER_AGENT, "X-SQD-Event-Id": event_id})
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"
    return None if 200 <= r.status_code < 300 else f"HTTP {r.status_code}: {r.text[:200]}"


def _claim(session: Session, row: AlertAction, until: float) -> bool:
    result = session.execute(update(AlertAction).where(AlertAction.id == row.id,
                                                       AlertAction.next_attempt_at == row.next_attempt_at,
                                                       AlertAction.status == "pending")
                             .values(next_attempt_at=until))
    return result.rowcount == 1  # type: ignore[attr-defined]


def deliver_due(sessions: sessionmaker[Session], settings: AlertSettings, now: float | None = None) -> int:
    """Send every delivery that is due; returns how many were attempted."""
    now = time.time() if now is None else now
    with sessions() as session, session.begin():
        due = session.scalars(select(AlertAction).where(AlertAction.kind == "webhook",
                                                        AlertAction.status == "pending",
                                                        AlertAction.next_attempt_at <= now)
                              .order_by(AlertAction.next_attempt_at).limit(BATCH)).all()
        claimed = [(r.id, r.target, r.detail, r.attempts) for r in due
                   if _claim(session, r, now + settings.webhook_timeout_s + 30)]
    for action_id, url, detail, attempts in claimed:
        error = post(str(url), dumps(detail), str(detail.get("alert", {}).get("event_id", action_id)),
                     settings.webhook_timeout_s)
        attempt = attempts + 1
        with sessions() as session, session.begin():
            row = session.get(AlertAction, action_id)
            if row is None:  # the run (and its alerts) were deleted meanwhile
                continue
            row.attempts, row.updated_at, row.last_error = attempt, time.time(), error
            if error is None:
                row.status, row.next_attempt_at = "delivered", None
            elif attempt >= settings.webhook_attempts:
                row.status, row.next_attempt_at = "failed", None
                log.warning("webhook %s for alert %s failed after %d attempts: %s", url, row.alert_id, attempt, error)
            else:
                row.next_attempt_at = time.time() + backoff_s(attempt, settings)
    return len(claimed)


def next_due(sessions: sessionmaker[Session]) -> float | None:
    with sessions() as session:
        return session.scalar(select(AlertAction.next_attempt_at).where(AlertAction.kind == "webhook",
                                                                       AlertAction.status == "pending")
                              .order_by(AlertAction.next_attempt_at).limit(1))


class WebhookSender:
    """The delivery thread: sleeps until the next delivery is due or `wake()` says a new one was queued."""

    def __init__(self, sessions: sessionmaker[Session], settings: AlertSettings, stop: threading.Event) -> None:
        self.sessions, self.settings, self.stop = sessions, settings, stop
        self._wake = threading.Event()
        self.thread = threading.Thread(target=self._run, name="sqd-webhooks", daemon=True)

    def start(self) -> WebhookSender:
        self.thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def _run(self) -> None:
        while not self.stop.is_set():
            self._wake.clear()
            wait = 5.0
            try:
                deliver_due(self.sessions, self.settings)
                due = next_due(self.sessions)
                if due is not None:
                    wait = min(wait, max(0.0, due - time.time()))
            except Exception:  # noqa: BLE001 - a database hiccup must not end deliveries; try again shortly
                log.exception("webhook delivery pass failed")
            self._wake.wait(wait)
            if self.stop.is_set():
                return

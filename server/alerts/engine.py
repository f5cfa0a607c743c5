"""Alerts after each committed ingest batch (`after_ingest(ctx, run_ids)`, called by server/ingest/consumer.py), and the
timer for rules that fire on silence (stalled runs).

Ingest only queues the run ids (`after_ingest` returns at once). The alerting thread then checks each queued run
in one transaction: the rules that apply (rules_store.rules_for_run); the turning-point detector, resumed from its
saved state, reads the run's new points (step > what it has seen, per key, from the chunks past it) and saves its
state again; each point rule does the same from its own cursors. Whatever fires becomes an alert with its actions
(server/alerts/actions.py). After the commit: alerts go to the live stream (SSE `alert`), a stop request is sent,
and the webhook thread is woken. Webhooks are delivered by their own thread (server/alerts/webhooks.py), so neither a
rule nor a slow receiver ever slows ingest.

Online = offline: the detector state is the whole of TurningDetector, so feeding it batch by batch gives what
`detect_turning_points` gives on the full series (tests/server/test_turning.py, test_turning_alerts.py); points
that land behind its cursor (a backfilled evaluation) make it replay the run (`behind_cursor`, `replay`), and a
point rule replays the key (`rules.replay_rule`).
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from sqd.server import launch, live
from sqd.server.alerts.actions import Finding, Raised, raise_alert
from sqd.server.alerts.models import AlertAction, AlertRule, RuleState, TurningState
from sqd.server.alerts.rules import POINT_KINDS, RuleSpec, evaluate, key_matches, replay_rule
from sqd.server.alerts.rules_store import rules_for_run
from sqd.server.alerts.turning import INSTABILITY, TurningDetector, TurningParams, TurningPoint
from sqd.server.alerts.webhooks import WebhookSender
from sqd.server.context import ServerContext
from sqd.server.store import runs_store
from sqd.server.store.chunk_codec import Points
from sqd.server.store.chunk_read import iter_window
from sqd.server.store.models import Checkpoint, Evaluation, Run
from sqd.server.store.series_catalog import SeriesEntry, series_of

log = logging.getLogger(__name__)
MAX_READ = 100_000  # points of one key read per batch; a run with more to catch up continues next batch


# ---- reading new points --------------------------------------------------------------------------------------
@dataclass
class PointReader:
    """New points of one run's series, read once per key per transaction for every consumer."""

    session: Session
    series: dict[str, tuple[SeriesEntry, int | None]]  # key → (the series, last step to read)
    cache: dict[str, tuple[int, tuple[np.ndarray, np.ndarray, list[int | None]]]] = field(default_factory=dict)
    held_until: float | None = None  # evaluations are held back until then (see `for_run`)

    @classmethod
    def for_run(cls, session: Session, run_id: str, now: float | None = None, eval_wait_s: float = 0.0,
                ) -> PointReader:
        """The run's series as they are now. Evaluation keys (`eval/…`) are read only up to the oldest checkpoint
        whose evaluation is still outstanding (announced less than `eval_wait_s` ago): several workers finish
        evaluations out of order, and a later evaluation read first would put the earlier one behind every
        cursor, unseen by the detector and the rules. `held_until` says when that hold lapses (an evaluation
        that never comes holds nothing back for longer)."""
        reader = cls(session, {e.key: (e, e.last_step) for e in series_of(session, run_id)})
        if eval_wait_s > 0:
            reader._hold_evaluations(run_id, time.time() if now is None else now, eval_wait_s)
        return reader

    def _hold_evaluations(self, run_id: str, now: float, wait_s: float) -> None:
        if self.session.scalar(select(Evaluation.id).where(Evaluation.run_id == run_id).limit(1)) is None:
            return  # no worker evaluates this run: `eval/…` points are the run's own (Monitor.log), never held
        evaluated = select(Evaluation.id).where(Evaluation.run_id == Checkpoint.run_id,
                                                Evaluation.checkpoint_step == Checkpoint.step)
        pending = self.session.execute(
            select(Checkpoint.step, Checkpoint.created_at)
            .where(Checkpoint.run_id == run_id, Checkpoint.profile != "none", Checkpoint.created_at > now - wait_s,
                   ~evaluated.exists())
            .order_by(Checkpoint.step).limit(1)).first()
        if pending is None:
            return
        horizon, announced = pending
        for key, (entry, last) in self.series.items():
            if key.startswith("eval/") and last is not None and last >= horizon:
                self.series[key] = (entry, horizon - 1 if horizon > 0 else None)
                self.held_until = announced + wait_s

    def has_new(self, key: str, after: int | None) -> bool:
        last = self.series[key][1]
        return last is not None and (after is None or last > after)

    def _read_through(self, key: str, cursor: int | None) -> bool:
        """Whether a consumer at `cursor` has read the key to its last step, nothing of it held back."""
        entry, last = self.series[key]
        return cursor is not None and last == entry.last_step == cursor

    def behind(self, key: str, cursor: int | None, fed: int | None) -> bool:
        """Whether the key has stored points a consumer never read, though it read to the key's end: points that
        landed behind its cursor (an evaluation backfilled after later ones, a batch reclaimed from a dead
        server). `fed`: the points it read (None: not counted, never behind)."""
        return fed is not None and self._read_through(key, cursor) and self.series[key][0].n_points > fed

    def counted(self, key: str, cursor: int | None, fed: int) -> int:
        """What `behind` must count as fed after a consumer read the key from its first point to `cursor`: every
        point stored when it read to the end (a range downsampled by retention reads as fewer points than it
        stores, and would look behind at every check), else `fed`."""
        return self.series[key][0].n_points if self._read_through(key, cursor) else fed

    def prefetch(self, wants: dict[str, int | None]) -> None:
        """Read the new points of several keys (`wants`: key → the last step already seen), decoding only the
        chunks past that step."""
        todo = {k: -1 if a is None else a for k, a in wants.items()
                if self.has_new(k, a) and (k not in self.cache or self.cache[k][0] > (-1 if a is None else a))}
        if not todo:
            return
        for key, after in todo.items():
            # up to the last step read with the series rows: one snapshot for every key (PostgreSQL's READ
            # COMMITTED gives each statement its own, so a batch committed meanwhile must not show in some keys)
            entry, last = self.series[key]
            parts = list(iter_window(self.session, entry, lo=after + 1, hi=last, limit=MAX_READ))
            p = Points.concat(parts).take(slice(0, MAX_READ)) if parts else Points.empty()
            epochs = p.epoch.tolist()
            self.cache[key] = (after, (p.step, p.value, [None if e < 0 else e for e in epochs]))

    def read(self, key: str, after: int | None) -> tuple[np.ndarray, np.ndarray, list[int | None]]:
        lo = -1 if after is None else after
        self.prefetch({key: after})
        cached = self.cache.get(key)
        if cached is None:
            return np.empty(0, np.int64), np.empty(0), []
        steps, values, epochs = cached[1]
        first = int(np.searchsorted(steps, lo, side="right"))
        return steps[first:], values[first:], epochs[first:]


# ---- the checks of one run -----------------------------------------------------------------------------------
def check_turning(session: Session, run: Run, rules: Sequence[AlertRule], reader: PointReader,
                  dashboard_url: str | None) -> list[Raised]:
    state = session.get(TurningState, run.id, with_for_update=True)
    # the most specific rule that sets params sets them (validated when the rule was created)
    given = next((r.params for r in rules if r.params), None)
    params = TurningParams.from_dict(given) if given else None
    detector = TurningDetector.from_state(state.state, params) if state is not None else TurningDetector(params)
    wants = {key: (detector.trackers[key].last_step if key in detector.trackers else None)
             for key in reader.series if detector.uses(key)}
    reader.prefetch(wants)
    series = {key: reader.read(key, after) for key, after in wants.items() if reader.has_new(key, after)}
    before = len(detector.found)
    found = detector.update(series) if series else []
    late = behind_cursor(detector, reader)
    if late:
        detector, found = replay(run.id, late, detector.found[:before], reader, params)
    elif not series:
        return []
    if state is None:
        session.add(TurningState(run_id=run.id, state=detector.to_state(), updated_at=time.time()))
    else:
        state.state, state.updated_at = detector.to_state(), time.time()
    raised = []
    for tp in found:
        evidence = {**tp.evidence, "detected_step": tp.detected_step, "detected_epoch": tp.detected_epoch,
                    "combined": tp.combined, "corroborated_by": tp.corroborated_by, "missing": tp.missing}
        # a warning ("instability") is only notified: the rules' stop / keep-best actions are for turning points
        warning = tp.severity == "warning"
        finding = Finding(f"turning:{run.id}:{tp.step}:{tp.detected_step}:{tp.severity}", tp.step, tp.epoch,
                          tp.signals, tp.scores, tp.explanation, evidence, severity=tp.severity,
                          title=INSTABILITY if warning else None, actions=not warning)
        raised += [r for r in [raise_alert(session, run, rules, finding, dashboard_url)] if r is not None]
    return raised


def behind_cursor(detector: TurningDetector, reader: PointReader) -> list[str]:
    """Keys with stored points the detector never read: points that landed behind its cursor (an evaluation
    backfilled after later ones, a batch reclaimed from a dead server). Known once a key is read to its end (more
    points stored than fed); a key still held back or read only in part is checked when it is read through."""
    return [key for key, tracker in detector.trackers.items()
            if key in reader.series and reader.behind(key, tracker.last_step, tracker.fed)]


def replay(run_id: str, late: Sequence[str], raised: Sequence[TurningPoint], reader: PointReader,
           params: TurningParams | None) -> tuple[TurningDetector, list[TurningPoint]]:
    """A fresh detector over the run's stored series, late points in their place: what the offline detector
    gives, so live = replay again. Returns it and the turning points to raise: those not raised before (same
    severity at the same turning step: a late point that only moves a detection's step raises nothing new)."""
    fresh = TurningDetector(params)
    log.info("turning detector: replaying run %s (points behind its cursor in %s)", run_id,
             ", ".join(late))
    series = {key: reader.read(key, None) for key in reader.series if fresh.uses(key) and reader.has_new(key, None)}
    known = {(tp.severity, tp.step) for tp in raised}
    found = [tp for tp in fresh.update(series) if (tp.severity, tp.step) not in known]
    for key, tracker in fresh.trackers.items():
        if key in reader.series and tracker.fed is not None:
            tracker.fed = reader.counted(key, tracker.last_step, tracker.fed)
    return fresh, found


def _rule_state(session: Session, rule: AlertRule, run_id: str) -> RuleState:
    row = session.get(RuleState, (rule.id, run_id), with_for_update=True)
    if row is None:
        row = RuleState(rule_id=rule.id, run_id=run_id, state={})
        session.add(row)
    return row


def check_point_rule(session: Session, run: Run, rule: AlertRule, reader: PointReader,
                     dashboard_url: str | None) -> list[Raised]:
    spec = RuleSpec(rule.kind, rule.op, rule.value, rule.count, rule.window)
    keys = [k for k in reader.series if rule.key is not None and key_matches(rule.key, k)]
    row = _rule_state(session, rule, run.id)
    states: dict[str, Any] = {k: dict(v) for k, v in (row.state or {}).items()}
    raised: list[Raised] = []
    reader.prefetch({k: states.get(k, {}).get("cursor") for k in keys})
    for key in keys:
        st = states.setdefault(key, {"fed": 0})  # counting the points fed tells when some landed behind the cursor
        if "history" in st:  # non-finite floats come back from JSON as strings
            st["history"] = [float(v) for v in st["history"]]
        cursor = st.get("cursor")
        hits = evaluate(spec, st, key, *reader.read(key, cursor)) if reader.has_new(key, cursor) else []
        if reader.behind(key, st.get("cursor"), st.get("fed")):
            log.info("rule %s: replaying %s of run %s (points behind its cursor)", rule.id, key, run.id)
            st, hits = replay_rule(spec, key, st.get("fired", []), *reader.read(key, None))
            st["fed"] = reader.counted(key, st.get("cursor"), st["fed"])
            states[key] = st
        for hit in hits:
            st.setdefault("fired", []).append(hit.step)
            finding = Finding(f"rule:{rule.id}:{run.id}:{key}:{hit.step}", hit.step, hit.epoch, [key],
                              {key: hit.value}, hit.explanation, {"key": key, "value": hit.value})
            raised += [r for r in [raise_alert(session, run, [rule], finding, dashboard_url)] if r is not None]
    row.state, row.updated_at = states, time.time()
    return raised


def check_run(session: Session, run_id: str, dashboard_url: str | None = None, eval_wait_s: float = 0.0,
              holds: dict[str, float] | None = None) -> list[Raised]:
    """The run's rules on its new points. With `eval_wait_s`, evaluations wait for the outstanding earlier ones
    (PointReader.for_run); `holds` then gets run id → when to check the run again should none arrive."""
    run = session.get(Run, run_id)
    if run is None:
        return []
    rules = rules_for_run(session, run.id, run.preset)
    turning = [r for r in rules if r.kind == "turning_point"]
    point_rules = [r for r in rules if r.kind in POINT_KINDS]
    if not turning and not point_rules:
        return []
    reader = PointReader.for_run(session, run.id, eval_wait_s=eval_wait_s)
    if holds is not None and reader.held_until is not None:
        holds[run.id] = reader.held_until
    raised = check_turning(session, run, turning, reader, dashboard_url) if turning else []
    for rule in point_rules:
        raised += check_point_rule(session, run, rule, reader, dashboard_url)
    return raised


def check_stalled(session: Session, now: float, dashboard_url: str | None = None) -> list[Raised]:
    """Running runs with no new step for a stalled rule's `minutes` (once per silence)."""
    raised: list[Raised] = []
    if session.scalar(select(AlertRule.id).where(AlertRule.kind == "stalled", AlertRule.enabled.is_(True))
                      .limit(1)) is None:
        return raised
    for run in session.scalars(select(Run).where(Run.status == "running")).all():
        for rule in (r for r in rules_for_run(session, run.id, run.preset) if r.kind == "stalled"):
            row = _rule_state(session, rule, run.id)
            st = dict(row.state or {})
            if st.get("last_step", -2) != run.last_step:
                st = {"last_step": run.last_step, "since": run.updated_at if not st else now, "armed": True}
            minutes = (now - float(st["since"])) / 60
            if st["armed"] and rule.minutes is not None and minutes >= rule.minutes:
                st["armed"] = False
                last = "no step yet" if run.last_step is None else f"last step {run.last_step}"
                finding = Finding(f"stalled:{rule.id}:{run.id}:{run.last_step}:{st['since']}", run.last_step,
                                  run.last_epoch, [], {"minutes": round(minutes, 2)},
                                  f"run {run.name or run.id} has had no new step for {minutes:.1f} min ({last})",
                                  {"minutes": minutes, "last_step": run.last_step})
                raised += [r for r in [raise_alert(session, run, [rule], finding, dashboard_url)] if r is not None]
            row.state, row.updated_at = st, now
    return raised


# ---- the alerting thread --------------------------------------------------------------------------------------
@dataclass
class Runtime:
    """The alerting threads of one server context: `checks` runs the rules for the runs ingest names (coalescing
    repeated names, so a busy run costs one pass for several batches) and the stalled-run timer; `webhooks`
    delivers. Ingest only adds run ids to a set: it never waits for a rule, a query or a receiver."""

    ctx: ServerContext
    webhooks: WebhookSender
    pending: set[str] = field(default_factory=set)
    holds: dict[str, float] = field(default_factory=dict)  # run id → time.time() to check it again (held evaluations)
    busy: bool = False
    lock: threading.Lock = field(default_factory=threading.Lock)
    wake: threading.Event = field(default_factory=threading.Event)
    idle: threading.Condition = field(default_factory=threading.Condition)
    thread: threading.Thread | None = None

    def submit(self, run_ids: Sequence[str]) -> None:
        with self.lock:
            self.pending.update(run_ids)
        self.wake.set()

    def wait_idle(self, timeout_s: float = 30.0) -> bool:
        """Block until every submitted run was checked (tests, `sqd` tools); False on timeout."""
        with self.idle:
            return self.idle.wait_for(lambda: not self.pending and not self.busy, timeout_s)

    def join(self, timeout_s: float) -> None:
        """After ctx.stop: wait for the checks and deliveries in hand, so none outlives the database engine."""
        self.wake.set()
        self.webhooks.wake()
        deadline = time.monotonic() + timeout_s
        for thread in (self.thread, self.webhooks.thread):
            if thread is not None:
                thread.join(max(0.0, deadline - time.monotonic()))

    def _take(self) -> list[str]:
        with self.lock:
            ids, self.pending = sorted(self.pending), set()
            self.busy = bool(ids)
            return ids

    def _done(self) -> None:
        with self.idle:
            self.busy = False
            self.idle.notify_all()

    def run(self) -> None:
        ctx, every = self.ctx, self.ctx.settings.alerts.stalled_check_s
        next_stalled = time.monotonic() + every
        while not ctx.stop.is_set():
            lapse = min(self.holds.values(), default=math.inf) - time.time()
            self.wake.wait(max(0.0, min(next_stalled - time.monotonic(), lapse)))
            self.wake.clear()
            now = time.time()
            with self.lock:
                self.pending.update(run_id for run_id, until in self.holds.items() if until <= now)
            ids = self._take()
            for run_id in ids:  # checked now: held again by this check if still waiting
                self.holds.pop(run_id, None)
            try:
                if ids:
                    deliver(ctx, check_runs(ctx, ids, self.holds))
                if time.monotonic() >= next_stalled:
                    next_stalled = time.monotonic() + every
                    with ctx.sessions() as session, session.begin():
                        raised = check_stalled(session, time.time(), dashboard_url(ctx))
                    deliver(ctx, raised)
            except Exception:  # noqa: BLE001 - e.g. the database is down: keep the runs and try again
                log.exception("alert checks failed for runs %s; retrying in 1 s", ids)
                self.submit(ids)
                ctx.stop.wait(1.0)
            finally:
                self._done()


_runtimes: list[Runtime] = []
_lock = threading.Lock()


def dashboard_url(ctx: ServerContext) -> str | None:
    s = ctx.settings
    return s.url or f"http://{s.server.host}:{s.server.port}"


def start(ctx: ServerContext) -> Runtime:
    """Start the alerting threads for `ctx` (once; they stop with ctx.stop)."""
    with _lock:
        for rt in _runtimes:
            if rt.ctx is ctx:
                return rt
        _runtimes[:] = [rt for rt in _runtimes if not rt.ctx.stop.is_set()]
        rt = Runtime(ctx, WebhookSender(ctx.sessions, ctx.settings.alerts, ctx.stop).start())
        rt.thread = threading.Thread(target=rt.run, name="sqd-alerts", daemon=True)
        rt.thread.start()
        _runtimes.append(rt)
        return rt


def check_runs(ctx: ServerContext, run_ids: Sequence[str], holds: dict[str, float] | None = None) -> list[Raised]:
    """Check each run in its own transaction (one run's failure does not undo another's alerts)."""
    url = dashboard_url(ctx)
    raised: list[Raised] = []
    for run_id in run_ids:
        with ctx.sessions() as session, session.begin():
            raised += check_run(session, run_id, url, ctx.settings.alerts.eval_wait_s, holds)
    return raised


def deliver(ctx: ServerContext, raised: Sequence[Raised]) -> None:
    """After the commit: live fan-out, stop requests, webhook wake-up."""
    if not raised:
        return
    live.publish(ctx.bus, ctx.live_key, [live.LiveEvent("alert", r.alert.run_id, r.alert.model_dump())
                                         for r in raised])
    for r in raised:
        if r.stop_action_id is not None:
            _stop(ctx, r)
    if any(r.webhooks for r in raised):
        start(ctx).webhooks.wake()


def _stop(ctx: ServerContext, r: Raised) -> None:
    error = None
    with ctx.sessions() as session:
        run = runs_store.get_run(session, r.alert.run_id)
        try:
            if run is not None:
                launch.cancel(ctx, session, run, f"stopped by alert rule {r.alert.rule!r}: {r.alert.explanation}")
        except Exception as exc:  # noqa: BLE001 - recorded on the action, shown with the alert
            error = f"{type(exc).__name__}: {getattr(exc, 'detail', exc)}"
    with ctx.sessions() as session, session.begin():
        action = session.get(AlertAction, r.stop_action_id)
        if action is not None:
            action.status, action.last_error, action.updated_at = ("failed" if error else "done"), error, time.time()


def after_ingest(ctx: ServerContext, run_ids: Sequence[str]) -> None:
    """Called by ingest after each committed batch: queue the runs for the alerting thread and return."""
    if run_ids:
        start(ctx).submit(run_ids)

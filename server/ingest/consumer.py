"""The ingest consumer: reads `ingest` in batches (consumer group "server"), applies the whole batch in one
transaction, commits, fans the committed changes out to the live stream, runs the alert hook, and only then lets
the consumer ack. A database outage raises TransientError, so the consumer backs off and retries the same
messages (nothing lost, nothing dead-lettered); a message the store rejects is retried alone and dead-lettered
after `max_deliveries`; a message that can never be stored (wrong stream, out-of-range numbers) is dead-lettered
at once with the reason.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from sqd.bus import INGEST, Consumer, Delivery, TransientError, stop_on_signals
from sqd.protocol import (
    NO_EPOCH,
    AlertRaised,
    CheckpointReady,
    EvaluationResult,
    MetricBatch,
    PackedMetrics,
    RunFinished,
    RunStarted,
)
from sqd.server import live
from sqd.server.alerts import engine
from sqd.server.context import ServerContext
from sqd.server.health import INGEST_GROUP
from sqd.server.ingest.apply import ApplyResult, apply_events
from sqd.server.schemas import MAX_JSON_DEPTH, json_depth
from sqd.server.store import migrate
from sqd.server.sweeps import queue as sweep_queue
from sqd.settings import Settings

log = logging.getLogger(__name__)

INGEST_TYPES = (MetricBatch, PackedMetrics, RunStarted, RunFinished, CheckpointReady, EvaluationResult, AlertRaised)
MAX_STEP = 2**62
MAX_EPOCH = 2**31 - 1
DB_UNAVAILABLE = (OperationalError, InterfaceError, DisconnectionError, PoolTimeout)


def _ranges(event: object) -> tuple[tuple[int, int] | None, tuple[int, int] | None]:
    """(min, max) of the event's steps and of its epochs, each None when it has none."""
    if isinstance(event, MetricBatch | PackedMetrics):
        cols = event.columns()
        epochs = cols.epoch[cols.epoch != NO_EPOCH]
        return ((int(cols.step.min()), int(cols.step.max())) if len(cols) else None,
                (int(epochs.min()), int(epochs.max())) if len(epochs) else None)
    step: int | None
    epoch: int | None
    if isinstance(event, EvaluationResult):
        step, epoch = event.checkpoint_step, event.epoch
    else:
        step, epoch = getattr(event, "step", None), getattr(event, "epoch", None)
    return (None if step is None else (step, step)), (None if epoch is None else (epoch, epoch))


def rejection(event: object) -> str | None:
    """Why an event that decoded fine can still never be stored, or None."""
    if not isinstance(event, INGEST_TYPES):
        return f"a '{getattr(event, 'type', type(event).__name__)}' event does not belong on the ingest stream"
    try:
        steps, epochs = _ranges(event)
    except OverflowError:
        return f"{event.type}: a step or epoch is out of range: beyond 64 bits (steps must lie in [0, 2**62))"
    if steps and not 0 <= steps[0] <= steps[1] < MAX_STEP:
        return f"{event.type}: step {steps[1]} is out of range (steps must lie in [0, 2**62))"
    if epochs and not 0 <= epochs[0] <= epochs[1] <= MAX_EPOCH:
        return f"{event.type}: epoch {epochs[1]} is out of range (epochs must lie in [0, {MAX_EPOCH}])"
    if isinstance(event, MetricBatch | PackedMetrics) and not np.isfinite(event.columns().wall_time).all():
        return "metrics: wall_time must be a finite number of seconds since the epoch"
    stored_json = {"config": event.config} if isinstance(event, RunStarted) else (
        {"generator": event.generator} if isinstance(event, CheckpointReady) else {})
    for name, value in stored_json.items():
        if json_depth(value) > MAX_JSON_DEPTH:
            return f"{event.type}: {name} is nested deeper than {MAX_JSON_DEPTH} levels"
    return None


@dataclass
class IngestHandler:
    ctx: ServerContext
    consumer: Consumer | None = None  # for dead-lettering what can never be stored
    stats: dict[str, int] = field(default_factory=dict)

    def __call__(self, deliveries: list[Delivery]) -> None:
        events = []
        for d in deliveries:
            reason = rejection(d.event)
            if reason is not None and self.consumer is not None:
                self.consumer.dead_letter(d, reason)
            elif reason is not None:
                raise ValueError(reason)
            else:
                events.append(d.event)
        if events:
            self.apply(events)

    def apply(self, events: Sequence[object]) -> ApplyResult:
        """Commit `events` in one transaction, then fan out and run the alert hook."""
        ctx = self.ctx
        started = time.perf_counter()
        try:
            with ctx.sessions() as session, session.begin():
                result = apply_events(session, events)
        except DB_UNAVAILABLE as exc:
            ctx.ingest.db_ok = False
            ctx.ingest.last_error = f"database unavailable: {exc.orig if hasattr(exc, 'orig') else exc}"
            raise TransientError(ctx.ingest.last_error) from exc
        ctx.ingest.db_ok, ctx.ingest.last_error, ctx.ingest.last_batch_at = True, None, time.time()
        live.publish(ctx.bus, ctx.live_key, result.live)
        ctx.metrics.batch_seconds.observe(time.perf_counter() - started)
        ctx.metrics.count_points(result.points)
        for kind, n in result.event_counts.items():
            ctx.metrics.events.labels(kind).inc(n)
        for latency in result.evaluation_latencies:
            ctx.metrics.evaluation_latency.observe(latency)
        try:
            engine.after_ingest(ctx, sorted(result.run_ids))
        except Exception:  # the alert hook must never block ingest; its failure is logged with the traceback
            log.exception("engine.after_ingest failed for runs %s", sorted(result.run_ids))
        try:
            sweep_queue.after_ingest(ctx, result.live)
        except Exception:  # a sweep's next runs are released by its reconciler instead
            log.exception("releasing sweep runs after ingest failed")
        return result


def run_consumer(ctx: ServerContext, stop: threading.Event, name: str | None = None) -> None:
    """Consume the ingest stream until `stop` is set (the in-process thread and `sqd server --ingest-only`)."""
    consumer = ctx.bus.consumer(INGEST, INGEST_GROUP, name=name, packed_metrics=True)
    handler = IngestHandler(ctx, consumer)
    ctx.ingest.running = True
    try:
        consumer.run(handler, stop)
    finally:
        ctx.ingest.running = False


def consume_until_stopped(ctx: ServerContext) -> None:
    """run_consumer, restarted after a crash (e.g. the bus is not up yet) until ctx.stop is set."""
    while not ctx.stop.is_set():
        try:
            run_consumer(ctx, ctx.stop)
        except Exception as exc:  # noqa: BLE001 - keep trying, and say why on /health
            ctx.ingest.last_error = f"ingest consumer stopped: {exc}"
            log.exception("ingest consumer crashed; restarting in 2 s")
            ctx.stop.wait(2.0)


def start_consumer_thread(ctx: ServerContext) -> threading.Thread:
    thread = threading.Thread(target=consume_until_stopped, args=(ctx,), name="sqd-ingest", daemon=True)
    thread.start()
    return thread



def run_standalone(settings: Settings) -> None:
    """`sqd server --ingest-only`: migrate, then consume until SIGTERM / Ctrl-C."""
    ctx = ServerContext.open(settings)
    try:
        migrate.upgrade(ctx.engine)
        stop_on_signals(ctx.stop)
        log.info("ingest-only consumer started on %s", ctx.bus.key(INGEST))
        consume_until_stopped(ctx)
    finally:
        ctx.close()

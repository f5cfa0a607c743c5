"""Prometheus metrics (one registry per server context, so several apps can live in one process) and
structured JSON logs."""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector
from sqlalchemy import func, select
from sqlalchemy.exc import SQLAlchemyError

from sqd.bus import INGEST
from sqd.server.store.models import Run

if TYPE_CHECKING:
    from sqd.server.context import ServerContext

RATE_WINDOW_S = 10.0


class ServerMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.points = Counter("sqd_ingest_points", "metric points committed by ingest", registry=self.registry)
        self.events = Counter("sqd_ingest_events", "events committed by ingest", ["type"], registry=self.registry)
        self.batch_seconds = Histogram("sqd_ingest_batch_seconds", "time to commit one ingest batch",
                                       registry=self.registry)
        self.evaluation_latency = Histogram(
            "sqd_evaluation_latency_seconds", "checkpoint announced → evaluation result", registry=self.registry,
            buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800))
        self._recent: deque[tuple[float, int]] = deque()

    def count_points(self, n: int) -> None:
        self.points.inc(n)
        now = time.monotonic()
        self._recent.append((now, n))
        while self._recent and self._recent[0][0] < now - RATE_WINDOW_S:
            self._recent.popleft()

    def points_per_second(self) -> float:
        now = time.monotonic()
        return sum(n for t, n in self._recent if t >= now - RATE_WINDOW_S) / RATE_WINDOW_S

    def attach(self, ctx: ServerContext) -> None:
        self.registry.register(_StateCollector(ctx))


class _StateCollector(Collector):
    """Values read at scrape time: stream lag, runs by status, the recent ingest rate."""

    def __init__(self, ctx: ServerContext):
        self.ctx = ctx

    def collect(self) -> Iterator[GaugeMetricFamily]:
        from sqd.server.health import group_info

        rate = GaugeMetricFamily("sqd_ingest_points_per_second", f"points committed per second over the last "
                                 f"{RATE_WINDOW_S:.0f} s (this process)")
        rate.add_metric([], self.ctx.metrics.points_per_second())
        yield rate
        lag = GaugeMetricFamily("sqd_stream_lag", "entries not yet delivered to the group", labels=["stream", "group"])
        pending = GaugeMetricFamily("sqd_stream_pending", "delivered, not yet acknowledged",
                                    labels=["stream", "group"])
        try:
            for g in group_info(self.ctx, INGEST):
                lag.add_metric([INGEST, g["name"]], float(g.get("lag") or 0))
                pending.add_metric([INGEST, g["name"]], float(g.get("pending") or 0))
        except Exception:  # noqa: BLE001 - a scrape must not fail because the bus is away
            pass
        yield lag
        yield pending
        runs = GaugeMetricFamily("sqd_runs", "runs by status", labels=["status"])
        try:
            with self.ctx.sessions() as session:
                for status, n in session.execute(select(Run.status, func.count()).group_by(Run.status)):
                    runs.add_metric([status], n)
        except SQLAlchemyError:
            pass
        yield runs


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, plus any `extra=` fields."""

    RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
        "message", "asctime", "color_message"}

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                               "msg": record.getMessage()}
        out.update({k: v for k, v in vars(record).items() if k not in self.RESERVED})
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


def configure_json_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(JsonFormatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)

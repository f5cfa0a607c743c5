"""The bus: Redis Streams with consumer groups. Only XADD / XREADGROUP / XACK / XAUTOCLAIM live here.

Delivery is at least once: a message is acknowledged only after the handler returned (its effect is committed),
so handlers must be idempotent. A handler that raises `TransientError` (database down, artifact store away) makes
the consumer back off and retry without counting a failure; any other exception counts one failure for each
message in the batch, and after `max_deliveries` failures (or deliveries to consumers that died) the message goes
to `<stream>:dead` with the error and its original fields, so the stream keeps flowing and nothing is dropped.
"""

from __future__ import annotations

import logging
import signal
import socket
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import redis

from sqd.errors import BusError, DecodeError, SQDError
from sqd.protocol import AnyEvent, Event, PackedMetrics
from sqd.settings import BusSettings, Settings, get_settings
from sqd.wire import Fields, decode, decode_packed, encode

log = logging.getLogger(__name__)

INGEST = "ingest"
CONTROL = "control"
CHECKPOINTS = "checkpoints"
BACKFILL = "backfill"  # checkpoints a busy worker skipped, evaluated once no new checkpoint waits


class TransientError(SQDError):
    """Raised by a handler when the failure is not the message's fault; the batch is retried, not counted."""


@dataclass
class Delivery:
    message_id: str
    fields: Fields
    event: AnyEvent | PackedMetrics | None = None
    error: str | None = None  # why the message could not be decoded


@dataclass
class Bus:
    client: redis.Redis
    settings: BusSettings = field(default_factory=BusSettings)

    @classmethod
    def connect(cls, settings: Settings | None = None, url: str | None = None, prefix: str | None = None) -> Bus:
        settings = settings or get_settings()
        bus_settings = settings.bus if prefix is None else settings.bus.model_copy(update={"prefix": prefix})
        client = redis.Redis.from_url(url or settings.resolved_redis_url, socket_connect_timeout=5,
                                      health_check_interval=30)
        return cls(client, bus_settings)

    def key(self, stream: str) -> str:
        return f"{self.settings.prefix}:{stream}"

    def dead_key(self, stream: str) -> str:
        return f"{self.key(stream)}:dead"

    def ping(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def publish(self, stream: str, events: Sequence[Event]) -> list[str]:
        """XADD every event in one pipelined round trip; returns the stream ids."""
        if not events:
            raise BusError(f"publish to {stream}: no events given")
        payloads: list[Any] = [encode(e) for e in events]  # validates before any network round trip
        pipe = self.client.pipeline(transaction=False)
        for fields in payloads:
            pipe.xadd(self.key(stream), fields, maxlen=self.settings.maxlen, approximate=True)
        try:
            ids = pipe.execute()
        except redis.RedisError as exc:
            raise BusError(f"publish to {stream}: {exc}") from exc
        return [i.decode() for i in ids]

    def length(self, stream: str) -> int:
        return int(self.client.xlen(self.key(stream)))

    def dead_letters(self, stream: str, count: int = 100) -> list[dict[str, Any]]:
        rows: Any = self.client.xrange(self.dead_key(stream), count=count)
        return [{"id": i.decode(), **{k.decode(): v for k, v in f.items()}} for i, f in rows]

    def consumer(self, stream: str, group: str, name: str | None = None, packed_metrics: bool = False,
                 **overrides: Any) -> Consumer:
        """`packed_metrics`: metric batches arrive as PackedMetrics (numpy columns) instead of MetricBatch."""
        return Consumer(self, stream, group, name or f"{socket.gethostname()}-{id(self):x}",
                        self.settings.model_copy(update=overrides), packed_metrics)

    def close(self) -> None:
        self.client.close()


def drop_prefix(redis_url: str, prefix: str) -> int:
    """Delete every key under `prefix:` (streams, dead letters, tables): retiring a deployment's bus, or a test's.
    Returns how many were deleted."""
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        return int(client.delete(*keys)) if keys else 0
    finally:
        client.close()


def _to_delivery(message_id: bytes, fields: Fields, packed_metrics: bool = False) -> Delivery:
    delivery = Delivery(message_id.decode(), fields)
    try:
        delivery.event = decode_packed(fields) if packed_metrics else decode(fields)
    except DecodeError as exc:
        delivery.error = str(exc)
    return delivery


Handler = Callable[[list[Delivery]], None]


class Consumer:
    """One consumer in a group: the loop is ensure_group → drain_own_pending → read_new → handle → ack,
    with reclaim_stale every `min_idle_ms / 2` and dead-lettering past `max_deliveries`."""

    def __init__(self, bus: Bus, stream: str, group: str, name: str, settings: BusSettings,
                 packed_metrics: bool = False):
        self.bus, self.stream, self.group, self.name, self.settings = bus, stream, group, name, settings
        self.packed_metrics = packed_metrics
        self.key = bus.key(stream)
        self._failures_key = f"{self.key}:failures:{group}"
        self._retry_own = True  # after a restart or a failure, our own pending messages come first
        self._last_reclaim = 0.0

    @property
    def client(self) -> Any:
        # redis-py's annotations cover sync and async replies at once; the replies we read are documented shapes.
        return self.bus.client

    def ensure_group(self) -> None:
        try:
            self.client.xgroup_create(self.key, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def drain_own_pending(self, count: int | None = None) -> list[Delivery]:
        resp = self.client.xreadgroup(self.group, self.name, {self.key: "0"}, count=count or self.settings.batch)
        return [_to_delivery(i, f, self.packed_metrics) for _, msgs in resp for i, f in msgs if f]

    def read_new(self, count: int | None = None, block_ms: int | None = None) -> list[Delivery]:
        resp = self.client.xreadgroup(self.group, self.name, {self.key: ">"}, count=count or self.settings.batch,
                                      block=self.settings.block_ms if block_ms is None else block_ms)
        return [_to_delivery(i, f, self.packed_metrics) for _, msgs in resp for i, f in msgs]

    def ack(self, message_ids: Sequence[str], counters: Sequence[str] = ()) -> None:
        """Ack the messages and clear their failure counts, and their fields in the caller's own `counters`
        hashes, in one round trip (a consumer that dies in between leaves no stale count behind)."""
        if message_ids:
            pipe = self.client.pipeline(transaction=False)
            pipe.xack(self.key, self.group, *message_ids)
            for key in (self._failures_key, *counters):
                pipe.hdel(key, *message_ids)
            pipe.execute()

    def reclaim_stale(self, min_idle_ms: int | None = None) -> list[Delivery]:
        """Take over messages a dead consumer left pending; those delivered too often are dead-lettered."""
        idle = self.settings.min_idle_ms if min_idle_ms is None else min_idle_ms
        claimed: list[Delivery] = []
        cursor = "0-0"
        while True:
            cursor_b, msgs, deleted = self.client.xautoclaim(self.key, self.group, self.name, idle, cursor,
                                                             count=self.settings.batch)[:3]
            claimed.extend(_to_delivery(i, f, self.packed_metrics) for i, f in msgs if f)
            if deleted:  # trimmed away by MAXLEN while pending: nothing left to process
                self.client.xack(self.key, self.group, *deleted)
            cursor = cursor_b.decode() if isinstance(cursor_b, bytes) else cursor_b
            if cursor == "0-0":
                break
        self._last_reclaim = time.monotonic()
        return self._drop_overdelivered(claimed)

    def _drop_overdelivered(self, deliveries: list[Delivery]) -> list[Delivery]:
        if not deliveries:
            return deliveries
        counts = {}
        for d in deliveries:
            info = self.client.xpending_range(self.key, self.group, d.message_id, d.message_id, 1)
            counts[d.message_id] = info[0]["times_delivered"] if info else 1
        keep = []
        for d in deliveries:
            if counts[d.message_id] > self.settings.max_deliveries:
                self.dead_letter(d, f"delivered {counts[d.message_id]} times without an ack "
                                    f"(its consumers died while handling it)")
            else:
                keep.append(d)
        return keep

    def dead_letter(self, delivery: Delivery, error: str) -> None:
        fields: dict[Any, Any] = dict(delivery.fields)
        fields.update({"error": error, "source_id": delivery.message_id, "group": self.group,
                       "consumer": self.name, "failed_at": f"{time.time():.3f}"})
        pipe = self.client.pipeline(transaction=True)
        pipe.xadd(self.bus.dead_key(self.stream), fields, maxlen=self.settings.maxlen, approximate=True)
        pipe.xack(self.key, self.group, delivery.message_id)
        pipe.hdel(self._failures_key, delivery.message_id)
        pipe.execute()
        log.warning("dead-lettered %s %s: %s", self.key, delivery.message_id, error)

    def record_failure(self, delivery: Delivery, error: str) -> bool:
        """Count one failure; dead-letter the message once it has failed `max_deliveries` times."""
        failures = int(self.client.hincrby(self._failures_key, delivery.message_id, 1))
        self._retry_own = True
        if failures >= self.settings.max_deliveries:
            self.dead_letter(delivery, f"failed {failures} times; last error: {error}")
            return True
        return False

    def next_batch(self) -> list[Delivery]:
        if self._retry_own:
            own = self.drain_own_pending()
            self._retry_own = bool(own)
            if own:
                return own
        if time.monotonic() - self._last_reclaim > self.settings.min_idle_ms / 2000:
            stale = self.reclaim_stale()
            if stale:
                return stale
        return self.read_new()

    def handle(self, batch: list[Delivery], handler: Handler) -> None:
        """Dead-letter undecodable messages, hand the rest to `handler`, ack what it committed."""
        good = []
        for d in batch:
            if d.error is not None:
                self.dead_letter(d, d.error)
            else:
                good.append(d)
        if not good:
            return
        try:
            handler(good)
        except TransientError:
            raise
        except Exception:
            if len(good) == 1:
                self.record_failure(good[0], traceback.format_exc(limit=5))
                return
            for d in good:  # isolate the poison message; the others still go through
                self.handle([d], handler)
            return
        self.ack([d.message_id for d in good])

    def run(self, handler: Handler, stop: threading.Event, idle: Callable[[], None] | None = None) -> None:
        """Consume until `stop` is set. `idle` is called when a read returns nothing (housekeeping hooks)."""
        self.ensure_group()
        backoff = 0.1
        while not stop.is_set():
            try:
                batch = self.next_batch()
                if batch:
                    self.handle(batch, handler)
                elif idle is not None:
                    idle()
                backoff = 0.1
            except (TransientError, redis.ConnectionError, redis.TimeoutError) as exc:
                self._retry_own = True
                log.warning("%s/%s: %s; retrying in %.1fs", self.key, self.group, exc, backoff)
                stop.wait(backoff)
                backoff = min(backoff * 2, 5.0)


def stop_on_signals(stop: threading.Event) -> None:
    """SIGTERM and Ctrl-C set `stop`, so loops finish the batch in hand, ack it and exit."""

    def _handler(signum: int, _frame: object) -> None:
        log.info("received signal %d, stopping", signum)
        stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, _handler)

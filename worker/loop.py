"""The evaluation worker: consumer group "workers" on `checkpoints` → EvaluationResult on `ingest`.

Any number of workers on any number of hosts share the group; each message goes to one of them, a message left
pending by a dead worker is reclaimed by another (XAUTOCLAIM, `bus.min_idle_ms`), and a result published twice
is stored once (the server dedupes on (run, checkpoint step)).

Backpressure: evaluating is slower than a fast run checkpoints, so only the newest checkpoint of a run is
evaluated. Within a read batch the older checkpoints of a run are published as `status="skipped"`; across workers
`<prefix>:latest_ckpt:<run_id>` holds the newest step any worker has read, and a worker holding an older one
skips it too. Skipped evaluations are published (the UI shows them), never silently dropped.

Backfill (`worker.backfill`, on by default): each skipped checkpoint also goes to the `backfill` stream, which the
same group consumes one message at a time whenever a read of `checkpoints` comes back empty — new checkpoints always
come first, and the skipped ones are evaluated once the workers catch up (at the latest when the runs end). Its "ok"
replaces the stored "skipped"; a failure leaves the "skipped" in place (the server keeps an "ok" only). The
stream has the same delivery guarantees: a worker that dies mid-backfill leaves the message to be reclaimed.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import redis

from sqd.bus import BACKFILL, CHECKPOINTS, INGEST, Bus, Consumer, Delivery, TransientError
from sqd.errors import BusError
from sqd.protocol import CheckpointReady, EvaluationResult
from sqd.worker.evaluate import Evaluator, describe

log = logging.getLogger(__name__)

GROUP = "workers"
READ_BATCH = 8  # small, so one worker does not hoard checkpoints others could evaluate; enough to see a backlog
LATEST_TTL_S = 30 * 24 * 3600

# Keep the maximum: a worker reading an old checkpoint late must not lower the mark.
_BUMP_MAX = """
local cur = tonumber(redis.call('GET', KEYS[1]) or '-1')
local new = tonumber(ARGV[1])
if new > cur then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
  return new
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
return cur
"""


def default_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


class WorkerLoop:
    def __init__(self, bus: Bus, evaluator: Evaluator, *, read_batch: int = READ_BATCH,
                 min_idle_ms: int | None = None, transient_retries: int | None = None, backfill: bool | None = None):
        overrides: dict[str, Any] = {"batch": read_batch}
        if min_idle_ms is not None:
            overrides["min_idle_ms"] = min_idle_ms
        self.bus, self.evaluator = bus, evaluator
        self.consumer = bus.consumer(CHECKPOINTS, GROUP, evaluator.worker, **overrides)
        # one message per idle moment, without waiting: a new checkpoint is never kept waiting by more than one
        # backfill evaluation
        self.backfill = bus.consumer(BACKFILL, GROUP, evaluator.worker, **{**overrides, "batch": 1, "block_ms": 1}) \
            if (evaluator.settings.worker.backfill if backfill is None else backfill) else None
        self.transient_retries = transient_retries or evaluator.settings.worker.transient_retries
        self._bump = bus.client.register_script(_BUMP_MAX)
        self.evaluated = 0  # results published, by status, for logs and tests
        self.skipped = 0
        self.backfilled = 0

    @staticmethod
    def transient_key(consumer: Consumer) -> str:
        return f"{consumer.key}:transient:{GROUP}"

    def latest_key(self, run_id: str) -> str:
        return f"{self.bus.settings.prefix}:latest_ckpt:{run_id}"

    def note_seen(self, run_id: str, step: int) -> int:
        """Record that `step` of the run was read; returns the newest step any worker has read."""
        return int(self._bump(keys=[self.latest_key(run_id)], args=[step, LATEST_TTL_S]))

    def handle(self, deliveries: list[Delivery]) -> None:
        by_run: dict[str, list[tuple[Delivery, CheckpointReady]]] = defaultdict(list)
        for d in deliveries:
            if isinstance(d.event, CheckpointReady):
                by_run[d.event.run_id].append((d, d.event))
            else:  # not ours to judge; the consumer acks it with the batch
                log.warning("checkpoints stream: ignoring a %s event (%s)", type(d.event).__name__, d.message_id)
        for items in by_run.values():  # announce the newest steps at once, so other workers skip older ones
            self.note_seen(items[0][1].run_id, max(event.step for _, event in items))
        with self._keep_claimed(self.consumer, [d.message_id for d in deliveries]):
            for items in by_run.values():
                self._handle_run(items)

    def _handle_run(self, items: list[tuple[Delivery, CheckpointReady]]) -> None:
        items.sort(key=lambda item: item[1].step)
        newest_delivery, newest = items[-1]
        latest = self.note_seen(newest.run_id, newest.step)  # again: another worker may have seen a newer one since
        results: list[EvaluationResult] = []
        skipped: dict[int, CheckpointReady] = {}  # a repeated step is one checkpoint
        for _, event in items[:-1]:
            if event.step < newest.step and event.step not in skipped:
                results.append(self.evaluator.skipped(event, newest.step))
                skipped[event.step] = event
        if latest > newest.step:
            results.append(self.evaluator.skipped(newest, latest))
            skipped[newest.step] = newest
        else:
            results.append(self._evaluate(self.consumer, newest_delivery, newest))
        self._publish(results, list(skipped.values()) if self.backfill is not None else [])
        self.consumer.ack([d.message_id for d, _ in items], counters=[self.transient_key(self.consumer)])
        for r in results:
            self._count(r)

    def _count(self, r: EvaluationResult, backfill: bool = False) -> None:
        log.info("run %s step %d: %s%s%s", r.run_id, r.checkpoint_step, r.status, " (backfill)" if backfill else "",
                 f" ({r.error.splitlines()[0]})" if r.error else "")
        if r.status == "skipped":
            self.skipped += 1
        else:
            self.evaluated += 1
            self.backfilled += backfill

    def handle_backfill(self, deliveries: list[Delivery]) -> None:
        """Evaluate checkpoints that were skipped (each its own result, whatever became of the run since)."""
        assert self.backfill is not None
        for d in deliveries:
            if not isinstance(d.event, CheckpointReady):
                log.warning("backfill stream: ignoring a %s event (%s)", type(d.event).__name__, d.message_id)
                continue
            with self._keep_claimed(self.backfill, [d.message_id]):
                result = self._evaluate(self.backfill, d, d.event)
            self._publish([result])
            self.backfill.ack([d.message_id], counters=[self.transient_key(self.backfill)])
            self._count(result, backfill=True)

    def _idle(self) -> None:
        """Nothing new on `checkpoints`: one skipped checkpoint, if any waits."""
        assert self.backfill is not None
        batch = self.backfill.next_batch()
        if batch:
            self.backfill.handle(batch, self.handle_backfill)

    @contextmanager
    def _keep_claimed(self, c: Consumer, message_ids: list[str]) -> Iterator[None]:
        """Reset the idle time of the batch's messages (acked ones drop out) while we work through it, so a long
        evaluation (faces on a CPU takes minutes) is not reclaimed by another worker; if this process dies the
        heartbeat dies with it and the messages become reclaimable after `min_idle_ms`."""
        done = threading.Event()
        period_s = c.settings.min_idle_ms / 3000

        def beat() -> None:
            while not done.wait(period_s):
                try:
                    c.client.xclaim(c.key, GROUP, c.name, 0, message_ids, justid=True)
                except redis.RedisError as exc:  # the bus is away: the loop notices on its next call
                    log.warning("heartbeat on %s failed: %s", message_ids, exc)

        thread = threading.Thread(target=beat, name="claim-heartbeat", daemon=True)
        thread.start()
        try:
            yield
        finally:
            done.set()
            thread.join()

    def _evaluate(self, consumer: Consumer, delivery: Delivery, event: CheckpointReady) -> EvaluationResult:
        try:
            return self.evaluator.evaluate(event)
        except TransientError as exc:
            tries = int(self.bus.client.hincrby(self.transient_key(consumer), delivery.message_id, 1))
            if tries < self.transient_retries:
                raise
            consumer.dead_letter(delivery, f"gave up after {tries} transient failures: {exc}")
            return self.evaluator.result(event, "failed", error=f"gave up after {tries} tries: {describe(exc)}")

    def _publish(self, results: list[EvaluationResult], backfill: list[CheckpointReady] | None = None) -> None:
        """The results, then the skipped checkpoints to backfill (a crash in between redelivers the batch: at
        worst a checkpoint is backfilled twice, and stored once)."""
        try:
            self.bus.publish(INGEST, results)
            if backfill:
                self.bus.publish(BACKFILL, backfill)
        except BusError as exc:  # the bus is down: keep the messages pending and retry the batch
            raise TransientError(str(exc)) from exc

    def run(self, stop: threading.Event) -> None:
        log.info("worker %s consuming %s (group %s)%s", self.evaluator.worker, self.consumer.key, GROUP,
                 "" if self.backfill is None else f", then {self.backfill.key} when idle")
        if self.backfill is not None:
            self.backfill.ensure_group()
        self.consumer.run(self.handle, stop, idle=None if self.backfill is None else self._idle)

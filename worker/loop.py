"""The evaluation worker: consumer group "workers" on `checkpoints` → EvaluationResult on `ingest`.

Any number of workers on any number of hosts share the group; each message goes to one of them, a message left
pending by a dead worker is reclaimed by another (XAUTOCLAIM, `bus.min_idle_ms`), and a result published twice
is stored once (the server dedupes on (run, checkpoint step)).

Backpressure: evaluating is slower than a fast run checkpoints, so only the newest checkpoint of a run is
evaluated. Within a read batch the older checkpoints of a run are published as `status="skipped"`; across workers
`<prefix>:latest_ckpt:<run_id>` holds the newest step any worker has read, and a worker holding an older one
skips it too. Skipped evaluations are published (the UI shows them), never silently dropped.
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

from sqd.bus import CHECKPOINTS, INGEST, Bus, Delivery, TransientError
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
                 min_idle_ms: int | None = None, transient_retries: int | None = None):
        overrides: dict[str, Any] = {"batch": read_batch}
        if min_idle_ms is not None:
            overrides["min_idle_ms"] = min_idle_ms
        self.bus, self.evaluator = bus, evaluator
        self.consumer = bus.consumer(CHECKPOINTS, GROUP, evaluator.worker, **overrides)
        self.transient_retries = transient_retries or evaluator.settings.worker.transient_retries
        self.transient_key = f"{self.consumer.key}:transient:{GROUP}"
        self._bump = bus.client.register_script(_BUMP_MAX)
        self.evaluated = 0  # results published, by status, for logs and tests
        self.skipped = 0

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
        with self._keep_claimed([d.message_id for d in deliveries]):
            for items in by_run.values():
                self._handle_run(items)

    def _handle_run(self, items: list[tuple[Delivery, CheckpointReady]]) -> None:
        items.sort(key=lambda item: item[1].step)
        newest_delivery, newest = items[-1]
        latest = self.note_seen(newest.run_id, newest.step)  # again: another worker may have seen a newer one since
        results: list[EvaluationResult] = []
        seen_steps = set()
        for _, event in items[:-1]:
            if event.step < newest.step and event.step not in seen_steps:  # a repeated step is one checkpoint
                results.append(self.evaluator.skipped(event, newest.step))
                seen_steps.add(event.step)
        if latest > newest.step:
            results.append(self.evaluator.skipped(newest, latest))
        else:
            results.append(self._evaluate(newest_delivery, newest))
        self._publish(results)
        self.consumer.ack([d.message_id for d, _ in items], counters=[self.transient_key])
        for r in results:
            log.info("run %s step %d: %s%s", r.run_id, r.checkpoint_step, r.status,
                     f" ({r.error.splitlines()[0]})" if r.error else "")
            if r.status == "skipped":
                self.skipped += 1
            else:
                self.evaluated += 1

    @contextmanager
    def _keep_claimed(self, message_ids: list[str]) -> Iterator[None]:
        """Reset the idle time of the batch's messages (acked ones drop out) while we work through it, so a long
        evaluation (faces on a CPU takes minutes) is not reclaimed by another worker; if this process dies the
        heartbeat dies with it and the messages become reclaimable after `min_idle_ms`."""
        done = threading.Event()
        period_s = self.consumer.settings.min_idle_ms / 3000
        c = self.consumer

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

    def _evaluate(self, delivery: Delivery, event: CheckpointReady) -> EvaluationResult:
        try:
            return self.evaluator.evaluate(event)
        except TransientError as exc:
            tries = int(self.bus.client.hincrby(self.transient_key, delivery.message_id, 1))
            if tries < self.transient_retries:
                raise
            self.consumer.dead_letter(delivery, f"gave up after {tries} transient failures: {exc}")
            return self.evaluator.result(event, "failed", error=f"gave up after {tries} tries: {describe(exc)}")

    def _publish(self, results: list[EvaluationResult]) -> None:
        try:
            self.bus.publish(INGEST, results)
        except BusError as exc:  # the bus is down: keep the messages pending and retry the batch
            raise TransientError(str(exc)) from exc

    def run(self, stop: threading.Event) -> None:
        log.info("worker %s consuming %s (group %s)", self.evaluator.worker, self.consumer.key, GROUP)
        self.consumer.run(self.handle, stop)

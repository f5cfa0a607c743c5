"""The Monitor's sender thread: turns metric windows and checkpoints into events and delivers them (via the Outbox).

Everything slow or fallible happens here, off the training thread: waiting for the device → host copy, writing the
checkpoint to the artifact store, talking to the bus, and every `system_interval_s` sampling the system metrics
(sqd.trainer.system_metrics; `sys/…` points at the Monitor's last step). Store failures are reported (log +
`health/checkpoint_failed` point + an alert event) and training goes on; a bug here is kept in `error` and
re-raised by the training thread.
"""

from __future__ import annotations

import logging
import math
import queue
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqd.artifacts import ArtifactStore
from sqd.bus import CHECKPOINTS, INGEST
from sqd.errors import ArtifactError, SQDError
from sqd.protocol import AlertRaised, CheckpointReady, Event, MetricBatch, wall_ms
from sqd.trainer.metric_buffer import PointRow, Window
from sqd.trainer.spool import Outbox
from sqd.trainer.system_metrics import SystemSampler

log = logging.getLogger(__name__)

NONFINITE_KEY = "health/nonfinite"
CHECKPOINT_FAILED_KEY = "health/checkpoint_failed"


class NonFiniteError(SQDError):
    """A loss, gradient norm or angle became NaN/inf and the Monitor was asked to fail the run (on_nonfinite)."""


def checkpoint_key(run_id: str, step: int) -> str:
    return f"runs/{run_id}/checkpoints/step-{step:09d}.pt"


@dataclass(frozen=True)
class CheckpointJob:
    step: int
    epoch: int | None
    wall_time: float
    data: bytes
    generator: dict[str, Any]
    config: dict[str, Any]


@dataclass(frozen=True)
class EventsJob:
    stream: str
    events: list[Event]


_STOP = object()


# Angles are sent to float32 precision (7 significant digits, relative error ≤ 6e-8): the weights they are
# measured from hold no more, and the server stores a float32-exact series in 4 bytes a value before compression
# instead of 8 (a float64 angle's 52 random mantissa bits cost ~7 bytes a point stored).
ANGLE_PREFIXES = ("angle/", "angle_epoch/")


def as_float32(value: float) -> float:
    try:
        return float(struct.unpack("<f", struct.pack("<f", value))[0])
    except OverflowError:  # beyond float32's range (no angle is): sent as it is
        return value


class Publisher:
    def __init__(self, run_id: str, outbox: Outbox, artifacts: ArtifactStore, profile: str,
                 sampler: SystemSampler | None = None, system_interval_s: float = 5.0,
                 last_step: Callable[[], int | None] = lambda: None):
        self.run_id, self.outbox, self.artifacts, self.profile = run_id, outbox, artifacts, profile
        self.sampler, self.system_interval_s, self.last_step = sampler, system_interval_s, last_step
        self._next_sample = time.monotonic()
        self.jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self.error: BaseException | None = None
        self.first_nonfinite: str | None = None  # description of the first NaN/inf seen, once
        self._thread = threading.Thread(target=self._run, name=f"sqd-monitor-{run_id[:8]}", daemon=True)
        self._close_timeout_s = 10.0

    def start(self) -> None:
        self._thread.start()

    def submit(self, job: Window | CheckpointJob | EventsJob) -> None:
        self.jobs.put(job)

    def stop(self, close_timeout_s: float) -> None:
        self._close_timeout_s = close_timeout_s
        self.jobs.put(_STOP)
        self._thread.join()

    def _timeout(self) -> float | None:
        """How long to wait for the next job: until the next system sample, 0.5 s while events wait for the bus."""
        waits = [0.5] if self.outbox.pending() else []
        if self.sampler is not None:
            waits.append(max(0.0, self._next_sample - time.monotonic()))
        return min(waits) if waits else None

    def _run(self) -> None:
        try:
            while True:
                try:
                    job = self.jobs.get(timeout=self._timeout())
                except queue.Empty:
                    job = None
                if job is _STOP:
                    break
                try:
                    if job is not None:
                        self._handle(job)
                    self._sample_system()
                except Exception as exc:  # a bug: keep it for the training thread, keep delivering the rest
                    log.exception("monitor %s: handling %s failed", self.run_id, type(job).__name__)
                    self.error = self.error or exc
                self.outbox.send()
        finally:
            if self.sampler is not None:
                self.sampler.close()
            self.outbox.close(self._close_timeout_s)

    def _sample_system(self) -> None:
        if self.sampler is None or time.monotonic() < self._next_sample:
            return
        self._next_sample = time.monotonic() + self.system_interval_s
        step = self.last_step()
        if step is None:  # nothing to attach the points to before the first step
            return
        wall = wall_ms(time.time())
        self._metrics([(key, step, value, None, wall) for key, value in self.sampler.sample().items()])

    def _handle(self, job: Window | CheckpointJob | EventsJob) -> None:
        if isinstance(job, Window):
            self._metrics([(k, s, as_float32(v) if k.startswith(ANGLE_PREFIXES) else v, e, w)
                           for k, s, v, e, w in job.points()])
        elif isinstance(job, CheckpointJob):
            self._checkpoint(job)
        else:
            self.outbox.put(job.stream, job.events)

    def _metrics(self, rows: list[PointRow]) -> None:
        if not rows:
            return
        bad: dict[tuple[int, int | None, float], list[str]] = {}
        for key, step, value, epoch, wall in rows:
            if not math.isfinite(value):
                bad.setdefault((step, epoch, wall), []).append(f"{key}={value}")
        rows += [(NONFINITE_KEY, step, float(len(keys)), epoch, wall) for (step, epoch, wall), keys in bad.items()]
        self.outbox.put(INGEST, [MetricBatch.from_points(self.run_id, rows)])
        if bad and self.first_nonfinite is None:
            (step, epoch, _), keys = next(iter(bad.items()))
            self.first_nonfinite = f"non-finite values at step {step}: {', '.join(keys)}"
            log.warning("run %s: %s; recorded as %s (values kept as NaN/inf)", self.run_id, self.first_nonfinite,
                        NONFINITE_KEY)
            self.outbox.put(INGEST, [AlertRaised(run_id=self.run_id, rule="nonfinite", step=step, epoch=epoch,
                                                 signals=[k.split("=")[0] for k in keys], severity="critical",
                                                 explanation=self.first_nonfinite)])

    def _checkpoint(self, job: CheckpointJob) -> None:
        key = checkpoint_key(self.run_id, job.step)
        try:
            ref = self.artifacts.put_bytes(key, job.data)
        except (ArtifactError, OSError) as exc:
            log.error("run %s: checkpoint at step %d not saved: %s; training goes on", self.run_id, job.step, exc)
            self._metrics([(CHECKPOINT_FAILED_KEY, job.step, 1.0, job.epoch, job.wall_time)])
            self.outbox.put(INGEST, [AlertRaised(run_id=self.run_id, rule="checkpoint_failed", step=job.step,
                                                 epoch=job.epoch, severity="warning",
                                                 explanation=f"checkpoint not saved: {exc}")])
            return
        event = CheckpointReady(run_id=self.run_id, step=job.step, epoch=job.epoch, uri=ref.uri, sha256=ref.sha256,
                                size_bytes=ref.size_bytes, profile=self.profile, generator=job.generator,
                                config=job.config)
        self.outbox.put(CHECKPOINTS, [event])
        self.outbox.put(INGEST, [event])

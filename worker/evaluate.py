"""One checkpoint → one EvaluationResult: fetch (sha256 verified), rebuild G, sample grid, profile metrics.

Failures that are the checkpoint's fault (corrupt or truncated file, sha256 mismatch, unknown architecture,
weights that do not fit, NaN images, a missing model file of the profile) become `status="failed"` results with
the error and a traceback tail, shown in the UI. Failures that are not (the artifact store unreachable) raise
`TransientError`, so the bus retries the message later.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, TypeVar

import torch

from sqd.artifacts import ArtifactStore
from sqd.bus import TransientError
from sqd.errors import ArtifactError
from sqd.protocol import CheckpointReady, EvaluationResult, EvaluationStatus
from sqd.settings import Settings
from sqd.trainer.checkpoint import load_generator, read_checkpoint
from sqd.worker.grid import GRID_SIDE, grid_key, grid_png
from sqd.worker.profiles import NO_PROFILE, EvaluationProfile, get_profile
from sqd.worker.sampling import GeneratorSampler, run_seed

TRACEBACK_CHARS = 4000
T = TypeVar("T")


@contextmanager
def stage(timings: dict[str, float], name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        timings[name] = timings.get(name, 0.0) + time.perf_counter() - start


def describe(exc: BaseException) -> str:
    """The error line first (what the UI shows), then the end of the traceback."""
    tail = "".join(traceback.format_exception(exc))[-TRACEBACK_CHARS:]
    return f"{type(exc).__name__}: {exc}\n\n{tail}"


def _store_unreachable(exc: ArtifactError) -> bool:
    # ArtifactStore chains the OSError of an unreadable store; a missing file or a sha mismatch is the message's fault.
    cause = exc.__cause__
    return isinstance(cause, OSError) and not isinstance(cause, FileNotFoundError)


@dataclass
class Evaluator:
    settings: Settings
    store: ArtifactStore
    device: torch.device
    worker: str
    profiles: dict[str, EvaluationProfile] = field(default_factory=dict)

    def profile(self, name: str) -> EvaluationProfile:
        """Profiles load their models once per worker; a failed load is retried on the next checkpoint."""
        if name not in self.profiles:
            self.profiles[name] = get_profile(name, self.settings, self.device)
        return self.profiles[name]

    def result(self, event: CheckpointReady, status: EvaluationStatus, **fields: Any) -> EvaluationResult:
        return EvaluationResult(run_id=event.run_id, checkpoint_step=event.step, epoch=event.epoch,
                                checkpoint_uri=event.uri, status=status, worker=self.worker, **fields)

    def skipped(self, event: CheckpointReady, newer_step: int) -> EvaluationResult:
        return self.result(event, "skipped", error=f"superseded by checkpoint step {newer_step} (the worker "
                                                   "evaluates the newest checkpoint of a run when they queue up)")

    def evaluate(self, event: CheckpointReady) -> EvaluationResult:
        timings: dict[str, float] = {}
        start = time.perf_counter()
        try:
            metrics, n_samples, grid_uri = self._evaluate(event, timings)
        except TransientError:
            raise
        except Exception as exc:  # the checkpoint's fault or the profile's: reported, and the worker goes on
            timings["total"] = time.perf_counter() - start
            return self.result(event, "failed", error=describe(exc), timings_s=timings)
        timings["total"] = time.perf_counter() - start
        return self.result(event, "ok", metrics=metrics, n_samples=n_samples, timings_s=timings, grid_uri=grid_uri)

    def _evaluate(self, event: CheckpointReady, timings: dict[str, float]) -> tuple[dict[str, float], int, str]:
        with stage(timings, "fetch"):
            data = self._artifact_io(lambda: self.store.get_bytes(event.uri, event.sha256))
        with stage(timings, "load"):
            state = read_checkpoint(data)
            G = load_generator(state, self.device)
            z_dim = int(state["generator"]["z_dim"])
        with stage(timings, "grid"):
            grid = GeneratorSampler(G, z_dim, run_seed(event.run_id, "grid"), self.device, GRID_SIDE**2)
            png = grid_png(grid(GRID_SIDE**2))
            key = grid_key(event.run_id, event.step)
            self._artifact_io(lambda: self.store.put_bytes(key, png))
        if event.profile == NO_PROFILE:
            return {}, 0, key
        with stage(timings, "profile_load"):
            profile = self.profile(event.profile)
        sampler = GeneratorSampler(G, z_dim, run_seed(event.run_id, "eval"), self.device,
                                   self.settings.worker.batch_for(self.device.type), timings)
        metrics = profile.evaluate(sampler, timings)
        return metrics, sampler.largest, key

    @staticmethod
    def _artifact_io(op: Callable[[], T]) -> T:
        try:
            return op()
        except ArtifactError as exc:
            if _store_unreachable(exc):
                raise TransientError(f"artifact store unreachable: {exc}") from exc
            raise

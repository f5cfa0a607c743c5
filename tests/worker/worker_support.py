"""Helpers of the worker tests: real checkpoints in a real artifact store, reading results off `ingest`."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from sqd.artifacts import ArtifactStore
from sqd.bus import CHECKPOINTS, INGEST, Bus
from sqd.presets import resolve_config
from sqd.protocol import CheckpointReady, EvaluationResult
from sqd.trainer.checkpoint import to_bytes
from sqd.trainer.nets import build_generator, generator_spec
from sqd.wire import decode
from sqd.worker.loop import WorkerLoop

TEST_SAMPLES = 200  # enough for every metric; the default 2,000 is exercised by bench/worker_digits.py


def digits_spec(preset: str = "demo-stable") -> dict[str, Any]:
    return generator_spec(resolve_config(preset, {}))


def checkpoint_bytes(spec: dict[str, Any] | None = None, step: int = 100, seed: int = 0,
                     mutate: Callable[[dict[str, torch.Tensor]], None] | None = None) -> bytes:
    """A real `sqd-checkpoint/1` file of a freshly built generator (the zoo's build_generator)."""
    spec = spec or digits_spec()
    torch.manual_seed(seed)
    G = build_generator(spec)
    weights = G.state_dict()
    if mutate is not None:
        mutate(weights)
    return to_bytes({"generator": spec, "G": weights, "G_ema": None, "step": step, "epoch": 0, "config": {}})


def put_checkpoint(store: ArtifactStore, run_id: str, step: int, data: bytes | None = None,
                   profile: str = "digits", sha256: str | None = None) -> CheckpointReady:
    data = data if data is not None else checkpoint_bytes(step=step)
    ref = store.put_bytes(f"runs/{run_id}/checkpoints/step-{step:09d}.pt", data)
    return CheckpointReady(run_id=run_id, step=step, uri=ref.uri, sha256=sha256 or ref.sha256,
                           size_bytes=ref.size_bytes, profile=profile, generator=digits_spec())


def results(bus: Bus) -> list[EvaluationResult]:
    rows: Any = bus.client.xrange(bus.key(INGEST))
    return [e for _, fields in rows if isinstance(e := decode(fields), EvaluationResult)]


def wait_until(predicate: Callable[[], bool], timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@dataclass
class RunningWorker:
    loop: WorkerLoop
    bus: Bus

    def wait_for(self, n: int, timeout_s: float = 120.0) -> list[EvaluationResult]:
        """Block until `n` evaluation results are on `ingest` (fails the test on timeout)."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            found = results(self.bus)
            if len(found) >= n:
                return found
            time.sleep(0.05)
        pytest.fail(f"only {len(results(self.bus))} of {n} evaluation results after {timeout_s:.0f} s")


def publish_checkpoints(bus: Bus, events: list[CheckpointReady]) -> None:
    bus.publish(CHECKPOINTS, events)

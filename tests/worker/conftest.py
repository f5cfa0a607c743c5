"""Worker fixtures: a digit classifier trained once per session, real checkpoints in a real artifact store,
and a worker loop running in a thread against the real bus."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from worker_support import TEST_SAMPLES, RunningWorker

from sqd.artifacts import ArtifactStore
from sqd.bus import Bus
from sqd.settings import Settings
from sqd.worker.digits_classifier import DigitClassifier, load_classifier
from sqd.worker.evaluate import Evaluator
from sqd.worker.loop import WorkerLoop


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.fixture(scope="session")
def classifier(models_dir: Path) -> DigitClassifier:
    """Trained from scratch once per session (a few seconds of CPU), then read from its cache by every worker."""
    return load_classifier(models_dir)


def _with_models(settings: Settings, models_dir: Path) -> Settings:
    worker = settings.worker.model_copy(update={"samples": TEST_SAMPLES, "models_dir": models_dir})
    return settings.model_copy(update={"worker": worker})


@pytest.fixture
def wsettings(settings: Settings, models_dir: Path, classifier: DigitClassifier) -> Settings:
    """The bus-backed `settings` (both Redis flavours) with the session's models dir and small sample counts."""
    return _with_models(settings, models_dir)


@pytest.fixture
def digits_settings(tmp_path: Path, models_dir: Path, classifier: DigitClassifier) -> Settings:
    """For tests that need no bus: runs once, not once per Redis flavour."""
    return _with_models(Settings(home=tmp_path / "home"), models_dir)


@pytest.fixture
def store(wsettings: Settings) -> ArtifactStore:
    return ArtifactStore(wsettings.resolved_artifacts_url)


@pytest.fixture
def start_worker(bus: Bus, wsettings: Settings, store: ArtifactStore) -> Iterator[Callable[..., RunningWorker]]:
    """Start WorkerLoop threads (each its own consumer in the group); all are stopped at teardown."""
    stops: list[tuple[threading.Event, threading.Thread]] = []

    def start(name: str = "w1", store_: ArtifactStore | None = None, **loop_kwargs: Any) -> RunningWorker:
        evaluator = Evaluator(wsettings, store_ or store, torch.device("cpu"), name)
        loop = WorkerLoop(bus, evaluator, **loop_kwargs)
        stop = threading.Event()
        thread = threading.Thread(target=loop.run, args=(stop,), daemon=True)
        thread.start()
        stops.append((stop, thread))
        return RunningWorker(loop, bus)

    yield start
    for stop, thread in stops:
        stop.set()
        thread.join(timeout=60)



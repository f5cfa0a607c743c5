"""`sqd worker` and the dataset index commands."""

from __future__ import annotations

import threading

import typer


def register(app: typer.Typer) -> None:
    from sqd.worker import dataset_cli

    dataset_cli.register(app)

    @app.command()
    def worker(name: str | None = typer.Option(None, help="consumer name, unique per worker (default: "
                                                          "<host>-<pid>)"),
               device: str = typer.Option("auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N"),
               read_batch: int = typer.Option(8, min=1, help="checkpoints read at once (older ones of a run in "
                                                             "the same read are skipped)"),
               preload: list[str] = typer.Option([], help="profile to load before consuming (repeatable), e.g. "
                                                          "--preload digits trains/loads the digit classifier now"))\
            -> None:
        """Run an evaluation worker: checkpoints from the bus → metrics, sample grids → the server."""
        from sqd.artifacts import ArtifactStore
        from sqd.cli import fail
        from sqd.errors import SQDError
        from sqd.settings import get_settings

        settings = get_settings()
        try:  # before torch is imported: a misconfigured store fails in a second, not after the imports
            store = ArtifactStore.from_settings(settings)
            store.verify()
        except SQDError as exc:
            raise fail(str(exc)) from exc

        from sqd.bus import Bus, stop_on_signals
        from sqd.worker.evaluate import Evaluator
        from sqd.worker.loop import WorkerLoop, default_name
        from sqd.worker.sampling import pick_device

        stop = threading.Event()
        stop_on_signals(stop)
        try:
            evaluator = Evaluator(settings, store, pick_device(device), name or default_name())
            for profile in preload:
                evaluator.profile(profile)
        except SQDError as exc:
            raise fail(str(exc)) from exc
        bus = Bus.connect(settings)
        try:
            WorkerLoop(bus, evaluator, read_batch=read_batch).run(stop)
        finally:
            bus.close()

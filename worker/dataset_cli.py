"""`sqd dataset index faces`: build the faces profile's reference (identity centroids + FID statistics).

Imports only typer (and stdlib) at module level; torch and the models load inside the command."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer


class Embedder(StrEnum):
    arcface = "arcface"
    dlib = "dlib"


def register(app: typer.Typer) -> None:
    dataset = typer.Typer(no_args_is_help=True, help="Reference data of the evaluation profiles.")
    index = typer.Typer(no_args_is_help=True, help="Build a profile's cached reference index.")
    dataset.add_typer(index, name="index")
    app.add_typer(dataset, name="dataset")

    @index.command("faces")
    def faces(celeba: Path | None = typer.Option(None, help="folder with img_align_celeba/ and identity_CelebA.txt "
                                                           "(default: $SQD_HOME/datasets/celeba)"),
              embedder: Embedder | None = typer.Option(None, help="face embedder (default: "
                                                                  "$SQD_WORKER__FACE_EMBEDDER, arcface)"),
              resolution: int = typer.Option(64, min=16, help="side the generators produce (images are indexed "
                                                              "at this size)"),
              crop: int = typer.Option(140, min=16, help="centre square cropped before resizing (the trainer's "
                                                         "CelebA crop)"),
              device: str = typer.Option("auto", help="auto (CUDA when present, else CPU), cpu, cuda or cuda:N"),
              limit: int | None = typer.Option(None, min=2, help="index only the first N images (a trial run)"),
              save_every: int = typer.Option(5000, min=1, help="save the running sums every N images (resume "
                                                               "point)"),
              restart: bool = typer.Option(False, help="ignore a saved partial index and start over")) -> None:
        """Index CelebA for the faces profile: per-identity embedding centroids and FID reference statistics.

        Resumable: rerun the same command after an interruption and it continues from the last saved sums."""
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

        from sqd.cli import fail
        from sqd.errors import SQDError
        from sqd.settings import get_settings
        from sqd.worker.face_index import build_index, default_celeba_dir
        from sqd.worker.sampling import pick_device

        settings = get_settings()
        if embedder is not None:
            settings = settings.model_copy(update={"worker": settings.worker.model_copy(
                update={"face_embedder": embedder.value})})
        root = celeba or default_celeba_dir(settings)
        columns = (TextColumn("indexing CelebA"), BarColumn(), MofNCompleteColumn(),
                   TextColumn("{task.fields[rate]} img/s"), TimeRemainingColumn())
        bar = Progress(*columns)  # started by the first progress call, i.e. after the inputs were checked
        task = bar.add_task("index", total=None, rate="–")
        started = False

        def progress(done: int, total: int) -> None:
            nonlocal started
            if not started:  # the first call says where a resumed build starts; speed counts new work only
                started = True
                bar.start()
                if done:
                    bar.console.print(f"resuming from image {done} of {total}")
                bar.reset(task, completed=done, total=total)
            speed = bar.tasks[task].speed
            bar.update(task, completed=done, total=total, rate=f"{speed:.0f}" if speed else "–")

        try:
            out = build_index(settings, root, pick_device(device), resolution=resolution, crop=crop, limit=limit,
                              save_every=save_every, restart=restart, on_progress=progress)
        except (SQDError, ValueError) as exc:
            raise fail(str(exc)) from exc
        except KeyboardInterrupt:
            raise fail("interrupted: the sums so far are saved; rerun the same command to continue") from None
        finally:
            bar.stop()
        typer.echo(f"faces index written to {out}")

"""`sqd import tensorboard DIR | mlflow --tracking-uri URI | stats-jsonl FILE`: runs from other tools into the SQD
server at SQD_URL (token SQD_TOKEN), with a progress bar. A run whose files are bad is reported (file, record,
problem) and nothing of it is sent; the other runs still go, and the command exits 1. Only typer at import time."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from sqd.cli import fail

if TYPE_CHECKING:
    from sqd.importers.common import ImportedRun

import_app = typer.Typer(help="Bring runs from TensorBoard, MLflow or StyleGAN/R3GAN stats.jsonl into the SQD "
                              "server at SQD_URL (SQD_TOKEN). Importing again adds nothing.", no_args_is_help=True)
NAME_HELP = "run name (several runs: NAME/<their own name>)"


def _needs(module: str, package: str) -> None:
    try:
        __import__(module)
    except ImportError as exc:
        raise fail(f"this importer needs the `{package}` package ({exc}); install it with pip install 'sqd[import]'"
                   ) from exc


def run_imports(readers: Iterable[tuple[str, Callable[[], ImportedRun]]]) -> None:
    """Read each run (a label for messages and a reader), send it; print one line per run, exit 1 on any error."""
    from rich.console import Console

    from sqd.client import Client
    from sqd.errors import SQDError
    from sqd.importers.common import ImportFormatError, progress_bar, send

    console = Console(stderr=True)
    failures = done = 0
    with Client() as client, progress_bar() as progress:
        reading = progress.add_task("reading runs", total=None)
        for label, read in readers:
            try:
                run = read()
                result = send(client, run, progress)
            except ImportFormatError as exc:
                failures += 1
                progress.console.print(f"[red]error[/red] {exc} — nothing of this run was imported",
                                       highlight=False, soft_wrap=True)
                continue
            except SQDError as exc:
                failures += 1
                progress.console.print(f"[red]error[/red] {label}: {exc}", highlight=False, soft_wrap=True)
                continue
            done += 1
            progress.advance(reading)
            again = "" if result.created else " (imported before)"
            progress.console.print(f"{result.run_id}  {result.name}: {result.new_points} new points of "
                                   f"{result.points}, {result.samples} sample grids{again}", highlight=False,
                                   soft_wrap=True)
    console.print(f"{done} run(s) imported, {failures} failed", highlight=False)
    if failures:
        raise typer.Exit(code=1)


@import_app.command("tensorboard")
def import_tensorboard(directory: Path = typer.Argument(..., help="a log directory (each folder of event files is "
                                                                  "a run)"),
                       name: str = typer.Option(None, help=NAME_HELP),
                       samples_tag: str = typer.Option(None, help="image tag of the sample grids (default: the "
                                                                  "first named fake/sample/gen/grid)")) -> None:
    """TensorBoard event files: scalars, one image tag as the sample timeline, hparams as config."""
    _needs("tensorboard", "tensorboard")
    from sqd.importers import tensorboard

    root = directory.expanduser().resolve()
    dirs = tensorboard.run_dirs(root) if root.is_dir() else []
    if not dirs:
        raise fail(f"{root}: no TensorBoard event files (*tfevents*) in it or below it")
    several = len(dirs) > 1
    run_imports((str(d), partial(tensorboard.read_run, d, root, name, samples_tag, several)) for d in dirs)


@import_app.command("mlflow")
def import_mlflow(tracking_uri: str = typer.Option(..., "--tracking-uri",
                                                   help="sqlite:///mlflow.db, postgresql://…, http://…, ./mlruns"),
                  experiment: str = typer.Option(None, help="only this experiment (default: all)"),
                  name: str = typer.Option(None, help=NAME_HELP)) -> None:
    """An MLflow tracking store: params → config, metrics with their steps, tags, status and times."""
    _needs("mlflow", "mlflow-skinny")
    from sqd.errors import SQDError
    from sqd.importers import mlflow_runs

    client = mlflow_runs.client_for(tracking_uri)
    try:
        found = mlflow_runs.experiments(client, tracking_uri, experiment)
    except SQDError as exc:
        raise fail(str(exc)) from exc
    names = {e.experiment_id: e.name for e in found}
    runs = list(mlflow_runs.list_runs(client, list(names)))
    if not runs:
        raise fail(f"{tracking_uri}: no runs in {', '.join(repr(n) for n in names.values()) or 'any experiment'}")
    several = len(runs) > 1
    run_imports((f"MLflow run {r.info.run_id}", partial(mlflow_runs.read_run, client, r, names[r.info.experiment_id],
                                                        tracking_uri, name, several)) for r in runs)


@import_app.command("stats-jsonl")
def import_stats_jsonl(file: Path = typer.Argument(..., help="stats.jsonl, a metric-*.jsonl, or their run "
                                                             "directory"),
                       name: str = typer.Option(None, help="run name (default: the run directory's name)"),
                       step: str = typer.Option("kimg", help="step unit: kimg (as StyleGAN's TensorBoard export) or "
                                                             "nimg (images shown)")) -> None:
    """A StyleGAN2/3 or R3GAN run directory: stats.jsonl, metric-*.jsonl, training_options.json, fakes*.png."""
    from sqd.importers import stylegan_stats

    if step not in ("kimg", "nimg"):
        raise fail(f"--step must be kimg or nimg, not {step!r}")
    run_imports([(str(file), partial(stylegan_stats.read_run, file, name, step))])


def register(app: typer.Typer) -> None:
    app.add_typer(import_app, name="import")

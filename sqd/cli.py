"""The `sqd` command line. Each role registers its own commands (`register(app)` in `sqd.<role>.cli`); those
modules import only typer at import time, so `sqd --help` stays fast and works without the heavy extras."""

from __future__ import annotations

import importlib
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqd.stack import Stack

from sqd.errors import SQDError
from sqd.settings import DEFAULT_PORT, Settings

app = typer.Typer(no_args_is_help=True, add_completion=False,
                  help="SQD: live Stability / Quality / Diversity monitoring of GAN training.")

PORT_HELP = f"dashboard / REST port (default $SQD_SERVER__PORT or {DEFAULT_PORT})"
HOME_HELP = "data dir (default $SQD_HOME or ~/.sqd)"
ROLE_CLIS = ("sqd.server.cli", "sqd.worker.cli", "sqd.trainer.cli", "sqd.runs_cli", "sqd.importers.cli")


def fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def load_settings(home: Path | None = None) -> Settings:
    return Settings(home=home) if home is not None else Settings()


def _run_stack(port: int | None, home: Path | None, demo_runs: bool) -> None:
    from sqd.stack import up as run_stack

    settings = load_settings(home)
    on_ready: Callable[[Stack], None] | None = None
    if demo_runs:
        from sqd.trainer.demo import launch_demo_runs

        on_ready = launch_demo_runs
    try:
        run_stack(settings, port or settings.server.port, on_ready=on_ready)
    except SQDError as exc:
        raise fail(str(exc)) from exc


@app.command()
def up(port: int | None = typer.Option(None, help=PORT_HELP),
       home: Path | None = typer.Option(None, help=HOME_HELP)) -> None:
    """Start the whole system on this machine: embedded bus + SQLite + server + worker + trainer agent."""
    _run_stack(port, home, demo_runs=False)


@app.command()
def demo(port: int | None = typer.Option(None, help=PORT_HELP),
         home: Path | None = typer.Option(None, help=HOME_HELP)) -> None:
    """`sqd up` plus the demo runs on stacked digits: one stays stable, one passes a turning point."""
    _run_stack(port, home, demo_runs=True)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    for name in ROLE_CLIS:
        importlib.import_module(name).register(app)
    app()

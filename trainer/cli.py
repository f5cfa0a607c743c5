"""`sqd agent`, `sqd train` and `sqd presets`."""

from __future__ import annotations

import json
from pathlib import Path

import typer


def register(app: typer.Typer) -> None:
    @app.command()
    def agent(agent_id: str | None = typer.Option(None, "--id", help="stable name of this agent (default: the "
                                                  "host name); a restarted agent re-attaches to its runs by it"),
              keep_runs: bool = typer.Option(False, help="leave running trainings alive when the agent stops")) -> None:
        """Run a trainer agent: launch / cancel requests from the bus become training processes."""
        from sqd.artifacts import ArtifactStore
        from sqd.cli import fail
        from sqd.errors import SQDError
        from sqd.settings import get_settings

        settings = get_settings()
        try:  # a missing bucket stops the agent now (before torch loads), not each run at its first checkpoint
            ArtifactStore.from_settings(settings).verify()
        except SQDError as exc:
            raise fail(str(exc)) from exc
        from sqd.trainer.agent import run_agent

        run_agent(settings, agent_id, keep_runs)

    @app.command()
    def train(preset: str | None = typer.Argument(None, help="preset name (see `sqd presets`); optional with "
                                                               "--resume"),
              sets: list[str] = typer.Option([], "--set", help="override, KEY=VALUE (repeatable), e.g. "
                                             "--set loss.name=hinge --set optim.betas=[0.5,0.9]"),
              steps: int | None = typer.Option(None, min=1, help="generator steps (default: the preset's)"),
              run_id: str | None = typer.Option(None, help="report under this run id (the agent passes it)"),
              name: str | None = typer.Option(None, help="run name shown in the dashboard (default: the preset)"),
              resume: Path | None = typer.Option(None, help="continue from a checkpoint: a file or an artifact "
                                                 "key runs/<id>/checkpoints/step-….pt"),
              no_monitor: bool = typer.Option(False, "--no-monitor", help="train without reporting to the bus"))\
            -> None:
        """Train a preset in the foreground with a progress bar, reporting through the Monitor to SQD_REDIS_URL."""
        from sqd.cli import fail, load_settings
        from sqd.errors import SQDError
        from sqd.trainer.loop import train as run_training
        from sqd.trainer.train_command import config_for, parse_sets, progress

        settings = load_settings()
        try:
            cfg, state = config_for(preset, parse_sets(sets), resume, settings)
            last = (steps or cfg.train.steps) - 1
            first = int(state["step"]) + 1 if state is not None else 0
            with progress(first, last) as bar:
                summary = run_training(cfg, preset=preset, name=name, run_id=run_id, steps=steps, resume=state,
                                       monitor=not no_monitor, settings=settings, on_log=bar)
        except SQDError as exc:
            raise fail(str(exc)) from exc
        typer.echo(f"run {summary.run_id or '-'}: steps {summary.first_step}-{summary.last_step} on "
                   f"{summary.device}, {summary.steps_per_s:.1f} steps/s, loss/D {summary.loss_d:.4g}, "
                   f"loss/G {summary.loss_g:.4g}")

    @app.command()
    def presets(preset: str | None = typer.Argument(None, help="show this preset's resolved config as JSON"),
                sets: list[str] = typer.Option([], "--set", help="override, KEY=VALUE (with PRESET)")) -> None:
        """List the training presets (name, seed, dataset, description), or show one's resolved config."""
        from sqd.cli import fail
        from sqd.errors import ConfigError
        from sqd.presets import list_presets, resolve_config
        from sqd.trainer.train_command import parse_sets

        if preset is None:
            for p in list_presets():
                typer.echo(f"{p.name:<24} {p.seed}  {p.dataset:<14} {p.description}")
            return
        try:
            cfg = resolve_config(preset, parse_sets(sets))
        except ConfigError as exc:
            raise fail(str(exc)) from exc
        typer.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))

"""`sqd server`, `sqd gc`, `sqd db upgrade|downsample|pack`, `sqd token create|list|revoke`, `sqd metrics get`
(`sqd runs` is sqd/runs_cli.py; `sqd sweep` / `sqd sweeps …` come from sqd.server.sweeps.cli)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import typer

if TYPE_CHECKING:
    from sqd.server.gc import GcReport
    from sqd.settings import Settings

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (stored hashed; SQD_TOKEN is always an admin token).", no_args_is_help=True)
metrics_app = typer.Typer(help="Metric series, over the REST API (SQD_URL, SQD_TOKEN).", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _number(v: float) -> str:
    import math

    if math.isnan(v):
        return "NaN"
    return ("Infinity" if v > 0 else "-Infinity") if math.isinf(v) else repr(v)


def _sessions():  # type: ignore[no-untyped-def]
    from sqd.server.store import migrate
    from sqd.server.store.db import make_engine, session_factory
    from sqd.settings import get_settings

    engine = make_engine(get_settings().resolved_database_url)
    migrate.upgrade(engine)
    return session_factory(engine)


@db_app.command("upgrade")
def db_upgrade(revision: str = typer.Argument("head", help="target revision")) -> None:
    """Apply the migrations to SQD_DATABASE_URL (the server also does this when it starts)."""
    from sqd.server.store import migrate
    from sqd.server.store.db import make_engine
    from sqd.settings import get_settings

    url = get_settings().resolved_database_url
    before, after = migrate.upgrade(make_engine(url), revision)
    where = make_engine(url).url.render_as_string(hide_password=True)
    typer.echo(f"{where}: {before or 'empty'} → {after}" if before != after else f"{where}: already at {after}")


@db_app.command("downsample")
def db_downsample(run_id: str = typer.Argument(..., help="run id"),
                  before_step: int = typer.Option(..., "--before-step", min=1,
                                                  help="downsample the chunks that end before this step")) -> None:
    """Keep only the rollups (one point per 256-step bucket or coarser) of a run's old chunks (docs/server.md)."""
    from sqd.server.store import runs_store
    from sqd.server.store.retention import downsample_run

    with _sessions()() as session, session.begin():
        if not runs_store.run_exists(session, run_id):
            raise _fail(f"no run '{run_id}' (see `sqd runs ls`)")
        r = downsample_run(session, run_id, before_step)
    typer.echo(f"{run_id}: {r.chunks} chunks downsampled, {r.points_before:,} → {r.points_kept:,} points, "
               f"{r.bytes_before / 1e6:.2f} → {r.bytes_after / 1e6:.2f} MB")


@db_app.command("pack")
def db_pack(run_id: str = typer.Argument(None, help="one run (any status); default: every finished run not packed"),
            older_than_s: float = typer.Option(0.0, "--older-than-s", min=0,
                                               help="only runs finished at least this long ago")) -> None:
    """Move finished runs' small series (≤ 1,024 points) into one blob per run (docs/server.md); the server does
    this by itself an hour after a run finishes."""
    import time

    from sqd.server.store import runs_store
    from sqd.server.store.packs import PackReport, pack_run, runs_to_pack

    sessions = _sessions()
    if run_id is not None:
        with sessions() as session:
            if not runs_store.run_exists(session, run_id):
                raise _fail(f"no run '{run_id}' (see `sqd runs ls`)")
        todo = [run_id]
    else:
        with sessions() as session:
            todo = runs_to_pack(session, time.time() - older_than_s, limit=None)
    total = PackReport()
    for rid in todo:
        with sessions() as session, session.begin():
            total.add(pack_run(session, rid))
    typer.echo(f"{len(todo)} runs packed: {total.series:,} series, {total.points:,} points; their chunks held "
               f"{total.bytes_before / 1e6:.2f} MB, the packs hold {total.pack_bytes / 1e6:.2f} MB")


@token_app.command("create")
def token_create(name: str = typer.Argument(..., help="who or what uses it, e.g. 'ci' or 'alice laptop'")) -> None:
    """Create a token and print its secret (shown once; only a hash is stored)."""
    from sqd.server.auth import create_token

    with _sessions()() as session:
        row, secret = create_token(session, name)
        session.commit()
        typer.echo(f"token {row.id} ({name}):\n{secret}")


@token_app.command("list")
def token_list() -> None:
    """List tokens (never their secrets)."""
    from rich.console import Console
    from rich.table import Table

    from sqd.runs_cli import when
    from sqd.server.auth import list_tokens

    table = Table("id", "name", "created", "revoked")
    with _sessions()() as session:
        for row in list_tokens(session):
            table.add_row(str(row.id), row.name, when(row.created_at), when(row.revoked_at))
    Console().print(table)


@token_app.command("revoke")
def token_revoke(token_id: int = typer.Argument(..., help="id from `sqd token list`")) -> None:
    """Revoke a token: it is refused from the next request on."""
    from sqd.server.auth import revoke_token

    with _sessions()() as session:
        row = revoke_token(session, token_id)
        if row is None:
            raise _fail(f"no token with id {token_id} (see `sqd token list`)")
        session.commit()
    typer.echo(f"token {token_id} revoked")


@metrics_app.command("get")
def metrics_get(run_id: str = typer.Argument(..., help="run id"), key: str = typer.Argument(..., help="metric key"),
                csv: bool = typer.Option(False, "--csv", help="CSV on stdout: step,value,min,max"),
                max_points: int = typer.Option(1000, help="buckets at most (min/max keep spikes)"),
                start: int = typer.Option(None, help="first step"), end: int = typer.Option(None, help="last step"),
                ) -> None:
    """Print one series, downsampled by the server."""
    from sqd.client import Client
    from sqd.errors import SQDError

    try:
        with Client() as client:
            series = client.metrics(run_id, keys=[key], max_points=max_points, start=start, end=end)["series"]
    except SQDError as exc:
        raise _fail(str(exc)) from exc
    if key not in series:
        raise _fail(f"run {run_id} has no series {key!r}")
    s = series[key]
    rows = zip(s["step"], s["value"], s["min"], s["max"], strict=True)
    if csv:
        print("step,value,min,max")
        for step, value, lo, hi in rows:
            print(f"{step},{_number(value)},{_number(lo)},{_number(hi)}")
        return
    print(f"{key} of {run_id}: {len(s['step'])} points, bucket width {s['bucket_width']}")
    for step, value, lo, hi in rows:
        print(f"{step:>12}  {_number(value):>24}  [{_number(lo)}, {_number(hi)}]")


def _size(n: int) -> str:
    for unit in ("bytes", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    raise AssertionError("unreachable")


def parse_duration(text: str) -> float:
    """Seconds from `90`, `90s`, `30m`, `2h` or `7d`."""
    import re

    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if match is None:
        raise typer.BadParameter(f"{text!r} is not a duration; write e.g. 90s, 30m, 2h or 7d")
    return float(match[1]) * {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}[match[2]]


def _print_gc(report: GcReport) -> None:
    a, verb = report.artifacts, "would free" if report.dry_run else "freed"
    typer.echo(f"artifacts {a.store}: {verb} {a.total.objects} objects, {_size(a.total.bytes)}")
    typer.echo(f"  runs that no longer exist ({len(a.orphan_runs)}): {a.orphans.objects} objects, "
               f"{_size(a.orphans.bytes)}{': ' + ', '.join(a.orphan_runs[:20]) if a.orphan_runs else ''}"
               f"{' …' if len(a.orphan_runs) > 20 else ''}")
    typer.echo(f"  temporary files of crashed writes: {a.temp_files.objects}, {_size(a.temp_files.bytes)}")
    typer.echo(f"  incomplete multipart uploads: {a.partial_uploads.objects}, {_size(a.partial_uploads.bytes)}")
    if a.young_unknown_runs:
        typer.echo(f"  kept {len(a.young_unknown_runs)} unknown run(s) written to within the grace period "
                   f"({report.grace_s:g} s; maybe not ingested yet): {', '.join(a.young_unknown_runs[:20])}")
    typer.echo(f"data: {verb} {report.data.summary()}")


def _verify_artifacts(settings: Settings) -> None:
    """A missing bucket or unreachable store stops a role at start, naming the URL, not at its first artifact."""
    from sqd.artifacts import ArtifactStore
    from sqd.errors import SQDError

    try:
        ArtifactStore.from_settings(settings).verify()
    except SQDError as exc:
        raise _fail(str(exc)) from exc


def register(app: typer.Typer) -> None:
    @app.command()
    def server(port: int = typer.Option(None, help="port (default SQD_SERVER__PORT or 8765)"),
               host: str = typer.Option(None, help="bind address (default 127.0.0.1; reads need a token elsewhere)"),
               ingest_only: bool = typer.Option(False, "--ingest-only",
                                                help="only consume the ingest stream (scale-out), no HTTP"),
               no_ingest: bool = typer.Option(False, "--no-ingest",
                                              help="serve HTTP only; `sqd server --ingest-only` consumes elsewhere"),
               json_logs: bool = typer.Option(False, "--json-logs", help="structured logs, one JSON object a line"),
               ) -> None:
        """Run the API server and dashboard (with the ingest consumer) against SQD_REDIS_URL / SQD_DATABASE_URL."""
        from sqd.server.observability import configure_json_logging
        from sqd.settings import get_settings

        if json_logs:
            configure_json_logging()
        settings = get_settings()
        update = {"host": host or settings.server.host, "port": port or settings.server.port}
        if no_ingest:
            update["ingest_in_process"] = False
        settings = settings.model_copy(update={"server": settings.server.model_copy(update=update)})
        _verify_artifacts(settings)
        if ingest_only:
            from sqd.server.ingest.consumer import run_standalone

            run_standalone(settings)
            return
        import uvicorn

        from sqd.server.app import create_app

        uvicorn.run(create_app(settings), host=settings.server.host, port=settings.server.port, log_level="info",
                    log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
                    timeout_graceful_shutdown=5)  # open SSE streams never end by themselves

    @app.command()
    def gc(grace: str = typer.Option("1h", help="keep temporary files, incomplete uploads and unknown runs' "
                                                "artifacts younger than this (90s, 30m, 2h, 7d); it must exceed "
                                                "the longest artifact write"),
           dry_run: bool = typer.Option(False, "--dry-run", help="report what would be freed, remove nothing"),
           as_json: bool = typer.Option(False, "--json", help="the report as one JSON object")) -> None:
        """Free the artifacts no run needs (runs that no longer exist, debris of crashed writes) and the data of
        deleted runs; safe while runs train and ingest runs."""
        import json

        from sqd.artifacts import ArtifactStore
        from sqd.errors import SQDError
        from sqd.server.gc import collect_garbage
        from sqd.server.store import migrate
        from sqd.server.store.db import make_engine
        from sqd.settings import get_settings

        grace_s = parse_duration(grace)
        settings = get_settings()
        _verify_artifacts(settings)
        engine = make_engine(settings.resolved_database_url)
        try:
            migrate.upgrade(engine)
            report = collect_garbage(engine, ArtifactStore.from_settings(settings), grace_s, dry_run)
        except SQDError as exc:
            raise _fail(str(exc)) from exc
        finally:
            engine.dispose()
        if as_json:
            typer.echo(json.dumps(report.as_dict()))
        else:
            _print_gc(report)

    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")
    app.add_typer(metrics_app, name="metrics")
    from sqd.server.sweeps import cli as sweeps_cli

    sweeps_cli.register(app)

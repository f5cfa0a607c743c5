"""`sqd server`, `sqd db upgrade`, `sqd token create|list|revoke`, `sqd runs ls`, `sqd metrics get` (and, from
sqd.server.sweeps.cli, `sqd sweep` / `sqd sweeps …`)."""

from __future__ import annotations

import typer

db_app = typer.Typer(help="Database maintenance.", no_args_is_help=True)
token_app = typer.Typer(help="API tokens (stored hashed; SQD_TOKEN is always an admin token).", no_args_is_help=True)
runs_app = typer.Typer(help="Runs, over the REST API (SQD_URL, SQD_TOKEN).", no_args_is_help=True)
metrics_app = typer.Typer(help="Metric series, over the REST API (SQD_URL, SQD_TOKEN).", no_args_is_help=True)


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _when(ts: float | None) -> str:
    import datetime

    return "" if ts is None else datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


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

    from sqd.server.auth import list_tokens

    table = Table("id", "name", "created", "revoked")
    with _sessions()() as session:
        for row in list_tokens(session):
            table.add_row(str(row.id), row.name, _when(row.created_at), _when(row.revoked_at))
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


@runs_app.command("ls")
def runs_ls(status: list[str] = typer.Option(None, "--status", "-s", help="only these statuses (repeatable)"),
            q: str = typer.Option(None, help="name or id contains"),
            limit: int = typer.Option(50, help="at most this many")) -> None:
    """List runs, newest first."""
    from rich.console import Console
    from rich.table import Table

    from sqd.client import Client
    from sqd.errors import SQDError

    try:
        with Client() as client:
            page = client.runs(status=status, q=q, limit=limit)
    except SQDError as exc:
        raise _fail(str(exc)) from exc
    table = Table("id", "name", "status", "preset", "step", "created", title=f"{page['count']} runs")
    for r in page["data"]:
        table.add_row(r["id"], r["name"], r["status"], r["preset"] or "", str(r["last_step"] or ""),
                      _when(r["created_at"]))
    Console().print(table)


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
        if ingest_only:
            from sqd.server.ingest.consumer import run_standalone

            run_standalone(settings)
            return
        import uvicorn

        from sqd.server.app import create_app

        uvicorn.run(create_app(settings), host=settings.server.host, port=settings.server.port, log_level="info",
                    log_config=None if json_logs else uvicorn.config.LOGGING_CONFIG,
                    timeout_graceful_shutdown=5)  # open SSE streams never end by themselves

    app.add_typer(db_app, name="db")
    app.add_typer(token_app, name="token")
    app.add_typer(runs_app, name="runs")
    app.add_typer(metrics_app, name="metrics")
    from sqd.server.sweeps import cli as sweeps_cli

    sweeps_cli.register(app)

"""`sqd sweep PRESET… --grid KEY=V1,V2 … --seeds N` and `sqd sweeps ls|show|cancel|export`, over the REST API
(SQD_URL, SQD_TOKEN).

A grid value list splits on the commas outside brackets, so `--grid reg.names=none,gp,[gp,r1]` sweeps three
values; values travel as text and the server parses them with the config schema (as `sqd train --set` does). An
explicit override set is one `--config 'k=v;k2=v2'` (repeatable). A sweep of more than 200 runs asks before it
launches (or takes `--yes`); every error the server reports is printed with the key and value it names.
"""

from __future__ import annotations

import sys
import time
from typing import Any

import typer

sweeps_app = typer.Typer(help="Sweeps, over the REST API (SQD_URL, SQD_TOKEN).", no_args_is_help=True)
RESULT_COLUMNS = (("final Q", "final_quality"), ("best Q", "best_quality"), ("final D", "final_diversity"),
                  ("best D", "best_diversity"), ("final FID", "final_fid"), ("modes", "final_modes"),
                  ("turning ep", "turning_epoch"))


def _fail(message: str) -> typer.Exit:
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def split_values(text: str) -> list[str]:
    """"none,[gp,r1],gp" → ["none", "[gp,r1]", "gp"]: commas inside brackets belong to the value."""
    values, depth, current = [], 0, ""
    for ch in text:
        depth += {"[": 1, "]": -1}.get(ch, 0)
        if ch == "," and depth == 0:
            values.append(current.strip())
            current = ""
        else:
            current += ch
    values.append(current.strip())
    return values


def _pair(text: str, option: str) -> tuple[str, str]:
    key, sep, value = text.partition("=")
    if not sep or not key.strip() or not value.strip():
        raise _fail(f"{option} {text!r}: expected KEY=VALUE (e.g. {option} loss.name=hinge)")
    return key.strip(), value.strip()


def parse_grid(items: list[str]) -> dict[str, list[Any]]:
    """--grid values: text, except a bracketed list, which is sent as a list ("[gp,r1]" → ["gp", "r1"]) since a
    comma inside one value would otherwise read as two values."""
    from sqd.presets import parse_value

    grid: dict[str, list[Any]] = {}
    for item in items:
        key, values = _pair(item, "--grid")
        if key in grid:
            raise _fail(f"--grid {key} is given twice; list all its values in one --grid {key}=a,b,c")
        texts = split_values(values)
        if not all(texts):
            raise _fail(f"--grid {item!r}: an empty value (two commas in a row?)")
        grid[key] = [parse_value(t) if t.startswith("[") else t for t in texts]
    return grid


def parse_config(text: str) -> dict[str, str]:
    return dict(_pair(part, "--config") for part in text.split(";") if part.strip())


def _errors(detail: Any) -> list[str]:
    if isinstance(detail, list):
        return [str(e.get("msg", e)) for e in detail]
    return [str(detail)]


def _needs_confirmation(detail: Any) -> bool:
    return isinstance(detail, list) and len(detail) == 1 and detail[0].get("loc") == ["body", "confirm"]


def _create(client: Any, body: dict[str, Any], yes: bool) -> dict[str, Any]:
    from sqd.client import ClientError

    try:
        return dict(client.post_sweep({**body, "confirm": yes}))
    except ClientError as exc:
        if exc.status == 422 and _needs_confirmation(exc.detail) and sys.stdin.isatty():
            if typer.confirm(f"{_errors(exc.detail)[0]}\nLaunch them all?"):
                return dict(client.post_sweep({**body, "confirm": True}))
            raise typer.Exit(code=1) from exc
        if exc.status == 422:
            raise _fail("the server refused the sweep (nothing was queued):\n  " +
                        "\n  ".join(_errors(exc.detail))) from exc
        raise


def _value(v: Any) -> str:
    if v is None:
        return "–"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def print_results(res: dict[str, Any]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("configuration", "seed", "status", *(c for c, _ in RESULT_COLUMNS), title="results")
    for row in res["data"]:
        status = row["status"] + (f": {row['error'][:60]}" if row.get("error") else "")
        table.add_row(row["label"], str(row["seed"]), status, *(_value(row[k]) for _, k in RESULT_COLUMNS))
    console = Console()
    if not console.is_terminal:  # a log file or a pipe: the whole table rather than rich's 80 columns
        console = Console(width=160)
    console.print(table)


def _wait(client: Any, sweep_id: str) -> None:
    """Follow the sweep until every run ended (Ctrl-C stops watching, not the sweep)."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    try:
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                      transient=False) as bar:
            task = bar.add_task("runs ended", total=None)
            while True:
                sweep = client.sweep(sweep_id)
                counts = sweep["counts"]
                done = sum(counts.get(s, 0) for s in ("finished", "failed", "cancelled"))
                live = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
                bar.update(task, total=sweep["n_runs"], completed=done, description=f"runs ended ({live})")
                if sweep["status"] in ("finished", "cancelled"):
                    break
                time.sleep(2.0)
    except KeyboardInterrupt:
        typer.echo(f"\nstopped watching; the sweep goes on (sqd sweeps cancel {sweep_id} stops it)")
        raise typer.Exit(code=130) from None
    print_results(client.sweep_results(sweep_id))


def sweep_command(
        presets: list[str] = typer.Argument(None, help="preset(s) to sweep (see `sqd presets`)"),
        grid: list[str] = typer.Option([], "--grid", "-g", help="KEY=V1,V2,… swept as a cartesian product "
                                       "(repeatable), e.g. --grid loss.name=nsgan,hinge --grid reg.names=none,gp"),
        sets: list[str] = typer.Option([], "--set", help="KEY=VALUE for every run (repeatable)"),
        configs: list[str] = typer.Option([], "--config", help="an explicit override set 'k=v;k2=v2' "
                                          "(repeatable; combined with every grid point)"),
        seeds: int | None = typer.Option(None, min=1, help="runs per configuration, train.seed 0, 1, … "
                                         "(default 1, or the built-in sweep's)"),
        steps: int | None = typer.Option(None, min=1, help="generator steps of every run"),
        name: str | None = typer.Option(None, help="sweep name (default: the presets and keys swept)"),
        max_concurrent: int | None = typer.Option(None, "--max-concurrent", min=1,
                                                  help="runs with the agents at once (default: the server's, 8)"),
        builtin: str | None = typer.Option(None, help="a built-in sweep, e.g. sqd-grid (`sqd sweeps builtin`)"),
        yes: bool = typer.Option(False, "--yes", "-y", help="launch even if it makes more than 200 runs"),
        wait: bool = typer.Option(False, "--wait", help="follow it until every run ended, then print the results"),
) -> None:
    """Launch a sweep: PRESET(s) × --grid values × --seeds, queued to the agents under a concurrency cap."""
    from sqd.client import Client
    from sqd.errors import SQDError

    try:
        with Client() as client:
            body: dict[str, Any] = {}
            if builtin is not None:
                found = [b for b in client.builtin_sweeps() if builtin in (b["id"], b["title"])]
                if not found:
                    names = ", ".join(b["id"] for b in client.builtin_sweeps())
                    raise _fail(f"no built-in sweep {builtin!r}; built in: {names}")
                body = dict(found[0]["request"])
            elif not presets:
                raise _fail("name the preset(s) to sweep, or a --builtin sweep")
            if presets:
                body["presets"] = list(presets)
            body["grid"] = {**body.get("grid", {}), **parse_grid(grid)}
            body["overrides"] = {**body.get("overrides", {}), **dict(_pair(s, "--set") for s in sets)}
            if configs:
                body["configs"] = [parse_config(c) for c in configs]
            extra = {"seeds": seeds, "steps": steps, "name": name, "max_concurrent": max_concurrent}
            body.update({k: v for k, v in extra.items() if v is not None})
            sweep = _create(client, body, yes)
            released = sum(r["released"] for r in sweep["runs"])
            configurations = len({r["config_index"] for r in sweep["runs"]})
            typer.echo(f"sweep {sweep['id']} '{sweep['name']}': {sweep['n_runs']} runs ({configurations} "
                       f"configurations × {sweep['n_runs'] // max(1, configurations)} seeds), {released} handed to "
                       f"the agents now (at most {sweep['max_concurrent']} at once)")
            typer.echo(f"  {client.url}/#/sweep/{sweep['id']}")
            if wait:
                _wait(client, sweep["id"])
    except SQDError as exc:
        raise _fail(str(exc)) from exc


@sweeps_app.command("ls")
def sweeps_ls(limit: int = typer.Option(20, help="at most this many")) -> None:
    """List sweeps, newest first, with their runs per status."""
    from rich.console import Console
    from rich.table import Table

    from sqd.client import Client
    from sqd.errors import SQDError

    try:
        with Client() as client:
            page = client.sweeps(limit=limit)
    except SQDError as exc:
        raise _fail(str(exc)) from exc
    table = Table("id", "name", "status", "runs", "per status", title=f"{page['count']} sweeps")
    for s in page["data"]:
        table.add_row(s["id"], s["name"], s["status"], str(s["n_runs"]),
                      ", ".join(f"{n} {k}" for k, n in sorted(s["counts"].items())))
    Console().print(table)


@sweeps_app.command("show")
def sweeps_show(sweep_id: str = typer.Argument(..., help="sweep id")) -> None:
    """The sweep's results: one row per run."""
    from sqd.client import Client
    from sqd.errors import SQDError

    try:
        with Client() as client:
            sweep = client.sweep(sweep_id)
            typer.echo(f"sweep {sweep['id']} '{sweep['name']}': {sweep['status']}, {sweep['n_runs']} runs")
            print_results(client.sweep_results(sweep_id))
    except SQDError as exc:
        raise _fail(str(exc)) from exc


@sweeps_app.command("export")
def sweeps_export(sweep_id: str = typer.Argument(..., help="sweep id"),
                  format: str = typer.Option("csv", help="csv or json")) -> None:
    """The results table as CSV or JSON on stdout."""
    from sqd.client import Client
    from sqd.errors import SQDError

    try:
        with Client() as client:
            sys.stdout.write(client.export_sweep(sweep_id, format))
    except SQDError as exc:
        raise _fail(str(exc)) from exc


@sweeps_app.command("cancel")
def sweeps_cancel(sweep_id: str = typer.Argument(..., help="sweep id")) -> None:
    """Cancel the sweep: waiting runs never start, running ones are stopped."""
    from sqd.client import Client
    from sqd.errors import SQDError

    try:
        with Client() as client:
            sweep = client.cancel_sweep(sweep_id)
    except SQDError as exc:
        raise _fail(str(exc)) from exc
    typer.echo(f"sweep {sweep_id}: {sweep['status']} ({', '.join(f'{n} {k}' for k, n in sweep['counts'].items())})")


@sweeps_app.command("builtin")
def sweeps_builtin() -> None:
    """The built-in sweeps (`sqd sweep --builtin ID`)."""
    from sqd.client import Client
    from sqd.errors import SQDError

    try:
        with Client() as client:
            for b in client.builtin_sweeps():
                typer.echo(f"{b['id']:<12} {b['title']}: {b['description']}")
    except SQDError as exc:
        raise _fail(str(exc)) from exc


def register(app: typer.Typer) -> None:
    app.command("sweep")(sweep_command)
    app.add_typer(sweeps_app, name="sweeps")

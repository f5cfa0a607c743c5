"""`sqd runs ...`: list (filter language, sort, views, extra columns), end, rename, tag, annotate, archive, delete,
restore and gc runs — over the REST API (SQD_URL, SQD_TOKEN), like scripts. Only typer at import time."""

from __future__ import annotations

import datetime
import math
from collections.abc import Callable
from typing import Any

import typer

from sqd.cli import fail

runs_app = typer.Typer(help="Runs, over the REST API (SQD_URL, SQD_TOKEN).", no_args_is_help=True)
RUN_IDS = typer.Argument(..., help="run ids")


def when(ts: float | None) -> str:
    return "" if ts is None else datetime.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _call(action: Callable[[Any], Any]) -> Any:
    """Run `action(client)`; a server or connection error becomes one red line and exit code 1."""
    from sqd.client import Client
    from sqd.errors import SQDError

    try:
        with Client() as client:
            return action(client)
    except SQDError as exc:
        raise fail(str(exc)) from exc


def _each(run_ids: list[str], action: Callable[[Any, str], dict[str, Any]], done: str) -> None:
    def apply(client: Any) -> None:
        for run_id in run_ids:
            run = action(client, run_id)
            typer.echo(f"{done} {run_id}" + (f" ({run['name']})" if run.get("name") else ""))
    _call(apply)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "NaN" if math.isnan(value) else f"{value:.6g}"
    return str(value)


def _config_value(config: dict[str, Any], path: str) -> Any:
    node: Any = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return None
        node = node[part]
    return node


@runs_app.command("ls")
def runs_ls(filter: str = typer.Option(None, "--filter", "-f", help="e.g. 'config.lr >= 1e-3 and eval/fid < 50'"),
            sort: str = typer.Option(None, help="fields, '-' for descending, e.g. eval/fid or -config.lr"),
            view: str = typer.Option("active", help="active | archived | all | deleted"),
            status: list[str] = typer.Option(None, "--status", "-s", help="only these statuses (repeatable)"),
            q: str = typer.Option(None, help="name or id contains"),
            col: list[str] = typer.Option(None, "--col", "-c",
                                          help="extra column: config.<key> or a metric key (repeatable)"),
            limit: int = typer.Option(50, help="at most this many")) -> None:
    """List runs, newest first (or by --sort). The filter language is in docs/server.md."""
    from rich.console import Console
    from rich.table import Table

    columns = col or []
    metric_keys = [c for c in columns if not c.startswith("config.")]

    def fetch(client: Any) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
        page = client.runs(status=status, q=q, limit=limit, filter=filter, sort=sort, view=view)
        ids = [r["id"] for r in page["data"]]
        latest = {s["run_id"]: s["latest"] for s in client.summaries(ids, metric_keys)} if ids and metric_keys else {}
        return page, latest

    page, latest = _call(fetch)
    table = Table("id", "name", "status", "tags", "preset", "step", *columns, "created", title=f"{page['count']} runs")
    for r in page["data"]:
        extra = [_cell(_config_value(r["config"], c[len("config."):]) if c.startswith("config.")
                       else latest.get(r["id"], {}).get(c, {}).get("value")) for c in columns]
        table.add_row(r["id"], r["name"], r["status"], ", ".join(r["tags"]), r["preset"] or "",
                      str(r["last_step"] or ""), *extra, when(r["created_at"]))
    Console().print(table)


@runs_app.command("finish")
def runs_finish(run_ids: list[str] = RUN_IDS,
                failed: bool = typer.Option(False, "--failed", help="mark failed instead of finished"),
                error: str = typer.Option(None, help="with --failed: what went wrong")) -> None:
    """End runs a script fed (they stay 'running' until someone says they ended)."""
    if error is not None and not failed:
        raise fail("--error goes with --failed")
    status = "failed" if failed else "finished"
    _each(run_ids, lambda c, r: c.finish(r, status=status, error=error), status)


@runs_app.command("rename")
def runs_rename(run_id: str = typer.Argument(..., help="run id"), name: str = typer.Argument(..., help="new name"),
                ) -> None:
    """Rename a run."""
    _each([run_id], lambda c, r: c.update_run(r, name=name), "renamed")


@runs_app.command("tag")
def runs_tag(run_id: str = typer.Argument(..., help="run id"), tags: list[str] = typer.Argument(..., help="tags"),
             remove: bool = typer.Option(False, "--remove", "-r", help="remove these tags instead of adding them"),
             ) -> None:
    """Add tags to a run (or remove them with --remove)."""
    def change(client: Any, rid: str) -> dict[str, Any]:
        old = client.run(rid)["tags"]
        new = [t for t in old if t not in tags] if remove else list(dict.fromkeys([*old, *tags]))
        run: dict[str, Any] = client.update_run(rid, tags=new)
        typer.echo(f"tags: {', '.join(run['tags']) or '(none)'}")
        return run
    _each([run_id], change, "tagged")


@runs_app.command("note")
def runs_note(run_id: str = typer.Argument(..., help="run id"),
              text: str = typer.Argument(..., help="the run's notes (replaces them; '' clears)")) -> None:
    """Set a run's notes."""
    _each([run_id], lambda c, r: c.update_run(r, notes=text), "noted")


@runs_app.command("archive")
def runs_archive(run_ids: list[str] = RUN_IDS) -> None:
    """Archive runs: hidden from the default list (`sqd runs ls --view archived` shows them)."""
    _each(run_ids, lambda c, r: c.archive(r), "archived")


@runs_app.command("unarchive")
def runs_unarchive(run_ids: list[str] = RUN_IDS) -> None:
    """Bring archived runs back to the default list."""
    _each(run_ids, lambda c, r: c.archive(r, archived=False), "unarchived")


@runs_app.command("rm")
def runs_rm(run_ids: list[str] = RUN_IDS,
            hard: bool = typer.Option(False, "--hard", help="erase now: points, evaluations, alerts, artifacts"),
            yes: bool = typer.Option(False, "--yes", "-y", help="do not ask before --hard")) -> None:
    """Delete runs: hidden and recoverable with `sqd runs restore` until `sqd runs gc`; --hard erases them now."""
    if hard and not yes:
        typer.confirm(f"Erase {len(run_ids)} run(s) and all their data for good?", abort=True)

    def delete(client: Any, run_id: str) -> dict[str, Any]:
        out: dict[str, Any] = client.delete(run_id, hard=hard)
        if hard:
            typer.echo(f"  {out['points']} points, {out['series']} series, {out['artifacts']} files"
                       + (f"; artifacts left: {out['artifacts_error']}" if out["artifacts_error"] else ""))
        return out
    _each(run_ids, delete, "erased" if hard else "deleted")


@runs_app.command("restore")
def runs_restore(run_ids: list[str] = RUN_IDS) -> None:
    """Undo a (soft) delete."""
    _each(run_ids, lambda c, r: c.restore(r), "restored")


@runs_app.command("gc")
def runs_gc(older_than_days: float = typer.Option(0.0, "--older-than-days", help="only runs deleted this long ago"),
            ) -> None:
    """Erase for good the runs deleted (softly) at least --older-than-days ago."""
    out = _call(lambda c: c.gc(older_than_s=older_than_days * 86400))
    points = sum(e["points"] for e in out["data"])
    typer.echo(f"erased {out['count']} run(s), {points} points")


def register(app: typer.Typer) -> None:
    app.add_typer(runs_app, name="runs")

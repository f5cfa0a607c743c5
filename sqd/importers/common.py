"""What every importer shares: the run it read (`ImportedRun`), deterministic run ids, the error that names the
file and record, and sending a run to the server over REST with a progress bar.

Contract: an importer reads and checks a whole source run before anything is sent, so a bad file imports nothing
of that run (ImportFormatError says which file, which record, what is wrong). Sending is idempotent: the run id
is derived from the source's identity (`stable_run_id`), the server stores a (run, key, step) point once and a
sample grid per step once, so importing again adds nothing — and a source that grew since adds only the new part.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from sqd.client import Client, ClientError
from sqd.errors import SQDError

POINTS_PER_REQUEST = 20_000
Point = tuple[str, int, float, int | None, float]  # key, step, value, epoch, wall_time


class ImportFormatError(SQDError):
    """A source file that cannot be imported: which file, which record, what is wrong."""

    def __init__(self, path: Path | str, record: str, problem: str):
        self.path, self.record, self.problem = str(path), record, problem
        super().__init__(f"{path}: {record}: {problem}")


@dataclass
class ImportedRun:
    run_id: str
    name: str
    source: str  # where it came from, for messages and the run's notes
    config: dict[str, Any] = field(default_factory=dict)
    tags: list[str] = field(default_factory=list)
    notes: str = ""
    status: Literal["finished", "failed", "running"] = "finished"
    error: str | None = None
    started_at: float | None = None
    finished_at: float | None = None
    points: list[Point] = field(default_factory=list)
    samples: list[tuple[int, Path | bytes]] = field(default_factory=list)  # step → PNG (bytes or a file)


@dataclass
class ImportResult:
    run_id: str
    name: str
    created: bool
    points: int
    new_points: int
    samples: int


def stable_run_id(prefix: str, *identity: str) -> str:
    """`<prefix>-<24 hex>` from the source's identity: the same source always maps to the same SQD run."""
    digest = hashlib.sha256("\x00".join(identity).encode()).hexdigest()[:24]
    return f"{prefix}-{digest}"


def finite_times(points: list[Point]) -> tuple[float | None, float | None]:
    times = [p[4] for p in points if math.isfinite(p[4])]
    return (min(times), max(times)) if times else (None, None)


def _chunks(points: list[Point]) -> Iterator[list[Point]]:
    for start in range(0, len(points), POINTS_PER_REQUEST):
        yield points[start:start + POINTS_PER_REQUEST]


def progress_bar() -> Progress:
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                    transient=False)


def send(client: Client, run: ImportedRun, progress: Progress) -> ImportResult:
    """Create the run (or find it from an earlier import), send its points and samples, then its name, tags, notes
    and final status. Raises SQDError (the server's words) when the server refuses something."""
    try:
        client.create_run(run.name, run.config, run_id=run.run_id, tags=run.tags, notes=run.notes,
                          started_at=run.started_at)
        created = True
    except ClientError as exc:
        if exc.status != 409:
            raise
        created = False  # imported before: the points below add only what is new
    task = progress.add_task(f"{run.name[:40]}: points", total=len(run.points))
    new = 0
    for chunk in _chunks(run.points):
        rows = [{"key": k, "step": s, "value": v, "wall_time": w, **({"epoch": e} if e is not None else {})}
                for k, s, v, e, w in chunk]
        new += client.log_metrics(run.run_id, rows)["stored"]
        progress.advance(task, len(chunk))
    if run.samples:
        sample_task = progress.add_task(f"{run.name[:40]}: samples", total=len(run.samples))
        for step, png in run.samples:
            client.put_sample(run.run_id, step, png if isinstance(png, bytes) else png.read_bytes())
            progress.advance(sample_task)
    existing = client.run(run.run_id)
    update: dict[str, Any] = {"name": run.name, "tags": list(dict.fromkeys([*existing["tags"], *run.tags]))}
    if run.status != "running" and existing["status"] == "running":
        update.update(status=run.status, **({"error": run.error} if run.status == "failed" and run.error else {}),
                      **({"finished_at": run.finished_at} if run.finished_at is not None else {}))
    client.update_run(run.run_id, **update)
    return ImportResult(run.run_id, run.name, created, len(run.points), new, len(run.samples))

"""`sqd import mlflow --tracking-uri URI [--experiment NAME]`: runs from an MLflow tracking store, read through
MLflow's own client (any store it reads: `sqlite:///mlflow.db`, `postgresql://…`, `http://server`, a `./mlruns`
directory).

Per MLflow run → one SQD run with the id `mlflow-<MLflow run id>`:
* params → config; MLflow keeps them as text, so numbers and booleans are read back as such (`"1e-3"` → 0.001)
  and dotted names nest (`optim.lr` → `{"optim": {"lr": …}}`) unless that clashes with another param;
* every metric's full history (step, value, timestamp) → points; a negative step is refused (SQD steps are ≥ 0);
* `mlflow.runName` → name, `mlflow.note.content` → notes, the other user tags → SQD tags `key:value` (or `key`
  when the value is empty or "true"); all tags are also listed in the notes;
* status FINISHED → finished, FAILED / KILLED → failed, RUNNING / SCHEDULED → stays running; start/end times kept.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from typing import Any

from sqd.importers.common import ImportedRun, ImportFormatError, Point
from sqd.protocol import TAGS_ADAPTER

STATUS = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "failed"}


def client_for(tracking_uri: str) -> Any:
    from mlflow import MlflowClient

    if "://" not in tracking_uri or tracking_uri.startswith("file:"):
        # MLflow 3 refuses new writes to directory stores; reading one is what this importer is for
        os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
    return MlflowClient(tracking_uri=tracking_uri)


def param_value(text: str) -> Any:
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    for kind in (int, float):
        try:
            value = kind(text)
        except ValueError:
            continue
        return value if not isinstance(value, float) or math.isfinite(value) else text
    return text


def nest(params: dict[str, str]) -> dict[str, Any]:
    """Dotted names become nested objects where no other param is in the way; the rest keep their flat name."""
    out: dict[str, Any] = {}
    for name in sorted(params):
        parts, node = name.split("."), out
        placed = all(part for part in parts)
        for part in parts[:-1] if placed else []:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                placed = False
                break
            node = child
        if placed and parts[-1] not in node:
            node[parts[-1]] = param_value(params[name])
        else:
            out[name] = param_value(params[name])
    return out


def sqd_tags(tags: dict[str, str]) -> list[str]:
    out = []
    for key, value in sorted(tags.items()):
        if key.startswith("mlflow."):
            continue
        tag = key if value.strip().lower() in ("", "true") else f"{key}:{value}"
        try:
            out += TAGS_ADAPTER.validate_python([tag])
        except ValueError:
            continue  # a tag SQD cannot hold as a label (a comma, too long): it is in the notes
    return out


def experiments(client: Any, tracking_uri: str, name: str | None) -> list[Any]:
    if name is None:
        return list(client.search_experiments())
    found = client.get_experiment_by_name(name)
    if found is None:
        names = ", ".join(e.name for e in client.search_experiments()) or "none"
        raise ImportFormatError(tracking_uri, f"experiment {name!r}", f"no such experiment; there are: {names}")
    return [found]


def list_runs(client: Any, experiment_ids: list[str]) -> Iterator[Any]:
    token = None
    while True:
        page = client.search_runs(experiment_ids, max_results=1000, page_token=token, order_by=["start_time ASC"])
        yield from page
        token = page.token
        if not token:
            return


def read_run(client: Any, run: Any, experiment: str, tracking_uri: str, name: str | None = None,
             several: bool = False) -> ImportedRun:
    info, data = run.info, run.data
    where = f"run {info.run_id}"
    points: list[Point] = []
    for key in sorted(data.metrics):
        for m in client.get_metric_history(info.run_id, key):
            if m.step < 0:
                raise ImportFormatError(tracking_uri, f"{where}, metric {key!r}",
                                        f"step {m.step} is negative; SQD steps start at 0")
            points.append((key, int(m.step), float(m.value), None, m.timestamp / 1000))
    run_name = data.tags.get("mlflow.runName") or info.run_id
    listed = "; ".join(f"{k}={v}" for k, v in sorted(data.tags.items()) if not k.startswith("mlflow."))
    notes = "\n".join(part for part in (
        data.tags.get("mlflow.note.content", ""),
        f"imported from MLflow run {info.run_id} (experiment {experiment!r}) at {tracking_uri}",
        f"MLflow tags: {listed}" if listed else "") if part)
    status = STATUS.get(info.status, "running")
    return ImportedRun(
        run_id=f"mlflow-{info.run_id}", name=(f"{name}/{run_name}" if several else name) if name else run_name,
        source=f"mlflow {tracking_uri} {info.run_id}", config=nest(dict(data.params)),
        tags=["imported", "mlflow", *sqd_tags(data.tags)], notes=notes, status=status,  # type: ignore[arg-type]
        error=f"MLflow status {info.status}" if status == "failed" else None,
        started_at=info.start_time / 1000 if info.start_time else None,
        finished_at=info.end_time / 1000 if info.end_time else None, points=points)

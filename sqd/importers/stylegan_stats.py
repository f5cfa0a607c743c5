"""`sqd import stats-jsonl`: a StyleGAN2/3 or R3GAN run directory — the format of their `training_loop.py`.

* `stats.jsonl`: one JSON object per tick, `{"<name>": {"num": n, "mean": m, "std": s}, …, "timestamp": t}`
  (torch_utils/training_stats `Collector.as_dict()`); a name with num = 0 was not reported that tick and is
  skipped. The step is `Progress/kimg` (see stylegan_keys.kimg_step), the wall time `timestamp`.
* `metric-<metric>.jsonl`: one object per evaluation, `{"results": {"fid50k_full": 12.3}, "metric": …,
  "snapshot_pkl": "network-snapshot-000400.pkl", "timestamp": t}` (metrics/metric_main `report_metric`); the step
  is the snapshot's kimg.
* `training_options.json` → the run's config; `fakes<kimg>.png` (and `fakes_init.png`, step 0) → the sample
  timeline.

FILE may be `stats.jsonl`, a `metric-*.jsonl` or the directory: the directory is the unit, all of it is read.
Identity (the run id): the directory's name and the first record's timestamp, so a copy of the directory
elsewhere imports into the same run. Any malformed line → ImportFormatError naming the file and line.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from sqd.importers.common import ImportedRun, ImportFormatError, Point, finite_times, stable_run_id
from sqd.importers.stylegan_keys import kimg_step, metric_key

SNAPSHOT = re.compile(r"network-snapshot-(\d+)\.pkl$")
FAKES = re.compile(r"^fakes(\d+)\.png$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _records(path: Path) -> list[tuple[int, dict[str, Any]]]:
    out = []
    with open(path, encoding="utf-8") as fh:
        for number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                hint = " (a run killed while writing leaves a partial last line: delete it)" if not line.endswith(
                    "\n") else ""
                raise ImportFormatError(path, f"line {number}", f"not valid JSON: {exc.msg}{hint}") from None
            if not isinstance(record, dict):
                raise ImportFormatError(path, f"line {number}", f"expected a JSON object, got {type(record).__name__}")
            out.append((number, record))
    return out


def _number(path: Path, where: str, value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ImportFormatError(path, where, f"{what} must be a number, got {value!r}")
    return float(value)


def _timestamp(path: Path, where: str, record: dict[str, Any]) -> float:
    if "timestamp" not in record:
        raise ImportFormatError(path, where, "no 'timestamp' (every StyleGAN/R3GAN record has one)")
    return _number(path, where, record["timestamp"], "'timestamp'")


def read_stats(path: Path, unit: str) -> list[Point]:
    points: list[Point] = []
    seen: dict[int, int] = {}
    for number, record in _records(path):
        where = f"line {number}"
        wall = _timestamp(path, where, record)
        kimg = record.get("Progress/kimg")
        if not isinstance(kimg, dict) or "mean" not in kimg:
            raise ImportFormatError(path, where, "no 'Progress/kimg' {num, mean, std} entry, which gives the step")
        step = kimg_step(_number(path, where, kimg["mean"], "'Progress/kimg' mean"), unit)
        if step in seen:
            raise ImportFormatError(path, where, f"step {step} again (line {seen[step]} has it): ticks shorter than "
                                                 "1 kimg; import with --step nimg")
        seen[step] = number
        for name, stat in record.items():
            if name == "timestamp":
                continue
            if not isinstance(stat, dict) or "num" not in stat or "mean" not in stat:
                raise ImportFormatError(path, where, f"{name!r} is not a {{num, mean, std}} statistic: {stat!r}")
            if _number(path, where, stat["num"], f"{name!r} num") == 0:
                continue  # not reported this tick
            value = math.nan if stat["mean"] is None else _number(path, where, stat["mean"], f"{name!r} mean")
            points.append((metric_key(name), step, value, None, wall))
    return points


def read_metric_file(path: Path, unit: str) -> list[Point]:
    points: list[Point] = []
    for number, record in _records(path):
        where = f"line {number}"
        wall = _timestamp(path, where, record)
        results, snapshot = record.get("results"), record.get("snapshot_pkl")
        if not isinstance(results, dict):
            raise ImportFormatError(path, where, "no 'results' object ({metric name: value})")
        found = SNAPSHOT.search(str(snapshot or ""))
        if found is None:
            raise ImportFormatError(path, where, f"'snapshot_pkl' {snapshot!r} does not name a "
                                                 "network-snapshot-<kimg>.pkl, which gives the step")
        step = kimg_step(float(found.group(1)), unit)
        for name, value in results.items():
            points.append((metric_key(f"Metrics/{name}"), step, _number(path, where, value, repr(name)), None, wall))
    return points


def _samples(run_dir: Path, unit: str) -> list[tuple[int, Path | bytes]]:
    grids: dict[int, Path] = {}
    init = run_dir / "fakes_init.png"
    for png in sorted(run_dir.glob("fakes*.png")):
        found = FAKES.match(png.name)
        if found:
            grids.setdefault(kimg_step(float(found.group(1)), unit), png)
    if init.exists():
        grids.setdefault(0, init)
    for png in grids.values():
        with open(png, "rb") as fh:
            if fh.read(8) != PNG_SIGNATURE:
                raise ImportFormatError(png, "header", "not a PNG image")
    return sorted(grids.items())


def _config(run_dir: Path) -> dict[str, Any]:
    options = run_dir / "training_options.json"
    if not options.exists():
        return {}
    try:
        config = json.loads(options.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ImportFormatError(options, f"line {exc.lineno}", f"not valid JSON: {exc.msg}") from None
    if not isinstance(config, dict):
        raise ImportFormatError(options, "top level", "expected a JSON object of training options")
    return config


def read_run(path: Path, name: str | None = None, unit: str = "kimg") -> ImportedRun:
    """Read and check a whole StyleGAN/R3GAN run directory (see the module docstring)."""
    path = path.expanduser().resolve()
    if not path.exists():
        raise ImportFormatError(path, "path", "no such file or directory")
    run_dir = path if path.is_dir() else path.parent
    if path.is_file() and path.name != "stats.jsonl" and not path.name.startswith("metric-"):
        raise ImportFormatError(path, "name", "expected stats.jsonl, a metric-<name>.jsonl or their directory")
    stats = run_dir / "stats.jsonl"
    metric_files = sorted(run_dir.glob("metric-*.jsonl"))
    if not stats.exists() and not metric_files:
        raise ImportFormatError(run_dir, "directory", "has no stats.jsonl and no metric-*.jsonl")
    points = read_stats(stats, unit) if stats.exists() else []
    for metric_file in metric_files:
        points += read_metric_file(metric_file, unit)
    first, last = finite_times(points)
    identity_time = points[0][4] if points else 0.0
    return ImportedRun(
        run_id=stable_run_id("stylegan", run_dir.name, repr(identity_time)), name=name or run_dir.name,
        source=f"stats-jsonl {run_dir}", config=_config(run_dir), tags=["imported", "stylegan"],
        notes=f"imported from {run_dir}", started_at=first, finished_at=last, points=points,
        samples=_samples(run_dir, unit))

"""A sweep's results table (one row per run) and its CSV / JSON export, plus the series and alerts of all its
runs in one answer each (what the sweep page paints first).

Per run, from its stored series (so external scripts that log `eval/quality` count too): *final* = the value at
the series' last step, *best* = the largest (Q, D, modes covered) or smallest (FID) non-NaN value — one bucket
spanning the whole series (series_query), so a long series costs what a short one does. The turning point is the
first critical alert of the turning-point rule (by step); `duration_s` runs from start to end, or to now while the
run is live.
Columns are fixed and documented in docs/sweeps.md; configuration values come first in the CSV, one column per
dimension of the sweep (lists written as `a+b`, an empty list as `none`).
"""

from __future__ import annotations

import csv
import io
import json
import math
import time
from collections import defaultdict
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from sqd.server.schemas import AlertPublic, SeriesPublic
from sqd.server.store import series_query
from sqd.server.store.models import Alert, Run
from sqd.server.sweeps.models import SweepRun
from sqd.server.sweeps.plan import format_value
from sqd.server.sweeps.schemas import ResultRow, SweepAlerts, SweepResults, SweepSeries

# result column → (series key, "max" | "min" is better)
RESULT_KEYS = {"quality": ("eval/quality", "max"), "diversity": ("eval/diversity", "max"),
               "fid": ("eval/fid", "min"), "modes": ("eval/modes_covered", "max")}
CSV_COLUMNS = ["run_id", "name", "config_index", "label", "seed", "status", "final_quality", "best_quality",
               "final_diversity", "best_diversity", "final_fid", "best_fid", "final_modes", "best_modes",
               "turning_epoch", "turning_step", "alerts", "evaluations", "last_step", "steps", "duration_s", "error"]


def is_turning(alert: Alert | AlertPublic) -> bool:
    return alert.severity == "critical" and "turning" in alert.rule.lower()


def _series_stats(session: Session, run_id: str) -> dict[str, dict[str, float]]:
    """key → final, lo, hi, n for the result keys of one run: a single bucket spanning each series, whose last
    value, min and max (over non-NaN values) the series store keeps per bucket."""
    keys = [k for k, _ in RESULT_KEYS.values()]
    out: dict[str, dict[str, float]] = {}
    for key, data in series_query.query_series(session, run_id, keys, max_points=1).items():
        if data.step:
            out[key] = {"final": data.value[-1], "lo": min(data.min), "hi": max(data.max), "n": sum(data.count)}
    return out


def _finite(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def results(session: Session, sweep_id: str, dimensions: list[str]) -> SweepResults:
    rows = session.execute(select(Run, SweepRun).join(SweepRun, SweepRun.run_id == Run.id)
                           .where(SweepRun.sweep_id == sweep_id).order_by(SweepRun.position)).all()
    run_ids = [run.id for run, _ in rows]
    alerts: dict[str, list[Alert]] = defaultdict(list)
    for a in session.scalars(select(Alert).where(Alert.run_id.in_(run_ids)).order_by(Alert.step, Alert.id)):
        alerts[a.run_id].append(a)
    now = time.time()
    data = []
    for run, sr in rows:
        values: dict[str, Any] = {}
        stats = _series_stats(session, run.id)
        for column, (key, better) in RESULT_KEYS.items():
            s = stats.get(key, {})
            values[f"final_{column}"] = _finite(s.get("final"))
            values[f"best_{column}"] = _finite(s.get("hi" if better == "max" else "lo"))
        turning = next((a for a in alerts[run.id] if is_turning(a)), None)
        end = run.finished_at if run.finished_at is not None else now
        data.append(ResultRow(
            run_id=run.id, name=run.name, config_index=sr.config_index, label=sr.label, params=sr.params,
            seed=sr.seed, status=run.status, error=run.error, **values,
            turning_epoch=turning.epoch if turning else None, turning_step=turning.step if turning else None,
            alerts=len(alerts[run.id]), evaluations=int(stats.get("eval/quality", {}).get("n", 0)),
            last_step=run.last_step, steps=run.steps,
            duration_s=None if run.started_at is None else max(0.0, end - run.started_at)))
    return SweepResults(sweep_id=sweep_id, dimensions=dimensions, data=data, count=len(data))


def to_csv(res: SweepResults) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([*res.dimensions, *CSV_COLUMNS])
    for row in res.data:
        dumped = row.model_dump()
        cells = [format_value(row.params.get(d)) for d in res.dimensions]
        cells += ["" if dumped[c] is None else dumped[c] for c in CSV_COLUMNS]
        writer.writerow(cells)
    return out.getvalue()


def to_json(res: SweepResults) -> str:
    return json.dumps(res.model_dump(mode="json"), allow_nan=False)


def sweep_series(session: Session, sweep_id: str, run_ids: list[str], keys: list[str],
                 max_points: int) -> SweepSeries:
    return SweepSeries(sweep_id=sweep_id, runs={
        run_id: {k: SeriesPublic(**vars(v)) for k, v in series_query.query_series(session, run_id, keys,
                                                                                  max_points).items()}
        for run_id in run_ids})


def sweep_alerts(session: Session, sweep_id: str, limit: int) -> SweepAlerts:
    rows = session.scalars(select(Alert).join(SweepRun, SweepRun.run_id == Alert.run_id)
                           .where(SweepRun.sweep_id == sweep_id).order_by(Alert.id.desc()).limit(limit))
    data = [AlertPublic.model_validate(a) for a in rows]
    return SweepAlerts(data=data, count=len(data))

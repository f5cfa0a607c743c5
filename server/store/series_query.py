"""Downsampled reads of long series, done in SQL per bucket (DESIGN.md "Long series").

For a window [lo, hi] and `max_points` N the bucket width is the smallest power of two 2^L that gives at most N
buckets. The query reads the finest stored rollup level S <= L (or the raw points when L is below the first
level) and groups its rows by `bucket / 2^(L-S)`; the levels are two powers of two apart, so it reads at most
4N rollup rows (16N raw points) whatever the series length. Each bucket answers its last value (the value at its
largest step, which is also the `step` reported), min and max over the non-NaN values, the point count and the
NaN count — a single-step spike stays in min/max at any N. Windows narrower than N steps come back at full
resolution; a downsampled window is widened to whole buckets (by less than one bucket at each edge).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy import bindparam, select, text
from sqlalchemy.orm import Session

from sqd.server.store.models import ROLLUP_LEVELS, PointRow, Series

# Each bucket's last value is fetched by its full primary key in a scalar subquery: a unique-index lookup whatever
# the planner's statistics (a join here picked a nested loop over the whole level on a freshly loaded PostgreSQL).
_FROM_ROLLUPS = text("""
SELECT g.b, g.n, g.n_nan, g.vmin, g.vmax, g.ls,
       (SELECT r.last_value FROM rollups r WHERE r.series_id = :sid AND r.level = :level AND r.bucket = g.lb)
FROM (
  SELECT bucket / :div AS b, sum(n) AS n, sum(n_nan) AS n_nan, min(vmin) AS vmin, max(vmax) AS vmax,
         max(last_step) AS ls, max(bucket) AS lb
  FROM rollups WHERE series_id = :sid AND level = :level AND bucket BETWEEN :lo AND :hi GROUP BY 1
) g ORDER BY g.b""")

_FROM_POINTS = text("""
SELECT g.b, g.n, g.n_nan, g.vmin, g.vmax, g.ls,
       (SELECT p.value FROM points p WHERE p.series_id = :sid AND p.step = g.ls)
FROM (
  SELECT step / :div AS b, count(*) AS n, count(*) - count(value) AS n_nan, min(value) AS vmin,
         max(value) AS vmax, max(step) AS ls
  FROM points WHERE series_id = :sid AND step BETWEEN :lo AND :hi GROUP BY 1
) g ORDER BY g.b""")

NAN = float("nan")


@dataclass
class SeriesData:
    step: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    nan: list[int] = field(default_factory=list)
    bucket_width: int = 1


def _nan_for_null(v: float | None) -> float:
    return NAN if v is None else v


def bucket_level(lo: int, hi: int, max_points: int) -> int:
    """The smallest L such that the aligned buckets of width 2^L covering [lo, hi] number at most max_points."""
    level = max(0, math.ceil(math.log2(max(1, (hi - lo + 1) / max_points))))
    while (hi >> level) - (lo >> level) + 1 > max_points:
        level += 1
    return level


def _raw(session: Session, sid: int, lo: int, hi: int) -> SeriesData:
    rows = session.execute(select(PointRow.step, PointRow.value).where(
        PointRow.series_id == sid, PointRow.step.between(lo, hi)).order_by(PointRow.step)).all()
    values = [_nan_for_null(v) for _, v in rows]
    return SeriesData(step=[s for s, _ in rows], value=values, min=list(values), max=list(values),
                      count=[1] * len(rows), nan=[int(v != v) for v in values])


def _grouped(session: Session, sid: int, lo: int, hi: int, level: int) -> SeriesData:
    source = max((s for s in ROLLUP_LEVELS if s <= level), default=0)
    query = _FROM_ROLLUPS if source else _FROM_POINTS
    factor = level - source
    # whole target buckets: the source rows from the first one's start to the last one's end
    params = {"sid": sid, "div": 1 << factor, "lo": (lo >> level) << factor,
              "hi": (((hi >> level) + 1) << factor) - 1, "level": source}
    out = SeriesData(bucket_width=1 << level)
    for _b, n, n_nan, vmin, vmax, last_step, last_value in session.execute(query, params):
        out.step.append(last_step)
        out.value.append(_nan_for_null(last_value))
        out.min.append(_nan_for_null(vmin))
        out.max.append(_nan_for_null(vmax))
        out.count.append(int(n))
        out.nan.append(int(n_nan))
    return out


def query_series(session: Session, run_id: str, keys: list[str] | None, max_points: int,
                 start: int | None = None, end: int | None = None) -> dict[str, SeriesData]:
    """key → downsampled data for the run's series (all of them when `keys` is None); unknown keys are absent."""
    query = select(Series.id, Series.key, Series.first_step, Series.last_step, Series.n_points).where(
        Series.run_id == run_id)
    if keys is not None:
        query = query.where(Series.key.in_(bindparam("keys", expanding=True)))
    rows = session.execute(query.order_by(Series.key), {"keys": keys} if keys is not None else {}).all()
    out: dict[str, SeriesData] = {}
    for sid, key, first, last, n_points in rows:
        if first is None:
            out[key] = SeriesData()
            continue
        lo, hi = max(first, start if start is not None else first), min(last, end if end is not None else last)
        if lo > hi:
            out[key] = SeriesData()
        elif n_points <= max_points or hi - lo + 1 <= max_points:
            out[key] = _raw(session, sid, lo, hi)
        else:
            out[key] = _grouped(session, sid, lo, hi, bucket_level(lo, hi, max_points))
    return out


def list_keys(session: Session, run_id: str) -> list[dict[str, object]]:
    rows = session.execute(select(Series.key, Series.first_step, Series.last_step, Series.n_points)
                           .where(Series.run_id == run_id).order_by(Series.key))
    return [{"key": k, "first_step": f, "last_step": la, "points": n} for k, f, la, n in rows]

"""Downsampled reads of long series (DESIGN.md "Long series"), answered from the chunk store (chunk_read.py).

For a window [lo, hi] and `max_points` N the bucket width is the smallest power of two 2^L that gives at most N
buckets. Each bucket answers its last value (the value at its largest step, which is also the `step` reported),
min and max over the non-NaN values, the point count and the NaN count — a single-step spike stays in min/max at
any N. A series with at most N points, or a window of at most N steps, comes back at full resolution (one bucket
per point), except where the series was downsampled (retention.py): there each kept bucket comes back with its
count, min and max. A downsampled window is widened to whole buckets (by less than one bucket at each edge).
The work is bounded by the buckets returned, not the points: whole chunks answer from their summary columns, wider
ones from their rollups, and only sparse chunks (few points per bucket) are decoded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from sqlalchemy.orm import Session

from sqd.server.store.chunk_codec import Buckets
from sqd.server.store.chunk_read import window_buckets
from sqd.server.store.series_catalog import series_of


@dataclass
class SeriesData:
    step: list[int] = field(default_factory=list)
    value: list[float] = field(default_factory=list)
    min: list[float] = field(default_factory=list)
    max: list[float] = field(default_factory=list)
    count: list[int] = field(default_factory=list)
    nan: list[int] = field(default_factory=list)
    bucket_width: int = 1


def _series_data(b: Buckets, width: int) -> SeriesData:
    return SeriesData(step=b.last_step.tolist(), value=b.last_value.tolist(), min=b.vmin.tolist(),
                      max=b.vmax.tolist(), count=b.n.tolist(), nan=b.n_nan.tolist(), bucket_width=width)


def bucket_level(lo: int, hi: int, max_points: int) -> int:
    """The smallest L such that the aligned buckets of width 2^L covering [lo, hi] number at most max_points."""
    level = max(0, math.ceil(math.log2(max(1, (hi - lo + 1) / max_points))))
    while (hi >> level) - (lo >> level) + 1 > max_points:
        level += 1
    return level


def query_series(session: Session, run_id: str, keys: list[str] | None, max_points: int,
                 start: int | None = None, end: int | None = None) -> dict[str, SeriesData]:
    """key → downsampled data for the run's series (all of them when `keys` is None); unknown keys are absent."""
    out: dict[str, SeriesData] = {}
    for e in series_of(session, run_id, keys):
        if e.first_step is None or e.last_step is None:
            out[e.key] = SeriesData()
            continue
        lo = max(e.first_step, start if start is not None else e.first_step)
        hi = min(e.last_step, end if end is not None else e.last_step)
        if lo > hi:
            out[e.key] = SeriesData()
        else:
            full = e.n_points <= max_points or hi - lo + 1 <= max_points
            level = 0 if full else bucket_level(lo, hi, max_points)
            out[e.key] = _series_data(window_buckets(session, e, lo, hi, level), 1 << level)
    return out


def list_keys(session: Session, run_id: str) -> list[dict[str, object]]:
    return [{"key": e.key, "first_step": e.first_step, "last_step": e.last_step, "points": e.n_points}
            for e in series_of(session, run_id)]

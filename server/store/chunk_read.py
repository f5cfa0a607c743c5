"""Metric points, read side: the chunks of a series (server/store/points_store.py writes them) as points or as
bucket aggregates, for every reader — series queries, export, the alert engine, the dashboard.

`window_points` decodes the chunks overlapping a step window. `window_buckets` aggregates a window into aligned
buckets of 2^level steps reading as little as it can: a chunk that lies inside one bucket answers from its summary
columns, a chunk with rollups at a level ≤ the target answers from those (decoded for all chunks at once), and only
the rest (sparse chunks, whose points are few) is decoded. A downsampled chunk (width > 1) holds one point per
rollup bucket — the bucket's last — so its points are its finest rollups; readers that want per-point detail get
those kept points. Readers name a series by its entry (series_catalog.py): a series a finished run packed
(packs.py) has no chunks, and its points come from the pack, whole; a bare integer is a chunk series' id.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session, aliased

from sqd.server.store.chunk_codec import (
    Buckets,
    Points,
    bucketize,
    buckets_of,
    decode_points,
    decode_rollups,
    merge_buckets,
)
from sqd.server.store.models import Chunk, Series, run_ref
from sqd.server.store.packs import packed_points
from sqd.server.store.series_catalog import SeriesEntry, series_of

IN_LIMIT = 500  # ids per IN (...) list


@dataclass
class StoredChunk:
    series_id: int
    first_step: int
    last_step: int
    n: int
    width: int
    data: bytes

    @staticmethod
    def columns() -> tuple[ColumnElement[object], ...]:
        t = Chunk.__table__
        return t.c.series_id, t.c.first_step, t.c.last_step, t.c.n, t.c.width, t.c.data

    @classmethod
    def of(cls, row: Any) -> StoredChunk:
        """From a row selected with columns()."""
        return cls(*row)


def chunk_points(c: StoredChunk) -> Points:
    return decode_points(c.data)


def tail_chunks(session: Session, series_ids: Sequence[int], below: int) -> dict[int, StoredChunk]:
    """The last chunk of each series when it has fewer than `below` points and is not downsampled (the open
    chunk an append extends), in one query per IN_LIMIT series."""
    t = Chunk.__table__
    later = aliased(Chunk)
    out: dict[int, StoredChunk] = {}
    ids = sorted(series_ids)
    for i in range(0, len(ids), IN_LIMIT):
        last = select(func.max(later.first_step)).where(later.series_id == t.c.series_id).scalar_subquery()
        rows = session.connection().execute(select(*StoredChunk.columns()).where(
            t.c.series_id.in_(ids[i:i + IN_LIMIT]), t.c.first_step == last, t.c.n < below, t.c.width == 1))
        out.update({r.series_id: StoredChunk.of(r) for r in rows})
    return out


def last_points(session: Session, entries: Sequence[SeriesEntry]) -> dict[SeriesEntry, tuple[int, float]]:
    """entry → (last step, value there) for the series that have points: from each series' last chunk's summary
    columns, a packed series' from its directory entry."""
    t = Chunk.__table__
    later = aliased(Chunk)
    out = {e: (e.last_step, np.nan if e.last_value is None else e.last_value) for e in entries
           if e.id is None and e.last_step is not None}
    by_id = {e.id: e for e in entries if e.id is not None}
    ids = sorted(by_id)
    for i in range(0, len(ids), IN_LIMIT):
        last = select(func.max(later.first_step)).where(later.series_id == t.c.series_id).scalar_subquery()
        rows = session.connection().execute(select(t.c.series_id, t.c.last_step, t.c.last_value).where(
            t.c.series_id.in_(ids[i:i + IN_LIMIT]), t.c.first_step == last))
        out.update({by_id[sid]: (step, np.nan if value is None else value) for sid, step, value in rows})
    return out


def _in_window(lo: int | None, hi: int | None) -> list[ColumnElement[bool]]:
    t = Chunk.__table__
    return ([] if hi is None else [t.c.first_step <= hi]) + ([] if lo is None else [t.c.last_step >= lo])


def _clip(p: Points, lo: int | None, hi: int | None) -> Points:
    a = 0 if lo is None else int(np.searchsorted(p.step, lo, side="left"))
    b = len(p) if hi is None else int(np.searchsorted(p.step, hi, side="right"))
    return p.take(slice(a, b))


def _chunk_series(session: Session, run_id: str, key: str) -> int | None:
    return session.scalar(select(Series.id).where(Series.run_ref == run_ref(run_id), Series.key == key))


def _located(session: Session, series: int | SeriesEntry) -> int | Points:
    """A series' chunk series id, or its points when its run's pack holds them. An entry listed before its series
    moved (a late point gave it its chunk back, or the packer packed it) is looked up again by key."""
    if not isinstance(series, SeriesEntry):
        return series
    if series.id is not None:
        return series.id
    points = packed_points(session, series.run_id, series.key)
    if points is not None:
        return points
    sid = _chunk_series(session, series.run_id, series.key)
    return Points.empty() if sid is None else sid


def _packed_since(session: Session, series: int | SeriesEntry) -> Points | None:
    """For a chunk series whose window came back empty: its points, when the packer has packed it since."""
    if isinstance(series, SeriesEntry) and not series.packed:
        return packed_points(session, series.run_id, series.key)
    return None


def iter_window(session: Session, series: int | SeriesEntry, lo: int | None = None, hi: int | None = None,
                limit: int | None = None) -> Iterator[Points]:
    """The points of one series with lo ≤ step ≤ hi, chunk by chunk in step order (at least `limit` points in
    all when there are that many, then it stops)."""
    where = _located(session, series)
    if isinstance(where, Points):
        yield _clip(where, lo, hi)
        return
    t = Chunk.__table__
    query = select(t.c.data).where(t.c.series_id == where, *_in_window(lo, hi)).order_by(t.c.first_step)
    seen = 0
    with session.connection().execute(query, execution_options={"yield_per": 16}) as result:  # closed if stopped
        for (data,) in result:
            p = _clip(decode_points(data), lo, hi)
            seen += len(p)
            yield p
            if limit is not None and seen >= limit:
                return
    if not seen:
        packed = _packed_since(session, series)
        if packed is not None:
            yield _clip(packed, lo, hi)


def window_points(session: Session, series: int | SeriesEntry, lo: int | None = None, hi: int | None = None
                  ) -> Points:
    parts = list(iter_window(session, series, lo, hi))
    return Points.concat(parts) if parts else Points.empty()


def run_points(session: Session, run_id: str, keys: Sequence[str] | None = None) -> dict[str, Points]:
    """key → every stored point of the run's series (tests, tools; the API streams instead)."""
    return {e.key: window_points(session, e) for e in series_of(session, run_id, keys)}


def _summary(rows: Sequence[Sequence[object]], level: int) -> Buckets:
    """Chunks lying inside one bucket, from their summary columns (NULL = NaN)."""
    def col(name: str, dtype: type) -> np.ndarray:
        return np.array([np.nan if getattr(r, name) is None else getattr(r, name) for r in rows], dtype=dtype)

    return Buckets(col("first_step", np.int64) >> level, col("n", np.int64), col("n_nan", np.int64),
                   col("vmin", np.float64), col("vmax", np.float64), col("last_step", np.int64),
                   col("last_value", np.float64))


def _from_rollups(rows: Sequence[Sequence[object]], level: int) -> tuple[Buckets, list[int]]:
    """Buckets of chunks that have rollups at a level ≤ `level` (a downsampled one: at any level), re-bucketed
    to `level`; and the indexes of the chunks that have none (their points must be read)."""
    records, owner = decode_rollups([r.rollups for r in rows])  # type: ignore[attr-defined]
    levels = records["level"].astype(np.int64)
    best = np.full(len(rows), -1)
    np.maximum.at(best, owner[levels <= level], levels[levels <= level])
    finest = np.full(len(rows), 99)
    np.minimum.at(finest, owner, levels)
    sampled = np.array([r.width > 1 for r in rows])  # type: ignore[attr-defined]
    best = np.where((best < 0) & sampled & (finest < 99), finest, best)
    pick = levels == best[owner]
    b = buckets_of(records[pick])
    # a finer level groups by shifting; a downsampled chunk's coarser bucket goes where its last point lies
    b.bucket = np.where(levels[pick] <= level, b.bucket >> np.maximum(level - levels[pick], 0), b.last_step >> level)
    return b, np.flatnonzero(best < 0).tolist()


def window_buckets(session: Session, series: int | SeriesEntry, lo: int, hi: int, level: int) -> Buckets:
    """Aggregates per aligned bucket of 2^level steps over the whole buckets covering [lo, hi], sorted."""
    t = Chunk.__table__
    blo, bhi = (lo >> level) << level, (((hi >> level) + 1) << level) - 1
    where = _located(session, series)
    if isinstance(where, Points):
        p = _clip(where, blo, bhi)
        return bucketize(p.step, p.value, level)
    series_id = where
    rows = session.connection().execute(select(
        t.c.first_step, t.c.last_step, t.c.n, t.c.n_nan, t.c.vmin, t.c.vmax, t.c.last_value, t.c.width, t.c.rollups)
        .where(t.c.series_id == series_id, *_in_window(blo, bhi)).order_by(t.c.first_step)).all()
    if not rows:
        packed = _packed_since(session, series)
        p = Points.empty() if packed is None else _clip(packed, blo, bhi)
        return bucketize(p.step, p.value, level)
    whole = [r for r in rows if r.first_step >> level == r.last_step >> level]
    split = [r for r in rows if r.first_step >> level != r.last_step >> level]
    parts = [_summary(whole, level)] if whole else []
    if split:
        from_rollups, unread = _from_rollups(split, level)
        parts.append(from_rollups.take((from_rollups.bucket >= blo >> level) & (from_rollups.bucket <= bhi >> level)))
        if unread:
            firsts = [split[i].first_step for i in unread]
            blobs = session.connection().execute(select(t.c.data).where(
                t.c.series_id == series_id, t.c.first_step.in_(firsts)).order_by(t.c.first_step)).scalars()
            p = _clip(Points.concat([decode_points(b) for b in blobs]), blo, bhi)
            parts.append(bucketize(p.step, p.value, level))
    return merge_buckets(Buckets.concat(parts), 0)

"""Metric points: idempotent bulk insert with rollup maintenance (write side). Queries live in series_query.py.

A batch's points arrive as numpy columns. Under a lock on their `series` rows (PostgreSQL FOR UPDATE; SQLite has
one writer at a time) the store finds which (series, step) pairs are new — anything past the series' last step is,
earlier steps are looked up — inserts only those (ON CONFLICT DO NOTHING stays as a safety belt) and merges their
min/max/last/count into every rollup level and moves each series' summary (first/last step, point count, last
value) forward. So a duplicate delivery inserts nothing and changes no rollup, and the
first value stored for a (run, key, step) wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sqlalchemy import Connection, bindparam, case, func, or_, select, tuple_, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from sqd.protocol import MetricBatch
from sqd.server.store import bulk_sql
from sqd.server.store.bulk_sql import Column
from sqd.server.store.models import ROLLUP_LEVELS, PointRow, Series


@dataclass
class PointColumns:
    """Points of any number of series, one entry per point; `value` may hold NaN and ±inf."""

    series_id: np.ndarray  # int64
    step: np.ndarray  # int64
    value: np.ndarray  # float64
    epoch: np.ndarray  # float64 with NaN for "no epoch" (numpy has no nullable int)
    wall_time: np.ndarray  # float64

    def __len__(self) -> int:
        return len(self.step)

    def take(self, index: np.ndarray) -> PointColumns:
        return PointColumns(self.series_id[index], self.step[index], self.value[index], self.epoch[index],
                            self.wall_time[index])

    @classmethod
    def concat(cls, parts: Sequence[PointColumns]) -> PointColumns:
        if not parts:
            ints, floats = np.empty(0, np.int64), np.empty(0, np.float64)
            return cls(ints, ints, floats, floats, floats)
        return cls(*(np.concatenate([getattr(p, name) for p in parts]) for name in
                     ("series_id", "step", "value", "epoch", "wall_time")))


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def insert_ignore(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """INSERT rows, skipping any that collide with a unique key (idempotent writes)."""
    if rows:
        session.execute(_insert(session)(model).on_conflict_do_nothing(), rows)


def ensure_series(session: Session, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], tuple[int, int | None]]:
    """(run_id, key) → (series id, last stored step), creating missing series and locking them for this
    transaction (in id order, so concurrent consumers cannot deadlock)."""
    if not pairs:
        return {}
    ordered = sorted(pairs)
    insert_ignore(session, Series, [{"run_id": r, "key": k, "n_points": 0} for r, k in ordered])
    found: dict[tuple[str, str], tuple[int, int | None]] = {}
    for chunk_start in range(0, len(ordered), 500):
        chunk = ordered[chunk_start:chunk_start + 500]
        rows = session.execute(select(Series.run_id, Series.key, Series.id, Series.last_step)
                               .where(tuple_(Series.run_id, Series.key).in_(chunk))
                               .order_by(Series.id).with_for_update())
        found.update({(r.run_id, r.key): (r.id, r.last_step) for r in rows})
    return found


def _first_per_pair(cols: PointColumns) -> PointColumns:
    """Sort by (series, step) and keep the first occurrence of each pair (first delivery wins)."""
    order = np.lexsort((cols.step, cols.series_id))  # stable: equal pairs keep arrival order
    cols = cols.take(order)
    if len(cols) > 1:
        keep = np.ones(len(cols), dtype=bool)
        keep[1:] = (cols.series_id[1:] != cols.series_id[:-1]) | (cols.step[1:] != cols.step[:-1])
        cols = cols.take(np.flatnonzero(keep))
    return cols


def _drop_stored(session: Session, cols: PointColumns, last_step: dict[int, int | None]) -> PointColumns:
    """Remove points whose (series, step) is already stored; only steps at or before a series' last step can be."""
    ids = np.array(sorted(last_step), dtype=np.int64)
    lasts = np.array([-1 if last_step[i] is None else last_step[i] for i in ids.tolist()], dtype=np.int64)
    last = lasts[np.searchsorted(ids, cols.series_id)]  # every point's series is in last_step
    maybe_old = cols.step <= last
    if not maybe_old.any():
        return cols
    keep = ~maybe_old
    for sid in np.unique(cols.series_id[maybe_old]):
        idx = np.flatnonzero(maybe_old & (cols.series_id == sid))
        steps = cols.step[idx]
        stored = np.fromiter(session.scalars(select(PointRow.step).where(
            PointRow.series_id == int(sid), PointRow.step.between(int(steps.min()), int(steps.max())))), np.int64)
        keep[idx] = ~np.isin(steps, stored)
    return cols.take(np.flatnonzero(keep))


def _write_points(conn: Connection, cols: PointColumns) -> None:
    nan_epoch = np.isnan(cols.epoch)
    bulk_sql.insert_rows(conn, "points", [
        Column("series_id", cols.series_id, "int4"), Column("step", cols.step, "int8"),
        Column("value", cols.value, "float8", np.isnan(cols.value)),
        Column("epoch", np.where(nan_epoch, 0, cols.epoch).astype(np.int64), "int4", nan_epoch),
        Column("wall_time", cols.wall_time, "float8")])


def rollup_columns(cols: PointColumns, level: int) -> list[Column]:
    """min/max/last/count per (series, bucket of 2^level steps) of points sorted by (series, step)."""
    bucket = cols.step >> level
    starts = np.flatnonzero(np.r_[True, (cols.series_id[1:] != cols.series_id[:-1]) | (bucket[1:] != bucket[:-1])])
    ends = np.r_[starts[1:], len(cols)] - 1
    nan = np.isnan(cols.value)
    n_nan = np.add.reduceat(nan.astype(np.int64), starts)
    n = ends - starts + 1
    all_nan = n_nan == n
    last_value = cols.value[ends]
    return [Column("series_id", cols.series_id[starts], "int4"),
            Column("level", np.full(len(starts), level, np.int64), "int2"),
            Column("bucket", bucket[starts], "int8"), Column("n", n, "int4"), Column("n_nan", n_nan, "int4"),
            Column("vmin", np.minimum.reduceat(np.where(nan, np.inf, cols.value), starts), "float8", all_nan),
            Column("vmax", np.maximum.reduceat(np.where(nan, -np.inf, cols.value), starts), "float8", all_nan),
            Column("last_step", cols.step[ends], "int8"),
            Column("last_value", last_value, "float8", np.isnan(last_value))]


def _merge_rollups(conn: Connection, cols: PointColumns) -> None:
    per_level = [rollup_columns(cols, level) for level in ROLLUP_LEVELS]
    merged = [Column(c.name, np.concatenate([lv[i].values for lv in per_level]), c.pg_type,
                     None if c.null is None else np.concatenate([lv[i].null for lv in per_level]))  # type: ignore[misc]
              for i, c in enumerate(per_level[0])]
    bulk_sql.merge_rollups(conn, merged)


def _advance_series(session: Session, cols: PointColumns) -> None:
    starts = np.flatnonzero(np.r_[True, cols.series_id[1:] != cols.series_id[:-1]])
    ends = np.r_[starts[1:], len(cols)] - 1
    postgres = session.get_bind().dialect.name == "postgresql"
    least, greatest = (func.least, func.greatest) if postgres else (func.min, func.max)
    table = Series.__table__
    # SET expressions read the row as it was, so `last_value` compares against the old last step
    stmt = (update(table).where(table.c.id == bindparam("sid")).values(
        first_step=least(func.coalesce(table.c.first_step, bindparam("lo")), bindparam("lo")),
        last_step=greatest(func.coalesce(table.c.last_step, bindparam("hi")), bindparam("hi")),
        last_value=case((or_(table.c.last_step.is_(None), table.c.last_step <= bindparam("hi")), bindparam("v")),
                        else_=table.c.last_value),
        n_points=table.c.n_points + bindparam("n")))
    last = cols.value[ends]
    values: list[float | None] = [None if v != v else v for v in last.tolist()]  # NaN → NULL, as in points
    session.connection().execute(stmt, [
        {"sid": sid, "lo": lo, "hi": hi, "n": n, "v": v} for sid, lo, hi, n, v in zip(
            cols.series_id[starts].tolist(), cols.step[starts].tolist(), cols.step[ends].tolist(),
            (ends - starts + 1).tolist(), values, strict=True)])


def json_values(values: np.ndarray) -> list[float | str]:
    out: list[float | str] = values.tolist()
    for i in np.flatnonzero(~np.isfinite(values)).tolist():
        v = values[i]
        out[i] = "NaN" if v != v else ("Infinity" if v > 0 else "-Infinity")
    return out


@dataclass
class StoredPoints:
    """The points a batch actually added (sorted by series, step) and which (run, key) each series is."""

    new: PointColumns
    series: dict[int, tuple[str, str]]

    def by_run(self) -> dict[str, dict[str, tuple[list[int], list[float | str]]]]:
        """run_id → key → (steps, values) of the new points, for the live fan-out; non-finite values are already
        the JSON-contract strings (done here in numpy: per-value conversion would cost more than the insert)."""
        out: dict[str, dict[str, tuple[list[int], list[float | str]]]] = {}
        cols = self.new
        if not len(cols):
            return out
        starts = np.flatnonzero(np.r_[True, cols.series_id[1:] != cols.series_id[:-1]])
        ends = np.r_[starts[1:], len(cols)]
        for a, b in zip(starts.tolist(), ends.tolist(), strict=True):
            run_id, key = self.series[int(cols.series_id[a])]
            out.setdefault(run_id, {})[key] = (cols.step[a:b].tolist(), json_values(cols.value[a:b]))
        return out


def _columns(batch: MetricBatch, ids: dict[tuple[str, str], tuple[int, int | None]]) -> PointColumns:
    key_ids = np.array([ids[(batch.run_id, k)][0] for k in batch.keys], dtype=np.int64)
    return PointColumns(key_ids[np.asarray(batch.key_index, dtype=np.int64)],
                        np.asarray(batch.step, dtype=np.int64), np.asarray(batch.value, dtype=np.float64),
                        np.array([np.nan if e is None else e for e in batch.epoch], dtype=np.float64),
                        np.asarray(batch.wall_time, dtype=np.float64))


def store_points(session: Session, batches: Sequence[MetricBatch]) -> StoredPoints:
    """Store the points of `batches` (any runs; the runs must exist) idempotently; returns what was new."""
    ids = ensure_series(session, {(b.run_id, k) for b in batches for k in b.keys})
    series = {sid: pair for pair, (sid, _) in ids.items()}
    if not batches:
        return StoredPoints(PointColumns.concat([]), series)
    cols = _first_per_pair(PointColumns.concat([_columns(b, ids) for b in batches]))
    cols = _drop_stored(session, cols, {sid: last for sid, last in ids.values()})
    if len(cols):
        conn = session.connection()
        _write_points(conn, cols)
        _merge_rollups(conn, cols)
        _advance_series(session, cols)
    return StoredPoints(cols, series)

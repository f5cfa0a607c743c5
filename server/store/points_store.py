"""Metric points, write side: idempotent merge of a batch into each series' chunks. Reads: chunk_read.py.

A series' points live in chunks of at most CHUNK_POINTS consecutive points (server/store/chunk_codec.py) whose step
ranges never overlap. Under a lock on the batch's `series` rows (PostgreSQL FOR UPDATE; SQLite has one writer at a
time), for each series:

* points past its last step are appended: the last chunk, while it holds fewer than OPEN_POINTS (the open
  chunk), is decoded, extended and written again, and new chunks follow — all in the ingest transaction, so a
  crash loses nothing that was acknowledged and leaves no half-written chunk. Past OPEN_POINTS, a batch smaller
  than the open chunk seals it instead: its points start a new chunk, and the sealed one joins the chunk before
  it (re-cut into full chunks and a remainder). So a live run's small batches rewrite at most ~OPEN_POINTS points
  each (what many live runs cost), a big batch rewrites no more than its own size, and chunks still grow to
  CHUNK_POINTS (the bytes per stored point, and the reads);
* points at or before its last step (late or redelivered) are merged into the chunks whose ranges they touch (and
  the open chunk before them): a step already stored keeps its value, so a duplicate delivery adds nothing and
  rewrites nothing, and the first value stored for a (run, key, step) wins. Points that fall inside a downsampled
  chunk (retention.py) are dropped: that range keeps only its rollups.

The merged region is re-cut into full chunks plus one remainder, so chunks stay non-overlapping and sorted. A
series a finished run packed (packs.py) first gets its `series` row and chunk back, under a lock on the batch's
runs rows that packing takes too, so everything here deals in chunks only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
from sqlalchemy import Connection, bindparam, case, delete, func, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from sqd.protocol import NO_EPOCH, MetricBatch, PackedMetrics
from sqd.server.store import packs
from sqd.server.store.chunk_codec import Points, chunk_row
from sqd.server.store.chunk_read import StoredChunk, chunk_points, tail_chunks
from sqd.server.store.models import Chunk, Run, RunRef, Series

CHUNK_POINTS = 16384
OPEN_POINTS = 4096


def _insert(session: Session) -> Any:
    return postgresql.insert if session.get_bind().dialect.name == "postgresql" else sqlite.insert


def insert_ignore(session: Session, model: type[Any], rows: list[dict[str, Any]]) -> None:
    """INSERT rows, skipping any that collide with a unique key (idempotent writes)."""
    if rows:
        session.execute(_insert(session)(model).on_conflict_do_nothing(), rows)


class SeriesRef(NamedTuple):
    id: int
    last_step: int | None


def ensure_run_refs(session: Session, run_ids: set[str]) -> dict[str, int]:
    """run id → its run_refs.ref, created where missing. On SQLite this INSERT is the transaction's first
    statement and a write: it takes the write lock before anything is read (pysqlite opens the transaction at the
    first write, and what a transaction read before it could change under it). On PostgreSQL only missing rows
    are inserted: an INSERT that meets a conflict still draws an id from the sequence (as `ensure_series`)."""
    rows = [{"run_id": r} for r in sorted(run_ids)]
    query = select(RunRef.run_id, RunRef.ref).where(RunRef.run_id.in_(sorted(run_ids)))
    if session.get_bind().dialect.name != "postgresql":
        insert_ignore(session, RunRef, rows)
    refs = {run_id: ref for run_id, ref in session.execute(query)}
    if len(refs) < len(run_ids):
        insert_ignore(session, RunRef, [r for r in rows if r["run_id"] not in refs])
        refs = {run_id: ref for run_id, ref in session.execute(query)}
    return refs


def _lock_runs(session: Session, run_ids: set[str]) -> None:
    """Hold the runs' rows, as pack_run does before it moves series out of `series` (ingest's consumer already
    holds them; SQLite has one writer at a time)."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(select(Run.id).where(Run.id.in_(sorted(run_ids))).order_by(Run.id).with_for_update())


def ensure_series(session: Session, pairs: set[tuple[str, str]]) -> dict[tuple[str, str], SeriesRef]:
    """(run_id, key) → its series, creating missing series (giving packed ones their row and chunk back) and
    locking them for this transaction (in id order, so concurrent consumers cannot deadlock)."""
    if not pairs:
        return {}
    refs = ensure_run_refs(session, {r for r, _ in pairs})
    _lock_runs(session, set(refs))
    packs.restore_series(session, refs, pairs)
    run_of = {ref: run_id for run_id, ref in refs.items()}
    ref_ids, keys = sorted(refs.values()), sorted({k for _, k in pairs})
    found: dict[tuple[str, str], SeriesRef] = {}
    for _ in range(2):  # the rows there, then the missing ones inserted
        for start in range(0, len(keys), 500):
            # `run_ref IN … AND key IN …`, not a row-value IN list: PostgreSQL plans that as an OR of index probes,
            # or, once its statistics say so, as a sequential scan of `series` per batch; these use the index
            rows = session.execute(select(Series.run_ref, Series.key, Series.id, Series.last_step)
                                   .where(Series.run_ref.in_(ref_ids), Series.key.in_(keys[start:start + 500]))
                                   .order_by(Series.id).with_for_update())
            found.update({(run_of[r.run_ref], r.key): SeriesRef(r.id, r.last_step) for r in rows
                          if (run_of[r.run_ref], r.key) in pairs})
        if len(found) == len(pairs):
            break
        # only the missing ones: inserting every row of every batch would, on PostgreSQL, draw a sequence id for
        # each conflict and run the 32-bit ids out within weeks
        insert_ignore(session, Series, [{"run_ref": refs[r], "key": k, "n_points": 0} for r, k in sorted(pairs)
                                        if (r, k) not in found])
    return found


@dataclass
class PointColumns:
    """Points of any number of series, one entry per point; `value` may hold NaN and ±inf, epoch -1 = none."""

    series_id: np.ndarray  # int64
    points: Points

    def __len__(self) -> int:
        return len(self.series_id)

    def take(self, index: np.ndarray) -> PointColumns:
        return PointColumns(self.series_id[index], self.points.take(index))

    @classmethod
    def concat(cls, parts: Sequence[PointColumns]) -> PointColumns:
        if not parts:
            return cls(np.empty(0, np.int64), Points.empty())
        return cls(np.concatenate([p.series_id for p in parts]), Points.concat([p.points for p in parts]))

    def groups(self) -> list[tuple[int, int, int]]:
        """(series id, start, end) of each run of equal series ids (the columns are sorted by series)."""
        if not len(self):
            return []
        starts = np.flatnonzero(np.r_[True, self.series_id[1:] != self.series_id[:-1]])
        ends = np.r_[starts[1:], len(self)]
        return list(zip(self.series_id[starts].tolist(), starts.tolist(), ends.tolist(), strict=True))


def _first_per_pair(cols: PointColumns) -> PointColumns:
    """Sort by (series, step) and keep the first occurrence of each pair (first delivery wins)."""
    order = np.lexsort((cols.points.step, cols.series_id))  # stable: equal pairs keep arrival order
    cols = cols.take(order)
    if len(cols) > 1:
        step = cols.points.step
        keep = np.ones(len(cols), dtype=bool)
        keep[1:] = (cols.series_id[1:] != cols.series_id[:-1]) | (step[1:] != step[:-1])
        cols = cols.take(np.flatnonzero(keep))
    return cols


def _sampled_through(session: Session, sid: int) -> int:
    """The last step covered by a downsampled chunk of the series, or -1."""
    t = Chunk.__table__
    last = session.connection().execute(select(func.max(t.c.last_step)).where(t.c.series_id == sid,
                                                                             t.c.width > 1)).scalar()
    return -1 if last is None else int(last)


def _chunk_before(session: Session, sid: int, step: int, floor: int = -1) -> StoredChunk | None:
    """The series' last chunk starting before `step` (and after `floor`), if any."""
    t = Chunk.__table__
    row = session.connection().execute(select(*StoredChunk.columns()).where(
        t.c.series_id == sid, t.c.first_step < step, t.c.first_step > floor)
        .order_by(t.c.first_step.desc()).limit(1)).first()
    return StoredChunk.of(row) if row is not None else None


def _affected(session: Session, sid: int, lo: int, hi: int, floor: int) -> list[StoredChunk]:
    """Chunks a merge of steps [lo, hi] must rewrite: those overlapping it and the open chunk just before it, all
    past `floor` (downsampled chunks and anything before them are never rewritten)."""
    conn = session.connection()
    t = Chunk.__table__
    cols = StoredChunk.columns()
    overlapping = conn.execute(select(*cols).where(t.c.series_id == sid, t.c.first_step <= hi, t.c.last_step >= lo)
                               .order_by(t.c.first_step)).all()
    before = _chunk_before(session, sid, lo, floor)
    chunks = [StoredChunk.of(r) for r in overlapping]
    if before is not None and before.n < CHUNK_POINTS and (not chunks or before.first_step != chunks[0].first_step):
        chunks.insert(0, before)
    return chunks


def _merge(existing: list[StoredChunk], new: Points) -> tuple[Points, Points]:
    """(all points of the region, the points that were not stored yet); stored values win."""
    if not existing:
        return new, new
    old = Points.concat([chunk_points(c) for c in existing])
    if new.step[0] > old.step[-1]:
        return Points.concat([old, new]), new
    added = new.take(np.flatnonzero(~np.isin(new.step, old.step)))
    merged = Points.concat([old, added])
    return merged.take(np.argsort(merged.step, kind="stable")), added


@dataclass
class _Writes:
    deleted: list[dict[str, int]]
    inserted: list[dict[str, Any]]
    added: list[PointColumns]


def _merge_series(writes: _Writes, sid: int, new: Points, existing: list[StoredChunk]) -> None:
    merged, added = _merge(existing, new)
    if not len(added):
        return  # a repeat: nothing is rewritten
    writes.deleted += [{"sid": sid, "first": c.first_step} for c in existing]
    writes.inserted += _cut(sid, merged)
    writes.added.append(PointColumns(np.full(len(added), sid, np.int64), added))


def _compact(session: Session, writes: _Writes, sealed: StoredChunk) -> None:
    """Merge a sealed chunk into the chunk just before it while that one is not full (neither downsampled),
    re-cut into full chunks and a remainder, which a later sealed chunk joins in turn. (The sealed chunk is an
    open chunk from tail_chunks: never downsampled.)"""
    before = _chunk_before(session, sealed.series_id, sealed.first_step)
    if before is None or before.width != 1 or before.n >= CHUNK_POINTS:
        return
    writes.deleted += [{"sid": c.series_id, "first": c.first_step} for c in (before, sealed)]
    merged = Points.concat([chunk_points(before), chunk_points(sealed)])
    writes.inserted += _cut(sealed.series_id, merged)


def _cut(sid: int, points: Points) -> list[dict[str, Any]]:
    """Chunk rows of CHUNK_POINTS points each, and one for the remainder."""
    return [chunk_row(sid, points.take(slice(start, start + CHUNK_POINTS)))
            for start in range(0, len(points), CHUNK_POINTS)]


def _write(conn: Connection, writes: _Writes) -> None:
    t = Chunk.__table__
    if writes.deleted:
        conn.execute(delete(t).where(t.c.series_id == bindparam("sid"), t.c.first_step == bindparam("first")),
                     writes.deleted)
    if writes.inserted:
        conn.execute(insert(t), writes.inserted)


def _advance_series(session: Session, cols: PointColumns) -> None:
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
    step, value = cols.points.step, cols.points.value
    rows = []
    for sid, a, b in cols.groups():
        top = a + int(step[a:b].argmax())
        v = float(value[top])
        rows.append({"sid": sid, "lo": int(step[a:b].min()), "hi": int(step[top]), "n": b - a,
                     "v": None if v != v else v})  # NaN → NULL, as in the chunks' summary columns
    session.connection().execute(stmt, rows)


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
        p = self.new.points
        for sid, a, b in self.new.groups():
            run_id, key = self.series[sid]
            out.setdefault(run_id, {})[key] = (p.step[a:b].tolist(), json_values(p.value[a:b]))
        return out


def batches_columns(batches: Sequence[MetricBatch | PackedMetrics], ids: dict[tuple[str, str], SeriesRef]
                    ) -> PointColumns:
    """The points of all `batches` as one set of columns (concatenated once, not batch by batch: a transaction
    holds hundreds of batches); `ids` maps each (run, key) to its series."""
    if not batches:
        return PointColumns.concat([])
    cols = [b.columns() for b in batches]
    key_ids = np.array([ids[(b.run_id, k)].id for b in batches for k in b.keys], dtype=np.int64)
    first_key = np.cumsum([0] + [len(b.keys) for b in batches[:-1]])
    key_index = np.concatenate([c.key_index for c in cols]) + np.repeat(first_key, [len(c) for c in cols])
    epoch = np.concatenate([c.epoch for c in cols])
    return PointColumns(key_ids[key_index], Points(
        np.concatenate([c.step for c in cols]), np.concatenate([c.value for c in cols]),
        np.where(epoch == NO_EPOCH, -1, epoch), np.concatenate([c.wall_time for c in cols])))


def store_points(session: Session, batches: Sequence[MetricBatch | PackedMetrics]) -> StoredPoints:
    """Store the points of `batches` (any runs; the runs must exist) idempotently; returns what was new."""
    ids = ensure_series(session, {(b.run_id, k) for b in batches for k in b.keys})
    series = {ref.id: pair for pair, ref in ids.items()}
    last_step = {ref.id: ref.last_step for ref in ids.values()}
    cols = _first_per_pair(batches_columns(batches, ids))
    groups = cols.groups()
    appends = {sid for sid, a, _ in groups if last_step[sid] is None or cols.points.step[a] > last_step[sid]}
    tails = tail_chunks(session, [sid for sid in appends if last_step[sid] is not None], CHUNK_POINTS)
    writes = _Writes([], [], [])
    for sid, a, b in groups:
        new = cols.points.take(slice(a, b))
        if sid in appends:
            tail = tails.get(sid)
            if tail is not None and tail.n >= OPEN_POINTS and len(new) < tail.n:
                _compact(session, writes, tail)
                tail = None
            _merge_series(writes, sid, new, [tail] if tail is not None else [])
            continue
        floor = _sampled_through(session, sid)
        new = new.take(np.flatnonzero(new.step > floor))
        if len(new):
            _merge_series(writes, sid, new, _affected(session, sid, int(new.step[0]), int(new.step[-1]), floor))
    _write(session.connection(), writes)
    added = PointColumns.concat(writes.added)
    if len(added):
        _advance_series(session, added)
    return StoredPoints(added, series)

"""Run packs: a finished run's small series leave `chunks` and `series` for one `packs` row per run — their points
in one blob (pack_codec.py), what their `series` rows said in the row's `directory` — and come back to both when a
point arrives for one of them.

A series of a hundred points costs more as a chunk and a `series` row — two rows, three index entries, a header
and a wall-time column that every key of the run repeats — than its values do; packed, a run of 100 keys × 100
steps drops from ~6.6 to ~3.6 bytes a point on PostgreSQL (bench/server_storage.py). Series past PACK_POINTS
points, or spread over several chunks, stay in `chunks`, where that overhead is already small and their rollups
serve long queries. Readers see both kinds through series_catalog.py.

In the blob a series is numbered by its position in the run's pack (renumbered on every write), never by a
`series` id: SQLite hands a deleted row's id to the next series, so a series id cannot name a packed series.

* `pack_run`: the run's series with one full-resolution chunk of at most PACK_POINTS points join the run's pack;
  their chunks and `series` rows are deleted. It locks the run row first (as ingest does), then its series rows
  in id order, then the pack row, so it is safe while ingest runs and a point is never in both places or neither.
* `restore_series`: ingest calls it (holding the run rows) before it looks up the series of a batch: the packed
  ones among them get their `series` row and chunk back and leave the pack (a pack left empty is deleted), so all
  of points_store stays chunk-only.
* `packed_points`: the points of a packed series, for the readers (chunk_read.py); a session indexes a run's pack
  once per transaction, so a reader of many keys reads it once.
* `runs_to_pack`: runs finished a while ago and not packed since (the server's packer, server/packer.py, and
  `sqd db pack`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Collection
from dataclasses import dataclass, fields
from typing import Any

from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from sqd.protocol import TERMINAL_STATUSES
from sqd.server.store.chunk_codec import CorruptChunk, Points, chunk_row, decode_points
from sqd.server.store.models import Chunk, Pack, Run, Series, run_ref
from sqd.server.store.pack_codec import PackIndex, decode_pack, encode_pack

PACK_POINTS = 1024  # larger series keep their chunks (and rollups)
_INDEXED = "sqd.packs.indexed"  # session.info: (transaction, {run id: (directory, PackIndex)})
_INDEXED_PACKS = 8  # packs held per transaction at most (a compare page reads a few keys of many runs)

log = logging.getLogger(__name__)


@dataclass
class PackReport:
    series: int = 0  # series that joined the pack
    points: int = 0
    bytes_before: int = 0  # their chunks' blobs
    pack_bytes: int = 0  # the pack as written (all its series)

    def add(self, other: PackReport) -> None:
        for f in fields(self):
            setattr(self, f.name, getattr(self, f.name) + getattr(other, f.name))


@dataclass(frozen=True)
class PackedSeries:
    """One directory entry: what the series' `series` row held, and its number in the blob."""

    number: int
    first_step: int
    last_step: int
    n_points: int
    last_value: float | None  # None = NaN, as in `series`

    @classmethod
    def of(cls, entry: list[Any]) -> PackedSeries:
        number, first, last, n, value = entry
        return cls(int(number), int(first), int(last), int(n), None if value is None else float(value))

    def entry(self, number: int) -> list[Any]:
        # JSON has no ±inf (PostgreSQL's json type refuses them): their names, which float() reads back
        v = self.last_value
        named = None if v is None or math.isnan(v) else v if math.isfinite(v) else "Infinity" if v > 0 else "-Infinity"
        return [number, self.first_step, self.last_step, self.n_points, named]


def directory_of(run_id: str, directory: dict[str, Any]) -> dict[str, PackedSeries]:
    """A pack's `directory` column read; CorruptChunk when it does not parse."""
    try:
        return {key: PackedSeries.of(entry) for key, entry in directory.items()}
    except (TypeError, ValueError, AttributeError) as exc:
        raise CorruptChunk(f"run pack of {run_id}: its directory does not parse ({exc})") from exc


def _contents(pack: Pack | None) -> tuple[dict[str, PackedSeries], dict[str, Points]]:
    """A pack's directory and the points of each of its series, by key."""
    if pack is None:
        return {}, {}
    directory = directory_of(pack.run_id, pack.directory)
    numbered = decode_pack(pack.data)
    missing = sorted(k for k, e in directory.items() if e.number not in numbered)
    if missing or len(numbered) != len(directory):
        raise CorruptChunk(f"run pack of {pack.run_id}: the directory and the blob disagree (keys without points: "
                           f"{missing[:5]}; {len(directory)} keys, {len(numbered)} series)")
    return directory, {key: numbered[e.number] for key, e in directory.items()}


def _pack_row(session: Session, run_id: str) -> Pack | None:
    return session.scalars(select(Pack).where(Pack.run_id == run_id).with_for_update()).first()


def _write_pack(session: Session, run_id: str, pack: Pack | None, directory: dict[str, PackedSeries],
                points: dict[str, Points]) -> int:
    """Store these series as the run's pack (deleting the row when there are none); the bytes written."""
    session.info.pop(_INDEXED, None)
    if not points:
        if pack is not None:
            session.delete(pack)
        session.flush()
        return 0
    keys = sorted(points)
    data = encode_pack({i: points[k] for i, k in enumerate(keys)})
    entries = {k: directory[k].entry(i) for i, k in enumerate(keys)}
    n_points = sum(len(p) for p in points.values())
    if pack is None:
        session.add(Pack(run_id=run_id, n_series=len(keys), n_points=n_points, directory=entries, data=data))
    else:
        pack.n_series, pack.n_points, pack.directory, pack.data = len(keys), n_points, entries, data
    session.flush()
    return len(data)


def pack_run(session: Session, run_id: str) -> PackReport:
    """Move the run's small series into its pack (in the session's transaction, not committed)."""
    report = PackReport()
    session.execute(update(Run).where(Run.id == run_id).values(packed_at=time.time()))
    rows = {r.id: r for r in session.execute(
        select(Series.id, Series.key, Series.first_step, Series.last_step, Series.n_points, Series.last_value)
        .where(Series.run_ref == run_ref(run_id)).order_by(Series.id).with_for_update())}
    if not rows:
        return report
    t = Chunk.__table__
    small = (select(t.c.series_id).where(t.c.series_id.in_(list(rows))).group_by(t.c.series_id)
             .having(func.count() == 1, func.max(t.c.n) <= PACK_POINTS, func.max(t.c.width) == 1))
    chunks = session.execute(select(t.c.series_id, t.c.data).where(t.c.series_id.in_(small))).all()
    if not chunks:
        return report
    pack = _pack_row(session, run_id)
    directory, points = _contents(pack)
    for sid, data in chunks:
        row = rows[sid]
        points[row.key] = decode_points(data)
        directory[row.key] = PackedSeries(-1, row.first_step, row.last_step, row.n_points, row.last_value)
        report.series += 1
        report.points += len(points[row.key])
        report.bytes_before += len(data)
    report.pack_bytes = _write_pack(session, run_id, pack, directory, points)
    moved = [sid for sid, _ in chunks]
    session.execute(delete(t).where(t.c.series_id.in_(moved)))
    session.execute(delete(Series).where(Series.id.in_(moved)))
    return report


def restore_series(session: Session, refs: dict[str, int], pairs: Collection[tuple[str, str]]) -> None:
    """Give the packed series among (run id, key) `pairs` their `series` row and chunk back; `refs` holds each
    run's run_refs.ref. The caller holds the runs' rows (ingest's transaction)."""
    wanted: dict[str, set[str]] = {}
    for run_id, key in pairs:
        wanted.setdefault(run_id, set()).add(key)
    # the directories first (most batches go to runs without a pack, or to keys not in it); a blob only where a
    # key of the batch is packed
    packed = {run_id: sorted(wanted[run_id] & set(directory)) for run_id, directory in session.execute(
        select(Pack.run_id, Pack.directory).where(Pack.run_id.in_(sorted(wanted))))}
    for run_id in sorted(r for r, keys in packed.items() if keys):
        pack = _pack_row(session, run_id)
        if pack is None:
            continue
        keys = sorted(wanted[run_id] & set(pack.directory))
        directory, points = _contents(pack)
        ref = refs[pack.run_id]
        session.execute(insert(Series), [
            {"run_ref": ref, "key": k, "first_step": directory[k].first_step, "last_step": directory[k].last_step,
             "n_points": directory[k].n_points, "last_value": directory[k].last_value} for k in keys])
        found_ids = session.execute(select(Series.key, Series.id).where(Series.run_ref == ref, Series.key.in_(keys)))
        ids = {key: int(sid) for key, sid in found_ids}
        session.execute(insert(Chunk.__table__), [chunk_row(ids[k], points.pop(k)) for k in keys])
        _write_pack(session, pack.run_id, pack, directory, points)
        session.execute(update(Run).where(Run.id == pack.run_id).values(packed_at=None))  # packed again when quiet


def packed_points(session: Session, run_id: str, key: str) -> Points | None:
    """The points of the run's packed series `key`; None when its pack does not hold that key (any more: a reader
    that listed the series before a late point gave it its chunk back looks again)."""
    found = _indexed(session, run_id, key)
    if found is None:
        return None
    directory, index = found
    number = directory_of(run_id, {key: directory[key]})[key].number
    if number not in index:
        raise CorruptChunk(f"run pack of {run_id}: its directory names series {number} for {key!r}, which the blob "
                           f"does not hold")
    return index.points(number)


def _indexed(session: Session, run_id: str, key: str) -> tuple[dict[str, Any], PackIndex] | None:
    """The run's pack — its directory, read in one statement with the blob it describes (a pack renumbers its
    series whenever it is written), and the blob indexed — once per transaction of the session: a reader of many
    keys of one run (an export, a run page) read and skimmed the whole pack once per key, ~6 s for 1,000 keys. A
    pack that lacks `key` is read again (the packer may have packed that series since); `_write_pack` forgets
    what its session indexed."""
    transaction = session.get_transaction()
    held = session.info.get(_INDEXED)
    if held is None or held[0] is not transaction:
        held = session.info[_INDEXED] = (transaction, {})
    cache: dict[str, tuple[dict[str, Any], PackIndex]] = held[1]
    found = cache.get(run_id)
    if found is None or key not in found[0]:
        row = session.execute(select(Pack.directory, Pack.data).where(Pack.run_id == run_id)).first()
        if row is None or key not in row.directory:
            return None
        if len(cache) >= _INDEXED_PACKS:
            cache.clear()
        found = cache[run_id] = (row.directory, PackIndex(row.data))
    return found


def runs_to_pack(session: Session, finished_before: float, limit: int | None = 100) -> list[str]:
    """Runs that finished before `finished_before` and were not packed since (or since a point unpacked one of
    their series), oldest first."""
    query = (select(Run.id).where(Run.status.in_(TERMINAL_STATUSES), Run.finished_at < finished_before,
                                  Run.packed_at.is_(None), Run.deleted_at.is_(None))
             .order_by(Run.finished_at).limit(limit))
    return list(session.scalars(query))

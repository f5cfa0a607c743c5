"""Run packs: a finished run's small series leave `chunks` for one blob per run (pack_codec.py), and come back to
`chunks` when a point arrives for one of them.

A series of a hundred points costs more as a chunk — its row, its index entry, its header and a wall-time column
that every key of the run repeats — than its values do; packed, a run of 100 keys × 100 steps drops from ~5.6 to
~3 bytes a point (bench/server_storage.py). Series past PACK_POINTS points, or spread over several chunks, stay in
`chunks`, where that overhead is already small and their rollups serve long queries.

* `pack_run`: the run's series with one full-resolution chunk of at most PACK_POINTS points join the run's pack;
  their chunks are deleted and `series.packed` set. It locks the run's series rows in id order, as ingest does,
  then the pack row, so it is safe while ingest runs and a point is never in both places or in neither.
* `unpack_series`: packed series among the given (already locked) ones get their chunk back and leave the pack
  (ingest calls it before merging points into them, so all of points_store stays chunk-only); a pack left
  empty is deleted.
* `packed_points`: the points of a packed series, for the readers (chunk_read.py).
* `runs_to_pack`: runs finished a while ago and not packed since (the server's packer, server/packer.py, and
  `sqd db pack`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, fields

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from sqd.protocol import TERMINAL_STATUSES
from sqd.server.store.chunk_codec import Points, chunk_row, decode_points
from sqd.server.store.models import Chunk, Pack, Run, RunRef, Series, run_ref
from sqd.server.store.pack_codec import decode_pack, encode_pack

PACK_POINTS = 1024  # larger series keep their chunks (and rollups)

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


def _pack_row(session: Session, run_id: str) -> Pack | None:
    return session.scalars(select(Pack).where(Pack.run_id == run_id).with_for_update()).first()


def _write_pack(session: Session, run_id: str, pack: Pack | None, series: dict[int, Points]) -> int:
    """Store `series` as the run's pack (deleting the row when there are none); the bytes written."""
    if not series:
        if pack is not None:
            session.delete(pack)
        return 0
    data = encode_pack(series)
    n_points = sum(len(p) for p in series.values())
    if pack is None:
        session.add(Pack(run_id=run_id, n_series=len(series), n_points=n_points, data=data))
    else:
        pack.n_series, pack.n_points, pack.data = len(series), n_points, data
    session.flush()
    return len(data)


def pack_run(session: Session, run_id: str) -> PackReport:
    """Move the run's small series into its pack (in the session's transaction, not committed)."""
    report = PackReport()
    session.execute(update(Run).where(Run.id == run_id).values(packed_at=time.time()))
    sids = list(session.scalars(select(Series.id).where(Series.run_ref == run_ref(run_id), Series.packed.is_(False))
                                .order_by(Series.id).with_for_update()))
    if not sids:
        return report
    t = Chunk.__table__
    small = (select(t.c.series_id).where(t.c.series_id.in_(sids)).group_by(t.c.series_id)
             .having(func.count() == 1, func.max(t.c.n) <= PACK_POINTS, func.max(t.c.width) == 1))
    rows = session.execute(select(t.c.series_id, t.c.data).where(t.c.series_id.in_(small))).all()
    if not rows:
        return report
    pack = _pack_row(session, run_id)
    series = decode_pack(pack.data) if pack is not None else {}
    for sid, data in rows:
        series[sid] = decode_points(data)
        report.series += 1
        report.points += len(series[sid])
        report.bytes_before += len(data)
    moved = [sid for sid, _ in rows]
    report.pack_bytes = _write_pack(session, run_id, pack, series)
    session.execute(delete(t).where(t.c.series_id.in_(moved)))
    session.execute(update(Series).where(Series.id.in_(moved)).values(packed=True))
    return report


def unpack_series(session: Session, sids: Sequence[int]) -> None:
    """Give the packed series among `sids` (whose rows the caller has locked) their chunks back."""
    if not sids:
        return
    rows = session.execute(select(Series.id, RunRef.run_id).join(RunRef, RunRef.ref == Series.run_ref)
                           .where(Series.id.in_(sorted(sids)), Series.packed)).all()
    by_run: dict[str, set[int]] = {}
    for sid, run_id in rows:
        by_run.setdefault(run_id, set()).add(sid)
    for run_id in sorted(by_run):
        pack = _pack_row(session, run_id)
        series = decode_pack(pack.data) if pack is not None else {}
        leaving = by_run[run_id]
        lost = sorted(leaving - set(series))
        if lost:  # marked packed but not in the pack: nothing to restore; new points are still stored
            log.error("run %s: series %s are marked packed but missing from its pack", run_id, lost)
        chunks = [chunk_row(sid, series.pop(sid)) for sid in sorted(leaving) if sid in series]
        if chunks:
            session.execute(Chunk.__table__.insert(), chunks)
        _write_pack(session, run_id, pack, series)
        session.execute(update(Series).where(Series.id.in_(leaving)).values(packed=False))
        session.execute(update(Run).where(Run.id == run_id).values(packed_at=None))  # packed again when quiet


def packed_points(session: Session, series_id: int) -> Points | None:
    """The points of a packed series; None when the series is not packed."""
    data = session.execute(select(Pack.data).join(RunRef, RunRef.run_id == Pack.run_id)
                           .join(Series, Series.run_ref == RunRef.ref)
                           .where(Series.id == series_id, Series.packed)).scalar()
    if data is None:
        return None
    return decode_pack(data, only={series_id}).get(series_id, Points.empty())


def runs_to_pack(session: Session, finished_before: float, limit: int | None = 100) -> list[str]:
    """Runs that finished before `finished_before` and were not packed since (or since a point unpacked one of
    their series), oldest first."""
    query = (select(Run.id).where(Run.status.in_(TERMINAL_STATUSES), Run.finished_at < finished_before,
                                  Run.packed_at.is_(None), Run.deleted_at.is_(None))
             .order_by(Run.finished_at).limit(limit))
    return list(session.scalars(query))

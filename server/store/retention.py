"""Retention: downsample a run's old chunks, keeping their rollups.

`downsample_run(session, run_id, before_step)` rewrites every full-resolution chunk of the run that ends before
`before_step` and has rollups (chunk_codec: at least 16 points per 256-step bucket on average): its points are
replaced by one point per bucket of its finest rollup level — the bucket's last point, with its epoch and
wall_time — and its `width` becomes that bucket width. Its summary columns and rollups are kept as they were, so
every downsampled query (bucket width ≥ the kept width) answers exactly as before. What changes:

* a query at finer resolution over that range returns one entry per kept bucket — its last step and value, with
  its true count, NaN count, min and max (so `count` > 1 there);
* export returns the kept points, and so does a read of the alert engine, which goes that far back only to replay
  a run that got a point behind its cursor (server/alerts/engine.py: `PointReader.counted`);
* a point that arrives later for a step at or before the last downsampled step is dropped (the range holds only
  aggregates now, so whether it is new cannot be told).

Sparse chunks (evaluations, per-epoch angles) have no rollups and stay at full resolution. Safe while ingest runs:
the run's series rows are locked first, in id order, as ingest locks them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sqlalchemy import bindparam, select, update
from sqlalchemy.orm import Session

from sqd.server.store.chunk_codec import decode_points, decode_rollups, encode_points
from sqd.server.store.models import Chunk, Series, run_ref


@dataclass
class DownsampleReport:
    chunks: int = 0
    points_before: int = 0
    points_kept: int = 0
    bytes_before: int = 0
    bytes_after: int = 0


def downsample_run(session: Session, run_id: str, before_step: int) -> DownsampleReport:
    """Downsample the run's chunks that end before `before_step` (in the session's transaction)."""
    report = DownsampleReport()
    sids = list(session.scalars(select(Series.id).where(Series.run_ref == run_ref(run_id)).order_by(Series.id)
                                .with_for_update()))
    if not sids:
        return report
    t = Chunk.__table__
    rows = session.execute(select(t.c.series_id, t.c.first_step, t.c.rollups, t.c.data).where(
        t.c.series_id.in_(sids), t.c.last_step < before_step, t.c.width == 1, t.c.rollups != b"")).all()
    updates = []
    for sid, first, rollups, data in rows:
        records, _ = decode_rollups([rollups])
        level = int(records["level"].min())
        p = decode_points(data)
        bucket = p.step >> level
        kept = p.take(np.flatnonzero(np.r_[bucket[1:] != bucket[:-1], True]))
        new_data = encode_points(kept)
        updates.append({"sid": sid, "first": first, "data": new_data, "width": 1 << level})
        report.chunks += 1
        report.points_before += len(p)
        report.points_kept += len(kept)
        report.bytes_before += len(data)
        report.bytes_after += len(new_data)
    if updates:
        session.connection().execute(update(t).where(t.c.series_id == bindparam("sid"),
                                                     t.c.first_step == bindparam("first"))
                                     .values(data=bindparam("data"), width=bindparam("width")), updates)
    return report

"""Which series runs have, wherever their points are: `series` rows (points in `chunks`) and the directories of
run packs (packs.py). Every reader starts here and reads points through chunk_read.py with the entries it got.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

from sqlalchemy import bindparam, cast, null, select, union_all
from sqlalchemy.orm import Session

from sqd.server.store.models import Pack, RunRef, Series
from sqd.server.store.packs import directory_of


@dataclass(frozen=True)
class SeriesEntry:
    run_id: str
    key: str
    id: int | None  # chunks.series_id; None for a packed series (read by key from its run's pack)
    first_step: int | None  # None: no point yet
    last_step: int | None
    n_points: int
    last_value: float | None  # at last_step; None = NaN (or no point yet)

    @property
    def packed(self) -> bool:
        return self.id is None


def run_series(session: Session, run_ids: Collection[str], keys: Collection[str] | None = None
               ) -> list[SeriesEntry]:
    """The series of these runs (those with these keys, when given), sorted by run and key. One statement reads
    the `series` rows and the pack directories, so a series that moves between them meanwhile (packed, or given
    its chunk back by a late point) is listed once, not twice or never."""
    runs = sorted(set(run_ids))
    if not runs:
        return []
    # the packs' part first: its `directory` column sets the result's type (decoded JSON on both databases)
    packed = select(Pack.run_id, Pack.directory, *(null() for _ in range(6))).where(
        Pack.run_id.in_(bindparam("runs", expanding=True)))
    rows = (select(RunRef.run_id, null(), Series.key, Series.id, Series.first_step, Series.last_step,
                   Series.n_points, Series.last_value).join(RunRef, RunRef.ref == Series.run_ref)
            .where(RunRef.run_id.in_(bindparam("runs", expanding=True))))
    params: dict[str, list[str]] = {"runs": runs}
    if keys is not None:
        rows = rows.where(Series.key.in_(bindparam("keys", expanding=True)))
        params["keys"] = sorted(set(keys))
    wanted = None if keys is None else set(keys)
    out = []
    for run_id, directory, key, sid, first, last, n, value in session.execute(union_all(packed, rows), params):
        if directory is None:
            out.append(SeriesEntry(run_id, key, sid, first, last, n, value))
            continue
        out += [SeriesEntry(run_id, k, None, e.first_step, e.last_step, e.n_points, e.last_value)
                for k, e in directory_of(run_id, directory).items() if wanted is None or k in wanted]
    return sorted(out, key=lambda e: (e.run_id, e.key))


def series_of(session: Session, run_id: str, keys: Collection[str] | None = None) -> list[SeriesEntry]:
    """One run's series, sorted by key."""
    return run_series(session, [run_id], keys)


def run_keys(session: Session, run_ids: Collection[str], limit: int) -> list[str]:
    """The metric keys any of these runs has, sorted, at most `limit` (one statement, as in run_series)."""
    runs = {"runs": sorted(set(run_ids))}
    directories = select(Pack.directory, null()).where(Pack.run_id.in_(bindparam("runs", expanding=True)))
    # typed: PostgreSQL types an untyped NULL under DISTINCT as text, which no union with jsonb takes
    names = (select(cast(null(), Pack.directory.type), Series.key).join(RunRef, RunRef.ref == Series.run_ref)
             .where(RunRef.run_id.in_(bindparam("runs", expanding=True))).distinct())
    keys: set[str] = set()
    for directory, key in session.execute(union_all(directories, names), runs):
        keys.update([key] if directory is None else directory)
    return sorted(keys)[:limit]

"""The data part of `sqd gc` and of erasing a run: remove a run marked deleted (`runs.deleted_at` set) for good —
its series, chunks (points and rollups) and pack, then the run row, whose foreign keys cascade to evaluations,
checkpoints, alerts with their actions, run-scoped rules and turning-point and rule state — and report what that
freed. It also removes chunks whose series row is gone (chunks have no foreign key).

Safe while ingest runs: each run is removed in a transaction of its own that first takes the write lock (SQLite) or
the run row's lock (PostgreSQL), then locks the run's series rows in id order as ingest does, so the two
serialise and cannot deadlock; ingest stores no points for a run marked deleted (server/ingest/apply.py). Events
that still arrive for a run after it was erased create a bare run of that id again, as for any unknown run
(server/lifecycle.py). Idempotent: a second gc finds nothing left to free. SQLite keeps freed pages for reuse
(`VACUUM` shrinks the file); PostgreSQL's autovacuum reclaims them.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from sqlalchemy import Engine, delete, func, select, update
from sqlalchemy.orm import Session

from sqd.server.alerts.models import AlertAction, AlertRule, RuleState, TurningState
from sqd.server.store.db import session_factory
from sqd.server.store.models import Alert, Chunk, Evaluation, Pack, Run, Series, run_ref


@dataclass
class DataGc:
    runs: list[str] = field(default_factory=list)  # the deleted runs this gc erased
    series: int = 0
    chunks: int = 0
    points: int = 0
    chunk_bytes: int = 0  # compressed points and rollups freed
    evaluations: int = 0
    alerts: int = 0
    other_rows: int = 0  # alert actions, run-scoped rules, detector and rule state
    orphan_chunks: int = 0  # chunks whose series row is gone (a run row deleted outright cascades to its series)

    def add(self, other: DataGc) -> None:
        for name, value in asdict(other).items():
            setattr(self, name, getattr(self, name) + value)

    def summary(self) -> str:
        return (f"{len(self.runs)} deleted runs: {self.points:,} points in {self.chunks:,} chunks "
                f"({self.chunk_bytes / 1e6:.1f} MB) of {self.series:,} series, {self.evaluations:,} evaluations, "
                f"{self.alerts:,} alerts, {self.other_rows:,} other rows; {self.orphan_chunks:,} orphan chunks")


def _count(session: Session, model: type, *where: object) -> int:
    return int(session.scalar(select(func.count()).select_from(model).where(*where)) or 0)  # type: ignore[arg-type]


def purge_run(session: Session, run_id: str) -> DataGc:
    """Erase one run's rows in the session's transaction (not committed), counting what goes."""
    report = DataGc(runs=[run_id])
    sids = list(session.scalars(select(Series.id).where(Series.run_ref == run_ref(run_id)).order_by(Series.id)
                                .with_for_update()))
    if sids:
        n, size, points = session.execute(select(
            func.count(), func.coalesce(func.sum(func.length(Chunk.data) + func.length(Chunk.rollups)), 0),
            func.coalesce(func.sum(Chunk.n), 0)).where(Chunk.series_id.in_(sids))).one()
        report.chunks, report.chunk_bytes, report.points, report.series = int(n), int(size), int(points), len(sids)
        session.execute(delete(Chunk).where(Chunk.series_id.in_(sids)))
        session.execute(delete(Series).where(Series.id.in_(sids)))
    packed = session.execute(select(*(func.coalesce(func.sum(c), 0) for c in (func.length(Pack.data), Pack.n_points,
                                                                           Pack.n_series)))
                             .where(Pack.run_id == run_id)).one()
    report.chunk_bytes, report.points = report.chunk_bytes + int(packed[0]), report.points + int(packed[1])
    report.series += int(packed[2])
    session.execute(delete(Pack).where(Pack.run_id == run_id))
    report.evaluations = _count(session, Evaluation, Evaluation.run_id == run_id)
    report.alerts = _count(session, Alert, Alert.run_id == run_id)
    others = (AlertAction, AlertRule, RuleState, TurningState)
    report.other_rows = sum(_count(session, m, m.run_id == run_id) for m in others)  # type: ignore[attr-defined]
    session.execute(delete(Run).where(Run.id == run_id))  # cascades to evaluations, alerts, rules, state
    return report


def _purge_orphans(session: Session) -> DataGc:
    """Chunks whose series no longer exists (chunks have no foreign key, so deleting a run row outright leaves
    them); points, bytes and chunks are counted as freed."""
    orphan = Chunk.series_id.not_in(select(Series.id))
    n, size, points = session.execute(select(
        func.count(), func.coalesce(func.sum(func.length(Chunk.data) + func.length(Chunk.rollups)), 0),
        func.coalesce(func.sum(Chunk.n), 0)).where(orphan)).one()
    if n:
        session.execute(delete(Chunk).where(orphan))
    return DataGc(chunks=int(n), chunk_bytes=int(size), points=int(points), orphan_chunks=int(n))


def gc_data(target: Session | Engine, run_ids: list[str] | None = None, *, deleted_before: float | None = None,
            dry_run: bool = False) -> DataGc:
    """Erase the runs marked deleted (of those in `run_ids`, when given; only those deleted before the time
    `deleted_before`, when given; one transaction per run), then chunks left without a series. A Session is used
    as it is, in its current transaction (the caller commits); an Engine gets a transaction per run and one for
    the orphans, each rolled back instead of committed on a dry run."""
    report = DataGc()
    if isinstance(target, Session):
        for run_id in _deleted(target, run_ids, deleted_before):
            report.add(purge_run(target, run_id))
        report.add(_purge_orphans(target))
        return report
    sessions = session_factory(target)
    with sessions() as session:
        todo = _deleted(session, run_ids, deleted_before)
    for run_id in todo:
        with sessions() as session:
            # a write first: it takes SQLite's write lock before this transaction reads anything (so ingest's
            # commits cannot make its snapshot stale), and locks the run row on PostgreSQL
            marked = session.execute(update(Run).where(Run.id == run_id, Run.deleted_at.is_not(None))
                                     .values(deleted_at=Run.deleted_at))
            if marked.rowcount:  # type: ignore[attr-defined]
                report.add(purge_run(session, run_id))
            _end(session, dry_run)
    with sessions() as session:
        report.add(_purge_orphans(session))
        _end(session, dry_run)
    return report


def _end(session: Session, dry_run: bool) -> None:
    if dry_run:
        session.rollback()
    else:
        session.commit()


def _deleted(session: Session, run_ids: list[str] | None, deleted_before: float | None) -> list[str]:
    query = select(Run.id).where(Run.deleted_at.is_not(None))
    if run_ids is not None:
        query = query.where(Run.id.in_(run_ids))
    if deleted_before is not None:
        query = query.where(Run.deleted_at <= deleted_before)
    return list(session.scalars(query.order_by(Run.id)))

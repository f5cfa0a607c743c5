"""Erasing a run for good (`DELETE /runs/{id}?hard=true`, `gc`): its points and rollups, then the run row, whose
foreign keys cascade to series, evaluations, checkpoints, alerts, alert actions and rule/turning state; then its
files in the artifact store (`runs/<id>/`: checkpoints, sample grids, the training log).

The database part is one transaction (server/store/gc.py's `purge_run`): it happens whole or not at all. The
artifacts go after the commit, so a store that fails then leaves files behind (reported in `artifacts_error`) but
never a run without its data.
"""

from __future__ import annotations

import logging

from sqlalchemy.orm import Session, sessionmaker

from sqd.artifacts import ArtifactStore
from sqd.errors import ArtifactError
from sqd.server.schemas import RunErased
from sqd.server.store.gc import purge_run
from sqd.server.store.models import Run

log = logging.getLogger(__name__)


def erase_rows(session: Session, run_id: str) -> RunErased | None:
    """Delete the run's rows (not committed); None when there is no such run."""
    if session.get(Run, run_id) is None:
        return None
    purged = purge_run(session, run_id)
    return RunErased(id=run_id, series=purged.series, points=purged.points, artifacts=0)


def erase_files(artifacts: ArtifactStore, erased: RunErased) -> RunErased:
    try:
        removed = artifacts.delete_tree(f"runs/{erased.id}")
    except ArtifactError as exc:
        log.warning("run %s erased, but its artifacts stay: %s", erased.id, exc)
        return erased.model_copy(update={"artifacts_error": str(exc)})
    return erased.model_copy(update={"artifacts": removed})


def erase_run(sessions: sessionmaker[Session], artifacts: ArtifactStore, run_id: str) -> RunErased | None:
    with sessions() as session, session.begin():
        erased = erase_rows(session, run_id)
    return None if erased is None else erase_files(artifacts, erased)

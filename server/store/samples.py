"""Sample grids and training logs, read through the artifact store. Keys come from what ingest recorded (an
evaluation's grid_uri) or from the run id by the fixed layout (`runs/<id>/train.log`), never from the request,
and every key is checked by the store before it reaches a filesystem. In a local store a key must also resolve
inside the store: a symbolic link there (a trainer writing to a shared store could leave one) pointing elsewhere
is not followed out. (Checked, then read: a link swapped in between could still escape; the store's writers
are trusted that far.)"""

from __future__ import annotations

import os

from fastapi import HTTPException, status
from sqlalchemy import select
from sqlalchemy.orm import Session

from sqd.artifacts import ArtifactStore, check_key
from sqd.errors import ArtifactError
from sqd.server.schemas import LogPublic, SamplePublic, SamplesPublic
from sqd.server.store import records_store
from sqd.server.store.models import Evaluation

LOG_READ_LIMIT = 4 * 1024 * 1024  # bytes read from the end of a log at most
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def confined(artifacts: ArtifactStore, key: str) -> str:
    """The checked key; in a local store its real path (symbolic links resolved) must lie inside the store."""
    key = check_key(key)
    if artifacts.is_local:
        root = os.path.realpath(artifacts.root)
        if os.path.commonpath([root, os.path.realpath(artifacts.local_path(key))]) != root:
            raise ArtifactError(f"{key} resolves outside the artifact store (a symbolic link?); it is not served")
    return key


def read_artifact(artifacts: ArtifactStore, key: str, sha256: str | None = None) -> bytes:
    return artifacts.get_bytes(confined(artifacts, key), sha256)


def list_samples(session: Session, run_id: str) -> SamplesPublic:
    data = [SamplePublic(step=e.checkpoint_step, url=f"/api/v1/runs/{run_id}/samples/{e.checkpoint_step}.png",
                         status=e.status)
            for e in records_store.list_evaluations(session, run_id) if e.grid_uri]
    return SamplesPublic(data=data, count=len(data))


def sample_png(artifacts: ArtifactStore, session: Session, run_id: str, step: int) -> bytes:
    evaluation = records_store.get_evaluation(session, run_id, step)
    if evaluation is None or not evaluation.grid_uri:
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} has no sample grid at step {step}")
    key = check_key(evaluation.grid_uri)
    if not key.startswith(f"runs/{run_id}/"):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"the grid recorded for step {step} lies outside run "
                                                       f"{run_id!r}'s artifacts")
    return read_artifact(artifacts, key)


def sample_key(run_id: str, step: int) -> str:
    return f"runs/{run_id}/samples/step-{step:09d}.png"  # the layout the workers write (worker/grid.py)


def store_sample(artifacts: ArtifactStore, session: Session, run_id: str, step: int, png: bytes) -> SamplePublic:
    """A sample grid from outside the workers (an importer): stored under the run's samples and recorded on the
    evaluation at `step` (created, with no metrics, when there is none). Idempotent: a step that already has a grid
    keeps it. Refuses (422) anything that is not a PNG."""
    if not png.startswith(PNG_SIGNATURE):
        raise HTTPException(status.HTTP_422_UNPROCESSABLE_CONTENT, [{
            "loc": ["body"], "msg": f"not a PNG image (it starts with {png[:8]!r}); send the grid as image/png"}])
    url = f"/api/v1/runs/{run_id}/samples/{step}.png"
    row = session.scalar(select(Evaluation).where(Evaluation.run_id == run_id, Evaluation.checkpoint_step == step)
                         .with_for_update())
    if row is not None and row.grid_uri:
        return SamplePublic(step=step, url=url, status=row.status)
    key = sample_key(run_id, step)
    artifacts.put_bytes(confined(artifacts, key), png)
    if row is None:
        row = Evaluation(run_id=run_id, event_id=f"sample-{step}", checkpoint_step=step, status="ok", metrics={},
                         worker="import")
        session.add(row)
    row.grid_uri = key
    session.flush()
    return SamplePublic(step=step, url=url, status=row.status)


def tail_log(artifacts: ArtifactStore, run_id: str, tail: int) -> LogPublic:
    key = confined(artifacts, f"runs/{run_id}/train.log")
    if not artifacts.exists(key):
        raise HTTPException(status.HTTP_404_NOT_FOUND, f"run {run_id!r} has no training log yet ({key})")
    if artifacts.is_local:
        with open(artifacts.local_path(key), "rb") as fh:  # the key was checked above
            size = fh.seek(0, 2)
            fh.seek(max(0, size - LOG_READ_LIMIT))
            data = fh.read()
    else:
        data = artifacts.get_bytes(key)[-LOG_READ_LIMIT:]
    lines = data.decode("utf-8", errors="replace").splitlines()
    return LogPublic(run_id=run_id, lines=lines[-tail:], truncated=len(lines) > tail)

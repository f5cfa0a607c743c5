"""/runs/{id}/evaluations, /checkpoints, /samples (+ PNG), /logs."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response

from sqd.server.api.deps import CtxDep, ReadDep, RunDep, SessionDep, TokenDep
from sqd.server.schemas import CheckpointsPublic, EvaluationsPublic, LogPublic, SamplePublic, SamplesPublic
from sqd.server.store import records_store, samples

router = APIRouter(prefix="/runs/{run_id}", tags=["evaluations"], dependencies=[ReadDep])


@router.get("/evaluations", response_model=EvaluationsPublic)
def list_evaluations(session: SessionDep, run: RunDep) -> EvaluationsPublic:
    """One result per checkpoint step (ok, failed with its error, or skipped under backpressure)."""
    data = records_store.list_evaluations(session, run.id)
    return EvaluationsPublic(data=data, count=len(data))


@router.get("/checkpoints", response_model=CheckpointsPublic)
def list_checkpoints(session: SessionDep, run: RunDep) -> CheckpointsPublic:
    data = records_store.list_checkpoints(session, run.id)
    return CheckpointsPublic(data=data, count=len(data))


@router.get("/samples", response_model=SamplesPublic)
def list_samples(session: SessionDep, run: RunDep) -> SamplesPublic:
    return samples.list_samples(session, run.id)


@router.get("/samples/{step}.png", response_class=Response, responses={200: {"content": {"image/png": {}}}})
def sample_png(ctx: CtxDep, session: SessionDep, run: RunDep,
               step: Annotated[int, Path(ge=0, lt=2**62)]) -> Response:
    png = samples.sample_png(ctx.artifacts, session, run.id, step)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=3600"})


@router.put("/samples/{step}.png", response_model=SamplePublic, dependencies=[TokenDep],
            openapi_extra={"requestBody": {"content": {"image/png": {}}, "required": True}})
def put_sample(ctx: CtxDep, session: SessionDep, run: RunDep, step: Annotated[int, Path(ge=0, lt=2**62)],
               png: Annotated[bytes, Body(media_type="image/png")]) -> SamplePublic:
    """Add a sample grid (PNG) at `step` to the run's sample timeline (importers); a step with a grid keeps it."""
    return samples.store_sample(ctx.artifacts, session, run.id, step, png)


@router.get("/logs", response_model=LogPublic)
def tail_log(ctx: CtxDep, run: RunDep, tail: Annotated[int, Query(ge=1, le=100_000)] = 200) -> LogPublic:
    """The last `tail` lines of the training log the agent writes (runs/<id>/train.log)."""
    return samples.tail_log(ctx.artifacts, run.id, tail)

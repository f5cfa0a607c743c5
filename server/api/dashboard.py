"""What the dashboard asks for beyond the resource routes: who the browser is (/whoami), the latest values and
alert counts of many runs in one call (/summaries, the runs table), the metric keys of many runs (/keys, the
runs table's column picker), and where each epoch ends (/runs/{id}/epochs, the charts' epoch axis)."""

from __future__ import annotations

from typing import Annotated

import numpy as np
from fastapi import APIRouter, Depends, Query
from fastapi.security import HTTPAuthorizationCredentials
from pydantic import Field
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from sqd.server.api.deps import CtxDep, ReadDep, RunDep, SessionDep, bearer
from sqd.server.auth import reads_are_open, token_is_valid
from sqd.server.schemas import AlertPublic, Schema
from sqd.server.store.chunk_read import last_points, window_points
from sqd.server.store.models import Alert
from sqd.server.store.series_catalog import run_keys, run_series, series_of

router = APIRouter(tags=["dashboard"])

DEFAULT_SUMMARY_KEYS = ("eval/quality", "eval/diversity", "eval/fid")
EPOCH_SOURCES = ("angle_epoch/G", "angle_epoch/D")  # one point per epoch, at its last step (Monitor.end_epoch)


class WhoAmI(Schema):
    signed_in: bool
    reads_open: bool


class LatestValue(Schema):
    step: int
    value: float


class RunSummary(Schema):
    run_id: str
    latest: dict[str, LatestValue]
    alerts: int
    alerts_by_severity: dict[str, int] = Field({}, description='e.g. {"critical": 1, "warning": 2}')
    last_alert: AlertPublic | None = None


class SummariesPublic(Schema):
    data: list[RunSummary]
    count: int


class KeysPublic(Schema):
    data: list[str]
    count: int


class EpochsPublic(Schema):
    run_id: str
    key: str | None = None
    epoch: list[int]
    last_step: list[int]


def _split(values: list[str] | None) -> list[str]:
    return [v for value in values or [] for v in (p.strip() for p in value.split(",")) if v]


@router.get("/whoami", response_model=WhoAmI)
def whoami(ctx: CtxDep, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
           access_token: Annotated[str | None, Query(max_length=200)] = None) -> WhoAmI:
    """Whether the token sent (header or ?access_token=) is valid, and whether reads need one. Open to all: it
    tells a browser how to sign in and reveals nothing else."""
    secret = credentials.credentials if credentials is not None else access_token
    signed_in = False
    if secret:
        with ctx.sessions() as session:
            signed_in = token_is_valid(session, ctx.settings, secret)
    return WhoAmI(signed_in=signed_in, reads_open=reads_are_open(ctx.settings))


def summarize(session: Session, run_ids: list[str], keys: list[str]) -> list[RunSummary]:
    """Per run: each key's value at its last step (one index lookup per series) and the alerts raised."""
    latest: dict[str, dict[str, LatestValue]] = {r: {} for r in run_ids}
    for entry, (step, value) in last_points(session, run_series(session, run_ids, keys)).items():
        latest[entry.run_id][entry.key] = LatestValue(step=step, value=value)
    by_severity: dict[str, dict[str, int]] = {r: {} for r in run_ids}
    for run_id, severity, n in session.execute(select(Alert.run_id, Alert.severity, func.count())
                                               .where(Alert.run_id.in_(run_ids))
                                               .group_by(Alert.run_id, Alert.severity)):
        by_severity[run_id][severity] = n
    newest = select(func.max(Alert.id)).where(Alert.run_id.in_(run_ids)).group_by(Alert.run_id)
    last = {a.run_id: AlertPublic.model_validate(a) for a in session.scalars(select(Alert).where(Alert.id.in_(newest)))}
    return [RunSummary(run_id=r, latest=latest[r], alerts=sum(by_severity[r].values()),
                       alerts_by_severity=by_severity[r], last_alert=last.get(r)) for r in run_ids]


@router.get("/summaries", response_model=SummariesPublic, dependencies=[ReadDep])
def summaries(session: SessionDep,
              run_id: Annotated[list[str], Query(max_length=1000, description="repeatable or a,b")],
              keys: Annotated[list[str] | None, Query(max_length=100, description="default: Q, D, FID")] = None,
              ) -> SummariesPublic:
    """Latest values and alert counts of many runs at once (unknown runs answer empty summaries)."""
    ids = _split(run_id)[:1000]
    data = summarize(session, ids, _split(keys) or list(DEFAULT_SUMMARY_KEYS))
    return SummariesPublic(data=data, count=len(data))


MAX_KEYS = 2000


@router.get("/keys", response_model=KeysPublic, dependencies=[ReadDep])
def metric_keys(session: SessionDep,
                run_id: Annotated[list[str], Query(max_length=1000, description="repeatable or a,b")]) -> KeysPublic:
    """The metric keys any of these runs has, sorted (at most 2,000)."""
    ids = _split(run_id)[:1000]
    keys = run_keys(session, ids, MAX_KEYS)
    return KeysPublic(data=keys, count=len(keys))


def epoch_ends(session: Session, run_id: str) -> EpochsPublic:
    """The last step of every epoch, read from the per-epoch angle series when the run has one (a point per
    epoch), else from its longest series (one scan of that series)."""
    ranked = sorted(series_of(session, run_id), key=lambda e: (e.key not in EPOCH_SOURCES, -e.n_points))
    for entry in ranked[:3]:
        p = window_points(session, entry)
        has = p.epoch >= 0
        if has.any():
            order = np.lexsort((p.step[has], p.epoch[has]))
            e, s = p.epoch[has][order], p.step[has][order]
            last = np.r_[e[1:] != e[:-1], True]  # each epoch's largest step
            return EpochsPublic(run_id=run_id, key=entry.key, epoch=e[last].tolist(), last_step=s[last].tolist())
    return EpochsPublic(run_id=run_id, epoch=[], last_step=[])


@router.get("/runs/{run_id}/epochs", response_model=EpochsPublic, dependencies=[ReadDep])
def epochs(session: SessionDep, run: RunDep) -> EpochsPublic:
    return epoch_ends(session, run.id)

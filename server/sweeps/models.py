"""Tables of sweeps (migration 0005): the sweep itself and, per run it made, where that run sits in the sweep
(configuration, seed, launch order), the launch request to send, and when it was handed to the agents.

A run of a sweep is an ordinary `runs` row (kind "launched", `runs.sweep_id` set) from the moment the sweep is
created; `released_at` stays NULL while the run waits behind the sweep's concurrency cap (status "queued", no
launch request sent yet)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, Float, ForeignKey, Integer, String
from sqlalchemy.orm import Mapped, mapped_column

from sqd.server.store.models import RUN_ID, Base, now


class Sweep(Base):
    __tablename__ = "sweeps"

    id: Mapped[str] = mapped_column(RUN_ID, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    state: Mapped[str] = mapped_column(String(16), default="active")  # active | cancelled
    max_concurrent: Mapped[int] = mapped_column(Integer)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the request, normalised
    dimensions: Mapped[list[str]] = mapped_column(JSON, default=list)  # the keys its configurations differ by
    n_runs: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[float] = mapped_column(Float, default=now, index=True)
    # touched by every release and cancel as their first statement: it serialises them across server replicas
    updated_at: Mapped[float] = mapped_column(Float, default=now)
    cancelled_at: Mapped[float | None] = mapped_column(Float)


class SweepRun(Base):
    __tablename__ = "sweep_runs"

    run_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True)
    sweep_id: Mapped[str] = mapped_column(RUN_ID, ForeignKey("sweeps.id", ondelete="CASCADE"), index=True)
    position: Mapped[int] = mapped_column(Integer)  # launch order: configuration-major, seeds inside
    config_index: Mapped[int] = mapped_column(Integer)  # one small-multiples cell per configuration
    label: Mapped[str] = mapped_column(String(200))
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # values along the sweep's dimensions
    seed: Mapped[int] = mapped_column(Integer)
    request: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # LaunchRequest fields but run_id
    released_at: Mapped[float | None] = mapped_column(Float)

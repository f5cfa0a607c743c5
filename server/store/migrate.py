"""Alembic migrations run programmatically: `sqd db upgrade` and the server's start both call `upgrade`."""

from __future__ import annotations

import logging
from importlib.resources import files

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine

MIGRATION_LOCK_ID = 5351  # any constant shared by every SQD server


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(files("sqd.server") / "migrations"))
    return cfg


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> tuple[str | None, str | None]:
    """Bring the database to `revision`; returns (before, after). Safe to call on an up-to-date database."""
    logging.getLogger("alembic").setLevel(logging.WARNING)  # callers report before → after themselves
    before = current_revision(engine)
    cfg = alembic_config()
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":  # replicas starting together migrate one at a time
            conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_ID})")
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return before, current_revision(engine)

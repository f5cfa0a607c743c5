"""Alembic environment: runs on the connection that sqd.server.store.migrate hands over (config.attributes),
or on SQD_DATABASE_URL when alembic is run from the command line."""

from __future__ import annotations

from alembic import context

from sqd.server.store.db import make_engine
from sqd.server.store.models import Base
from sqd.settings import get_settings

config = context.config


def run(connection) -> None:  # type: ignore[no-untyped-def]
    context.configure(connection=connection, target_metadata=Base.metadata,
                      render_as_batch=connection.dialect.name == "sqlite")  # SQLite alters tables by copying
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run(connection)
else:
    engine = make_engine(get_settings().resolved_database_url)
    with engine.connect() as conn:
        run(conn)
    engine.dispose()

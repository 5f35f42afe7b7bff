"""Alembic environment: run with a connection handed over in ``config.attributes`` (see
beeaudio.collector.migrate)."""

from __future__ import annotations

from alembic import context

from beeaudio.collector.db import metadata
from beeaudio.collector.migrate import include_name

config = context.config
target_metadata = metadata


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("run the collector's migrations through beeaudio.collector.migrate.upgrade()")
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        include_name=include_name,
    )
    with context.begin_transaction():
        context.run_migrations()


if context.is_offline_mode():
    raise RuntimeError("offline (SQL script) migrations are not supported; run 'beeaudio collector migrate'")
run_migrations_online()

"""Run the collector's Alembic migrations from code, so they work from an installed package.

There is no alembic.ini: the script location is the ``beeaudio.collector.migrations`` package and the
connection is
handed to ``env.py`` through ``config.attributes``.
"""

from __future__ import annotations

import logging

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


def alembic_config() -> Config:
    config = Config()
    config.set_main_option("script_location", "beeaudio.collector:migrations")
    return config


def head_revision() -> str | None:
    return ScriptDirectory.from_config(alembic_config()).get_current_head()


def current_revision(*, engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(*, engine: Engine, revision: str = "head") -> str | None:
    """Bring the schema to ``revision``; returns the revision the database is at afterwards."""
    config = alembic_config()
    before = current_revision(engine=engine)
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    now = current_revision(engine=engine)
    if now != before:
        log.info("database schema upgraded from revision %s to %s", before or "(empty)", now)
    else:
        log.debug("database schema at revision %s", now)
    return now

"""Run the collector's Alembic migrations from code, so they work from an installed package.

There is no alembic.ini: the script location is the ``beeaudio.collector.migrations`` package and the
connection is
handed to ``env.py`` through ``config.attributes``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping

import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)

#: The PostgreSQL advisory lock that serialises migrations of one database (an arbitrary constant).
MIGRATION_LOCK_KEY = 0x62656501


#: PostgreSQL's partitions of the events table (``beeaudio.collector.retention``): tables of their own to
#: the database, part of ``events`` to the schema.
_EVENT_PARTITION = re.compile(r"^events_(p\d{8}|default)$")


def include_name(name: str | None, type_: str, parent_names: Mapping[str, str | None]) -> bool:
    """Alembic's ``include_name`` hook: the schema comparison leaves out the events partitions (and their
    indexes and constraints)."""
    table = name if type_ == "table" else parent_names.get("table_name")
    return not (table is not None and _EVENT_PARTITION.match(table))


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
        if conn.dialect.name == "postgresql":
            # Replicas started together would each run the same DDL: the first migrates, the others wait
            # here (the lock ends with this transaction) and then find the schema at head.
            conn.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK_KEY})
        config.attributes["connection"] = conn
        command.upgrade(config, revision)
    now = current_revision(engine=engine)
    if now != before:
        log.info("database schema upgraded from revision %s to %s", before or "(empty)", now)
    else:
        log.debug("database schema at revision %s", now)
    return now

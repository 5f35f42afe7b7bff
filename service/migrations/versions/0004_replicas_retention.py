"""Replicas and retention: leases of the periodic background jobs; raw events partitioned by time.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02

* ``background_jobs``: one row per periodic job (the offline sweep, retention), claimed by one collector
  process per interval (``beeaudio.collector.leases``). A new, empty table.
* ``events``: the unique key becomes ``(device_id, event_id, window_start_ms)``. On PostgreSQL the table
  becomes a declarative range-partitioned table on ``window_start_ms`` (one partition per week, Monday
  00:00 UTC, named ``events_pYYYYMMDD``, plus ``events_default`` for anything outside them), so that
  retention drops whole partitions; a unique constraint of a partitioned table must hold the partition
  key, hence the wider key. Duplicates stay exact by ``(device_id, event_id)``: the ingest looks up the
  batch's ids under the hive's lock before it inserts (``store.ingest``); the constraint is the backstop.
  The existing table is copied into the new one, every row and id kept, and dropped. On SQLite (no
  partitions) the table is copied by Alembic's batch mode to change the constraint.

The partition scheme is written out here, as it was at this revision (``beeaudio.collector.retention``
creates the later weeks with the same names).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
#: Monday 1970-01-05 00:00 UTC: every partition starts on a Monday.
ANCHOR_MS = 4 * DAY_MS
#: Weeks of existing data given partitions of their own; anything older stays in events_default.
BACKFILL_WEEKS = 156
AHEAD_WEEKS = 2

OLD_UNIQUE = "uq_events_device_event"
NEW_UNIQUE = "uq_events_device_event_window"


def _week(ms: int) -> int:
    return ANCHOR_MS + (ms - ANCHOR_MS) // WEEK_MS * WEEK_MS


def _partition_name(start_ms: int) -> str:
    return "events_p" + datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime("%Y%m%d")


def upgrade() -> None:
    op.create_table(
        "background_jobs",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("holder", sa.String(200), nullable=True),
        sa.Column("lease_until_ms", sa.BigInteger, nullable=False, server_default=sa.text("0")),
        sa.Column("last_started_ms", sa.BigInteger, nullable=True),
        sa.Column("last_finished_ms", sa.BigInteger, nullable=True),
        sa.Column("runs", sa.BigInteger, nullable=False, server_default=sa.text("0")),
    )
    if op.get_bind().dialect.name == "postgresql":
        _partition_events()
    else:
        with op.batch_alter_table("events") as batch:
            batch.drop_constraint(OLD_UNIQUE, type_="unique")
            batch.create_unique_constraint(NEW_UNIQUE, ["device_id", "event_id", "window_start_ms"])


def _partition_events() -> None:
    conn = op.get_bind()
    run = conn.exec_driver_sql
    run("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
    sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence('events', 'id')")).scalar_one()
    run("ALTER TABLE events RENAME TO events_0003")
    run("ALTER TABLE events_0003 RENAME CONSTRAINT events_pkey TO events_0003_pkey")
    run(f"ALTER TABLE events_0003 RENAME CONSTRAINT {OLD_UNIQUE} TO events_0003_unique")
    run("ALTER INDEX ix_events_hive_time RENAME TO events_0003_hive_time")
    # Same columns in the same order, with the id default (the old table's sequence, kept).
    run("CREATE TABLE events (LIKE events_0003 INCLUDING DEFAULTS) PARTITION BY RANGE (window_start_ms)")
    run("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id, window_start_ms)")
    run(f"ALTER TABLE events ADD CONSTRAINT {NEW_UNIQUE} UNIQUE (device_id, event_id, window_start_ms)")
    run("CREATE INDEX ix_events_hive_time ON events (hive_id, window_start_ms, id)")
    run("CREATE TABLE events_default PARTITION OF events DEFAULT")
    now_ms = int(time.time() * 1000)
    oldest = conn.execute(sa.text("SELECT min(window_start_ms) FROM events_0003")).scalar()
    first = _week(max(oldest if oldest is not None else now_ms, now_ms - BACKFILL_WEEKS * WEEK_MS))
    last = _week(now_ms + AHEAD_WEEKS * WEEK_MS)
    for start in range(first, last + 1, WEEK_MS):
        run(
            f"CREATE TABLE {_partition_name(start)} PARTITION OF events "
            f"FOR VALUES FROM ({start}) TO ({start + WEEK_MS})"
        )
    run("INSERT INTO events SELECT * FROM events_0003")
    if sequence:
        run(f"ALTER SEQUENCE {sequence} OWNED BY events.id")
    run("DROP TABLE events_0003")
    run("ANALYZE events")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        conn = op.get_bind()
        run = conn.exec_driver_sql
        sequence = conn.execute(sa.text("SELECT pg_get_serial_sequence('events', 'id')")).scalar_one()
        run("LOCK TABLE events IN ACCESS EXCLUSIVE MODE")
        run("CREATE TABLE events_0004 (LIKE events INCLUDING DEFAULTS)")
        run("INSERT INTO events_0004 SELECT * FROM events")
        if sequence:
            run(f"ALTER SEQUENCE {sequence} OWNED BY events_0004.id")
        run("DROP TABLE events CASCADE")  # the parent and all its partitions
        run("ALTER TABLE events_0004 RENAME TO events")
        run("ALTER TABLE events ADD CONSTRAINT events_pkey PRIMARY KEY (id)")
        run(f"ALTER TABLE events ADD CONSTRAINT {OLD_UNIQUE} UNIQUE (device_id, event_id)")
        run("CREATE INDEX ix_events_hive_time ON events (hive_id, window_start_ms, id)")
    else:
        with op.batch_alter_table("events") as batch:
            batch.drop_constraint(NEW_UNIQUE, type_="unique")
            batch.create_unique_constraint(OLD_UNIQUE, ["device_id", "event_id"])
    op.drop_table("background_jobs")

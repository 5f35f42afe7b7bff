"""Retention of raw events: kept ``BEEAUDIO_RETENTION_DAYS`` days (by window start), then removed.
Rollups, steps, states, alerts and heartbeats are never touched: history, status and alerts stay whole.

* PostgreSQL: ``events`` is partitioned by ``window_start_ms``, one partition per week (Monday 00:00 UTC,
  ``events_pYYYYMMDD``, migration 0004) plus ``events_default`` for windows outside them. Old weeks leave
  by ``DROP TABLE`` of their partition (no row-by-row delete, no bloat, no vacuum debt); old rows in the
  default partition are deleted in batches. The job also creates the partitions of the coming weeks
  ahead of time (moving any rows the default partition caught for them).
* SQLite: bounded batched deletes, hive by hive (each batch its own short write transaction, so ingest
  gets the write lock in between).

An event older than the *horizon* (now − retention) is not stored when it arrives: it would be pruned at
once, and once its week is gone nobody can tell whether it was stored (and folded into the rollups)
before, so storing it again could count it twice. It is answered as a duplicate (the device drops it
from its outbox) and counted in ``beeaudio_ingest_events_total{outcome="expired"}``. Pruning stays
:data:`PRUNE_MARGIN_MS` behind the horizon, so a replica whose clock lags a little, or a batch in flight,
never inserts into a range already pruned.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from beeaudio.collector.db import hives, write_transaction
from beeaudio.collector.leases import RETENTION_JOB, PeriodicJob
from beeaudio.collector.settings import Settings

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
#: Monday 1970-01-05 00:00 UTC: every partition starts on a Monday (as in migration 0004).
ANCHOR_MS = 4 * DAY_MS
#: Partitions made ahead of the clock, so ingest never waits for one to be created.
AHEAD_WEEKS = 2
PRUNE_MARGIN_MS = DAY_MS
DEFAULT_PARTITION = "events_default"
_PARTITION = re.compile(r"^events_p(\d{8})$")
#: How long a partition change may wait for a lock: it must not queue ingest behind it for long (a
#: DROP or ATTACH waits for the running transactions on ``events``, and everyone after waits for it).
LOCK_TIMEOUT = "5s"


def week_start(ms: int) -> int:
    return ANCHOR_MS + (ms - ANCHOR_MS) // WEEK_MS * WEEK_MS


def partition_name(start_ms: int) -> str:
    return "events_p" + datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime("%Y%m%d")


def partition_start(name: str) -> int | None:
    match = _PARTITION.match(name)
    if match is None:
        return None
    day = datetime.strptime(match.group(1), "%Y%m%d").replace(tzinfo=UTC)
    return int(day.timestamp() * 1000)


def horizon_ms(*, retention_days: float | None, now_ms: int) -> int | None:
    """The oldest window start an arriving event may have to be stored; None keeps everything."""
    if retention_days is None:
        return None
    return now_ms - int(retention_days * DAY_MS)


def is_partitioned(conn: Connection) -> bool:
    if conn.dialect.name != "postgresql":
        return False
    kind = conn.execute(sa.text("SELECT relkind FROM pg_class WHERE oid = to_regclass('events')")).scalar()
    return kind == "p"


def partitions(conn: Connection) -> dict[str, int]:
    """The weekly partitions attached to ``events``: name -> first millisecond."""
    names = conn.execute(
        sa.text(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = to_regclass('events')"
        )
    ).scalars()
    found = {}
    for name in names:
        start = partition_start(name)
        if start is not None:
            found[name] = start
    return found


def ensure_partitions(*, engine: Engine, first_ms: int, last_ms: int) -> list[str]:
    """Create the weekly partitions from ``first_ms``'s week to ``last_ms``'s that are missing, each in a
    transaction of its own; returns their names. Rows the default partition caught for a new week move
    into it first (PostgreSQL refuses to attach a range the default partition holds rows of)."""
    created = []
    with engine.connect() as conn:
        if not is_partitioned(conn):
            return created
        existing = set(partitions(conn))
    for start in range(week_start(first_ms), week_start(last_ms) + 1, WEEK_MS):
        name = partition_name(start)
        if name in existing:
            continue
        with write_transaction(engine) as conn:
            run = conn.exec_driver_sql
            run(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            # Not CREATE ... PARTITION OF: that locks the whole table; ATTACH takes a lighter lock on it.
            run(f"CREATE TABLE {name} (LIKE events INCLUDING DEFAULTS)")
            bounds = {"start": start, "end": start + WEEK_MS}
            moved = conn.execute(
                sa.text(
                    f"WITH moved AS (DELETE FROM {DEFAULT_PARTITION} WHERE window_start_ms >= :start "
                    f"AND window_start_ms < :end RETURNING *) INSERT INTO {name} SELECT * FROM moved"
                ),
                bounds,
            ).rowcount
            run(f"ALTER TABLE events ATTACH PARTITION {name} FOR VALUES FROM ({start}) TO ({bounds['end']})")
        if moved:
            log.info("partition %s created with %d events moved from %s", name, moved, DEFAULT_PARTITION)
        created.append(name)
    return created


@dataclass(frozen=True)
class PruneResult:
    created_partitions: list[str] = field(default_factory=list)
    dropped_partitions: list[str] = field(default_factory=list)
    deleted_rows: int = 0


def prune(*, engine: Engine, retention_days: float | None, now_ms: int, batch_rows: int) -> PruneResult:
    """One retention pass: the coming weeks' partitions (PostgreSQL), then, with a retention set, every
    raw event dated before the horizon minus :data:`PRUNE_MARGIN_MS` goes (whole weeks by DROP on
    PostgreSQL; batches of at most ``batch_rows`` rows otherwise)."""
    created = ensure_partitions(engine=engine, first_ms=now_ms, last_ms=now_ms + AHEAD_WEEKS * WEEK_MS)
    horizon = horizon_ms(retention_days=retention_days, now_ms=now_ms)
    if horizon is None:
        return PruneResult(created_partitions=created)
    cutoff = horizon - PRUNE_MARGIN_MS
    dropped: list[str] = []
    with engine.connect() as conn:
        partitioned = is_partitioned(conn)
        weeks = partitions(conn) if partitioned else {}
        hive_ids = list(conn.execute(sa.select(hives.c.hive_id).order_by(hives.c.hive_id)).scalars())
    for name, start in sorted(weeks.items(), key=lambda item: item[1]):
        if start + WEEK_MS > cutoff:
            continue
        with write_transaction(engine) as conn:
            conn.exec_driver_sql(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT}'")
            conn.exec_driver_sql(f"DROP TABLE {name}")
        dropped.append(name)
        log.info("retention: dropped partition %s (events before %s)", name, partition_name(start + WEEK_MS))
    # What no partition covers (PostgreSQL's default partition), or the whole table (SQLite).
    table = sa.table(
        DEFAULT_PARTITION if partitioned else "events",
        sa.column("id"),
        sa.column("hive_id"),
        sa.column("window_start_ms"),
    )
    deleted = 0
    for hive_id in hive_ids:
        while True:
            with write_transaction(engine) as conn:
                doomed = (
                    sa.select(table.c.id)
                    .where(table.c.hive_id == hive_id, table.c.window_start_ms < cutoff)
                    .limit(batch_rows)
                    .scalar_subquery()
                )
                count = conn.execute(sa.delete(table).where(table.c.id.in_(doomed))).rowcount
            deleted += count
            if count < batch_rows:
                break
    if deleted:
        log.info("retention: deleted %d raw events dated before the cutoff", deleted)
    return PruneResult(created_partitions=created, dropped_partitions=dropped, deleted_rows=deleted)


def retention_job(*, engine: Engine, settings: Settings, clock_ms: Callable[[], int]) -> PeriodicJob | None:
    """The periodic retention pass for ``serve`` (one process per interval, ``leases``): on PostgreSQL
    always (next weeks' partitions), on SQLite only with a retention set (nothing to do otherwise)."""
    with engine.connect() as conn:
        partitioned = is_partitioned(conn)
    if settings.retention_days is None and not partitioned:
        return None

    async def work() -> None:
        await asyncio.to_thread(
            prune,
            engine=engine,
            retention_days=settings.retention_days,
            now_ms=clock_ms(),
            batch_rows=settings.retention_batch_rows,
        )

    every = settings.retention_interval_seconds
    # A first pass over a large backlog of deletes can take long; a second process starting meanwhile
    # would only repeat idempotent deletes.
    return PeriodicJob(name=RETENTION_JOB, every_seconds=every, lease_seconds=max(600.0, every), work=work)

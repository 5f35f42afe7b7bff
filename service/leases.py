"""Background work shared by several collector processes, and the one-process rule of SQLite.

Replicas of ``beeaudio collector serve`` on one PostgreSQL coordinate through the database, never through
each other:

* a periodic job (the offline sweep with the unfinished walks, the retention prune) runs under a *lease*:
  a ``background_jobs`` row that one process claims with a conditional UPDATE, so each job runs once per
  interval between all replicas, not once per replica. A process that dies holding a lease loses it when
  the lease runs out, and another replica takes the job over;
* webhook deliveries are claimed row by row with ``FOR UPDATE SKIP LOCKED``
  (:func:`beeaudio.collector.store.alerts.claim_due`), so every replica delivers a disjoint share;
* batches of one hive serialise on the hive's state row (``FOR UPDATE``), whichever replica takes them.

SQLite is one collector process: :func:`sqlite_writer_lock` holds an exclusive ``flock`` on a file next to
the database for the life of ``serve`` (and ``prune``), so a second one is refused with a message that
says so. The kernel drops the lock when the process ends, however it ends: no stale lock to clean up.
"""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
import socket
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from beeaudio.collector.db import background_jobs, insert_for, read_transaction, write_transaction
from beeaudio.collector.metrics import Metrics
from beeaudio.collector.settings import sqlite_path
from beeaudio.core.errors import BeeaudioError

log = logging.getLogger(__name__)

#: The periodic jobs (rows of ``background_jobs``).
SWEEP_JOB = "sweep"
RETENTION_JOB = "retention"


def process_holder() -> str:
    """Who holds a lease: host, process and a random part (two apps in one test process differ)."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


def claim_job(*, engine: Engine, name: str, holder: str, now_ms: int, every_ms: int, lease_ms: int) -> bool:
    """Claim job ``name`` for ``holder`` if nobody holds it and it has not started within ``every_ms``;
    True if this process should run it now. One conditional UPDATE decides: on PostgreSQL a concurrent
    claim waits for the row lock and then sees the winner's ``last_started_ms`` (READ COMMITTED re-checks
    the WHERE on the new row), so exactly one replica wins each interval."""
    with read_transaction(engine) as conn:
        row = conn.execute(
            sa.select(background_jobs.c.lease_until_ms, background_jobs.c.last_started_ms).where(
                background_jobs.c.name == name
            )
        ).first()
    # Most polls find the job held or not due: answered by a read, without taking SQLite's write lock.
    if row is not None and (
        row.lease_until_ms > now_ms
        or (row.last_started_ms is not None and row.last_started_ms > now_ms - every_ms)
    ):
        return False
    with write_transaction(engine) as conn:
        insert = insert_for(conn)
        conn.execute(
            insert(background_jobs)
            .values(name=name, lease_until_ms=0, runs=0)
            .on_conflict_do_nothing(index_elements=[background_jobs.c.name])
        )
        result = conn.execute(
            sa.update(background_jobs)
            .where(
                background_jobs.c.name == name,
                background_jobs.c.lease_until_ms <= now_ms,
                sa.or_(
                    background_jobs.c.last_started_ms.is_(None),
                    background_jobs.c.last_started_ms <= now_ms - every_ms,
                ),
            )
            .values(
                holder=holder,
                lease_until_ms=now_ms + lease_ms,
                last_started_ms=now_ms,
                runs=background_jobs.c.runs + 1,
            )
        )
        return result.rowcount == 1


def release_job(*, engine: Engine, name: str, holder: str, now_ms: int) -> None:
    """The job is done: its lease ends now (the next claim still waits for the interval)."""
    with write_transaction(engine) as conn:
        conn.execute(
            sa.update(background_jobs)
            .where(background_jobs.c.name == name, background_jobs.c.holder == holder)
            .values(lease_until_ms=0, last_finished_ms=now_ms)
        )


@dataclass(frozen=True)
class PeriodicJob:
    """A job that one collector process at a time runs every ``every_seconds``."""

    name: str
    every_seconds: float
    #: How long a claim holds if its process dies; a job that runs longer may start a second time
    #: elsewhere (harmless: every step of the jobs takes its own row locks), so keep it above a run.
    lease_seconds: float
    work: Callable[[], Awaitable[None]]


async def run_periodic(
    *,
    engine: Engine,
    job: PeriodicJob,
    holder: str,
    clock_ms: Callable[[], int],
    metrics: Metrics | None = None,
) -> None:
    """Run ``job`` whenever this process wins its lease; loops until cancelled. Polls at a quarter of the
    interval (at most every 5 s), so a replica takes over soon after another stops."""
    every_ms = int(job.every_seconds * 1000)
    poll = min(job.every_seconds / 4, 5.0)
    while True:
        try:
            claimed = await asyncio.to_thread(
                claim_job,
                engine=engine,
                name=job.name,
                holder=holder,
                now_ms=clock_ms(),
                every_ms=every_ms,
                lease_ms=int(job.lease_seconds * 1000),
            )
            if claimed:
                try:
                    if metrics is not None:
                        metrics.background_runs.labels(job=job.name).inc()
                    await job.work()
                finally:
                    await asyncio.to_thread(
                        release_job, engine=engine, name=job.name, holder=holder, now_ms=clock_ms()
                    )
        except asyncio.CancelledError:
            raise
        except Exception:  # a database hiccup must not end the job
            log.exception("background job %s failed", job.name)
        await asyncio.sleep(poll)


# -- SQLite: one collector process --------------------------------------------------------------------------
class SecondWriterError(BeeaudioError, RuntimeError):
    """Another collector process already serves this SQLite database."""


@dataclass
class ProcessLock:
    """An exclusive lock on a file next to the SQLite database, held while the handle is open."""

    path: Path
    handle: IO[str]

    def release(self) -> None:
        self.handle.close()


def sqlite_writer_lock(*, database_url: str, command: str) -> ProcessLock | None:
    """Hold ``<db file>.lock`` exclusively for this process, or raise :class:`SecondWriterError` naming the
    process that holds it. None for PostgreSQL (replicas coordinate in the database) and in-memory SQLite."""
    database = sqlite_path(database_url)
    if database is None:
        return None
    path = database.parent / (database.name + ".lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    handle = path.open("a+", encoding="utf-8")
    try:
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        owner = handle.read().strip() or "another process"
        handle.close()
        raise SecondWriterError(
            f"another collector process ({owner}) is using the SQLite database {database}; SQLite takes "
            "one collector process: stop it first, or use PostgreSQL (BEEAUDIO_DATABASE_URL="
            "postgresql+psycopg://...) to run several"
        ) from None
    handle.seek(0)
    handle.truncate()
    handle.write(f"pid {os.getpid()}, {command}\n")
    handle.flush()
    return ProcessLock(path=path, handle=handle)

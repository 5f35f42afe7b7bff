"""Leases of the periodic jobs (issue 10, part 1), on SQLite and PostgreSQL: of many processes claiming a
job at the same moment exactly one wins; nobody runs it again within its interval; a holder that died
loses it when its lease runs out. And SQLite's one-process lock."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import sqlalchemy as sa

from beeaudio.collector import migrate
from beeaudio.collector.db import make_engine
from beeaudio.collector.leases import SecondWriterError, claim_job, release_job, sqlite_writer_lock
from tests.fixtures.collector import T0_MS

JOB = "sweep"


def test_one_claim_wins_and_the_interval_holds(db_url: str) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine=engine)
    barrier = threading.Barrier(8)
    wins: list[str] = []

    def claim(holder: str) -> None:
        barrier.wait()
        if claim_job(engine=engine, name=JOB, holder=holder, now_ms=T0_MS, every_ms=10_000, lease_ms=60_000):
            wins.append(holder)

    threads = [threading.Thread(target=claim, args=(f"p{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(wins) == 1
    winner = wins[0]
    # Held: nobody else, not even after the interval.
    assert not claim_job(
        engine=engine, name=JOB, holder="late", now_ms=T0_MS + 20_000, every_ms=10_000, lease_ms=60_000
    )
    release_job(engine=engine, name=JOB, holder=winner, now_ms=T0_MS + 1_000)
    # Done, but not due again until the interval has passed since it started.
    assert not claim_job(
        engine=engine, name=JOB, holder="other", now_ms=T0_MS + 9_999, every_ms=10_000, lease_ms=60_000
    )
    assert claim_job(
        engine=engine, name=JOB, holder="other", now_ms=T0_MS + 10_000, every_ms=10_000, lease_ms=60_000
    )
    # "other" dies holding it: its lease runs out and a third process takes over.
    assert not claim_job(
        engine=engine, name=JOB, holder="third", now_ms=T0_MS + 69_999, every_ms=10_000, lease_ms=60_000
    )
    assert claim_job(
        engine=engine, name=JOB, holder="third", now_ms=T0_MS + 70_000, every_ms=10_000, lease_ms=60_000
    )
    # A release by the dead holder, coming late, does not end the new holder's lease.
    release_job(engine=engine, name=JOB, holder="other", now_ms=T0_MS + 70_001)
    with engine.connect() as conn:
        holder, runs = conn.execute(
            sa.text("SELECT holder, runs FROM background_jobs WHERE name = 'sweep'")
        ).one()
    assert (holder, runs) == ("third", 3)
    engine.dispose()


def test_sqlite_lock_refuses_a_second_holder(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'hives.db'}"
    first = sqlite_writer_lock(database_url=url, command="collector serve")
    assert first is not None
    with pytest.raises(SecondWriterError, match=r"another collector process \(pid \d+, collector serve\)"):
        sqlite_writer_lock(database_url=url, command="collector serve")
    first.release()
    again = sqlite_writer_lock(database_url=url, command="collector prune")
    assert again is not None
    again.release()
    # PostgreSQL (replicas coordinate in the database) and in-memory SQLite take no lock.
    assert sqlite_writer_lock(database_url="postgresql+psycopg://u@h/db", command="serve") is None
    assert sqlite_writer_lock(database_url="sqlite://", command="serve") is None

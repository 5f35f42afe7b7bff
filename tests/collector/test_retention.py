"""Retention of raw events (issue 10, part 5), on SQLite and PostgreSQL: old raw events go (PostgreSQL: whole
weekly partitions dropped, the default partition's rows in batches; SQLite: batched deletes) while history,
status and alerts stay as they were; duplicates stay exact across partitions; an event older than the
horizon is not stored; a 0003 database with readings upgrades to the partitioned table with every row."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from beeaudio.collector import migrate
from beeaudio.collector.app import create_app
from beeaudio.collector.db import make_engine, metadata
from beeaudio.collector.retention import (
    DEFAULT_PARTITION,
    WEEK_MS,
    ensure_partitions,
    is_partitioned,
    partition_name,
    partitions,
    prune,
    week_start,
)
from tests.collector.test_migrations import TOKEN, _comparing, _write_v1_hive
from tests.fixtures.collector import ADMIN, T0, T0_MS, Clock, Collector, make_settings, timeline

DAY = 86_400_000


def _collector(db_url: str, tmp_path: Path, clock: Clock, **settings: Any) -> tuple[Any, TestClient]:
    app = create_app(make_settings(db_url=db_url, data_dir=tmp_path / "data", **settings), clock_ms=clock)
    return app, TestClient(app)


def _partitioned(engine: sa.engine.Engine) -> bool:
    with engine.connect() as conn:
        return is_partitioned(conn)


def _event_times(engine: sa.engine.Engine) -> list[int]:
    with engine.connect() as conn:
        return sorted(conn.execute(sa.text("SELECT window_start_ms FROM events")).scalars())


def _history(collector: Collector, start_ms: int, end_ms: int) -> Any:
    from beeaudio.collector.timeutil import iso_ms

    response = collector.client.get(
        "/api/v1/hives/h1/history",
        params={"from": iso_ms(start_ms), "to": iso_ms(end_ms), "bucket": 600},
        headers=ADMIN,
    )
    assert response.status_code == 200, response.text
    return response.json()


def test_old_raw_events_go_and_history_status_and_alerts_stay(db_url: str, tmp_path: Path) -> None:
    clock = Clock(T0_MS - 40 * DAY)
    app, client = _collector(db_url, tmp_path, clock, retention_days=14)
    engine = app.state.context.engine
    with client:
        collector = Collector(client=client, clock=clock, app=app, db_url=db_url)
        collector.add_hive("h1")
        device = collector.add_device("h1", "d1")
        # 40 days ago the retention job had made that week's partitions (PostgreSQL); a swarm then.
        first = prune(engine=engine, retention_days=14, now_ms=clock(), batch_rows=7)
        assert first.dropped_partitions == [] and first.deleted_rows == 0
        old = timeline(
            hive_id="h1",
            device_id="d1",
            start=clock.now - timedelta(minutes=40),
            segments=[(0.1, 60), (0.95, 60), (0.1, 120)],
        )
        for i in range(0, len(old), 60):
            assert collector.send(device, old[i : i + 60], batch_id=f"old{i}").status_code == 200
        clock.now_ms = T0_MS
        recent = timeline(
            hive_id="h1", device_id="d1", start=T0 - timedelta(minutes=20), segments=[(0.1, 120)]
        )
        assert collector.send(device, recent, batch_id="recent").status_code == 200
        old_ms = [int(e.window_start.timestamp() * 1000) for e in old]
        history_before = _history(collector, old_ms[0] - 600_000, T0_MS)
        status_before = collector.status("h1")
        alerts_before = collector.alerts("h1")
        assert [a["kind"] for a in alerts_before] == ["swarm_started", "swarm_ended"]

        result = prune(engine=engine, retention_days=14, now_ms=clock(), batch_rows=7)
        remaining = _event_times(engine)
        assert remaining == sorted(int(e.window_start.timestamp() * 1000) for e in recent)
        if _partitioned(engine):
            # Whole weeks dropped; nothing deleted row by row. The recent week's partition was made by
            # this pass (its rows moved out of the default partition).
            assert partition_name(week_start(old_ms[0])) in result.dropped_partitions
            assert partition_name(week_start(T0_MS)) in result.created_partitions
            assert result.deleted_rows == 0
            with engine.connect() as conn:
                assert partition_name(week_start(old_ms[0])) not in partitions(conn)
                assert conn.execute(sa.text(f"SELECT count(*) FROM {DEFAULT_PARTITION}")).scalar_one() == 0
        else:
            assert result.deleted_rows == len(old)
        # History, status and alerts are those of before: rollups, steps, states and alerts stay.
        assert _history(collector, old_ms[0] - 600_000, T0_MS) == history_before
        assert collector.status("h1") == status_before
        assert collector.alerts("h1") == alerts_before
        # A second pass has nothing left to do.
        again = prune(engine=engine, retention_days=14, now_ms=clock(), batch_rows=7)
        assert (again.dropped_partitions, again.deleted_rows) == ([], 0)


def test_rows_no_partition_covers_are_deleted_in_batches(db_url: str, tmp_path: Path) -> None:
    """Events of long ago (a device whose clock lagged, a backlog) that no weekly partition covers:
    PostgreSQL keeps them in the default partition and deletes them in batches, as SQLite does."""
    clock = Clock(T0_MS - 90 * DAY)
    app, client = _collector(db_url, tmp_path, clock)
    engine = app.state.context.engine
    with client:
        collector = Collector(client=client, clock=clock, app=app, db_url=db_url)
        collector.add_hive("h1")
        collector.add_hive("h2")
        devices = [collector.add_device("h1", "d1"), collector.add_device("h2", "d2")]
        for device, hive in zip(devices, ("h1", "h2"), strict=True):
            events = timeline(
                hive_id=hive,
                device_id=device["device_id"],
                start=clock.now - timedelta(hours=1),
                segments=[(0.1, 23)],
            )
            assert collector.send(device, events).status_code == 200
        clock.now_ms = T0_MS
        if _partitioned(engine):
            with engine.connect() as conn:
                assert conn.execute(sa.text(f"SELECT count(*) FROM {DEFAULT_PARTITION}")).scalar_one() == 46
        result = prune(engine=engine, retention_days=30, now_ms=clock(), batch_rows=5)
        assert result.deleted_rows == 46 and _event_times(engine) == []
        assert collector.status("h1")["last_event"] is not None


def test_duplicates_stay_exact_across_partitions(db_url: str, tmp_path: Path) -> None:
    """The unique key holds the window start (the partition key), yet an event id is stored once per
    device whatever window it claims, in a batch spanning two weekly partitions, and after rows moved from
    the default partition into a partition made later."""
    clock = Clock(T0_MS)
    app, client = _collector(db_url, tmp_path, clock)
    engine = app.state.context.engine
    with client:
        collector = Collector(client=client, clock=clock, app=app, db_url=db_url)
        collector.add_hive("h1")
        device = collector.add_device("h1", "d1")
        monday = week_start(T0_MS)
        # A batch across the Monday that separates two partitions.
        start = datetime.fromtimestamp((monday - 30 * 60_000) / 1000, tz=UTC)
        across = timeline(hive_id="h1", device_id="d1", start=start, segments=[(0.1, 360)])
        assert {e.window_start.timestamp() * 1000 >= monday for e in across} == {True, False}
        if _partitioned(engine):
            # These weeks are months before the migration's partitions: in the default partition for now.
            with engine.connect() as conn:
                assert partition_name(monday) not in partitions(conn)
        first = collector.send(device, across, batch_id="a").json()
        assert (first["accepted"], first["duplicates"]) == (360, 0)
        # The job makes those weeks' partitions: the rows move out of the default partition.
        made = ensure_partitions(engine=engine, first_ms=monday - WEEK_MS, last_ms=monday)
        if _partitioned(engine):
            assert made == [partition_name(monday - WEEK_MS), partition_name(monday)]
            with engine.connect() as conn:
                assert conn.execute(sa.text(f"SELECT count(*) FROM {DEFAULT_PARTITION}")).scalar_one() == 0
                per_partition = conn.execute(
                    sa.text("SELECT tableoid::regclass::text, count(*) FROM events GROUP BY 1 ORDER BY 1")
                ).all()
            assert [n for _, n in per_partition] == [180, 180]
        else:
            assert made == []
        again = collector.send(device, across, batch_id="again").json()
        assert (again["accepted"], again["duplicates"]) == (0, 360)
        # The same event ids claiming other windows (a week later: another partition) are still duplicates.
        moved = [replace(e, window_start=e.window_start + timedelta(days=7)) for e in across[:5]]
        clock.advance(8 * 86400)
        shifted = collector.send(device, moved, batch_id="shifted").json()
        assert (shifted["accepted"], shifted["duplicates"]) == (0, 5)
        assert collector.count("events") == 360
        with engine.connect() as conn:
            assert conn.execute(sa.text("SELECT sum(n) FROM rollups")).scalar_one() == 360


def test_events_older_than_the_horizon_are_not_stored(db_url: str, tmp_path: Path) -> None:
    from tests.collector.test_metrics import scrape, value

    clock = Clock(T0_MS)
    app, client = _collector(db_url, tmp_path, clock, retention_days=7)
    with client:
        collector = Collector(client=client, clock=clock, app=app, db_url=db_url)
        collector.add_hive("h1")
        device = collector.add_device("h1", "d1")
        stale = timeline(hive_id="h1", device_id="d1", start=T0 - timedelta(days=8), segments=[(0.1, 3)])
        fresh = timeline(hive_id="h1", device_id="d1", start=T0 - timedelta(days=6), segments=[(0.1, 4)])
        answer = collector.send(device, stale + fresh).json()
        assert (answer["accepted"], answer["duplicates"]) == (4, 3)
        assert collector.count("events") == 4
        with collector.engine.connect() as conn:
            assert conn.execute(sa.text("SELECT sum(n) FROM rollups")).scalar_one() == 4
        samples = scrape(client)
        assert value(samples, "beeaudio_ingest_events_total", outcome="expired") == 3
        assert value(samples, "beeaudio_ingest_events_total", outcome="duplicate") == 0


def test_a_0003_database_with_readings_upgrades_to_0004(db_url: str, tmp_path: Path) -> None:
    engine = make_engine(db_url)
    migrate.upgrade(engine=engine, revision="0001")
    old = timeline(hive_id="h", device_id="d", start=T0 - timedelta(days=20), segments=[(0.2, 40)])
    recent = timeline(hive_id="h2", device_id="d2", start=T0 - timedelta(minutes=9), segments=[(0.2, 50)])
    with engine.begin() as conn:
        _write_v1_hive(conn, hive_id="h", device_id="d", events=old, state="normal", token=TOKEN)
        _write_v1_hive(conn, hive_id="h2", device_id="d2", events=recent, state="normal", token=TOKEN + "-2")
    migrate.upgrade(engine=engine, revision="0003")
    query = "SELECT id, device_id, event_id, window_start_ms, swarm_score FROM events ORDER BY id"
    with engine.connect() as conn:
        before = conn.execute(sa.text(query)).all()
    assert migrate.upgrade(engine=engine) == "0004"
    with engine.connect() as conn:
        assert conn.execute(sa.text(query)).all() == before  # every row, with its id
        assert compare_metadata_clean(conn)
        if conn.dialect.name == "postgresql":
            assert is_partitioned(conn)
            weeks = partitions(conn)
            # Weeks of the data and up to the coming ones; the data is in its weeks, none in the default.
            assert partition_name(week_start(T0_MS - 20 * DAY)) in weeks
            held = conn.execute(sa.text(f"SELECT count(*) FROM {DEFAULT_PARTITION}")).scalar_one()
            assert held == 0
    engine.dispose()
    # The collector runs on it: new ids follow the old ones, re-sent old events are duplicates.
    clock = Clock(T0_MS)
    app, client = _collector(db_url, tmp_path, clock)
    with client:
        collector = Collector(client=client, clock=clock, app=app, db_url=db_url)
        device = {"device_id": "d2", "token": TOKEN + "-2"}
        again = collector.send(device, recent[:10]).json()
        assert (again["accepted"], again["duplicates"]) == (0, 10)
        more = timeline(hive_id="h2", device_id="d2", start=T0, segments=[(0.2, 3)])
        assert collector.send(device, more).json()["accepted"] == 3
        with collector.engine.connect() as conn:
            ids = list(conn.execute(sa.text("SELECT id FROM events ORDER BY id")).scalars())
        assert len(ids) == len(before) + 3 and ids[-3] > before[-1][0]
    # Down to 0003 and up again: every row kept.
    from alembic import command

    engine = make_engine(db_url)
    config = migrate.alembic_config()
    with engine.begin() as conn:
        config.attributes["connection"] = conn
        command.downgrade(config, "0003")
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == len(before) + 3
        assert not is_partitioned(conn)
    assert migrate.upgrade(engine=engine) == "0004"
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT count(*) FROM events")).scalar_one() == len(before) + 3
        assert compare_metadata_clean(conn)
    engine.dispose()


def compare_metadata_clean(conn: Any) -> bool:
    from alembic.autogenerate import compare_metadata

    differences = compare_metadata(_comparing(conn), metadata)
    assert differences == []
    return True


def test_prune_command(db_url: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from beeaudio.cli import main
    from beeaudio.collector.leases import sqlite_writer_lock
    from beeaudio.collector.settings import sqlite_path

    assert main(["-q", "collector", "prune", "--db", db_url]) == 0
    assert "every raw event is kept" in capsys.readouterr().out
    assert main(["-q", "collector", "prune", "--db", db_url, "--days", "30"]) == 0
    out = capsys.readouterr().out
    assert "kept 30 days of raw events: dropped 0 partition(s), deleted 0 event(s)" in out
    with pytest.raises(SystemExit) as bad:
        main(["-q", "collector", "prune", "--db", db_url, "--days", "0"])
    assert bad.value.code == 2
    if sqlite_path(db_url) is not None:
        # While a collector serves the file (here: holds its lock), prune is refused, not run beside it.
        held = sqlite_writer_lock(database_url=db_url, command="collector serve")
        assert held is not None
        try:
            assert main(["-q", "collector", "prune", "--db", db_url, "--days", "30"]) == 1
            assert "another collector process (pid " in capsys.readouterr().err
        finally:
            held.release()


def test_serve_runs_the_retention_job_by_itself(db_url: str, tmp_path: Path) -> None:
    """With background tasks on (as ``serve`` runs), the retention job runs by itself, under its lease."""
    import time

    from tests.collector.test_metrics import scrape, value

    clock = Clock(T0_MS - 30 * DAY)
    settings = {"retention_days": 7, "retention_interval_seconds": 0.4, "background_tasks": True}
    app, client = _collector(db_url, tmp_path, clock, **settings)
    with client:
        collector = Collector(client=client, clock=clock, app=app, db_url=db_url)
        collector.add_hive("h1")
        device = collector.add_device("h1", "d1")
        old = timeline(
            hive_id="h1", device_id="d1", start=clock.now - timedelta(minutes=5), segments=[(0.1, 30)]
        )
        assert collector.send(device, old).json()["accepted"] == 30
        clock.now_ms = T0_MS  # a month later: the next pass removes them
        deadline = time.monotonic() + 20
        while collector.count("events") and time.monotonic() < deadline:
            time.sleep(0.1)
        assert collector.count("events") == 0
        assert collector.status("h1")["last_event"] is not None
        assert value(scrape(client), "beeaudio_background_job_runs_total", job="retention") >= 1

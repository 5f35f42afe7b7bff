"""Ingest: idempotent re-sends, validation with 4xx that say what is wrong, nothing stored on refusal,
size limits, heartbeats, pagination; and the schema the migrations build is the one the code uses."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
import sqlalchemy as sa

from beeaudio.collector.db import make_engine, metadata
from beeaudio.core.wire import make_batch
from tests.fixtures.collector import ADMIN, T0, bearer, timeline


@pytest.fixture
def hive(collector):
    collector.add_hive("h1")
    return collector.add_device("h1", "d1")


def events_for(n: int, *, start=None, device_id: str = "d1", hive_id: str = "h1"):
    start = start or T0 - timedelta(minutes=10)
    return timeline(hive_id=hive_id, device_id=device_id, start=start, segments=[(0.2, n)])


def test_resent_batches_are_counted_as_duplicates(collector, hive) -> None:
    batch = events_for(20)
    first = collector.send(hive, batch, batch_id="b1")
    assert first.status_code == 200
    assert first.json() == {"batch_id": "b1", "accepted": 20, "duplicates": 0}
    status_before = collector.status("h1")
    again = collector.send(hive, batch, batch_id="b1")
    assert again.json() == {"batch_id": "b1", "accepted": 0, "duplicates": 20}
    # Half old, half new, and one event twice in the same batch.
    more = events_for(10, start=T0 - timedelta(minutes=2))
    mixed = collector.send(hive, batch[10:] + more + more[:1], batch_id="b2")
    assert mixed.json() == {"batch_id": "b2", "accepted": 10, "duplicates": 11}
    assert collector.count("events") == 30
    with collector.engine.connect() as conn:
        from beeaudio.collector.db import rollups

        assert conn.execute(sa.select(sa.func.sum(rollups.c.n))).scalar_one() == 30
    assert status_before["n_window"] == 20
    # The newest events (2 minutes ago) are the only ones inside the 5-minute smoothing window now.
    assert collector.status("h1")["n_window"] == 10


def _post(collector, hive, body, headers=None):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    headers = {**bearer(hive["token"]), "Content-Type": "application/json", **(headers or {})}
    return collector.client.post("/api/v1/events", content=data, headers=headers)


def _batch(batch_events, **changes):
    body = make_batch(device_id="d1", events=batch_events, batch_id="bad")
    body.update(changes)
    return body


def _with_event_change(index: int, **changes):
    events = events_for(5)
    body = _batch(events)
    body["events"][index].update(changes)
    return body


BAD_BODIES = {
    "not json": (b"{not json", 422, "JSON"),
    "not an object": ([1, 2, 3], 422, ""),
    "unknown batch schema": (lambda: _batch(events_for(3), schema="beeaudio.batch/9"), 422, "schema"),
    "events not a list": (lambda: _batch(events_for(3), events={"a": 1}), 422, "events"),
    "probabilities do not sum to 1": (
        lambda: _with_event_change(4, probabilities={"normal": 0.9, "swarm": 0.9}),
        422,
        "sum",
    ),
    "probability out of range": (
        lambda: _with_event_change(2, probabilities={"normal": -0.5, "swarm": 1.5}),
        422,
        "outside",
    ),
    "label not among probabilities": (lambda: _with_event_change(1, label="queenless"), 422, "label"),
    "swarm score out of range": (lambda: _with_event_change(0, swarm_score=3.0), 422, "swarm_score"),
    "bad timestamp": (lambda: _with_event_change(3, window_start="yesterday"), 422, "ISO"),
    "naive timestamp": (lambda: _with_event_change(3, window_start="2026-05-01T11:00:00"), 422, "time zone"),
    "far future": (lambda: _with_event_change(3, window_start="2030-01-01T00:00:00Z"), 422, "future"),
    "clock never set": (lambda: _with_event_change(3, window_start="1970-01-01T00:01:00Z"), 422, "clock"),
    "missing field": (lambda: _with_event_change(2, label=None), 422, "label"),
    "NaN probability": (
        b'{"schema":"beeaudio.batch/1","batch_id":"x","device_id":"d1","events":[{"schema":"beeaudio.event/1",'
        b'"event_id":"e","hive_id":"h1","device_id":"d1","model_name":"m","model_version":"1",'
        b'"window_start":"2026-05-01T11:00:00Z","window_seconds":2,"probabilities":{"swarm":NaN},'
        b'"label":"swarm","swarm_score":0.5,"level_dbfs":-30,"source_format":"wav"}]}',
        422,
        "",
    ),
    "NUL in a string": (lambda: _with_event_change(1, model_name="m\x00"), 422, "NUL"),
    "other hive": (lambda: _with_event_change(0, hive_id="h2"), 403, "hive"),
    "other device in an event": (lambda: _with_event_change(0, device_id="d2"), 403, "device"),
    "other device in the batch": (lambda: _batch(events_for(2), device_id="d2"), 403, "device"),
}


@pytest.mark.parametrize("case", sorted(BAD_BODIES))
def test_bad_batches_are_refused_and_nothing_is_stored(collector, hive, case: str) -> None:
    body, status, words = BAD_BODIES[case]
    body = body() if callable(body) else body
    response = _post(collector, hive, body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, str) and words.lower() in detail.lower()
    assert collector.count("events") == 0
    assert collector.count("rollups") == 0
    assert collector.status("h1")["last_seen"] is None


def test_size_limits(collector, hive) -> None:
    limit = collector.app.state.context.settings.max_batch_events
    too_many = events_for(limit + 1)
    response = collector.send(hive, too_many)
    assert response.status_code == 413 and "limit" in response.json()["detail"]
    huge = _batch(events_for(1))
    huge["events"][0]["extra"] = {"pad": "x" * (collector.app.state.context.settings.max_body_bytes + 10)}
    response = _post(collector, hive, huge)
    assert response.status_code == 413
    # A chunked body without Content-Length is counted as it streams.
    body = json.dumps(huge).encode()

    def chunks():
        for i in range(0, len(body), 65536):
            yield body[i : i + 65536]

    response = collector.client.post(
        "/api/v1/events",
        content=chunks(),
        headers={**bearer(hive["token"]), "Content-Type": "application/json"},
    )
    assert response.status_code == 413
    assert collector.count("events") == 0


def test_a_valid_batch_after_a_refused_one_is_whole(collector, hive) -> None:
    events = events_for(10)
    bad = _batch(events)
    bad["events"][9]["swarm_score"] = 7
    assert _post(collector, hive, bad).status_code == 422
    assert collector.send(hive, events).json()["accepted"] == 10


def test_heartbeat_and_device_listing(collector, hive) -> None:
    beat = {
        "schema": "beeaudio.heartbeat/1",
        "sent_at": "2026-05-01T11:59:00Z",
        "uptime_s": 3600.5,
        "backlog_files": 2,
        "outbox_depth": 17,
        "dropped_events": 0,
        "model_name": "hive-net",
        "model_version": "3",
        "disk_free_bytes": 12_000_000_000,
        "stage_ms": {"decode": 3.1, "features": 4.2, "inference": 0.8},
    }
    ok = collector.client.post("/api/v1/devices/d1/heartbeat", json=beat, headers=bearer(hive["token"]))
    assert ok.status_code == 200, ok.text
    listed = collector.client.get("/api/v1/hives/h1/devices", headers=ADMIN).json()
    assert listed[0]["heartbeat"]["outbox_depth"] == 17
    assert listed[0]["last_heartbeat"] is not None
    assert "token" not in listed[0]
    wrong = collector.client.post(
        "/api/v1/devices/d1/heartbeat", json={**beat, "outbox_depth": -1}, headers=bearer(hive["token"])
    )
    assert wrong.status_code == 422


def test_events_are_paginated_newest_first(collector, hive) -> None:
    collector.send(hive, events_for(25))
    seen, cursor = [], None
    while True:
        params = {"limit": 10, **({"cursor": cursor} if cursor else {})}
        page = collector.client.get("/api/v1/hives/h1/events", params=params, headers=ADMIN).json()
        seen.extend(e["window_start"] for e in page["events"])
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 25 and seen == sorted(seen, reverse=True)
    bad = collector.client.get("/api/v1/hives/h1/events", params={"cursor": "x"}, headers=ADMIN)
    assert bad.status_code == 422


def test_migrations_build_the_schema_the_code_uses(db_url: str) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.runtime.migration import MigrationContext

    from beeaudio.collector import migrate

    engine = make_engine(db_url)
    assert migrate.upgrade(engine=engine) == migrate.head_revision()
    with engine.connect() as conn:
        # PostgreSQL's partitions of events are tables to the database, part of events to the schema.
        diff = compare_metadata(
            MigrationContext.configure(conn, opts={"include_name": migrate.include_name}), metadata
        )
    engine.dispose()
    assert diff == []


def test_concurrent_batches_of_one_hive_add_up(collector) -> None:
    """Two devices of one hive sending at once (threads, real database): nothing lost, state as if serial."""
    import threading

    from beeaudio.collector.store.devices import DeviceIdentity
    from beeaudio.collector.store.ingest import store_batch

    context = collector.app.state.context
    start = T0 - timedelta(minutes=20)
    plans = {}
    for hive_id in ("together", "serial"):
        collector.add_hive(hive_id)
        for name in ("a", "b"):
            device_id = f"{hive_id}-{name}"
            collector.add_device(hive_id, device_id)
            swarm = 0.8 if name == "a" else 0.3
            events = timeline(
                hive_id=hive_id, device_id=device_id, start=start, segments=[(swarm, 60)], step_s=15
            )
            plans[device_id] = (DeviceIdentity(device_id=device_id, hive_id=hive_id), events)

    def send(device_id: str) -> None:
        device, events = plans[device_id]
        for i in range(0, len(events), 12):
            store_batch(
                engine=context.engine,
                device=device,
                batch_id=f"{i}",
                batch=events[i : i + 12],
                defaults=context.defaults,
                bucket_seconds=60,
                webhook_urls=[],
                now_ms=collector.clock(),
            )

    threads = [threading.Thread(target=send, args=(f"together-{n}",)) for n in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    send("serial-a")
    send("serial-b")
    assert collector.count("events") == 240
    together, serial = collector.status("together"), collector.status("serial")
    keys = ("state", "since", "swarm_score", "n_window", "counts")
    assert {k: together[k] for k in keys} == {k: serial[k] for k in keys}
    assert together["n_window"] == 40  # 5 minutes of two devices, one event every 15 s each


def test_sqlite_commits_are_durable(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'c.db'}")
    with engine.connect() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
        assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 2  # FULL: fsync at every commit
    engine.dispose()

"""Heartbeats cannot fill the disk (issue 14, item 12): each is at most ``MAX_HEARTBEAT_BYTES`` (413 above,
before a byte of it is stored), the device keeps its latest, and the history keeps the newest
``HEARTBEAT_HISTORY`` per device. Before, 50 heartbeats of 1.9 MB added 95 MB in a second."""

from __future__ import annotations

import json

import sqlalchemy as sa

from beeaudio.core import wire
from tests.fixtures.collector import ADMIN, bearer


def _beat(n: int, **extra: object) -> dict[str, object]:
    return {"schema": wire.HEARTBEAT_SCHEMA, "sent_at": "2026-05-01T11:00:00Z", "outbox_depth": n, **extra}


def _history(collector, device_id: str) -> list[int]:
    from beeaudio.collector.db import heartbeats

    with collector.engine.connect() as conn:
        rows = conn.execute(
            sa.select(heartbeats.c.payload)
            .where(heartbeats.c.device_id == device_id)
            .order_by(heartbeats.c.id)
        ).all()
    return [row.payload["outbox_depth"] for row in rows]


def test_a_large_heartbeat_is_refused_before_it_is_stored(collector) -> None:
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    huge = _beat(1, notes="x" * 1_900_000)
    response = collector.client.post(wire.heartbeat_path("d1"), json=huge, headers=bearer(device["token"]))
    assert response.status_code == 413, response.text
    limit = collector.app.state.context.settings.max_heartbeat_bytes
    assert str(limit) in response.json()["detail"]
    just_over = _beat(1, notes="x" * limit)
    assert len(json.dumps(just_over)) > limit
    response = collector.client.post(
        wire.heartbeat_path("d1"), json=just_over, headers=bearer(device["token"])
    )
    assert response.status_code == 413
    assert collector.count("heartbeats") == 0
    listed = collector.client.get("/api/v1/hives/h1/devices", headers=ADMIN).json()
    assert listed[0]["heartbeat"] is None
    # A real heartbeat, with room to spare, is kept.
    normal = _beat(7, stage_ms={"decode": 3.1, "features": 4.2, "inference": 0.8}, notes="x" * 1000)
    response = collector.client.post(wire.heartbeat_path("d1"), json=normal, headers=bearer(device["token"]))
    assert response.status_code == 200, response.text


def test_the_history_keeps_the_newest_per_device(collector) -> None:
    collector.add_hive("h1")
    one = collector.add_device("h1", "d1")
    other = collector.add_device("h1", "d2")
    assert collector.client.post(wire.heartbeat_path("d2"), json=_beat(0), headers=bearer(other["token"]))
    keep, sent = 100, 130  # the default BEEAUDIO_HEARTBEAT_HISTORY, and more than that
    for n in range(sent):
        response = collector.client.post(
            wire.heartbeat_path("d1"), json=_beat(n), headers=bearer(one["token"])
        )
        assert response.status_code == 200, response.text
    assert _history(collector, "d1") == list(range(sent - keep, sent))
    assert _history(collector, "d2") == [0]  # another device's history is its own
    listed = {
        d["device_id"]: d for d in collector.client.get("/api/v1/hives/h1/devices", headers=ADMIN).json()
    }
    assert listed["d1"]["heartbeat"]["outbox_depth"] == sent - 1  # the latest, with the device
    assert collector.app.state.context.settings.heartbeat_history == keep


def test_failing_loops_are_kept_and_shown_within_their_bounds(collector) -> None:
    """A device says which of its loops fail (the fleet sees a device whose uploads stopped); a heartbeat
    with more loops or longer reasons than the wire allows is refused, and nothing of it is kept."""
    collector.add_hive("h1")
    device = collector.add_device("h1", "d1")
    send = lambda beat: collector.client.post(  # noqa: E731
        wire.heartbeat_path("d1"), json=beat, headers=bearer(device["token"])
    )
    failing = {"upload": "3 failures in a row: sqlite3.OperationalError: database or disk is full"}
    assert send(_beat(5, failing_loops=failing)).status_code == 200
    listed = collector.client.get("/api/v1/hives/h1/devices", headers=ADMIN).json()
    assert listed[0]["heartbeat"]["failing_loops"] == failing
    too_many = {f"loop{i}": "x" for i in range(wire.MAX_LOOPS + 1)}
    too_long = {"upload": "x" * (wire.MAX_LOOP_TROUBLE + 1)}
    for bad in (too_many, too_long, {"upload": 3}, ["upload"]):
        assert send(_beat(6, failing_loops=bad)).status_code == 422, bad
    assert _history(collector, "d1") == [5]

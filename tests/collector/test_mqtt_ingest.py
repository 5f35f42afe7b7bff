"""MQTT ingest on a real Mosquitto (its own, with the ACL of docs/collector.md) and a real database (SQLite
and PostgreSQL): what a device publishes is stored through the same checks as ``POST /api/v1/events`` and
acknowledged on its ack topic; forged and malformed batches are refused, counted and never stored."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient

from beeaudio.collector import db
from beeaudio.core import mqtt_wire
from beeaudio.core.wire import make_batch
from tests.fixtures.collector import ADMIN, Clock, make_settings
from tests.fixtures.device import make_events, wait_for
from tests.fixtures.mqtt import COLLECTOR_USER, Broker, connect_client


@dataclass
class MqttCollector:
    client: TestClient
    app: Any
    devices: dict[str, dict[str, str]]

    @property
    def ingest(self) -> Any:
        return self.app.state.mqtt.ingest

    def stored_event_ids(self) -> list[str]:
        with self.app.state.context.engine.connect() as conn:
            return list(conn.execute(sa.select(db.events.c.event_id)).scalars())


@pytest.fixture
def mqtt_collector(db_url: str, tmp_path: Path, broker: Broker) -> Iterator[MqttCollector]:
    from beeaudio.collector.app import create_app

    settings = make_settings(
        db_url=db_url,
        data_dir=tmp_path / "data",
        mqtt_url=broker.url,
        mqtt_username=COLLECTOR_USER,
        mqtt_password=broker.passwords[COLLECTOR_USER],
        homeassistant=False,
    )
    app = create_app(settings, clock_ms=Clock())
    with TestClient(app) as client:
        devices = {}
        for hive, device in (("hive-a", "dev-a"), ("hive-b", "dev-b")):
            assert (
                client.post("/api/v1/hives", json={"name": hive, "hive_id": hive}, headers=ADMIN).status_code
                == 201
            )
            answer = client.post(f"/api/v1/hives/{hive}/devices", json={"device_id": device}, headers=ADMIN)
            devices[device] = answer.json()
            broker.add_user(device, devices[device]["token"])
        collector = MqttCollector(client=client, app=app, devices=devices)
        assert collector.ingest.connected.wait(15), "the collector did not connect to the test broker"
        yield collector


@dataclass
class Publisher:
    """A device's own MQTT client: publishes with a chosen token and waits for the acks on its topic."""

    recorder: Any
    device_id: str
    acks: dict[str, dict[str, Any]]
    arrived: threading.Condition

    def publish(self, *, topic: str, payload: bytes, token: str | None, request_id: str) -> Any:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.PUBLISH)
        properties.CorrelationData = request_id.encode()
        if token is not None:
            properties.UserProperty = [(mqtt_wire.AUTHORIZATION_PROPERTY, f"Bearer {token}")]
        info = self.recorder.client.publish(topic, payload, qos=1, properties=properties)
        info.wait_for_publish(timeout=10)
        return info

    def ack(self, request_id: str, *, timeout: float = 15.0) -> dict[str, Any] | None:
        def found() -> bool:
            for _topic, payload, _retained in list(self.recorder.messages):
                ack = mqtt_wire.parse_ack(payload)
                if ack is not None and ack.request_id == request_id:
                    self.acks[request_id] = {"status": ack.status, "body": ack.body}
                    return True
            return False

        return self.acks[request_id] if wait_for(found, timeout=timeout) else None


def device_publisher(broker: Broker, device_id: str) -> Publisher:
    recorder = connect_client(
        broker=broker,
        username=device_id,
        client_id=f"test-{device_id}",
        subscribe=(mqtt_wire.ack_topic(device_id),),
    )
    return Publisher(recorder=recorder, device_id=device_id, acks={}, arrived=threading.Condition())


def batch_bytes(*, device_id: str, events: list[Any], batch_id: str) -> bytes:
    return json.dumps(make_batch(device_id=device_id, events=events, batch_id=batch_id)).encode()


def test_batches_are_stored_once_and_forged_or_malformed_ones_refused(mqtt_collector: MqttCollector, broker):
    token_a = mqtt_collector.devices["dev-a"]["token"]
    token_b = mqtt_collector.devices["dev-b"]["token"]
    own = mqtt_wire.batch_topic("dev-a")
    device = device_publisher(broker, "dev-a")
    try:
        good = make_events(5, device_id="dev-a", hive_id="hive-a")
        device.publish(topic=own, payload=batch_bytes(device_id="dev-a", events=good, batch_id="good"),
                       token=token_a, request_id="good")  # fmt: skip
        assert device.ack("good") == {
            "status": 200,
            "body": {"batch_id": "good", "accepted": 5, "duplicates": 0},
        }
        # The same batch again (a device that missed the ack): acknowledged, nothing stored twice.
        device.publish(topic=own, payload=batch_bytes(device_id="dev-a", events=good, batch_id="good"),
                       token=token_a, request_id="again")  # fmt: skip
        assert device.ack("again")["body"] == {"batch_id": "good", "accepted": 0, "duplicates": 5}

        refusals = {
            # Another device's batch and events, on dev-a's topic with dev-a's token.
            "forged-payload": (
                batch_bytes(
                    device_id="dev-b",
                    events=make_events(2, device_id="dev-b", hive_id="hive-b"),
                    batch_id="f1",
                ),
                token_a,
                403,
                "forged",
            ),
            # dev-a's batch whose events say another hive.
            "other-hive": (
                batch_bytes(
                    device_id="dev-a",
                    events=make_events(2, device_id="dev-a", hive_id="hive-b"),
                    batch_id="f2",
                ),
                token_a,
                403,
                "other_hive",
            ),
            # dev-b's token on dev-a's topic: the credentials are not the topic's device.
            "forged-token": (
                batch_bytes(
                    device_id="dev-b",
                    events=make_events(2, device_id="dev-b", hive_id="hive-b"),
                    batch_id="f3",
                ),
                token_b,
                403,
                "forged",
            ),
            "no-token": (
                batch_bytes(
                    device_id="dev-a",
                    events=make_events(2, device_id="dev-a", hive_id="hive-a", offset=50),
                    batch_id="f4",
                ),
                None,
                401,
                "unauthenticated",
            ),
            "unknown-token": (b"{}", "bdt_not-a-token", 401, "unauthenticated"),
            "not-json": (b"\x00\xffnot json", token_a, 422, "malformed"),
            "not-a-batch": (
                json.dumps({"schema": "beeaudio.batch/1", "events": "x"}).encode(),
                token_a,
                422,
                "malformed",
            ),
            "nan": (
                batch_bytes(
                    device_id="dev-a",
                    events=make_events(1, device_id="dev-a", hive_id="hive-a", offset=60),
                    batch_id="f5",
                ).replace(b"-30.0", b"NaN"),
                token_a,
                422,
                "malformed",
            ),
        }
        for request_id, (payload, token, _status, _kind) in refusals.items():
            device.publish(topic=own, payload=payload, token=token, request_id=request_id)
        for request_id, (_payload, _token, status, _kind) in refusals.items():
            ack = device.ack(request_id)
            assert ack is not None and ack["status"] == status, (request_id, ack)
            assert isinstance(ack["body"].get("detail"), str)

        # dev-a's login publishing on dev-b's topic: the broker's ACL drops it; the collector never sees it.
        theirs = make_events(2, device_id="dev-b", hive_id="hive-b", offset=100)
        device.publish(topic=mqtt_wire.batch_topic("dev-b"),
                       payload=batch_bytes(device_id="dev-b", events=theirs, batch_id="acl"),
                       token=token_b, request_id="acl")  # fmt: skip
        assert device.ack("acl", timeout=2) is None

        ingest = mqtt_collector.ingest
        assert wait_for(lambda: sum(ingest.counters.refused.values()) == len(refusals), timeout=10)
        expected: dict[str, int] = {}
        for _payload, _token, _status, kind in refusals.values():
            expected[kind] = expected.get(kind, 0) + 1
        assert {k: v for k, v in ingest.counters.refused.items() if v} == expected
        assert ingest.counters.batches_stored == 2 and ingest.counters.events_accepted == 5
        # Only the good batch is stored, once.
        assert sorted(mqtt_collector.stored_event_ids()) == sorted(e.event_id for e in good)
    finally:
        device.recorder.client.loop_stop()
        device.recorder.client.disconnect()


def test_a_device_never_receives_another_devices_acks(mqtt_collector: MqttCollector, broker):
    """The ACL keeps a device's acks its own: Mosquitto grants the subscription but delivers nothing."""
    peek = connect_client(broker=broker, username="dev-a", client_id="peek",
                          subscribe=(mqtt_wire.ack_topic("dev-b"),))  # fmt: skip
    owner = device_publisher(broker, "dev-b")
    try:
        events = make_events(2, device_id="dev-b", hive_id="hive-b")
        owner.publish(topic=mqtt_wire.batch_topic("dev-b"),
                      payload=batch_bytes(device_id="dev-b", events=events, batch_id="b1"),
                      token=mqtt_collector.devices["dev-b"]["token"], request_id="b1")  # fmt: skip
        assert owner.ack("b1")["status"] == 200
        assert peek.messages == []
    finally:
        for client in (peek.client, owner.recorder.client):
            client.loop_stop()
            client.disconnect()


def test_heartbeats_over_mqtt_are_stored(mqtt_collector: MqttCollector, broker):
    from datetime import UTC, datetime

    from beeaudio.core.wire import Heartbeat

    device = device_publisher(broker, "dev-a")
    try:
        beat = Heartbeat(sent_at=datetime.now(UTC), uptime_s=3.0, outbox_depth=7, dropped_events=2).to_json()
        device.publish(topic=mqtt_wire.heartbeat_topic("dev-a"), payload=json.dumps(beat).encode(),
                       token=mqtt_collector.devices["dev-a"]["token"], request_id="hb")  # fmt: skip
        assert device.ack("hb") == {"status": 200, "body": {"device_id": "dev-a", "received": True}}
        listed = mqtt_collector.client.get("/api/v1/hives/hive-a/devices", headers=ADMIN).json()
        assert listed[0]["heartbeat"]["outbox_depth"] == 7
        # What no database can store (a NUL in a reason) is refused as over HTTP, and the latest stays.
        unclean = {**beat, "outbox_depth": 8, "failing_loops": {"upload": "bad\u0000"}}
        device.publish(topic=mqtt_wire.heartbeat_topic("dev-a"), payload=json.dumps(unclean).encode(),
                       token=mqtt_collector.devices["dev-a"]["token"], request_id="nul")  # fmt: skip
        refused = device.ack("nul")
        assert refused["status"] == 422 and "NUL" in json.dumps(refused["body"]), refused
        listed = mqtt_collector.client.get("/api/v1/hives/hive-a/devices", headers=ADMIN).json()
        assert listed[0]["heartbeat"]["outbox_depth"] == 7
    finally:
        device.recorder.client.loop_stop()
        device.recorder.client.disconnect()


def test_the_device_uploader_over_mqtt_delivers_and_dead_letters_like_over_http(
    mqtt_collector: MqttCollector, broker, tmp_path
):
    """The agent's own uploader on the MQTT transport: delivered on the collector's ack, and the one event
    the collector refuses (another hive's) dead-lettered with the collector's reason, as over HTTP."""
    from beeaudio.device.mqtt_uplink import MqttCollectorClient
    from beeaudio.device.outbox import Outbox
    from beeaudio.device.uplink import Uploader

    client = MqttCollectorClient(broker_url=broker.url, device_id="dev-a",
                                 token=mqtt_collector.devices["dev-a"]["token"], timeout_s=10)  # fmt: skip
    outbox = Outbox(path=tmp_path / "outbox.sqlite", max_events=100)
    try:
        good = make_events(3, device_id="dev-a", hive_id="hive-a")
        stray = make_events(1, device_id="dev-a", hive_id="hive-b", offset=10)
        outbox.add_events(good[:2] + stray + good[2:])
        outcome = Uploader(outbox=outbox, client=client, device_id="dev-a", batch_size=10).upload_once()
        assert (outcome.kind, outcome.accepted, outcome.dead_lettered) == ("sent", 3, 1)
        assert outbox.depth() == 0
        (letter,) = outbox.dead_letters()
        assert letter["event_id"] == stray[0].event_id and letter["status"] == 403
        assert "hive_id" in letter["reason"]
        assert sorted(mqtt_collector.stored_event_ids()) == sorted(e.event_id for e in good)
    finally:
        client.close()
        outbox.close()

"""Home Assistant over a real Mosquitto: each hive's retained state on its own topic, discovery configs with
the keys Home Assistant needs (a device per hive, sensors, a ``binary_sensor`` "swarming"), and the
collector's availability with its last will."""

from __future__ import annotations

import json
import re
import secrets
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from beeaudio.collector.homeassistant import STATES
from beeaudio.core import mqtt_wire
from tests.fixtures.collector import ADMIN, T0, Clock, bearer, make_settings, timeline
from tests.fixtures.device import wait_for
from tests.fixtures.mqtt import COLLECTOR_USER, HA_USER, Broker, collector_mqtt_env, connect_client

#: What Home Assistant's MQTT discovery needs of every entity here (unique_id: to be a device's entity).
REQUIRED = ("name", "unique_id", "state_topic", "value_template", "availability", "device")
HIVES = {"north-3": "Apiary North / Hive 3", "south.1:b": "South 1 b", "quiet": "Quiet hive"}
SUBSCRIBE = ("homeassistant/#", f"{mqtt_wire.TOPIC_ROOT}/hives/#", mqtt_wire.AVAILABILITY_TOPIC)


def _send(client: TestClient, *, hive_id: str, swarm: float) -> None:
    device = client.post(
        f"/api/v1/hives/{hive_id}/devices", json={"device_id": f"d-{hive_id}"}, headers=ADMIN
    )
    events = timeline(hive_id=hive_id, device_id=f"d-{hive_id}", start=T0 - timedelta(minutes=10),
                      segments=[(swarm, 55)])  # fmt: skip
    from beeaudio.core.wire import make_batch

    batch = make_batch(device_id=f"d-{hive_id}", events=events, batch_id=f"b-{hive_id}")
    answer = client.post("/api/v1/events", json=batch, headers=bearer(device.json()["token"]))
    assert answer.status_code == 200, answer.text


def test_hive_states_and_discovery_configs(db_url: str, tmp_path: Path, broker: Broker) -> None:
    from beeaudio.collector.app import create_app

    broker.add_user(HA_USER)
    settings = make_settings(
        db_url=db_url,
        data_dir=tmp_path / "data",
        mqtt_url=broker.url,
        mqtt_username=COLLECTOR_USER,
        mqtt_password=broker.passwords[COLLECTOR_USER],
        homeassistant_interval_seconds=0.2,
    )
    app = create_app(settings, clock_ms=Clock())
    with TestClient(app) as client:
        for hive_id, name in HIVES.items():
            assert (
                client.post(
                    "/api/v1/hives", json={"name": name, "hive_id": hive_id}, headers=ADMIN
                ).status_code
                == 201
            )
        _send(client, hive_id="north-3", swarm=0.9)
        _send(client, hive_id="south.1:b", swarm=0.1)
        publisher = app.state.mqtt.homeassistant
        passes = publisher.passes
        assert wait_for(lambda: publisher.passes >= passes + 2, timeout=20)
        # A client that subscribes afterwards, as Home Assistant starting later: everything is retained.
        ha = connect_client(broker=broker, username=HA_USER, client_id="ha", subscribe=SUBSCRIBE)
        try:
            expected_configs = len(HIVES) * 5
            assert wait_for(lambda: len(ha.latest()) >= expected_configs + len(HIVES) + 1, timeout=10)
            messages = ha.latest()
        finally:
            ha.client.loop_stop()
            ha.client.disconnect()

    assert all(retained for _payload, retained in messages.values()), "every message is retained"
    assert messages[mqtt_wire.AVAILABILITY_TOPIC][0] == b"online"

    configs = {topic: json.loads(payload) for topic, (payload, _r) in messages.items()
               if topic.startswith("homeassistant/")}  # fmt: skip
    states = {topic: json.loads(payload) for topic, (payload, _r) in messages.items()
              if topic.startswith(f"{mqtt_wire.TOPIC_ROOT}/hives/")}  # fmt: skip
    assert len(configs) == len(HIVES) * 5 and len(states) == len(HIVES)
    # Per hive: its own state topic (never one shared topic).
    assert set(states) == {mqtt_wire.hive_state_topic(h) for h in HIVES}

    unique_ids = [config["unique_id"] for config in configs.values()]
    assert len(set(unique_ids)) == len(unique_ids)
    by_hive: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for topic, config in configs.items():
        match = re.fullmatch(r"homeassistant/(sensor|binary_sensor)/([A-Za-z0-9_-]+)/config", topic)
        assert match, topic
        assert config["unique_id"] == match.group(2)
        for key in REQUIRED:
            assert config.get(key), (topic, key)
        assert config["state_topic"] in states, "every state_topic exists and carries a value"
        (availability,) = config["availability"]
        assert availability == {"topic": mqtt_wire.AVAILABILITY_TOPIC, "payload_available": "online",
                                "payload_not_available": "offline"}  # fmt: skip
        device = config["device"]
        assert isinstance(device["identifiers"], list) and device["identifiers"] and device["name"]
        # The template reads a key the hive's state message has.
        (field,) = re.fullmatch(r"\{\{ value_json\.(\w+) \}\}", config["value_template"]).groups()
        assert field in states[config["state_topic"]]
        by_hive.setdefault(config["state_topic"], []).append((match.group(1), config))

    for hive_id, name in HIVES.items():
        entities = by_hive[mqtt_wire.hive_state_topic(hive_id)]
        assert sorted(component for component, _c in entities) == ["binary_sensor"] + ["sensor"] * 4
        assert {c["device"]["name"] for _k, c in entities} == {name}
        assert len({json.dumps(c["device"]["identifiers"]) for _k, c in entities}) == 1  # one device per hive
        (swarming,) = [c for k, c in entities if k == "binary_sensor"]
        assert swarming["name"] == "Swarming" and (swarming["payload_on"], swarming["payload_off"]) == (
            "ON",
            "OFF",
        )
        state = states[mqtt_wire.hive_state_topic(hive_id)]
        assert state["state"] in STATES and state["swarming"] in ("ON", "OFF", None)
    identifiers = {json.dumps(c["device"]["identifiers"]) for c in configs.values()}
    assert len(identifiers) == len(HIVES)

    swarm = states[mqtt_wire.hive_state_topic("north-3")]
    assert swarm["state"] == "swarm" and swarm["swarming"] == "ON" and swarm["swarm_score_pct"] >= 60
    assert swarm["level_dbfs"] == -32.5 and swarm["last_seen"].startswith("2026-05-01T12:00")
    calm = states[mqtt_wire.hive_state_topic("south.1:b")]
    assert calm["state"] == "normal" and calm["swarming"] == "OFF" and calm["swarm_score"] < 0.4
    quiet = states[mqtt_wire.hive_state_topic("quiet")]
    assert quiet["state"] == "unknown" and quiet["last_seen"] is None and quiet["level_dbfs"] is None
    assert quiet["swarming"] is None, "unknown is not 'not swarming' (Home Assistant shows unknown)"


@pytest.mark.slow
def test_the_last_will_says_offline_when_the_collector_dies(tmp_path: Path, broker: Broker) -> None:
    from beeaudio.collector.launch import start_collector

    broker.add_user(HA_USER)
    env = {"BEEAUDIO_ADMIN_TOKEN": "adm-" + secrets.token_hex(16),
           "BEEAUDIO_DATA_DIR": str(tmp_path / "data"), **collector_mqtt_env(broker)}  # fmt: skip
    running = start_collector(
        log_path=tmp_path / "collector.log", db_url=f"sqlite:///{tmp_path / 'c.db'}", env=env
    )
    ha = connect_client(
        broker=broker, username=HA_USER, client_id="ha", subscribe=(mqtt_wire.AVAILABILITY_TOPIC,)
    )
    try:

        def availability() -> bytes | None:
            latest = ha.latest().get(mqtt_wire.AVAILABILITY_TOPIC)
            return latest[0] if latest else None

        assert wait_for(lambda: availability() == b"online", timeout=20)
        running.kill()  # SIGKILL: no goodbye; the broker publishes the last will
        assert wait_for(lambda: availability() == b"offline", timeout=20)
    finally:
        running.stop()
        ha.client.loop_stop()
        ha.client.disconnect()

"""The MQTT contract (topics, acks, broker URLs, discovery ids) and the device's ``transport`` options."""

from __future__ import annotations

from pathlib import Path

import pytest

from beeaudio.core import mqtt_wire
from beeaudio.device.config import ConfigError, config_from_dict


def test_topics_are_per_device_and_parse_back():
    assert mqtt_wire.batch_topic("dev-1") == "beeaudio/v1/devices/dev-1/batches"
    assert mqtt_wire.parse_device_topic(mqtt_wire.batch_topic("dev-1")) == mqtt_wire.DeviceTopic(
        "dev-1", "batches"
    )
    assert mqtt_wire.parse_device_topic(mqtt_wire.heartbeat_topic("d.2:x")).kind == "heartbeats"
    others = (
        mqtt_wire.ack_topic("dev-1"),
        "beeaudio/v1/devices/a/b/batches",
        "beeaudio/v1/devices/+/batches",
    )
    for other in (*others, "elsewhere/dev-1/batches"):
        assert mqtt_wire.parse_device_topic(other) is None
    batches, heartbeats = mqtt_wire.shared_subscriptions("g1")
    assert batches == "$share/g1/beeaudio/v1/devices/+/batches"
    assert heartbeats == "$share/g1/beeaudio/v1/devices/+/heartbeats"


def test_acks_round_trip_and_anything_else_is_ignored():
    payload = mqtt_wire.ack_payload(request_id="b1", status=200, body={"batch_id": "b1", "accepted": 2})
    assert mqtt_wire.parse_ack(payload) == mqtt_wire.Ack("b1", 200, {"batch_id": "b1", "accepted": 2})
    for junk in (
        b"",
        b"\xff",
        b"[]",
        b'{"schema": "other"}',
        b'{"schema": "beeaudio.ack/1", "status": true}',
    ):
        assert mqtt_wire.parse_ack(junk) is None


def test_broker_urls():
    assert mqtt_wire.broker_address("mqtt://broker") == mqtt_wire.BrokerAddress("broker", 1883, False)
    assert mqtt_wire.broker_address("mqtts://b.example:8884") == mqtt_wire.BrokerAddress(
        "b.example", 8884, True
    )
    for bad in ("http://broker", "mqtt://", "mqtt://u:p@broker", "mqtt://broker/path"):
        with pytest.raises(ValueError):
            mqtt_wire.broker_address(bad)


def test_discovery_object_ids_are_safe_and_distinct():
    assert mqtt_wire.discovery_object_id("north-3") == "beeaudio_north-3"
    a, b = mqtt_wire.discovery_object_id("a.b"), mqtt_wire.discovery_object_id("a:b")
    assert a != b and a.startswith("beeaudio_a_b_")
    assert all(c.isalnum() or c in "_-" for c in a)


def _collector(**options: object) -> object:
    data = {"device": {"device_id": "d", "hive_id": "h"}, "collector": {"token": "t", **options}}
    return config_from_dict(data=data, base=Path("/"))


def test_device_transport_options():
    config = _collector(transport="mqtt", mqtt_url="mqtts://broker")
    assert config.uploads
    config.check_for_run()
    assert not _collector(transport="mqtt", mqtt_url="mqtt://b", url="").collector.url
    assert _collector(url="http://c").uploads and not _collector().uploads
    with pytest.raises(ConfigError, match="needs mqtt_url"):
        _collector(transport="mqtt")
    with pytest.raises(ConfigError, match="mqtt_url must start"):
        _collector(transport="mqtt", mqtt_url="tcp://broker")
    with pytest.raises(ConfigError, match="transport must be one of"):
        _collector(transport="carrier-pigeon")


def test_mqtt_transport_without_paho_is_a_config_error(monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "paho" else real(name, *a)
    )
    with pytest.raises(ConfigError, match="needs paho-mqtt"):
        _collector(transport="mqtt", mqtt_url="mqtt://broker").check_for_run()
    _collector(url="http://collector").check_for_run()  # HTTP needs no MQTT library


def test_an_http_device_runs_without_paho(tmp_path):
    """The agent imports and builds its HTTP uplink in an interpreter where paho-mqtt cannot be imported."""
    import subprocess
    import sys

    script = f"""
import sys
for name in ("paho", "paho.mqtt", "paho.mqtt.client"):
    sys.modules[name] = None  # importing it now fails, as where it is not installed
from pathlib import Path
from beeaudio.device.agent import Agent
from beeaudio.device.config import config_from_dict
from beeaudio.device.outbox import Outbox
device = {{"device_id": "d", "hive_id": "h", "state_dir": {str(tmp_path)!r}}}
collector = {{"url": "http://127.0.0.1:9", "token": "t"}}
config = config_from_dict(data={{"device": device, "collector": collector}}, base=Path("/"))
config.check_for_run()
agent = Agent(config=config)
agent.outbox = Outbox(path=config.outbox_path, max_events=10)
agent._start_uplink()
print(type(agent.uplink.uploader.client).__name__)
agent.uplink.stop()
"""
    run = subprocess.run([sys.executable, "-P", "-c", script], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "CollectorClient"

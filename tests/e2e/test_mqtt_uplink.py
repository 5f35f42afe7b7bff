"""End to end over MQTT: the device agent's uplink (built by the agent from a ``transport = "mqtt"`` config)
uploads through a real Mosquitto to a real collector (``beeaudio collector serve``, uvicorn) on SQLite and on
PostgreSQL, while the broker and then the collector are each killed with SIGKILL and started again. Every
window must arrive exactly once (counted by event id in the database), and the outbox must empty: a batch
leaves it only on the collector's acknowledgement."""

from __future__ import annotations

import json
import secrets
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from beeaudio.collector.launch import RunningCollector, free_port, start_collector
from beeaudio.device.agent import Agent
from beeaudio.device.config import load_config
from beeaudio.device.outbox import Outbox
from tests.fixtures.device import make_events, wait_for, write_config
from tests.fixtures.mqtt import Broker, collector_mqtt_env

pytestmark = pytest.mark.slow

HIVE, DEVICE = "hive-mqtt", "dev-mqtt"


class Collector:
    def __init__(self, *, folder: Path, db_url: str, broker: Broker) -> None:
        self.folder, self.db_url = folder, db_url
        self.port = free_port()
        self.admin = "adm-" + secrets.token_hex(16)
        self.env = {"BEEAUDIO_ADMIN_TOKEN": self.admin, "BEEAUDIO_HOMEASSISTANT": "false",
                    "BEEAUDIO_DATA_DIR": str(folder / "data"), **collector_mqtt_env(broker)}  # fmt: skip
        self.running: RunningCollector | None = None

    def start(self) -> None:
        self.running = start_collector(
            log_path=self.folder / "collector.log", db_url=self.db_url, port=self.port, env=self.env
        )

    def kill(self) -> None:
        assert self.running is not None
        self.running.kill()
        self.running = None

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop(timeout_s=20)
        self.running = None

    def call(self, method: str, path: str, body: object) -> Any:
        request = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=json.dumps(body).encode(),
            method=method,
            headers={"Authorization": f"Bearer {self.admin}", "Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=30) as answer:
            return json.loads(answer.read())


def stored_counts(db_url: str) -> dict[str, int]:
    engine = sa.create_engine(db_url)
    try:
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT event_id, COUNT(*) FROM events GROUP BY event_id")).all()
            beats = conn.execute(sa.text("SELECT COUNT(*) FROM heartbeats")).scalar_one()
    finally:
        engine.dispose()
    return {"__heartbeats__": int(beats), **{event_id: int(n) for event_id, n in rows}}


def test_every_window_arrives_exactly_once_through_broker_and_collector_kills(tmp_path, db_url, broker):
    collector = Collector(folder=tmp_path, db_url=db_url, broker=broker)
    collector.start()
    agent: Agent | None = None
    try:
        collector.call("POST", "/api/v1/hives", {"name": "MQTT hive", "hive_id": HIVE})
        token = collector.call("POST", f"/api/v1/hives/{HIVE}/devices", {"device_id": DEVICE})["token"]
        broker.add_user(DEVICE, token)  # the broker's login: username = device id, password = token
        config = load_config(
            write_config(
                tmp_path / "device.toml",
                {
                    "device": {"device_id": DEVICE, "hive_id": HIVE, "state_dir": str(tmp_path / "state")},
                    "collector": {
                        "transport": "mqtt",
                        "mqtt_url": broker.url,
                        "token": token,
                        "timeout_s": 2.0,
                        "upload_interval_s": 0.2,
                        "backoff_initial_s": 0.2,
                        "backoff_max_s": 1.0,
                        "batch_size": 25,
                        "heartbeat_interval_s": 1.0,
                    },
                },
            )
        )
        config.check_for_run()
        agent = Agent(config=config)
        agent.outbox = Outbox(path=config.outbox_path, max_events=config.outbox.max_events)
        agent._start_uplink()  # the agent's own uplink thread, as `device run` starts it
        assert type(agent.uplink.uploader.client).__name__ == "MqttCollectorClient"
        sent: list[str] = []

        def feed(seconds: float) -> None:
            """New windows keep arriving, 10 every 0.1 s, whatever is down."""
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                events = make_events(10, device_id=DEVICE, hive_id=HIVE, offset=len(sent))
                agent.outbox.add_events(events)
                sent.extend(e.event_id for e in events)
                agent.uplink.wake()
                time.sleep(0.1)

        feed(2.0)
        assert wait_for(lambda: len(stored_counts(db_url)) > 1, timeout=20), "nothing arrived over MQTT"
        broker.kill()  # SIGKILL: the broker is gone, with whatever it held in flight
        feed(3.0)
        assert agent.outbox.depth() > 0  # waiting in the outbox, not lost
        broker.start()
        feed(2.0)
        collector.kill()  # SIGKILL: batches in flight were stored or not; the device cannot know
        feed(3.0)
        assert agent.outbox.depth() > 0  # published, PUBACKed by the broker, but not acknowledged
        collector.start()
        feed(2.0)
        assert wait_for(lambda: agent.outbox.depth() == 0, timeout=120, interval=0.2), (
            f"{agent.outbox.depth()} events still in the outbox; last error: {agent.uplink.last_error}"
        )
        counts = stored_counts(db_url)
        heartbeats = counts.pop("__heartbeats__")
        assert len(sent) == len(set(sent)) > 100
        assert set(counts) == set(sent)  # nothing lost, nothing extra
        assert set(counts.values()) == {1}  # nothing twice
        assert agent.outbox.status().dead_letters == 0
        assert heartbeats > 0  # heartbeats went over MQTT too
    finally:
        if agent is not None and agent.uplink is not None:
            agent.uplink.stop()
            agent.uplink.join(timeout=10)
            agent.uplink.uploader.client.close()
        collector.stop()

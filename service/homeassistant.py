"""Home Assistant over MQTT: each hive's state on its own retained topic, and discovery configs that make
each hive a device with its sensors.

Per hive (``mqtt_wire.hive_state_topic``, retained, JSON): ``state``, ``swarming`` (``ON``/``OFF``, null
while the state is unknown or offline),
``swarm_score`` (0..1) and ``swarm_score_pct``, ``last_seen`` (ISO 8601), ``level_dbfs`` (the mean level of
the latest minute's readings), ``since`` and ``reason``. Every entity reads its own value out of its hive's
topic (``value_template``); no topic is shared between hives, so one hive's update can never reset
another's sensors.

Discovery (``<prefix>/<component>/<object_id>/config``, retained): for each hive a ``sensor`` for the state
(enum), the swarm score (%), last seen (timestamp) and the signal level (dBFS), and a ``binary_sensor``
"swarming", all grouped under one device per hive. Their availability is the collector's
(``mqtt_wire.AVAILABILITY_TOPIC``: ``online`` on connect, ``offline`` as the last will).

Every replica publishes (they read the same database, so they publish the same retained values); a pass
publishes only what changed since this replica's last pass, and everything again after a reconnect (a
broker without persistence forgets retained messages when it restarts).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from beeaudio import __version__
from beeaudio.collector.context import AppContext
from beeaudio.collector.state import NORMAL, SWARM
from beeaudio.collector.store.levels import latest_levels
from beeaudio.collector.store.queries import all_statuses
from beeaudio.core import mqtt_wire

log = logging.getLogger(__name__)

STATES = ("normal", "swarm", "unknown", "offline")


@dataclass(frozen=True)
class Entity:
    component: str  # "sensor" | "binary_sensor"
    key: str  # the part of unique_id and object_id after the hive's
    name: str
    value_template: str
    extra: tuple[tuple[str, Any], ...] = ()


#: What every hive gets in Home Assistant.
ENTITIES = (
    Entity("sensor", "state", "State", "{{ value_json.state }}",
           (("device_class", "enum"), ("options", list(STATES)), ("icon", "mdi:beehive-outline"))),
    Entity("sensor", "swarm_score", "Swarm score", "{{ value_json.swarm_score_pct }}",
           (("unit_of_measurement", "%"), ("state_class", "measurement"), ("icon", "mdi:bee"))),
    Entity("sensor", "last_seen", "Last seen", "{{ value_json.last_seen }}",
           (("device_class", "timestamp"),)),
    Entity("sensor", "signal_level", "Signal level", "{{ value_json.level_dbfs }}",
           (("unit_of_measurement", "dBFS"), ("state_class", "measurement"), ("icon", "mdi:microphone"))),
    Entity("binary_sensor", "swarming", "Swarming", "{{ value_json.swarming }}",
           (("payload_on", "ON"), ("payload_off", "OFF"), ("icon", "mdi:bee-flower"))),
)  # fmt: skip


def hive_payload(*, status: dict[str, Any], level_dbfs: float | None) -> dict[str, Any]:
    """A hive's retained state message, from its status (``queries.status_json``)."""
    score = status.get("swarm_score")
    return {
        "hive_id": status["hive_id"],
        "state": status["state"],
        # Only a hive whose state is known is swarming or not: unknown and offline hives send null, which
        # Home Assistant's template renders as "None" and shows as unknown, never a reassuring "off".
        "swarming": {SWARM: "ON", NORMAL: "OFF"}.get(status["state"]),
        "swarm_score": score,
        "swarm_score_pct": None if score is None else round(100.0 * score, 1),
        "last_seen": status.get("last_seen"),
        "level_dbfs": None if level_dbfs is None else round(level_dbfs, 1),
        "since": status.get("since"),
        "reason": status.get("reason"),
    }


def discovery_configs(*, hive_id: str, hive_name: str, prefix: str) -> dict[str, dict[str, Any]]:
    """``{discovery topic: config}`` for one hive's entities."""
    hive_object = mqtt_wire.discovery_object_id(hive_id)
    device = {
        "identifiers": [hive_object],
        "name": hive_name,
        "manufacturer": "beeaudio",
        "model": "acoustic hive monitor",
        "sw_version": __version__,
    }
    availability = [
        {
            "topic": mqtt_wire.AVAILABILITY_TOPIC,
            "payload_available": mqtt_wire.ONLINE,
            "payload_not_available": mqtt_wire.OFFLINE,
        }
    ]
    configs = {}
    for entity in ENTITIES:
        object_id = f"{hive_object}_{entity.key}"
        config = {
            "name": entity.name,
            "unique_id": object_id,
            "object_id": object_id,
            "state_topic": mqtt_wire.hive_state_topic(hive_id),
            "value_template": entity.value_template,
            "availability": availability,
            "device": device,
            "origin": {"name": "beeaudio", "sw_version": __version__},
            **dict(entity.extra),
        }
        topic = mqtt_wire.discovery_topic(prefix=prefix, component=entity.component, object_id=object_id)
        configs[topic] = config
    return configs


class HomeAssistantPublisher(threading.Thread):
    """Publishes what changed every ``interval_s`` while connected (``connections`` counts connects: a new
    connection publishes everything again)."""

    def __init__(
        self,
        *,
        context: AppContext,
        publish: Callable[..., None],
        connected: threading.Event,
        connections: Callable[[], int],
        prefix: str,
        interval_s: float,
    ) -> None:
        super().__init__(name="beeaudio-homeassistant", daemon=True)
        self.context = context
        self._publish = publish
        self._connected = connected
        self._connections = connections
        self.prefix = prefix
        self.interval_s = interval_s
        self._halt = threading.Event()
        self._sent: dict[str, bytes] = {}  # topic -> the retained payload last published on it
        self._generation = -1
        self.passes = 0

    def stop(self) -> None:
        self._halt.set()

    def run(self) -> None:
        while not self._halt.is_set():
            if self._connected.is_set():
                try:
                    self.publish_once()
                except Exception:  # a database hiccup must not end the publications
                    log.exception("Home Assistant publication failed")
            self._halt.wait(self.interval_s)

    def _retain(self, topic: str, payload: bytes) -> int:
        if self._sent.get(topic) == payload:
            return 0
        self._publish(topic=topic, payload=payload, retain=True)
        self._sent[topic] = payload
        return 1

    def publish_once(self) -> int:
        """One pass; returns the number of messages published."""
        generation = self._connections()
        if generation != self._generation:
            self._sent.clear()
            self._generation = generation
        context = self.context
        statuses = all_statuses(engine=context.engine, defaults=context.defaults, now_ms=context.clock_ms())
        levels = latest_levels(engine=context.engine)
        published = 0
        # Said again each pass: with several replicas, one that stopped said "offline" for all of them.
        self._publish(topic=mqtt_wire.AVAILABILITY_TOPIC, payload=mqtt_wire.ONLINE, retain=True)
        for status in statuses:
            hive_id = status["hive_id"]
            for topic, config in discovery_configs(
                hive_id=hive_id, hive_name=status["name"], prefix=self.prefix
            ).items():
                published += self._retain(topic, json.dumps(config, sort_keys=True).encode("utf-8"))
            payload = hive_payload(status=status, level_dbfs=levels.get(hive_id))
            published += self._retain(
                mqtt_wire.hive_state_topic(hive_id), json.dumps(payload, sort_keys=True).encode("utf-8")
            )
        self.passes += 1
        return published

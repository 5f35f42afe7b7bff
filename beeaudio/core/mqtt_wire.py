"""The MQTT side of the wire contract: topic names, the reply a collector sends, Home Assistant's topics.

:mod:`beeaudio.core.wire` defines what is sent (``beeaudio.batch/1``, ``beeaudio.heartbeat/1``); this
module defines where it goes over MQTT and how the collector answers, so the device
(``beeaudio.device.mqtt_uplink``), the collector (``beeaudio.collector.mqtt_ingest`` and
``beeaudio.collector.homeassistant``), the broker's ACL (docs/collector.md) and the tests read the same
names. Standard library only: the device imports it.

Request and reply. A device publishes a batch (QoS 1) on :func:`batch_topic` and a heartbeat on
:func:`heartbeat_topic`, each with the MQTT 5 properties *correlation data* (the request id: the batch id for
a batch, so every re-send of a batch shares it) and a user property ``authorization`` (``Bearer <device
token>``, the token the HTTP API takes). The collector answers on :func:`ack_topic` of the device with a
``beeaudio.ack/1``: the HTTP status and the JSON body the HTTP API would have answered, only after its
database commit. A broker's PUBACK only means the broker has the message; a batch leaves the device's outbox
on the collector's reply alone, checked exactly as an HTTP answer is (``beeaudio.device.uplink``).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

ACK_SCHEMA = "beeaudio.ack/1"
#: The user property that carries the device token on each publish.
AUTHORIZATION_PROPERTY = "authorization"

TOPIC_ROOT = "beeaudio/v1"
DEVICE_TOPICS = f"{TOPIC_ROOT}/devices"
#: The collector's availability (its last will says ``offline``; ``online`` on every connect), retained.
AVAILABILITY_TOPIC = f"{TOPIC_ROOT}/collector/availability"
ONLINE, OFFLINE = "online", "offline"
#: The group of the collector's shared subscriptions: the broker hands each message to one replica.
DEFAULT_SHARE_GROUP = "beeaudio"
DEFAULT_DISCOVERY_PREFIX = "homeassistant"

_BATCHES, _HEARTBEATS, _ACKS = "batches", "heartbeats", "acks"
#: ``beeaudio/v1/devices/<device id>/<kind>``: device ids never hold ``/ + #`` (``wire.ID_PATTERN``).
_DEVICE_TOPIC = re.compile(rf"^{re.escape(DEVICE_TOPICS)}/([^/+#]+)/({_BATCHES}|{_HEARTBEATS})$")
MQTT_SCHEMES = {"mqtt": 1883, "mqtts": 8883}


def batch_topic(device_id: str) -> str:
    return f"{DEVICE_TOPICS}/{device_id}/{_BATCHES}"


def heartbeat_topic(device_id: str) -> str:
    return f"{DEVICE_TOPICS}/{device_id}/{_HEARTBEATS}"


def ack_topic(device_id: str) -> str:
    return f"{DEVICE_TOPICS}/{device_id}/{_ACKS}"


def shared_subscriptions(group: str = DEFAULT_SHARE_GROUP) -> tuple[str, str]:
    """What every collector replica subscribes to: one copy of each message goes to one replica."""
    return (f"$share/{group}/{DEVICE_TOPICS}/+/{_BATCHES}", f"$share/{group}/{DEVICE_TOPICS}/+/{_HEARTBEATS}")


@dataclass(frozen=True)
class DeviceTopic:
    device_id: str
    kind: str  # "batches" | "heartbeats"

    @property
    def is_batch(self) -> bool:
        return self.kind == _BATCHES


def parse_device_topic(topic: str) -> DeviceTopic | None:
    """The device and kind of a topic a device publishes on, or None for any other topic."""
    match = _DEVICE_TOPIC.match(topic)
    return None if match is None else DeviceTopic(device_id=match.group(1), kind=match.group(2))


def ack_payload(*, request_id: str, status: int, body: dict[str, Any]) -> bytes:
    """A ``beeaudio.ack/1``: what the HTTP API would answer (``status`` and JSON ``body``)."""
    reply = {"schema": ACK_SCHEMA, "request_id": request_id, "status": status, "body": body}
    return json.dumps(reply, separators=(",", ":")).encode("utf-8")


@dataclass(frozen=True)
class Ack:
    request_id: str
    status: int
    body: dict[str, Any]


def parse_ack(payload: bytes) -> Ack | None:
    """A collector's reply, or None for anything else (the device ignores it)."""
    try:
        data = json.loads(payload.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(data, dict) or data.get("schema") != ACK_SCHEMA:
        return None
    request_id, status, body = data.get("request_id"), data.get("status"), data.get("body")
    if not isinstance(request_id, str) or not isinstance(status, int) or isinstance(status, bool):
        return None
    return Ack(request_id=request_id, status=status, body=body if isinstance(body, dict) else {})


@dataclass(frozen=True)
class BrokerAddress:
    host: str
    port: int
    tls: bool


def broker_address(url: str) -> BrokerAddress:
    """``mqtt://host[:1883]`` or ``mqtts://host[:8883]`` (TLS); :class:`ValueError` for anything else."""
    parts = urlsplit(url)
    if parts.scheme not in MQTT_SCHEMES or not parts.hostname:
        raise ValueError(f"a broker URL is mqtt://host[:port] or mqtts://host[:port], got {url!r}")
    if parts.username or parts.password or parts.path not in ("", "/"):
        raise ValueError(f"a broker URL holds no credentials and no path, got {url!r}")
    return BrokerAddress(
        host=parts.hostname, port=parts.port or MQTT_SCHEMES[parts.scheme], tls=parts.scheme == "mqtts"
    )


# -- Home Assistant ----------------------------------------------------------------------------------------
def hive_state_topic(hive_id: str) -> str:
    """Each hive's own retained state topic (never one shared topic: sensors of several hives reading one
    topic would reset each other's values)."""
    return f"{TOPIC_ROOT}/hives/{hive_id}/state"


def discovery_object_id(hive_id: str) -> str:
    """A discovery object id for a hive: Home Assistant allows ``[a-zA-Z0-9_-]`` only, so other characters
    become ``_`` and a digest of the real id keeps two hives that would read alike apart."""
    safe = re.sub(r"[^A-Za-z0-9_-]", "_", hive_id)
    if safe != hive_id:
        safe = f"{safe}_{hashlib.sha256(hive_id.encode()).hexdigest()[:8]}"
    return f"beeaudio_{safe}"


def discovery_topic(*, prefix: str, component: str, object_id: str) -> str:
    return f"{prefix}/{component}/{object_id}/config"

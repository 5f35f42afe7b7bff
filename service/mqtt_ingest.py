"""MQTT ingest: batches and heartbeats from an MQTT broker, stored exactly as ``POST /api/v1/events`` stores
them, and acknowledged on the device's ack topic only after the database commit.

Every replica subscribes with the shared subscriptions of :func:`beeaudio.core.mqtt_wire.shared_subscriptions`
(``$share/<group>/...``): the broker hands each message to one replica of the group, so replicas split the
load and a batch is stored by one of them (and were it stored twice, ``(device_id, event_id)`` is unique).

A message is checked in this order, and refused (counted in :attr:`MqttIngest.counters`, logged, answered
with the HTTP status the API would give, never stored) at the first failure:

1. the topic is a device's batch or heartbeat topic (else: ``malformed``, no answer: there is no one to
   answer);
2. the payload is within ``MAX_BODY_BYTES`` (``MAX_HEARTBEAT_BYTES`` for heartbeats): ``too_large``, 413;
3. the publish carries a device token (user property ``authorization``) that is a registered, not revoked
   device's: ``unauthenticated``, 401. The broker does not tell a subscriber who published, so the token
   is what proves it, whatever the broker's ACL lets through;
4. the token's device is the topic's device: ``forged``, 403;
5. the payload is JSON of the batch contract (``BatchIn`` and :func:`beeaudio.collector.ingest.parse_batch`,
   the HTTP checks): ``malformed`` 422, ``too_large`` 413, ``forged`` 403 (the batch or an event names
   another device) or ``other_hive`` 403 (an event of another hive);
6. stored by :func:`beeaudio.collector.store.ingest.store_batch` (one transaction, idempotent by event
   id): ``unavailable`` 503 when the database cannot take it, ``unknown_hive`` 404.

The broker's PUBACK to this subscriber is sent after that (paho's manual acknowledgement), so a collector
killed mid-batch leaves the message unacknowledged at the broker; the device, which waits for the ack on
its ack topic and not for any PUBACK, sends the batch again after its timeout in any case.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import sqlalchemy.exc
from pydantic import ValidationError

from beeaudio.collector.context import AppContext
from beeaudio.collector.http_errors import status_of
from beeaudio.collector.intake import finish_walk, take_batch, take_heartbeat
from beeaudio.collector.schemas import BatchIn, HeartbeatIn
from beeaudio.collector.store.devices import DeviceIdentity, token_owner
from beeaudio.collector.store.errors import Forbidden, Invalid, StoreError
from beeaudio.collector.tokens import token_digest
from beeaudio.core import mqtt_wire, wire

log = logging.getLogger(__name__)

QOS = 1
#: Why a message was refused: the keys of :attr:`MqttCounters.refused`.
REFUSALS = (
    "malformed",
    "too_large",
    "unauthenticated",
    "forged",
    "other_hive",
    "unknown_hive",
    "unavailable",
)


@dataclass
class MqttCounters:
    """What this replica did with the messages it was handed (for logs and metrics): plain numbers read
    without a lock is fine for a scrape; writes take the lock (several worker threads)."""

    batches_stored: int = 0
    events_accepted: int = 0
    events_duplicate: int = 0
    heartbeats: int = 0
    refused: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REFUSALS, 0))
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **amounts: int) -> None:
        with self._lock:
            for name, amount in amounts.items():
                setattr(self, name, getattr(self, name) + amount)

    def refuse(self, reason: str) -> None:
        with self._lock:
            self.refused[reason] += 1


@dataclass(frozen=True)
class Outcome:
    """The answer to one message: the HTTP status and body the API would give, and the refusal's kind."""

    status: int
    body: dict[str, Any]
    refusal: str | None = None


def _refused(reason: str, status: int, detail: str) -> Outcome:
    return Outcome(status=status, body={"detail": detail}, refusal=reason)


def _validation_detail(exc: ValidationError) -> str:
    """Like the HTTP API's 422 detail (``events.3.window_seconds: ...``): the device reads which event."""
    parts = []
    for error in exc.errors()[:10]:
        where = ".".join(str(p) for p in error.get("loc", ())) or "body"
        parts.append(f"{where}: {error.get('msg', 'invalid')}")
    return "; ".join(parts) or "invalid batch"


def _bearer(properties: Any) -> str:
    for name, value in getattr(properties, "UserProperty", None) or ():
        if name.lower() == mqtt_wire.AUTHORIZATION_PROPERTY and value.startswith("Bearer "):
            return value[len("Bearer ") :].strip()
    return ""


def _request_id(properties: Any) -> str:
    data = getattr(properties, "CorrelationData", None)
    if isinstance(data, bytes):
        return data.decode("utf-8", "replace")[: wire.MAX_BATCH_ID]
    return ""


class MqttIngest:
    """The collector's MQTT connection: ingest on shared subscriptions, acks, availability (last will), and
    :meth:`publish` for others (Home Assistant). Paho's network thread hands messages to a pool of
    ``mqtt_workers`` threads, at most ``4 * mqtt_workers`` unacknowledged at a time (MQTT 5 receive maximum),
    so a slow database slows the broker's delivery to this replica rather than filling memory."""

    def __init__(self, *, context: AppContext) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.context = context
        settings = context.settings
        self.counters = MqttCounters()
        self.connected = threading.Event()
        self.connections = 0  # connects so far: a new one means the broker may have forgotten retained state
        self._address = mqtt_wire.broker_address(settings.mqtt_url)
        self._subscriptions = mqtt_wire.shared_subscriptions(settings.mqtt_share_group)
        self._workers = ThreadPoolExecutor(
            max_workers=settings.mqtt_workers, thread_name_prefix="mqtt-ingest"
        )
        self.client_id = settings.mqtt_client_id or (
            f"beeaudio-collector-{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        )
        self._mqtt = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=mqtt.MQTTv5,
            manual_ack=True,  # PUBACK after the commit, not when the message arrives
        )
        if settings.mqtt_username:
            self._mqtt.username_pw_set(
                settings.mqtt_username, settings.mqtt_password.get_secret_value() or None
            )
        if self._address.tls:
            self._mqtt.tls_set(ca_certs=str(settings.mqtt_ca_file) if settings.mqtt_ca_file else None)
        self._mqtt.will_set(mqtt_wire.AVAILABILITY_TOPIC, mqtt_wire.OFFLINE, qos=QOS, retain=True)
        self._mqtt.reconnect_delay_set(min_delay=1, max_delay=30)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_message = self._on_message
        self._started = False

    # -- lifecycle --------------------------------------------------------------------------------------
    def start(self) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        properties = Properties(PacketTypes.CONNECT)
        properties.ReceiveMaximum = 4 * self.context.settings.mqtt_workers
        # connect_async: a broker that is down at start is retried in the background, like a drop later.
        self._mqtt.connect_async(
            self._address.host, self._address.port, keepalive=30, clean_start=True, properties=properties
        )
        self._mqtt.loop_start()
        self._started = True
        log.info("MQTT: connecting to %s as %s", self.context.settings.mqtt_url, self.client_id)

    def stop(self) -> None:
        if not self._started:
            return
        self._workers.shutdown(wait=True, cancel_futures=False)
        if self.connected.is_set():
            # A clean disconnect sends no last will: say it, so Home Assistant does not show a stopped
            # collector as online (other replicas say "online" again at their next publication).
            self._mqtt.publish(
                mqtt_wire.AVAILABILITY_TOPIC, mqtt_wire.OFFLINE, qos=QOS, retain=True
            ).wait_for_publish(timeout=5)
        self._mqtt.disconnect()
        self._mqtt.loop_stop()
        self._started = False

    def publish(self, *, topic: str, payload: bytes | str, retain: bool = False) -> None:
        """Publish with QoS 1 (queued by paho while the broker is away)."""
        self._mqtt.publish(topic, payload, qos=QOS, retain=retain)

    # -- paho callbacks (its network thread) ------------------------------------------------------------
    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            log.error("MQTT broker %s refused the collector: %s", self.context.settings.mqtt_url, reason_code)
            return
        client.publish(mqtt_wire.AVAILABILITY_TOPIC, mqtt_wire.ONLINE, qos=QOS, retain=True)
        client.subscribe([(topic, QOS) for topic in self._subscriptions])
        self.connections += 1
        self.connected.set()
        log.info(
            "MQTT: connected to %s, subscribed to %s", self.context.settings.mqtt_url, self._subscriptions
        )

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any
    ) -> None:
        self.connected.clear()
        log.warning(
            "MQTT: disconnected from %s (%s); reconnecting", self.context.settings.mqtt_url, reason_code
        )

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        # Shutting down (RuntimeError): left unacknowledged, the broker or the device sends it again.
        with contextlib.suppress(RuntimeError):
            self._workers.submit(self._handle, message)

    # -- one message (a worker thread) ------------------------------------------------------------------
    def _handle(self, message: Any) -> None:
        try:
            topic = mqtt_wire.parse_device_topic(message.topic)
            request_id = _request_id(message.properties)
            if topic is None:
                self.counters.refuse("malformed")
                log.warning(
                    "MQTT: refused a message on %r: not a device's batch or heartbeat topic", message.topic
                )
                return
            token = _bearer(message.properties)
            if topic.is_batch:
                outcome = self.handle_batch(device_id=topic.device_id, payload=message.payload, token=token)
            else:
                outcome = self.handle_heartbeat(
                    device_id=topic.device_id, payload=message.payload, token=token
                )
            if outcome.refusal is not None:
                self.counters.refuse(outcome.refusal)
                log.warning("MQTT: refused a %s on %s (%s, %d): %s", topic.kind, message.topic,
                            outcome.refusal, outcome.status, outcome.body.get("detail"))  # fmt: skip
            if not request_id and "batch_id" in outcome.body:
                request_id = str(outcome.body["batch_id"])
            self.publish(
                topic=mqtt_wire.ack_topic(topic.device_id),
                payload=mqtt_wire.ack_payload(
                    request_id=request_id, status=outcome.status, body=outcome.body
                ),
            )
        except Exception:  # a bug must not kill the worker; the device sends the batch again
            log.exception("MQTT: handling a message on %s failed", message.topic)
        finally:
            self._mqtt.ack(message.mid, message.qos)

    def _sender(self, *, device_id: str, token: str) -> DeviceIdentity | Outcome:
        if not token:
            return _refused("unauthenticated", 401, "the publish carries no device token (user property "
                            f"{mqtt_wire.AUTHORIZATION_PROPERTY!r})")  # fmt: skip
        owner = token_owner(engine=self.context.engine, token_sha256=token_digest(token))
        if owner is None:
            return _refused("unauthenticated", 401, "unknown or revoked device token")
        if owner.device_id != device_id:
            return _refused("forged", 403, f"this token belongs to device {owner.device_id!r}, "
                            f"not to the topic's device {device_id!r}")  # fmt: skip
        return DeviceIdentity(device_id=owner.device_id, hive_id=owner.hive_id)

    def handle_batch(self, *, device_id: str, payload: bytes, token: str) -> Outcome:
        """Check and store one batch published on ``device_id``'s topic; the answer the device gets."""
        context, settings = self.context, self.context.settings
        if len(payload) > settings.max_body_bytes:
            return _refused("too_large", 413, f"the batch is {len(payload)} bytes; the limit is "
                            f"{settings.max_body_bytes}")  # fmt: skip
        sender = self._sender(device_id=device_id, token=token)
        if isinstance(sender, Outcome):
            return sender
        try:
            body = json.loads(payload.decode("utf-8"))
            checked_body = BatchIn.model_validate(body).model_dump(by_alias=True)
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            if isinstance(exc, ValidationError):
                return _refused("malformed", 422, _validation_detail(exc))
            return _refused("malformed", 422, f"body: not a JSON batch ({type(exc).__name__})")
        now_ms = context.clock_ms()
        try:
            result = take_batch(context=context, device=sender, body=checked_body, now_ms=now_ms)
        except Forbidden as exc:
            kind = "other_hive" if ": hive_id " in str(exc) else "forged"
            return _refused(kind, 403, str(exc))
        except StoreError as exc:
            status = status_of(exc)
            kind = {413: "too_large", 404: "unknown_hive", 503: "unavailable"}.get(status, "malformed")
            return _refused(kind, status, str(exc))
        except (sqlalchemy.exc.DBAPIError, OSError) as exc:
            log.error("MQTT: the database cannot take a batch now: %s", exc)
            return _refused(
                "unavailable", 503, "the database cannot take this now; nothing was stored, retry later"
            )
        self.counters.add(
            batches_stored=1, events_accepted=result.accepted, events_duplicate=result.duplicates
        )
        if result.unfinished:
            # As over HTTP: the rest of a long re-evaluation after the answer (here: after the commit).
            threading.Thread(
                target=finish_walk,
                kwargs={"context": context, "hive_id": sender.hive_id, "now_ms": now_ms},
                daemon=True,
            ).start()
        return Outcome(
            status=200,
            body={"batch_id": result.batch_id, "accepted": result.accepted, "duplicates": result.duplicates},
        )

    def handle_heartbeat(self, *, device_id: str, payload: bytes, token: str) -> Outcome:
        """Check and store one heartbeat published on ``device_id``'s topic."""
        settings = self.context.settings
        if len(payload) > settings.max_heartbeat_bytes:
            return _refused("too_large", 413, f"the heartbeat is {len(payload)} bytes; the limit is "
                            f"{settings.max_heartbeat_bytes}")  # fmt: skip
        sender = self._sender(device_id=device_id, token=token)
        if isinstance(sender, Outcome):
            return sender
        try:
            heartbeat = HeartbeatIn.model_validate(json.loads(payload.decode("utf-8")))
        except ValidationError as exc:
            return _refused("malformed", 422, _validation_detail(exc))
        except (ValueError, UnicodeDecodeError, RecursionError) as exc:
            return _refused("malformed", 422, f"body: not a JSON heartbeat ({type(exc).__name__})")
        try:
            take_heartbeat(
                context=self.context, device=sender, heartbeat=heartbeat, now_ms=self.context.clock_ms()
            )
        except Invalid as exc:
            return _refused("malformed", 422, str(exc))
        except (sqlalchemy.exc.DBAPIError, OSError) as exc:
            log.error("MQTT: the database cannot take a heartbeat now: %s", exc)
            return _refused("unavailable", 503, "the database cannot take this now; retry later")
        self.counters.add(heartbeats=1)
        return Outcome(status=200, body={"device_id": device_id, "received": True})


@dataclass
class MqttServices:
    """What ``BEEAUDIO_MQTT_URL`` starts in a collector process: ingest, and Home Assistant's publisher."""

    ingest: MqttIngest
    homeassistant: Any = None  # beeaudio.collector.homeassistant.HomeAssistantPublisher

    def stop(self) -> None:
        if self.homeassistant is not None:
            self.homeassistant.stop()
            self.homeassistant.join(timeout=10)
        self.ingest.stop()


def start_mqtt(*, context: AppContext) -> MqttServices | None:
    """Connect to the broker of ``BEEAUDIO_MQTT_URL`` (None when it is not set) and start ingesting; with
    ``BEEAUDIO_HOMEASSISTANT`` (the default) publish hive states and discovery configs too."""
    settings = context.settings
    if not settings.mqtt_url:
        return None
    ingest = MqttIngest(context=context)
    ingest.start()
    services = MqttServices(ingest=ingest)
    if settings.homeassistant:
        from beeaudio.collector.homeassistant import HomeAssistantPublisher

        services.homeassistant = HomeAssistantPublisher(
            context=context,
            publish=ingest.publish,
            connected=ingest.connected,
            connections=lambda: ingest.connections,
            prefix=settings.homeassistant_prefix,
            interval_s=settings.homeassistant_interval_seconds,
        )
        services.homeassistant.start()
    return services

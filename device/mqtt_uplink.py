"""The collector over MQTT (``[collector] transport = "mqtt"``): the same requests as ``client.py``, answered
by the collector's acknowledgement on the device's own ack topic.

:class:`MqttCollectorClient` has :class:`beeaudio.device.client.CollectorClient`'s ``request`` and ``url``, so
the uploader and its delivery rules (``uplink.py``: an answer is the collector's acknowledgement of *that*
batch with the right counts, or it is retried; one refused event is dead-lettered; 413 halves) are the same
code for both transports. A batch is published with QoS 1 on :func:`beeaudio.core.mqtt_wire.batch_topic`; the
broker's PUBACK only says the broker has it. The answer is the collector's ``beeaudio.ack/1`` on
:func:`~beeaudio.core.mqtt_wire.ack_topic`, sent after its database commit: the HTTP status and body the HTTP
API would have answered. No acknowledgement within ``timeout_s`` is "no answer" (:class:`TransportError`),
so the batch stays in the outbox and is sent again (same batch id; the collector keeps one copy).

Model updates are files fetched over HTTP: ``[collector] url`` is used for them when it is set, and
everything else than batches and heartbeats goes there too.

paho-mqtt is imported only here, and this module only when the transport is ``mqtt``: a device on HTTP needs
no MQTT library (``pip install 'beeaudio-edge[mqtt]'`` adds it).
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beeaudio.core import mqtt_wire
from beeaudio.core.wire import EVENTS_PATH, heartbeat_path
from beeaudio.device.client import CollectorClient, Response, TransportError

log = logging.getLogger(__name__)

QOS = 1  # at least once: the collector is idempotent by (device, event id)


@dataclass
class _Waiter:
    done: threading.Event = field(default_factory=threading.Event)
    ack: mqtt_wire.Ack | None = None
    refused: str = ""  # the broker refused the publish (PUBACK with a failure reason, e.g. not authorised)


class MqttCollectorClient:
    """Batches and heartbeats over an MQTT 5 broker; other requests over HTTP when ``http`` is given."""

    def __init__(
        self,
        *,
        broker_url: str,
        device_id: str,
        token: str,
        username: str = "",
        password: str = "",
        ca_file: Path | None = None,
        timeout_s: float = 30.0,
        http: CollectorClient | None = None,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.broker_url = broker_url
        self.device_id = device_id
        self.timeout_s = timeout_s
        self.http = http
        self._token = token
        self._address = mqtt_wire.broker_address(broker_url)
        self._ack_topic = mqtt_wire.ack_topic(device_id)
        self._lock = threading.Lock()
        self._waiting: dict[str, _Waiter] = {}
        self._by_mid: dict[int, _Waiter] = {}
        self._subscribed = threading.Event()
        self._started = False
        self._mqtt = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2,
            client_id=f"beeaudio-device-{device_id}",
            protocol=mqtt.MQTTv5,
        )
        # Broker-level login: username = device id, password = the device token, unless configured otherwise.
        self._mqtt.username_pw_set(username or device_id, password or token)
        if self._address.tls:
            self._mqtt.tls_set(ca_certs=str(ca_file) if ca_file else None)
        self._mqtt.reconnect_delay_set(min_delay=1, max_delay=30)
        self._mqtt.on_connect = self._on_connect
        self._mqtt.on_disconnect = self._on_disconnect
        self._mqtt.on_subscribe = self._on_subscribe
        self._mqtt.on_message = self._on_message
        self._mqtt.on_publish = self._on_publish

    # -- paho callbacks (its network thread) -----------------------------------------------------------
    def _on_connect(self, client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any) -> None:
        if reason_code.is_failure:
            log.warning("MQTT broker %s refused the connection: %s", self.broker_url, reason_code)
            return
        log.info("connected to MQTT broker %s", self.broker_url)
        # Subscribed again on every connect: the session is clean, so the broker forgets it on a drop.
        client.subscribe(self._ack_topic, qos=QOS)

    def _on_disconnect(
        self, _client: Any, _userdata: Any, _flags: Any, reason_code: Any, _props: Any
    ) -> None:
        self._subscribed.clear()
        log.info("disconnected from MQTT broker %s: %s", self.broker_url, reason_code)

    def _on_subscribe(self, _client: Any, _userdata: Any, _mid: int, codes: Any, _props: Any) -> None:
        if codes and not codes[0].is_failure:
            self._subscribed.set()
        else:
            log.error("the broker refused the subscription to %s: %s (its ACL?)", self._ack_topic, codes)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        ack = mqtt_wire.parse_ack(message.payload)
        if ack is None:
            log.warning("ignoring a message on %s that is not a collector's acknowledgement", message.topic)
            return
        with self._lock:
            waiter = self._waiting.get(ack.request_id)
        if waiter is None:
            return  # the acknowledgement of an attempt given up on: the re-send gets its own
        waiter.ack = ack
        waiter.done.set()

    def _on_publish(self, _client: Any, _userdata: Any, mid: int, reason_code: Any, _props: Any) -> None:
        with self._lock:
            waiter = self._by_mid.pop(mid, None)
        if waiter is not None and reason_code.is_failure:
            waiter.refused = str(reason_code)
            waiter.done.set()

    # -- the client's interface ------------------------------------------------------------------------
    def url(self, path: str) -> str:
        if path == EVENTS_PATH:
            return f"{self.broker_url} {mqtt_wire.batch_topic(self.device_id)}"
        return self.http.url(path) if self.http is not None else f"{self.broker_url} ({path})"

    def close(self) -> None:
        if self._started:
            self._mqtt.disconnect()
            self._mqtt.loop_stop()
            self._started = False

    def _start(self) -> None:
        if not self._started:
            self._mqtt.connect_async(self._address.host, self._address.port, keepalive=30, clean_start=True)
            self._mqtt.loop_start()  # reconnects on its own, with reconnect_delay_set's backoff
            self._started = True

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
        follow_redirects: bool = False,
    ) -> Response:
        """A batch (``POST`` :data:`EVENTS_PATH`) or this device's heartbeat over MQTT; the rest over HTTP.
        Any acknowledgement is a :class:`Response`; none in time is a :class:`TransportError`."""
        if method == "POST" and path == EVENTS_PATH:
            topic, request_id = mqtt_wire.batch_topic(self.device_id), str(body["batch_id"])
        elif method == "POST" and path == heartbeat_path(self.device_id):
            topic, request_id = mqtt_wire.heartbeat_topic(self.device_id), uuid.uuid4().hex
        elif self.http is not None:
            return self.http.request(
                method, path, body=body, headers=headers, follow_redirects=follow_redirects
            )
        else:
            raise TransportError(f"{method} {path} needs HTTP: set [collector] url beside the MQTT broker")
        return self._exchange(topic=topic, request_id=request_id, body=body)

    def _exchange(self, *, topic: str, request_id: str, body: Any) -> Response:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self._start()
        if not self._subscribed.wait(timeout=self.timeout_s):
            raise TransportError(f"not connected to the MQTT broker {self.broker_url} (or not subscribed)")
        properties = Properties(PacketTypes.PUBLISH)
        properties.CorrelationData = request_id.encode("utf-8")
        properties.UserProperty = [(mqtt_wire.AUTHORIZATION_PROPERTY, f"Bearer {self._token}")]
        payload = json.dumps(body, separators=(",", ":")).encode("utf-8")
        waiter = _Waiter()
        with self._lock:
            self._waiting[request_id] = waiter
            info = self._mqtt.publish(topic, payload, qos=QOS, properties=properties)
            self._by_mid[info.mid] = waiter
        try:
            if info.rc != 0:
                raise TransportError(f"publish to {topic} failed: paho error {info.rc}")
            if not waiter.done.wait(timeout=self.timeout_s):
                raise TransportError(
                    f"no acknowledgement from the collector on {self._ack_topic} within {self.timeout_s:g} s"
                )
            if waiter.ack is None:
                raise TransportError(f"the broker refused the publish to {topic}: {waiter.refused}")
            ack = waiter.ack
        finally:
            with self._lock:
                self._waiting.pop(request_id, None)
                self._by_mid.pop(info.mid, None)
        return Response(
            status=ack.status,
            headers={"Content-Type": "application/json"},
            body=json.dumps(ack.body).encode("utf-8"),
        )

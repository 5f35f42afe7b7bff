"""Ingest, the check: a device's batch against the wire contract and the device that sent it.

The rules are the contract's (:mod:`beeaudio.core.wire`: ``ClassificationEvent.validate`` checks every
field, ``unclean_reason`` what no database can store); what this adds is what only the collector knows:
whose token sent the batch, how many events one request may carry, and the collector's clock. Storing a
checked batch is :func:`beeaudio.collector.store.ingest.store_batch`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from beeaudio.collector.store.devices import DeviceIdentity
from beeaudio.collector.store.errors import Forbidden, Invalid, TooLarge
from beeaudio.collector.timeutil import iso_ms, to_ms
from beeaudio.core import wire
from beeaudio.core.wire import ClassificationEvent, EventError


@dataclass(frozen=True)
class CheckedBatch:
    batch_id: str
    events: list[ClassificationEvent]


def parse_batch(
    *, body: Any, device: DeviceIdentity, max_events: int, future_tolerance_ms: int, now_ms: int
) -> CheckedBatch:
    """Check a batch against the event contract and the sending device.

    :class:`Invalid` (422) for a batch that breaks the contract, :class:`Forbidden` (403) for another
    device's or hive's ids, :class:`TooLarge` (413) for more than ``max_events`` events."""
    if not isinstance(body, dict):
        raise Invalid(f"the body must be a JSON object (a {wire.BATCH_SCHEMA})")
    reason = wire.unclean_reason(body)
    if reason:
        raise Invalid(reason)
    if body.get("schema") != wire.BATCH_SCHEMA:
        raise Invalid(
            f"unknown batch schema {body.get('schema')!r}; this collector knows {wire.BATCH_SCHEMA!r}"
        )
    batch_id = body.get("batch_id")
    if not isinstance(batch_id, str) or not 1 <= len(batch_id) <= wire.MAX_BATCH_ID:
        raise Invalid(f"batch_id must be a string of 1..{wire.MAX_BATCH_ID} characters")
    if body.get("device_id") != device.device_id:
        raise Forbidden(f"this token belongs to device {device.device_id!r}, not {body.get('device_id')!r}")
    raw_events = body.get("events")
    if not isinstance(raw_events, list):
        raise Invalid("events must be a list")
    if len(raw_events) > max_events:
        raise TooLarge(f"batch has {len(raw_events)} events; the limit is {max_events} per request")
    earliest_ms = to_ms(wire.EARLIEST_WINDOW)
    parsed: list[ClassificationEvent] = []
    for index, raw in enumerate(raw_events):
        try:
            event = ClassificationEvent.from_json(raw)
        except EventError as exc:
            raise Invalid(f"events[{index}]: {exc}") from exc
        except OverflowError as exc:
            # A valid ISO date whose offset takes it past year 9999 or before year 1 in UTC.
            stamp = raw.get("window_start") if isinstance(raw, dict) else None
            raise Invalid(
                f"events[{index}]: window_start {stamp!r} is not a time in UTC that a date can hold"
            ) from exc
        if event.device_id != device.device_id:
            raise Forbidden(f"events[{index}]: device_id {event.device_id!r} is not this token's device")
        if event.hive_id != device.hive_id:
            raise Forbidden(f"events[{index}]: hive_id {event.hive_id!r} is not this device's hive")
        start_ms = to_ms(event.window_start)
        if start_ms > now_ms + future_tolerance_ms:
            raise Invalid(
                f"events[{index}]: window_start {iso_ms(start_ms)} is in the future "
                f"(collector time {iso_ms(now_ms)}); check the device clock"
            )
        if start_ms < earliest_ms:
            raise Invalid(
                f"events[{index}]: window_start {iso_ms(start_ms)} is before {wire.EARLIEST_WINDOW.year}; "
                "the device clock is not set"
            )
        parsed.append(event)
    return CheckedBatch(batch_id=batch_id, events=parsed)

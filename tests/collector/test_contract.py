"""The collector holds to the wire contract of beeaudio.core.wire: its request models accept exactly the
fields the device sends, and take their limits from the contract."""

from __future__ import annotations

from pydantic import BaseModel

from beeaudio.collector.schemas import BatchIn, EventIn, HeartbeatIn
from beeaudio.core import wire


def _wire_names(model: type[BaseModel]) -> set[str]:
    return {field.alias or name for name, field in model.model_fields.items()}


def test_event_model_has_the_wire_fields() -> None:
    assert _wire_names(EventIn) == set(wire.EVENT_FIELDS)


def test_heartbeat_model_has_the_wire_fields() -> None:
    assert _wire_names(HeartbeatIn) == set(wire.HEARTBEAT_FIELDS)


def test_batch_model_has_the_wire_fields() -> None:
    body = wire.make_batch(device_id="d1", events=[], batch_id="b")
    assert _wire_names(BatchIn) == set(body)


def test_models_take_their_limits_from_the_contract() -> None:
    def limit(model: type[BaseModel], name: str) -> int | None:
        return next(
            (m.max_length for m in model.model_fields[name].metadata if hasattr(m, "max_length")), None
        )

    assert limit(EventIn, "event_id") == wire.MAX_ID
    assert limit(EventIn, "model_name") == wire.MAX_NAME
    assert limit(EventIn, "source_format") == wire.MAX_SOURCE_FORMAT
    assert limit(EventIn, "window_start") == wire.MAX_TIMESTAMP
    assert limit(BatchIn, "batch_id") == wire.MAX_BATCH_ID
    assert limit(HeartbeatIn, "sent_at") == wire.MAX_TIMESTAMP

"""The classification event's JSON: what ``to_json`` writes is what ``dataclasses.asdict`` of the event
gives (with its timestamp as text), it shares nothing with the event, and ``from_json`` reads it back."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime

import pytest

from beeaudio.core.wire import EVENT_SCHEMAS, V2_FIELDS, ClassificationEvent, utc_iso
from tests.fixtures.device import make_events


def _event(**change: object) -> ClassificationEvent:
    """The device tests' event, with a sub-second start, nested extras and a novelty score."""
    (base,) = make_events(1)
    fields = {
        "window_start": datetime(2026, 4, 1, 10, 0, 1, 500000, tzinfo=UTC),
        "extra": {"file": "a.wav", "offset_s": 1.0, "nested": {"list": [1, 2]}},
        "novelty": 1.5,
        "novelty_threshold": 3.0,
    }
    return dataclasses.replace(base, **{**fields, **change})


def _reference(event: ClassificationEvent) -> dict[str, object]:
    data = dataclasses.asdict(event)
    data["window_start"] = utc_iso(event.window_start)
    if not data["extra"]:
        del data["extra"]
    if event.schema != EVENT_SCHEMAS[-1]:
        for name in V2_FIELDS:
            del data[name]
    return data


@pytest.mark.parametrize(
    "change",
    [
        {},
        {"extra": {}},
        {"novelty": None, "novelty_threshold": None},
        {"schema": EVENT_SCHEMAS[0], "quality": None, "novelty": None, "novelty_threshold": None},
    ],
)
def test_to_json_is_the_dataclass_as_a_dict(change: dict[str, object]) -> None:
    event = _event(**change)
    data = event.to_json()
    assert data == _reference(event) and list(data) == list(_reference(event))
    assert ClassificationEvent.from_json(data) == event


def test_to_json_shares_nothing_with_the_event() -> None:
    event = _event()
    data = event.to_json()
    data["probabilities"]["swarm"] = 1.0
    data["extra"]["file"] = "b.wav"
    data["extra"]["nested"]["list"].append(3)
    assert event.probabilities["swarm"] == 0.25 and event.extra == _event().extra

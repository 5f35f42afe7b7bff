"""The classification event: what a hive device sends to the collector for each analysis window.

Versioned JSON (``schema`` = ``beeaudio.event/1``). The event id is derived from what the window *is*
(device, source recording, window offset, model) so that reprocessing the same window after a crash yields
the same id and the collector can drop the duplicate.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

EVENT_SCHEMA = "beeaudio.event/1"
BATCH_SCHEMA = "beeaudio.batch/1"


class EventError(ValueError):
    """An event or batch that does not follow the contract; the message says which field and why."""


def make_event_id(*, device_id: str, source_id: str, window_offset_s: float, model_sha256: str) -> str:
    """Deterministic id of one window's result: same device, recording, offset and model give the same id."""
    key = f"{device_id}\x1f{source_id}\x1f{window_offset_s:.3f}\x1f{model_sha256}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def utc_iso(moment: datetime) -> str:
    """ISO 8601 with an explicit ``Z``; naive datetimes are refused rather than guessed."""
    if moment.tzinfo is None:
        raise EventError("timestamps must be timezone-aware (UTC)")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_utc(text: str) -> datetime:
    try:
        moment = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError as exc:
        raise EventError(f"not an ISO 8601 timestamp: {text!r}") from exc
    if moment.tzinfo is None:
        raise EventError(f"timestamp without a time zone: {text!r}")
    return moment.astimezone(UTC)


@dataclass(frozen=True)
class ClassificationEvent:
    """One analysis window's result. ``swarm_score`` is the probability of the model's swarm label."""

    event_id: str
    hive_id: str
    device_id: str
    model_name: str
    model_version: str
    window_start: datetime
    window_seconds: float
    probabilities: dict[str, float]
    label: str
    swarm_score: float
    level_dbfs: float
    source_format: str
    schema: str = EVENT_SCHEMA
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["window_start"] = utc_iso(self.window_start)
        if not data["extra"]:
            del data["extra"]
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassificationEvent:
        if data.get("schema") != EVENT_SCHEMA:
            raise EventError(f"unknown event schema {data.get('schema')!r}; this side knows {EVENT_SCHEMA!r}")
        try:
            event = cls(
                event_id=str(data["event_id"]),
                hive_id=str(data["hive_id"]),
                device_id=str(data["device_id"]),
                model_name=str(data["model_name"]),
                model_version=str(data["model_version"]),
                window_start=parse_utc(str(data["window_start"])),
                window_seconds=float(data["window_seconds"]),
                probabilities={str(k): float(v) for k, v in dict(data["probabilities"]).items()},
                label=str(data["label"]),
                swarm_score=float(data["swarm_score"]),
                level_dbfs=float(data["level_dbfs"]),
                source_format=str(data["source_format"]),
                extra=dict(data.get("extra") or {}),
            )
        except KeyError as exc:
            raise EventError(f"event is missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise EventError(f"event has a field of the wrong type: {exc}") from exc
        event.validate()
        return event

    def validate(self) -> None:
        """Check the values, not just the types: the collector and the device share these rules."""
        if not self.event_id or len(self.event_id) > 64:
            raise EventError("event_id must be 1..64 characters")
        if not self.probabilities:
            raise EventError("probabilities must name at least one label")
        for name, value in self.probabilities.items():
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise EventError(f"probability of {name!r} is {value}, outside [0, 1]")
        total = sum(self.probabilities.values())
        if abs(total - 1.0) > 0.02:
            raise EventError(f"probabilities sum to {total:.4f}, not 1")
        if self.label not in self.probabilities:
            raise EventError(f"label {self.label!r} is not one of the probabilities' labels")
        if not math.isfinite(self.swarm_score) or not 0.0 <= self.swarm_score <= 1.0:
            raise EventError(f"swarm_score {self.swarm_score} is outside [0, 1]")
        if not math.isfinite(self.window_seconds) or self.window_seconds <= 0:
            raise EventError("window_seconds must be positive")
        if not math.isfinite(self.level_dbfs):
            raise EventError("level_dbfs must be finite")


def make_batch(*, device_id: str, events: list[ClassificationEvent], batch_id: str) -> dict[str, Any]:
    return {
        "schema": BATCH_SCHEMA,
        "batch_id": batch_id,
        "device_id": device_id,
        "events": [event.to_json() for event in events],
    }

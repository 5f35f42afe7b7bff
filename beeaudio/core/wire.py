"""The wire contract between a hive device and the collector, written down once.

Everything a device sends and the collector accepts is defined here: the classification event, the batch
that carries events, the heartbeat, the limits on every field, the screening of values no database can
store, and the API paths. The device builds its requests from these, the collector's request models take
their limits from them and run the same :meth:`ClassificationEvent.validate`, and the demo and the
benchmarks use the same paths, so the two sides cannot drift apart.

Versioned JSON: ``schema`` names the version of each object (``beeaudio.event/2``, ``beeaudio.batch/1``,
``beeaudio.heartbeat/1``). The event id is derived from what the window *is* (device, source recording,
window offset, model), so reprocessing the same window after a crash gives the same id and the collector
drops the duplicate.

Event versions. ``beeaudio.event/2`` adds what the device knows about a window besides the model's output:
``quality`` (the signal check before the model: ``ok``, or why the window holds no usable signal) and
``novelty`` with the bundle's ``novelty_threshold`` (how far the window is from anything the model was
trained on). A window that is not ``ok`` or is unfamiliar is no evidence of any state. ``beeaudio.event/1``
events from older devices are still accepted; their quality and novelty are unknown (``None``) and they
count as evidence, as they always did.
"""

from __future__ import annotations

import copy
import hashlib
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from beeaudio.core.errors import BeeaudioError

EVENT_SCHEMA = "beeaudio.event/2"
#: Event versions this side reads: older devices keep working.
EVENT_SCHEMAS = ("beeaudio.event/1", EVENT_SCHEMA)
BATCH_SCHEMA = "beeaudio.batch/1"
HEARTBEAT_SCHEMA = "beeaudio.heartbeat/1"

# -- API paths -----------------------------------------------------------------------------------------------
API_PREFIX = "/api/v1"
HEALTH_PATH = f"{API_PREFIX}/health"
EVENTS_PATH = f"{API_PREFIX}/events"
HIVES_PATH = f"{API_PREFIX}/hives"
ALERTS_PATH = f"{API_PREFIX}/alerts"
MODELS_PATH = f"{API_PREFIX}/models"


def heartbeat_path(device_id: str) -> str:
    return f"{API_PREFIX}/devices/{device_id}/heartbeat"


def device_model_path(device_id: str) -> str:
    """Which model this device should run (``GET``; ETag / 304 against the installed one)."""
    return f"{API_PREFIX}/devices/{device_id}/model"


def hive_path(hive_id: str, what: str = "") -> str:
    """``/api/v1/hives/{hive_id}`` or one of its parts: ``status``, ``history``, ``events``, ``devices``."""
    return f"{HIVES_PATH}/{hive_id}" + (f"/{what}" if what else "")


# -- limits --------------------------------------------------------------------------------------------------
#: Hive and device ids the collector hands out or accepts when registering.
ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"
MAX_ID = 64  # event_id, hive_id, device_id
MAX_BATCH_ID = 128
MAX_NAME = 100  # model_name, model_version, label names
MAX_LOOPS = 16  # entries of a heartbeat's failing_loops
MAX_LOOP_TROUBLE = 300  # characters of each entry's reason
MAX_SOURCE_FORMAT = 32
MAX_TIMESTAMP = 64
MAX_LABELS = 64
MAX_WINDOW_SECONDS = 3600.0
#: Probabilities are floats from a softmax, dequantised on int8 models: they sum to 1 within this.
PROBABILITY_SUM_TOLERANCE = 0.02
#: Readings from before this are a device whose clock was never set (a Pi without RTC boots in 1970).
EARLIEST_WINDOW = datetime(2000, 1, 1, tzinfo=UTC)
#: Integer counters in a heartbeat fit JSON numbers exactly.
MAX_COUNTER = 2**53
#: Novelty scores and thresholds are distances: finite, non-negative, and far below this.
MAX_NOVELTY = 1e12
#: How deeply a JSON value may nest, counted from the body (a batch's event is at level 3, its ``extra``
#: at 4). Every reader of the value recurses: a value nested hundreds of levels deep is accepted by the
#: JSON parser and then overflows the stack of whoever reads it next (storing, answering, the dashboard).
MAX_JSON_DEPTH = 32

# -- what a model bundle may ask of a device (beeaudio.core.features and beeaudio.core.bundle enforce it) --
# A bundle's manifest names the model and its labels, which go into every event and heartbeat (MAX_NAME,
# MAX_LABELS, name_reason), and its feature configuration, which sets what the device computes for every
# recording. A bundle that passes every other check but asks for more than these is refused on export,
# upload, install and load, instead of breaking every device it reaches.
#: Longest analysis window. The device's own recorder writes 60 s files ([microphone] file_seconds): a
#: longer window finds no recording long enough, and every one is quarantined. (Far under the event's
#: MAX_WINDOW_SECONDS, which older devices' events keep.)
MAX_FEATURE_WINDOW_SECONDS = 60.0
#: Shortest hop between windows: at most 10 windows, i.e. 10 events, per second of audio (the default's 1 s
#: hop makes one). A hop of a few samples made one 30 s file 224,001 windows and events (85 s of work).
MIN_HOP_SECONDS = 0.1
#: Sample rates of the front end: the hive's sound is below 8 kHz (features at 2205 to 16000 Hz in the
#: presets); 48 kHz is the fastest common recorder, and 1 kHz still holds the 200-500 Hz hum.
MIN_SAMPLE_RATE = 1000
MAX_SAMPLE_RATE = 48000
#: FFT frame length: librosa's default, 43 ms at 48 kHz (the presets use 128 to 1024). The mel filterbank,
#: computed when a config is read, is n_mels x (n_fft / 2 + 1): bounded so that reading one stays cheap.
MAX_N_FFT = 2048
#: librosa's default number of mel bands; a cepstrum takes 13 to 40 of them.
MAX_N_MELS = 128
#: Samples of one window's FFT frames (frames per window x n_fft): the device holds them, their spectra and
#: powers as float64 arrays of this size (16 MB each) while it computes a window. The fullband preset over
#: a 60 s window is 1.9 M; a hop_length of a few samples would make it gigabytes.
MAX_WINDOW_FFT_SAMPLES = 2**21

# -- window quality (beeaudio.core.quality computes it) ----------------------------------------------------
QUALITY_OK = "ok"
#: The signal checks' verdicts, worst first: a window gets the first that applies.
QUALITY_NO_SIGNAL = "no_signal"  # digital silence or a level below the floor: a dead or unplugged microphone
QUALITY_DROPOUT = "dropout"  # runs of exact zeros inside the window: a recorder dropping samples
QUALITY_CLIPPED = "clipped"  # samples stuck at full scale: gain too high, or a shorted input
QUALITY_DC_OFFSET = "dc_offset"  # a large constant offset: a failing microphone or preamplifier
#: Not a signal problem: the model takes features relative to the hive's baseline and this device has none
#: yet (``beeaudio device calibrate``); the event's probabilities are uniform and say nothing. Listed with
#: the problems so that every reader that sorts by them counts such a window as no evidence.
QUALITY_UNCALIBRATED = "uncalibrated"
QUALITY_PROBLEMS = (
    QUALITY_NO_SIGNAL,
    QUALITY_DROPOUT,
    QUALITY_CLIPPED,
    QUALITY_DC_OFFSET,
    QUALITY_UNCALIBRATED,
)
QUALITIES = (QUALITY_OK, *QUALITY_PROBLEMS)


class EventError(BeeaudioError, ValueError):
    """An event, batch or heartbeat that breaks the contract; the message says which field and why."""


#: UTF-16 surrogate code points: a JSON string may spell one alone (``"\\udc00"``) and Python keeps it, but no
#: UTF-8 text can hold it, so every answer that carried it would fail to encode.
_SURROGATE = re.compile("[\ud800-\udfff]")


def unclean_reason(value: Any, *, where: str = "body") -> str | None:
    """Why a JSON value cannot be stored and read back by every database, or None: a NUL in a string
    (PostgreSQL text cannot hold it), a lone surrogate (not Unicode text: no answer can encode it), a
    non-finite number (JSON has no NaN), or nesting deeper than :data:`MAX_JSON_DEPTH`. Both sides refuse
    the same values; the reason names where the value is (``body.events[0].extra.note``)."""
    return _unclean(value, where=where, depth=1)


def name_reason(value: Any, *, where: str) -> str | None:
    """Why ``value`` cannot be a model name, a model version or a label, or None. Each goes into every event
    (and the model's name and version into every heartbeat): a string of 1..:data:`MAX_NAME` characters
    that every database can store (:func:`unclean_reason`)."""
    if not isinstance(value, str):
        return f"{where} must be a string, got {type(value).__name__}"
    if not 1 <= len(value) <= MAX_NAME:
        return f"{where} must be 1..{MAX_NAME} characters (it goes into every event), got {len(value)}"
    return unclean_reason(value, where=where)


def _unclean(value: Any, *, where: str, depth: int) -> str | None:
    if isinstance(value, str):
        if "\x00" in value:
            return f"{where} contains a NUL character"
        if _SURROGATE.search(value):
            return f"{where} contains a lone surrogate (\\ud800-\\udfff), which is not Unicode text"
        return None
    if isinstance(value, float):
        return None if math.isfinite(value) else f"{where} is {value}, not a finite number"
    if not isinstance(value, Mapping | list | tuple):
        return None
    if depth > MAX_JSON_DEPTH:
        return f"{where} is nested deeper than {MAX_JSON_DEPTH} levels"
    if isinstance(value, Mapping):
        for key, item in value.items():
            reason = _unclean(key, where=f"{where} key", depth=depth) or _unclean(
                item, where=f"{where}.{key}", depth=depth + 1
            )
            if reason:
                return reason
        return None
    for index, item in enumerate(value):
        reason = _unclean(item, where=f"{where}[{index}]", depth=depth + 1)
        if reason:
            return reason
    return None


# -- time ----------------------------------------------------------------------------------------------------
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


# -- the classification event --------------------------------------------------------------------------------
def make_event_id(*, device_id: str, source_id: str, window_offset_s: float, model_sha256: str) -> str:
    """Deterministic id of one window's result: same device, recording, offset and model give the same id."""
    key = f"{device_id}\x1f{source_id}\x1f{window_offset_s:.3f}\x1f{model_sha256}"
    return hashlib.sha256(key.encode("utf-8")).hexdigest()[:32]


def _check_text(name: str, value: str, limit: int) -> None:
    if not value or len(value) > limit:
        raise EventError(f"{name} must be 1..{limit} characters")


def is_unfamiliar(*, novelty: float | None, threshold: float | None) -> bool:
    """The one rule for an unfamiliar window: a novelty score beyond the bundle's threshold (a window
    without either was not scored, and is not unfamiliar)."""
    return novelty is not None and threshold is not None and novelty > threshold


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
    #: The signal check's verdict (:data:`QUALITIES`); None on a v1 event (not checked).
    quality: str | None = QUALITY_OK
    #: The bundle's novelty score of this window and the threshold above which it is unfamiliar; None when
    #: the bundle has no novelty detector (or on a v1 event).
    novelty: float | None = None
    novelty_threshold: float | None = None

    @property
    def unfamiliar(self) -> bool:
        """The window is beyond the novelty threshold: the model has not heard audio like it."""
        return is_unfamiliar(novelty=self.novelty, threshold=self.novelty_threshold)

    @property
    def is_evidence(self) -> bool:
        """Whether the window may count towards a hive's state: a usable signal the model knows."""
        return self.quality in (None, QUALITY_OK) and not self.unfamiliar

    def to_json(self) -> dict[str, Any]:
        # Field by field, not dataclasses.asdict: its deep copy of every event was most of what the
        # device's outbox spent. The two dicts are copied (the only fields the JSON could share with it).
        data = {name: getattr(self, name) for name in EVENT_FIELDS}
        data["window_start"] = utc_iso(self.window_start)
        data["probabilities"] = dict(self.probabilities)
        if self.extra:  # flat on the device ({"file", "offset_s"}): only nested values need the deep copy
            data["extra"] = {
                key: copy.deepcopy(value) if isinstance(value, dict | list) else value
                for key, value in self.extra.items()
            }
        else:
            del data["extra"]
        if self.schema != EVENT_SCHEMA:  # a v1 event (re-sent by a tool) keeps its v1 shape
            for name in V2_FIELDS:
                data.pop(name, None)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClassificationEvent:
        if not isinstance(data, dict):
            raise EventError(f"an event must be a JSON object, got {type(data).__name__}")
        schema = data.get("schema")
        if schema not in EVENT_SCHEMAS:
            raise EventError(f"unknown event schema {schema!r}; this side knows {', '.join(EVENT_SCHEMAS)}")
        v2 = schema == EVENT_SCHEMA
        if not v2 and any(data.get(name) is not None for name in V2_FIELDS):
            raise EventError(f"{', '.join(V2_FIELDS)} need schema {EVENT_SCHEMA!r}, not {schema!r}")
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
                schema=str(schema),
                extra=dict(data.get("extra") or {}),
                quality=str(data["quality"]) if v2 else None,
                novelty=_optional_float(data.get("novelty")) if v2 else None,
                novelty_threshold=_optional_float(data.get("novelty_threshold")) if v2 else None,
            )
        except KeyError as exc:
            raise EventError(f"event is missing field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            if isinstance(exc, EventError):
                raise
            raise EventError(f"event has a field of the wrong type: {exc}") from exc
        event.validate()
        return event

    def validate(self) -> None:
        """Check the values, not just the types: the collector and the device share these rules."""
        _check_text("event_id", self.event_id, MAX_ID)
        _check_text("hive_id", self.hive_id, MAX_ID)
        _check_text("device_id", self.device_id, MAX_ID)
        _check_text("model_name", self.model_name, MAX_NAME)
        _check_text("model_version", self.model_version, MAX_NAME)
        _check_text("label", self.label, MAX_NAME)
        _check_text("source_format", self.source_format, MAX_SOURCE_FORMAT)
        if not self.probabilities:
            raise EventError("probabilities must name at least one label")
        if len(self.probabilities) > MAX_LABELS:
            raise EventError(f"more than {MAX_LABELS} labels")
        for name, value in self.probabilities.items():
            if not name or len(name) > MAX_NAME:
                raise EventError(f"label names must be 1..{MAX_NAME} characters")
            if not math.isfinite(value) or not 0.0 <= value <= 1.0:
                raise EventError(f"probability of {name!r} is {value}, outside [0, 1]")
        total = sum(self.probabilities.values())
        if abs(total - 1.0) > PROBABILITY_SUM_TOLERANCE:
            raise EventError(f"probabilities sum to {total:.4f}, not 1")
        if self.label not in self.probabilities:
            raise EventError(f"label {self.label!r} is not one of the probabilities' labels")
        if not math.isfinite(self.swarm_score) or not 0.0 <= self.swarm_score <= 1.0:
            raise EventError(f"swarm_score {self.swarm_score} is outside [0, 1]")
        if not math.isfinite(self.window_seconds) or self.window_seconds <= 0:
            raise EventError("window_seconds must be positive")
        if self.window_seconds > MAX_WINDOW_SECONDS:
            raise EventError(f"window_seconds {self.window_seconds} is longer than an hour")
        if not math.isfinite(self.level_dbfs):
            raise EventError("level_dbfs must be finite")
        if self.schema == EVENT_SCHEMA and self.quality not in QUALITIES:
            raise EventError(f"quality {self.quality!r} is not one of {', '.join(QUALITIES)}")
        for name in ("novelty", "novelty_threshold"):
            value = getattr(self, name)
            if value is not None and not (math.isfinite(value) and 0.0 <= value <= MAX_NOVELTY):
                raise EventError(f"{name} {value} must be a finite number in [0, {MAX_NOVELTY:g}] or null")
        if (self.novelty is None) != (self.novelty_threshold is None):
            raise EventError("novelty and novelty_threshold come together: give both or neither")
        if self.novelty_threshold is not None and self.novelty_threshold <= 0:
            raise EventError("novelty_threshold must be positive")


def _optional_float(value: Any) -> float | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise TypeError(f"expected a number, got {value!r}")
    return float(value)


# -- the batch -----------------------------------------------------------------------------------------------
def batch_id_of(event_ids: Sequence[str]) -> str:
    """Deterministic from the content: a retried batch keeps its id."""
    return hashlib.sha256("\n".join(event_ids).encode()).hexdigest()[:32]


def batch_body(
    *, device_id: str, events: Sequence[Mapping[str, Any]], batch_id: str | None = None
) -> dict[str, Any]:
    """A ``beeaudio.batch/1`` from events already in their JSON form (the device's outbox keeps them so)."""
    return {
        "schema": BATCH_SCHEMA,
        "batch_id": batch_id or batch_id_of([str(e["event_id"]) for e in events]),
        "device_id": device_id,
        "events": list(events),
    }


def make_batch(
    *, device_id: str, events: Sequence[ClassificationEvent], batch_id: str | None = None
) -> dict[str, Any]:
    return batch_body(device_id=device_id, events=[event.to_json() for event in events], batch_id=batch_id)


# -- the heartbeat -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Heartbeat:
    """A device's health, sent every ``heartbeat_interval_s``: backlog, outbox, dropped readings, model, disk,
    and which of its loops are failing.

    ``stage_ms`` is the mean time per window of each analysis stage (decode, features, inference)."""

    sent_at: datetime
    uptime_s: float
    backlog_files: int = 0
    outbox_depth: int = 0
    dropped_events: int = 0
    model_name: str | None = None
    model_version: str | None = None
    disk_free_bytes: int = 0
    stage_ms: dict[str, float] = field(default_factory=dict)
    #: The agent's loops (analysis, upload, heartbeat, model poll, recorder) that are failing or not
    #: running, each with why; empty when all is well. Absent from heartbeats of older agents.
    failing_loops: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["sent_at"] = utc_iso(self.sent_at)
        return {"schema": HEARTBEAT_SCHEMA, **data}


#: Field names of a heartbeat on the wire (the collector's model must accept exactly these, plus extras).
HEARTBEAT_FIELDS = ("schema", *(f.name for f in fields(Heartbeat)))
#: Field names of an event on the wire.
EVENT_FIELDS = tuple(f.name for f in fields(ClassificationEvent))
#: The fields ``beeaudio.event/2`` added to ``beeaudio.event/1``.
V2_FIELDS = ("quality", "novelty", "novelty_threshold")
ID_RE = re.compile(ID_PATTERN)

"""Request and response bodies of the HTTP API (v1); the contract itself is ``beeaudio.core.wire``.

The event, batch and heartbeat models describe the wire format for OpenAPI and do the type checks, with
every limit taken from :mod:`beeaudio.core.wire`; the value rules (probabilities sum to 1, label among
them, ...) are ``ClassificationEvent.validate``, the same code the device runs. A test holds the field
names to ``wire.EVENT_FIELDS`` / ``wire.HEARTBEAT_FIELDS``.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator
from pydantic_core import PydanticCustomError

from beeaudio.collector.state import REASONS
from beeaudio.collector.store.alerts import ALERT_KINDS
from beeaudio.core import wire

#: A heartbeat's disk size: a signed 64-bit integer (wire.py sets no limit for byte counts).
MAX_BYTES = 2**63 - 1
#: Hive names (the ``hives.name`` column).
MAX_HIVE_NAME = 200


class _In(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")


class _ScreenedIn(_In):
    """An admin body screened whole by ``wire.unclean_reason`` before its fields are read: a NUL in any
    string (an id PostgreSQL would be asked to compare, a parameter name) is a 422 naming the field. Event
    batches and heartbeats are screened by their handlers, against the same rule."""

    @model_validator(mode="before")
    @classmethod
    def _screen(cls, data: Any) -> Any:
        reason = wire.unclean_reason(data)
        if reason:
            raise PydanticCustomError("unclean", reason)
        return data


class EventIn(_In):
    schema_: Literal[wire.EVENT_SCHEMAS] = Field(alias="schema")
    event_id: str = Field(min_length=1, max_length=wire.MAX_ID)
    hive_id: str = Field(min_length=1, max_length=wire.MAX_ID)
    device_id: str = Field(min_length=1, max_length=wire.MAX_ID)
    model_name: str = Field(min_length=1, max_length=wire.MAX_NAME)
    model_version: str = Field(min_length=1, max_length=wire.MAX_NAME)
    window_start: str = Field(
        description="ISO 8601 UTC, e.g. 2026-05-01T12:00:00.000Z", max_length=wire.MAX_TIMESTAMP
    )
    window_seconds: float
    probabilities: dict[str, float]
    label: str = Field(min_length=1, max_length=wire.MAX_NAME)
    swarm_score: float
    level_dbfs: float
    source_format: str = Field(min_length=1, max_length=wire.MAX_SOURCE_FORMAT)
    extra: dict[str, Any] | None = None
    # beeaudio.event/2 (absent from v1 events; ClassificationEvent.from_json refuses them on v1).
    quality: Literal[wire.QUALITIES] | None = None
    novelty: float | None = Field(default=None, ge=0, le=wire.MAX_NOVELTY)
    novelty_threshold: float | None = Field(default=None, gt=0, le=wire.MAX_NOVELTY)


class BatchIn(_In):
    schema_: Literal[wire.BATCH_SCHEMA] = Field(alias="schema")
    batch_id: str = Field(min_length=1, max_length=wire.MAX_BATCH_ID)
    device_id: str = Field(min_length=1, max_length=wire.MAX_ID)
    events: list[EventIn]


class BatchOut(BaseModel):
    """The collector's acknowledgement of a batch: sent only once the batch is durably committed."""

    batch_id: str = Field(description="the batch_id of the request")
    accepted: int = Field(description="events stored by this request")
    duplicates: int = Field(description="events of the batch that were stored already (or twice in it)")


class FieldErrorOut(BaseModel):
    loc: list[str]
    msg: str
    type: str


class ErrorOut(BaseModel):
    """Every refusal: ``detail`` says what is wrong (and names the field); a 422 from the request checks
    also lists ``errors`` per field."""

    detail: str
    errors: list[FieldErrorOut] | None = None


class HeartbeatOut(BaseModel):
    device_id: str
    received: bool


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="allow")

    schema_: Literal[wire.HEARTBEAT_SCHEMA] = Field(alias="schema")
    sent_at: str = Field(max_length=wire.MAX_TIMESTAMP)
    uptime_s: float | None = None
    backlog_files: int | None = Field(default=None, ge=0, le=wire.MAX_COUNTER)
    outbox_depth: int | None = Field(default=None, ge=0, le=wire.MAX_COUNTER)
    dropped_events: int | None = Field(default=None, ge=0, le=wire.MAX_COUNTER)
    model_name: str | None = Field(default=None, max_length=wire.MAX_NAME)
    model_version: str | None = Field(default=None, max_length=wire.MAX_NAME)
    disk_free_bytes: int | None = Field(default=None, ge=0, le=MAX_BYTES)
    stage_ms: dict[str, float] | None = None
    failing_loops: dict[str, Annotated[str, Field(max_length=wire.MAX_LOOP_TROUBLE)]] | None = Field(
        default=None, max_length=wire.MAX_LOOPS
    )


class HiveIn(_ScreenedIn):
    name: str = Field(min_length=1, max_length=MAX_HIVE_NAME)
    hive_id: str | None = Field(default=None, pattern=wire.ID_PATTERN)
    state_params: dict[str, float] | None = None


class ParamsIn(_ScreenedIn):
    state_params: dict[str, float]


class DeviceIn(_ScreenedIn):
    device_id: str | None = Field(default=None, pattern=wire.ID_PATTERN)


class DeviceOut(BaseModel):
    device_id: str
    hive_id: str
    token: str = Field(description="the device's bearer token, shown only in this answer")


class DeviceStatusOut(BaseModel):
    """A device and its last heartbeat; never its token."""

    device_id: str
    hive_id: str
    created_at: str | None
    revoked_at: str | None
    last_seen: str | None
    last_heartbeat: str | None
    heartbeat: dict[str, Any] | None


class RevokedOut(BaseModel):
    device_id: str
    revoked: bool


class PublishIn(_ScreenedIn):
    hive_id: str | None = Field(default=None, max_length=wire.MAX_ID)


class PublishOut(BaseModel):
    model_id: str
    hive_id: str | None
    published_at: str


class WindowOut(BaseModel):
    """The readings of the hive's current window, by kind (every reading is exactly one)."""

    seconds: float = Field(description="how far back the window reached (smoothing, or the look-back)")
    readings: int = Field(description="every window received")
    evidence: int = Field(description="a usable signal the model knows: the only ones that count")
    no_signal: int = Field(description="no signal: a dead or unplugged microphone")
    poor_signal: int = Field(description="clipped, dropping out or with a large DC offset")
    unfamiliar: int = Field(description="a usable signal beyond the model's novelty threshold")


class HiveStatus(BaseModel):
    hive_id: str
    name: str
    state: Literal["normal", "swarm", "unknown", "offline"]
    confidence: float
    since: str | None
    last_seen: str | None
    last_event: str | None
    model_version: str | None
    swarm_score: float | None = Field(
        description="smoothed swarm score of the window's evidence windows; null when the state is unknown "
        "for want of usable readings (too few, no signal, unfamiliar)"
    )
    n_window: int = Field(description="evidence windows in the window")
    counts: dict[str, int] = Field(description="winning labels of the window's evidence windows")
    reason: Literal[REASONS] | None = Field(description="why the state is unknown (null otherwise)")
    reason_text: str | None = Field(description="the reason in words, with the window's numbers")
    window: WindowOut
    params: dict[str, float | int]
    created_at: str | None = None


class HistoryBucket(BaseModel):
    start: str
    n: int
    counts: dict[str, int]
    mean_probabilities: dict[str, float]
    mean_swarm_score: float
    n_evidence: int
    n_no_signal: int
    n_poor_signal: int
    n_unfamiliar: int
    mean_evidence_swarm_score: float | None


class HistoryOut(BaseModel):
    hive_id: str
    bucket_seconds: int
    start: str
    end: str
    buckets: list[HistoryBucket]


class EventOut(BaseModel):
    """An event as stored, with when it arrived (``extra`` only when the device sent one)."""

    model_config = ConfigDict(populate_by_name=True)

    schema_: Literal[wire.EVENT_SCHEMAS] = Field(alias="schema")
    event_id: str
    hive_id: str
    device_id: str
    model_name: str
    model_version: str
    window_start: str
    window_seconds: float
    probabilities: dict[str, float]
    label: str
    swarm_score: float
    level_dbfs: float
    source_format: str
    received_at: str | None
    quality: str | None = None
    novelty: float | None = None
    novelty_threshold: float | None = None
    extra: dict[str, Any] | None = None


class EventPageOut(BaseModel):
    hive_id: str
    events: list[EventOut]
    next_cursor: str | None = Field(description="hand it back as `cursor` for the next page; null: last page")


class AlertOut(BaseModel):
    alert_id: str
    hive_id: str
    kind: Literal[ALERT_KINDS]
    at: str
    created_at: str
    details: dict[str, Any]


class ModelOut(BaseModel):
    model_id: str
    model_name: str
    model_version: str
    sha256: str = Field(description="sha256 of the bundle file")
    size: int
    model_sha256: str | None = Field(default=None, description="sha256 of model.tflite in it")
    uploaded_at: str | None = None


class ModelListed(ModelOut):
    published_to: list[str] = Field(description="hive ids, or * for every hive")


class DeviceModelOut(BaseModel):
    model_id: str
    model_name: str
    model_version: str
    sha256: str
    size: int
    download_url: str


class HealthOut(BaseModel):
    status: str
    db: str
    version: str
    schema_revision: str | None = None

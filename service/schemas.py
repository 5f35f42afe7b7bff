"""Request and response bodies of the HTTP API (v1); see /tmp contract mirrored in docs/collector.md.

The event and batch models describe the wire format for OpenAPI and do the type checks; the value rules
(probabilities sum to 1, label among them, ...) are ``beeaudio.core.wire.ClassificationEvent.validate``, the
same code the device runs.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,63}$"


class _In(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")


class EventIn(_In):
    model_config = ConfigDict(allow_inf_nan=False, extra="forbid")

    schema_: Literal["beeaudio.event/1"] = Field(alias="schema")
    event_id: str = Field(min_length=1, max_length=64)
    hive_id: str = Field(min_length=1, max_length=64)
    device_id: str = Field(min_length=1, max_length=64)
    model_name: str = Field(min_length=1, max_length=100)
    model_version: str = Field(min_length=1, max_length=100)
    window_start: str = Field(description="ISO 8601 UTC, e.g. 2026-05-01T12:00:00.000Z", max_length=64)
    window_seconds: float
    probabilities: dict[str, float]
    label: str = Field(min_length=1, max_length=100)
    swarm_score: float
    level_dbfs: float
    source_format: str = Field(min_length=1, max_length=32)
    extra: dict[str, Any] | None = None


class BatchIn(_In):
    schema_: Literal["beeaudio.batch/1"] = Field(alias="schema")
    batch_id: str = Field(min_length=1, max_length=128)
    device_id: str = Field(min_length=1, max_length=64)
    events: list[EventIn]


class BatchOut(BaseModel):
    batch_id: str
    accepted: int
    duplicates: int


class HeartbeatIn(BaseModel):
    model_config = ConfigDict(allow_inf_nan=False, extra="allow")

    schema_: Literal["beeaudio.heartbeat/1"] = Field(alias="schema")
    sent_at: str = Field(max_length=64)
    uptime_s: float | None = None
    backlog_files: int | None = Field(default=None, ge=0, le=2**53)
    outbox_depth: int | None = Field(default=None, ge=0, le=2**53)
    dropped_events: int | None = Field(default=None, ge=0, le=2**53)
    model_name: str | None = Field(default=None, max_length=100)
    model_version: str | None = Field(default=None, max_length=100)
    disk_free_bytes: int | None = Field(default=None, ge=0, le=2**63 - 1)
    stage_ms: dict[str, float] | None = None


class HiveIn(_In):
    name: str = Field(min_length=1, max_length=200)
    hive_id: str | None = Field(default=None, pattern=ID_PATTERN)
    state_params: dict[str, float] | None = None


class ParamsIn(_In):
    state_params: dict[str, float]


class DeviceIn(_In):
    device_id: str | None = Field(default=None, pattern=ID_PATTERN)


class DeviceOut(BaseModel):
    device_id: str
    hive_id: str
    token: str


class PublishIn(_In):
    hive_id: str | None = None


class HiveStatus(BaseModel):
    hive_id: str
    name: str
    state: Literal["normal", "swarm", "unknown", "offline"]
    confidence: float
    since: str | None
    last_seen: str | None
    last_event: str | None
    model_version: str | None
    swarm_score: float | None
    n_window: int
    counts: dict[str, int]
    params: dict[str, float | int]
    created_at: str | None = None


class HistoryBucket(BaseModel):
    start: str
    n: int
    counts: dict[str, int]
    mean_probabilities: dict[str, float]
    mean_swarm_score: float


class HistoryOut(BaseModel):
    hive_id: str
    bucket_seconds: int
    start: str
    end: str
    buckets: list[HistoryBucket]


class AlertOut(BaseModel):
    alert_id: str
    hive_id: str
    kind: Literal["swarm_started", "swarm_ended", "hive_offline", "hive_back"]
    at: str
    created_at: str
    details: dict[str, Any]


class ModelOut(BaseModel):
    model_id: str
    model_name: str
    model_version: str
    sha256: str
    size: int
    model_sha256: str | None = None
    uploaded_at: str | None = None


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

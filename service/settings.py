"""Collector settings, read from ``BEEAUDIO_*`` environment variables (or passed explicitly in tests).

The admin and read secrets are the settings that can make a deployment unsafe, so
:func:`resolve_admin_token` and :func:`resolve_read_token` refuse weak values
(:func:`beeaudio.collector.secret_rules.secret_weakness`: short, a default, mostly words or sequences, a
repetition) unless the collector runs in the explicit ``local`` mode, where an unset admin token is
generated, kept in a file (so a restart keeps the same token) and shown.
"""

from __future__ import annotations

import logging
import os
import secrets
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict
from sqlalchemy.engine import make_url

from beeaudio.collector.secret_rules import MIN_SECRET_LENGTH, secret_weakness
from beeaudio.collector.state import StateParams
from beeaudio.core.errors import EXIT_USAGE, BeeaudioError

log = logging.getLogger(__name__)

_GENERATE = "python -c 'import secrets; print(secrets.token_urlsafe(32))'"


class SettingsError(BeeaudioError, RuntimeError):
    """The settings would make the collector unsafe or unusable; the message says what to change."""

    exit_code = EXIT_USAGE


class Settings(BaseSettings):
    """Every knob of the collector. Hive-state defaults apply to hives that do not override them."""

    model_config = SettingsConfigDict(env_prefix="BEEAUDIO_", extra="ignore")

    database_url: str = "sqlite:///beeaudio-collector.db"
    mode: Literal["production", "local"] = "production"
    admin_token: SecretStr = SecretStr("")
    read_token: SecretStr = SecretStr("")
    #: Where uploaded model bundles (and, in local mode, a generated admin token) are kept.
    data_dir: Path | None = None
    #: Comma-separated webhook URLs that receive every alert as JSON.
    webhooks: str = ""

    # Ingest limits.
    max_batch_events: int = Field(default=1000, ge=1)
    max_body_bytes: int = Field(default=2_000_000, ge=1024)
    max_model_bytes: int = Field(default=64_000_000, ge=1024)
    #: A heartbeat is a few hundred bytes of health figures; this bounds what one may store.
    max_heartbeat_bytes: int = Field(default=16_384, ge=1024)
    #: Heartbeats kept per device besides its latest (older ones are deleted as new ones arrive).
    heartbeat_history: int = Field(default=100, ge=1, le=100_000)
    #: A client that sends nothing of its request body for this long gets 408 (a stalled upload).
    body_read_timeout_seconds: float = Field(default=30.0, gt=0)
    #: How far in the future (device clock ahead of ours) a window may start and still be accepted.
    future_tolerance_seconds: float = Field(default=300.0, ge=0)

    # Model uploads are loaded and self-tested in a child process (beeaudio.core.sandbox) before they are
    # kept; false keeps them after the file checks alone (a collector without a TF-Lite runtime).
    model_check: bool = True
    model_check_timeout_seconds: float = Field(default=60.0, gt=0)
    model_check_memory_mb: int = Field(default=1024, ge=0)
    #: The child's interpreter (default: the collector's own), e.g. a virtualenv with the TF-Lite runtime
    #: the devices run (tflite-runtime 2.14 on 32-bit Raspberry Pi OS), so the check is theirs.
    model_check_python: str | None = None

    # Rollups: the width of the stored per-device time buckets that history and state are computed from.
    bucket_seconds: int = Field(default=60, ge=1, le=3600)

    # Hive-state defaults: the numbers are StateParams' own (written once, there), so the environment
    # can change them but a code default cannot differ from the state machine's. See docs/collector.md.
    smoothing_seconds: float = Field(default=StateParams.smoothing_seconds, gt=0)
    enter_swarm: float = Field(default=StateParams.enter_swarm, ge=0, le=1)
    exit_swarm: float = Field(default=StateParams.exit_swarm, ge=0, le=1)
    confirm_buckets: int = Field(default=StateParams.confirm_buckets, ge=1)
    min_events: int = Field(default=StateParams.min_events, ge=1)
    offline_after_seconds: float = Field(default=StateParams.offline_after_seconds, gt=0)
    max_lookback_seconds: float = Field(default=StateParams.max_lookback_seconds, gt=0)
    no_signal_fraction: float = Field(default=StateParams.no_signal_fraction, gt=0, le=1)
    silent_min_events: int = Field(default=StateParams.silent_min_events, ge=1)
    unfamiliar_fraction: float = Field(default=StateParams.unfamiliar_fraction, gt=0, le=1)

    # Background work.
    sweep_interval_seconds: float = Field(default=15.0, gt=0)
    webhook_timeout_seconds: float = Field(default=5.0, gt=0)
    webhook_max_attempts: int = Field(default=8, ge=1)
    webhook_backoff_seconds: float = Field(default=2.0, gt=0)
    webhook_backoff_max_seconds: float = Field(default=600.0, gt=0)
    background_tasks: bool = True

    # Retention (service/retention.py): raw events dated more than this many days ago are removed (rollups,
    # steps, states and alerts are kept for ever); unset keeps every event.
    retention_days: float | None = Field(default=None, gt=0)
    #: How often one collector process runs the retention job (and, on PostgreSQL, makes next weeks'
    #: partitions).
    retention_interval_seconds: float = Field(default=3600.0, gt=0)
    #: Rows per delete transaction where rows are deleted (SQLite; PostgreSQL's default partition).
    retention_batch_rows: int = Field(default=5000, ge=1, le=1_000_000)

    # MQTT (service/mqtt_ingest.py, service/homeassistant.py; docs/collector.md, "MQTT"): off while
    # mqtt_url is empty. mqtt://host[:1883] or mqtts://host[:8883] (TLS, mqtt_ca_file or the system's CAs).
    mqtt_url: str = Field(default="", pattern=r"^(mqtts?://[^/:@\s]+(:[0-9]{1,5})?/?)?$")
    mqtt_username: str = ""
    mqtt_password: SecretStr = SecretStr("")
    mqtt_ca_file: Path | None = None
    #: Default: host name, process id and a random suffix (unique per replica).
    mqtt_client_id: str = ""
    #: The shared-subscription group ($share/<group>/...): replicas in one group split the devices' messages.
    mqtt_share_group: str = Field(default="beeaudio", pattern=r"^[A-Za-z0-9_-]{1,64}$")
    #: Threads storing MQTT batches in parallel (and 4x this many unacknowledged messages at a time).
    mqtt_workers: int = Field(default=4, ge=1, le=64)
    #: Publish hive states and discovery configs for Home Assistant (needs mqtt_url).
    homeassistant: bool = True
    homeassistant_prefix: str = Field(default="homeassistant", pattern=r"^[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)*$")
    homeassistant_interval_seconds: float = Field(default=15.0, gt=0)

    def state_defaults(self) -> StateParams:
        """The hive-state parameters of hives that do not override them; :class:`ParamsError` if they
        cannot work together (e.g. ``exit_swarm >= enter_swarm``)."""
        defaults = StateParams(
            smoothing_seconds=self.smoothing_seconds,
            enter_swarm=self.enter_swarm,
            exit_swarm=self.exit_swarm,
            confirm_buckets=self.confirm_buckets,
            min_events=self.min_events,
            offline_after_seconds=self.offline_after_seconds,
            max_lookback_seconds=self.max_lookback_seconds,
            no_signal_fraction=self.no_signal_fraction,
            silent_min_events=self.silent_min_events,
            unfamiliar_fraction=self.unfamiliar_fraction,
        )
        defaults.check()
        return defaults

    def webhook_urls(self) -> list[str]:
        return [url.strip() for url in self.webhooks.split(",") if url.strip()]

    def resolved_data_dir(self) -> Path:
        """``data_dir``, or a folder next to the SQLite file, or ``./beeaudio-data``."""
        if self.data_dir is not None:
            return Path(self.data_dir)
        sqlite_file = sqlite_path(self.database_url)
        if sqlite_file is not None:
            return sqlite_file.parent / (sqlite_file.name + ".data")
        return Path("beeaudio-data")

    def admin_token_file(self) -> Path:
        """Where local mode keeps its generated admin token (next to the SQLite db when there is one)."""
        sqlite_file = sqlite_path(self.database_url)
        if sqlite_file is not None:
            return sqlite_file.parent / (sqlite_file.name + ".admin-token")
        return self.resolved_data_dir() / "admin-token"


def sqlite_path(url: str) -> Path | None:
    """The database file of a ``sqlite:///`` URL; None for other databases and in-memory SQLite."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


def resolve_admin_token(settings: Settings) -> tuple[str, bool]:
    """The admin token to use and whether it was generated now.

    Production refuses weak secrets. Local mode with no token reuses the token file or writes a new one
    (mode 0600), so the beekeeper's scripts keep working across restarts.
    """
    token = settings.admin_token.get_secret_value()
    weakness = secret_weakness(token)
    if weakness is None:
        return token, False
    if settings.mode != "local":
        raise SettingsError(
            f"BEEAUDIO_ADMIN_TOKEN is {'not set' if not token else 'weak: ' + weakness}; set a random secret "
            f"of at least {MIN_SECRET_LENGTH} characters (e.g. {_GENERATE}) or run with BEEAUDIO_MODE=local "
            "for a demo"
        )
    if token:
        log.warning("local mode: using a weak admin token (%s); never expose this collector", weakness)
        return token, False
    path = settings.admin_token_file()
    if path.is_file():
        existing = path.read_text(encoding="utf-8").strip()
        if existing:
            return existing, False
    path.parent.mkdir(parents=True, exist_ok=True)
    token = secrets.token_urlsafe(32)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(token + "\n")
    log.warning("local mode: generated an admin token, written to %s", path)
    return token, True


def resolve_read_token(settings: Settings, *, admin_token: str) -> str:
    """The read token, or "" when none is set. When set it is held to the admin token's rules (it reads
    every hive's data), and it must differ from the admin token (else the admin token reads as admin)."""
    token = settings.read_token.get_secret_value()
    if not token:
        return ""
    if token == admin_token:
        raise SettingsError("BEEAUDIO_READ_TOKEN is the admin token; give it a secret of its own")
    weakness = secret_weakness(token)
    if weakness is None:
        return token
    if settings.mode != "local":
        raise SettingsError(
            f"BEEAUDIO_READ_TOKEN is weak: {weakness}; set a random secret of at least {MIN_SECRET_LENGTH} "
            f"characters (e.g. {_GENERATE}), or leave it unset"
        )
    log.warning("local mode: using a weak read token (%s); never expose this collector", weakness)
    return token

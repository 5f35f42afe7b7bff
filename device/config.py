"""The agent's configuration: a TOML file (``tomllib``) read into frozen dataclasses with defaults.

Every option is explained in ``device/device.example.toml``. Unknown sections or keys are an error that
names them (a typo must not silently fall back to a default), and so is a value of the wrong type.
Relative paths are taken relative to the folder of the configuration file.

The other way, :func:`config_to_toml` and :func:`write_config` write a configuration that
:func:`load_config` reads back as it was: for whoever provisions devices (the demo, tests, a fleet's
tooling) without building TOML by string concatenation. ``tomllib`` only reads and no TOML writer is a
dependency, so the serialiser here covers exactly the value types the options have.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import math
import re
import tomllib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from beeaudio.core.fsio import write_text_atomic

DEFAULT_CONFIG_PATH = Path("/etc/beeaudio/device.toml")
DEFAULT_STATE_DIR = Path("/var/lib/beeaudio")

SOURCE_KINDS = ("spool", "microphone", "files")
AFTER_POLICIES = ("delete", "archive", "keep")
TRANSPORTS = ("http", "mqtt")
# Names a recorder gives its files: arecord's --use-strftime recipe first, then the demo's ISO-like form.
DEFAULT_NAME_TIME_FORMATS = ("%Y%m%d-%H%M%S", "%Y%m%dT%H%M%SZ", "%Y-%m-%dT%H-%M-%S", "%Y-%m-%d_%H-%M-%S")
DEFAULT_PATTERNS = ("*.wav", "*.mp3", "*.flac", "*.ogg", "*.WAV", "*.MP3")
DEFAULT_RECORDER_COMMAND = (
    "arecord",
    "-q",
    "-D",
    "{alsa_device}",
    "-f",
    "S16_LE",
    "-r",
    "{sample_rate}",
    "-c",
    "{channels}",
    "-t",
    "wav",
    "--max-file-time",
    "{file_seconds}",
    "--use-strftime",
    "{spool}/%Y%m%d-%H%M%S.wav",
)


class ConfigError(ValueError):
    """A configuration file that cannot be used; the message names the file, section and key."""


@dataclass(frozen=True)
class DeviceSection:
    device_id: str = ""
    hive_id: str = ""
    state_dir: Path = DEFAULT_STATE_DIR


@dataclass(frozen=True)
class SourceSection:
    kind: str = "spool"
    path: Path | None = (
        None  # spool folder (spool/microphone) or file/folder (files); default state_dir/spool
    )
    after: str = "delete"
    archive_dir: Path | None = None  # default state_dir/archive
    quarantine_dir: Path | None = None  # default state_dir/quarantine
    patterns: tuple[str, ...] = DEFAULT_PATTERNS
    settle_seconds: float = 10.0
    abandoned_seconds: float = 300.0  # a file unfinished but untouched this long is taken as it is
    poll_seconds: float = 2.0
    name_time_formats: tuple[str, ...] = DEFAULT_NAME_TIME_FORMATS
    name_timezone: str = "UTC"  # "UTC" or "local"
    windows_per_file: int = 0  # 0 = every window


@dataclass(frozen=True)
class MicrophoneSection:
    alsa_device: str = "default"
    sample_rate: int = 16000
    channels: int = 1
    file_seconds: int = 60
    command: tuple[str, ...] = DEFAULT_RECORDER_COMMAND
    restart_initial_s: float = 1.0
    restart_max_s: float = 60.0


@dataclass(frozen=True)
class CollectorSection:
    url: str = ""  # empty: offline, events stay in the outbox
    token: str = ""
    token_file: Path | None = None
    timeout_s: float = 30.0
    batch_size: int = 200
    upload_interval_s: float = 5.0
    backoff_initial_s: float = 2.0
    backoff_max_s: float = 600.0
    heartbeat_interval_s: float = 60.0
    ota_poll_interval_s: float = 3600.0  # 0 = never ask for a new model
    # "http" (POST to url) or "mqtt" (batches and heartbeats through mqtt_url, acknowledged by the collector).
    transport: str = "http"
    mqtt_url: str = ""  # mqtt://host[:1883] or mqtts://host[:8883] (TLS)
    mqtt_username: str = ""  # default: device_id
    mqtt_password: str = ""  # default: the device token
    mqtt_ca_file: Path | None = None  # mqtts: the broker's CA (default: the system's)


@dataclass(frozen=True)
class OutboxSection:
    path: Path | None = None  # default state_dir/outbox.sqlite
    max_events: int = 500_000
    keep_files_days: float = 30.0


@dataclass(frozen=True)
class ModelSection:
    store_dir: Path | None = None  # default state_dir/models
    runtime: str = ""  # "" = first available (ai_edge_litert, tflite_runtime, tensorflow)
    num_threads: int = 1
    check_timeout_s: float = 60.0  # a new bundle's load + self-test in a child process
    check_memory_mb: int = 1024  # the child's address space (0 = no limit)


@dataclass(frozen=True)
class CalibrationSection:
    # The fewest usable windows `beeaudio device calibrate` makes a hive baseline from (20 windows: 21 s).
    min_windows: int = 20


@dataclass(frozen=True)
class DeviceConfig:
    device: DeviceSection = field(default_factory=DeviceSection)
    source: SourceSection = field(default_factory=SourceSection)
    microphone: MicrophoneSection = field(default_factory=MicrophoneSection)
    collector: CollectorSection = field(default_factory=CollectorSection)
    outbox: OutboxSection = field(default_factory=OutboxSection)
    model: ModelSection = field(default_factory=ModelSection)
    calibration: CalibrationSection = field(default_factory=CalibrationSection)

    # -- resolved paths and secrets ------------------------------------------------------------------------
    @property
    def state_dir(self) -> Path:
        return self.device.state_dir

    @property
    def spool_dir(self) -> Path:
        return self.source.path or self.state_dir / "spool"

    @property
    def archive_dir(self) -> Path:
        return self.source.archive_dir or self.state_dir / "archive"

    @property
    def quarantine_dir(self) -> Path:
        return self.source.quarantine_dir or self.state_dir / "quarantine"

    @property
    def outbox_path(self) -> Path:
        return self.outbox.path or self.state_dir / "outbox.sqlite"

    @property
    def model_dir(self) -> Path:
        return self.model.store_dir or self.state_dir / "models"

    def token(self) -> str:
        """The device token: ``token`` or the first line of ``token_file`` (kept out of the config)."""
        if self.collector.token:
            return self.collector.token
        if self.collector.token_file is not None:
            try:
                return self.collector.token_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                raise ConfigError(f"cannot read collector.token_file: {exc}") from exc
        return ""

    @property
    def uploads(self) -> bool:
        """Whether a collector is configured to upload to (by HTTP ``url`` or through ``mqtt_url``)."""
        c = self.collector
        return bool(c.mqtt_url if c.transport == "mqtt" else c.url)

    def check_for_run(self) -> None:
        """What ``run`` needs beyond what loading checks: ids when a collector is configured."""
        where = "mqtt_url" if self.collector.transport == "mqtt" else "url"
        if self.uploads and not (self.device.device_id and self.device.hive_id):
            raise ConfigError(f"[device] device_id and hive_id are required when [collector] {where} is set")
        if self.uploads and not self.token():
            raise ConfigError(f"[collector] {where} is set but neither token nor token_file gives a token")
        if self.uploads and self.collector.transport == "mqtt" and importlib.util.find_spec("paho") is None:
            raise ConfigError(
                "[collector] transport = 'mqtt' needs paho-mqtt: pip install 'beeaudio-edge[mqtt]'"
            )


_SECTION_TYPES = {
    "device": DeviceSection,
    "source": SourceSection,
    "microphone": MicrophoneSection,
    "collector": CollectorSection,
    "outbox": OutboxSection,
    "model": ModelSection,
    "calibration": CalibrationSection,
}


def _coerce(*, value: Any, hint: Any, where: str, base: Path) -> Any:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(hint) if a is not type(None)]
        return _coerce(value=value, hint=options[0], where=where, base=base)
    if origin is tuple:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{where} must be a list of strings, got {value!r}")
        return tuple(value)
    if hint is Path:
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where} must be a path (a non-empty string), got {value!r}")
        path = Path(value).expanduser()
        return path if path.is_absolute() else (base / path).resolve()
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
        return value
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where} must be an integer, got {value!r}")
        return value
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{where} must be a number, got {value!r}")
        return float(value)
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where} must be a string, got {value!r}")
        return value
    raise ConfigError(f"{where}: unsupported option type {hint!r}")  # pragma: no cover - a coding error


def _section(*, cls: type, data: Any, name: str, base: Path) -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"[{name}] must be a table")
    hints = typing.get_type_hints(cls)
    known = [f.name for f in dataclasses.fields(cls)]
    unknown = sorted(set(data) - set(known))
    if unknown:
        raise ConfigError(f"unknown key(s) {unknown} in [{name}]; known keys: {', '.join(known)}")
    values = {
        key: _coerce(value=value, hint=hints[key], where=f"[{name}] {key}", base=base)
        for key, value in data.items()
    }
    return cls(**values)


def _validate(config: DeviceConfig) -> None:
    source, collector = config.source, config.collector
    if source.kind not in SOURCE_KINDS:
        raise ConfigError(f"[source] kind must be one of {SOURCE_KINDS}, got {source.kind!r}")
    if source.after not in AFTER_POLICIES:
        raise ConfigError(f"[source] after must be one of {AFTER_POLICIES}, got {source.after!r}")
    if source.kind == "files" and source.path is None:
        raise ConfigError("[source] kind = 'files' needs path (a file or a folder)")
    if source.name_timezone not in ("UTC", "local"):
        raise ConfigError(f"[source] name_timezone must be 'UTC' or 'local', got {source.name_timezone!r}")
    if source.windows_per_file < 0:
        raise ConfigError("[source] windows_per_file must be 0 (all) or positive")
    if source.settle_seconds < 0 or source.poll_seconds <= 0:
        raise ConfigError("[source] settle_seconds must be >= 0 and poll_seconds > 0")
    if source.abandoned_seconds < source.settle_seconds:
        raise ConfigError("[source] abandoned_seconds must be at least settle_seconds")
    if collector.url and not collector.url.startswith(("http://", "https://")):
        raise ConfigError(f"[collector] url must start with http:// or https://, got {collector.url!r}")
    if collector.transport not in TRANSPORTS:
        raise ConfigError(f"[collector] transport must be one of {TRANSPORTS}, got {collector.transport!r}")
    if collector.mqtt_url and not collector.mqtt_url.startswith(("mqtt://", "mqtts://")):
        raise ConfigError(
            f"[collector] mqtt_url must start with mqtt:// or mqtts://, got {collector.mqtt_url!r}"
        )
    if collector.transport == "mqtt" and not collector.mqtt_url:
        raise ConfigError("[collector] transport = 'mqtt' needs mqtt_url (mqtt://host or mqtts://host)")
    if collector.batch_size < 1:
        raise ConfigError("[collector] batch_size must be at least 1")
    for key in (
        "timeout_s",
        "upload_interval_s",
        "backoff_initial_s",
        "backoff_max_s",
        "heartbeat_interval_s",
    ):
        if getattr(collector, key) <= 0:
            raise ConfigError(f"[collector] {key} must be positive")
    if collector.ota_poll_interval_s < 0:
        raise ConfigError("[collector] ota_poll_interval_s must be >= 0 (0 = off)")
    if config.outbox.max_events < 1:
        raise ConfigError("[outbox] max_events must be at least 1")
    if config.model.num_threads < 1:
        raise ConfigError("[model] num_threads must be at least 1")
    if config.calibration.min_windows < 1:
        raise ConfigError("[calibration] min_windows must be at least 1")
    if config.model.check_timeout_s <= 0 or config.model.check_memory_mb < 0:
        raise ConfigError("[model] check_timeout_s must be positive and check_memory_mb >= 0 (0 = no limit)")
    mic = config.microphone
    if mic.sample_rate <= 0 or mic.channels <= 0 or mic.file_seconds <= 0 or not mic.command:
        raise ConfigError(
            "[microphone] sample_rate, channels, file_seconds must be positive, command non-empty"
        )


def config_from_dict(*, data: dict[str, Any], base: Path) -> DeviceConfig:
    """Build and validate a config from parsed TOML; ``base`` anchors relative paths."""
    unknown = sorted(set(data) - set(_SECTION_TYPES))
    if unknown:
        raise ConfigError(f"unknown section(s) {unknown}; known sections: {', '.join(_SECTION_TYPES)}")
    sections = {
        name: _section(cls=cls, data=data.get(name, {}), name=name, base=base)
        for name, cls in _SECTION_TYPES.items()
    }
    config = DeviceConfig(**sections)
    _validate(config)
    return config


def load_config(path: Path) -> DeviceConfig:
    """Read a TOML configuration file; :class:`ConfigError` says what is wrong and where."""
    path = Path(path)
    try:
        with path.open("rb") as handle:
            data = tomllib.load(handle)
    except FileNotFoundError as exc:
        raise ConfigError(f"{path}: no such configuration file") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    try:
        return config_from_dict(data=data, base=path.resolve().parent)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from exc


# -- writing -----------------------------------------------------------------------------------------------
#: TOML's short escapes; every other control character is written as ``\uXXXX``.
_SHORT_ESCAPES = types.MappingProxyType(
    {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f", "\r": "\\r"}
)
_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
_TOML_INT_RANGE = range(-(2**63), 2**63)


def _toml_string(value: str, *, where: str) -> str:
    """A TOML basic string. Not ``json.dumps``: JSON leaves DEL unescaped and writes characters beyond the
    BMP as surrogate pairs (``\\ud83d\\udc1d``), and TOML refuses both."""
    out = []
    for char in value:
        code = ord(char)
        if char in _SHORT_ESCAPES:
            out.append(_SHORT_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            # A lone surrogate (e.g. an undecodable file name via surrogateescape) has no UTF-8 form.
            raise ConfigError(f"{where}: {value!r} is not valid Unicode text (a lone surrogate)")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_string(key, where=f"key {key!r}")


def _toml_value(value: Any, *, where: str) -> str:
    # bool before int: True is an int to Python, and TOML has its own booleans.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        if value not in _TOML_INT_RANGE:
            raise ConfigError(f"{where}: {value} does not fit TOML's 64-bit integers")
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)  # shortest text that reads back as the same float; always has "." or "e"
    if isinstance(value, Path):
        return _toml_string(str(value), where=where)
    if isinstance(value, str):
        return _toml_string(value, where=where)
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item, where=f"{where}[{i}]") for i, item in enumerate(value)) + "]"
    raise ConfigError(f"{where}: cannot write a {type(value).__name__} ({value!r}) as a configuration value")


def _field_default(option: dataclasses.Field[Any]) -> Any:
    if option.default_factory is not dataclasses.MISSING:
        return option.default_factory()
    return option.default


def _sections_of(config: DeviceConfig, *, include_defaults: bool) -> dict[str, dict[str, Any]]:
    sections: dict[str, dict[str, Any]] = {}
    for name in _SECTION_TYPES:
        section = getattr(config, name)
        values = {
            option.name: getattr(section, option.name)
            for option in dataclasses.fields(section)
            if include_defaults or getattr(section, option.name) != _field_default(option)
        }
        if values:  # a section with nothing to say is left out rather than written empty
            sections[name] = values
    return sections


def config_to_toml(
    *,
    config: DeviceConfig | Mapping[str, Mapping[str, Any]],
    header: str = "",
    include_defaults: bool = True,
) -> str:
    """TOML text that :func:`load_config` reads back as ``config``.

    ``config`` is a :class:`DeviceConfig` or parsed-TOML-like sections (``{"device": {"hive_id": ...}}``,
    values str, int, float, bool, Path or a list/tuple of str). ``None`` values are left out: TOML has no
    null, and an absent option is what means "derived from another option". With ``include_defaults``
    false, options of a :class:`DeviceConfig` that have their default value are left out too (sections
    are written as given). ``header`` becomes ``#`` comment lines at the top. Paths are written as they
    are: absolute ones read back identically, relative ones relative to the file's folder (as any
    relative path in a configuration). Raises :class:`ConfigError` for what :func:`load_config` would
    refuse (an unknown section or key, a wrong type, an invalid value) or what TOML cannot hold.
    """
    if isinstance(config, DeviceConfig):
        sections: Mapping[str, Mapping[str, Any]] = _sections_of(config, include_defaults=include_defaults)
    else:
        sections = config
    lines = [f"# {line}".rstrip() for line in header.splitlines()]
    for name, values in sections.items():
        if not isinstance(values, Mapping):
            raise ConfigError(f"[{name}] must be a table, got {values!r}")
        present = {key: value for key, value in values.items() if value is not None}
        if lines:
            lines.append("")
        lines.append(f"[{_toml_key(name)}]")
        for key, value in present.items():
            lines.append(f"{_toml_key(key)} = {_toml_value(value, where=f'[{name}] {key}')}")
    text = "\n".join(lines) + "\n" if lines else ""
    # Read it back as the agent will: a file this writes is a file the agent accepts. The base folder only
    # anchors relative paths, which validation does not look at.
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:  # e.g. a control character in the header's comment lines
        raise ConfigError(f"the configuration does not serialise to valid TOML: {exc}") from exc
    config_from_dict(data=data, base=Path("/"))
    return text


def write_config(
    *,
    path: Path,
    config: DeviceConfig | Mapping[str, Mapping[str, Any]],
    header: str = "",
    include_defaults: bool = True,
) -> Path:
    """Write :func:`config_to_toml` to ``path``, readable by its owner only (mode 0600: the file may hold
    the device token), atomically and durably: a reader, or the agent after a power cut, sees the old
    file or the new one, never a half-written one."""
    text = config_to_toml(config=config, header=header, include_defaults=include_defaults)
    return write_text_atomic(Path(path), text, mode=0o600, durable=True)

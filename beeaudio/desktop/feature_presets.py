"""Feature configurations a user names: presets, JSON/TOML files, and flags that override single fields.

``beeaudio train``, ``beeaudio experiment codec`` and ``beeaudio experiment sweep`` take
``--features FILE|PRESET`` plus field flags (``--sample-rate``, ``--fmin``, ...); :func:`resolve` turns
them into a :class:`~beeaudio.core.features.FeatureConfig`, validated by ``FeatureConfig.from_dict`` — the
very rules a device applies to a bundle's manifest — so a config that trains is a config a device runs.

The presets (:data:`PRESETS`, each a set of overrides of the ``FeatureConfig`` defaults):

* ``default`` — the defaults themselves: 8 kHz, 100–1000 Hz, 24 mel bands, 13 MFCCs. The band sits below
  the low-pass of low-bitrate MP3 and inside the Nyquist frequency of 2205 Hz recorders (the reasoning is
  in ``FeatureConfig``'s docstring; the measured ablation in ``docs/results.md``).
* ``fullband`` — the reference paper's kind of front end: 16 kHz, n_fft 1024 (64 ms), hop 512, 40 mel
  bands over 0–8000 Hz, 13 MFCCs. It hears everything up to 8 kHz, including what MP3 at 16–24 kbps
  throws away; it needs recordings made at 16 kHz or more.
* ``osbh-2205`` — for the Open Source Beehives recorders, which sampled at 2205 Hz (Nyquist 1102.5 Hz):
  features computed at 2205 Hz itself instead of upsampling every file to 8 kHz (3.6 times fewer samples
  to decode, filter and transform, for the same information), the default's 100–1000 Hz band (its top
  stays ~100 Hz under the Nyquist frequency, clear of the recorder's anti-alias roll-off), and n_fft 128
  / hop 64, i.e. 58 ms frames with 50 % overlap and 17 Hz bins — the default's time and frequency
  resolution (64 ms, 15.6 Hz), so 24 mel filters over the band are all non-empty and a 2 s window has 67
  frames for the deltas.

A file holds the ``FeatureConfig`` fields at its top level (what a run's ``feature_config.json`` holds),
or under a ``feature_config`` or ``features`` key / table (so a bundle's ``manifest.json`` can be given
as is). Unknown fields are refused, as in a bundle.
"""

from __future__ import annotations

import json
import logging
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any

from beeaudio.core.errors import EXIT_USAGE, BeeaudioError
from beeaudio.core.features import FeatureConfig

__all__ = [
    "OVERRIDABLE_FIELDS",
    "PRESETS",
    "FeatureSpecError",
    "FrontEnd",
    "front_end",
    "preset",
    "preset_name",
    "read_feature_file",
    "resolve",
]

log = logging.getLogger(__name__)

#: Preset name → overrides of the :class:`FeatureConfig` defaults (read-only).
PRESETS: Mapping[str, Mapping[str, Any]] = MappingProxyType(
    {
        "default": MappingProxyType({}),
        "fullband": MappingProxyType(
            {"sample_rate": 16000, "n_fft": 1024, "hop_length": 512, "n_mels": 40, "n_mfcc": 13}
            | {"fmin": 0.0, "fmax": 8000.0}
        ),
        "osbh-2205": MappingProxyType(
            {"sample_rate": 2205, "n_fft": 128, "hop_length": 64, "n_mels": 24, "n_mfcc": 13}
            | {"fmin": 100.0, "fmax": 1000.0}
        ),
    }
)
DEFAULT_PRESET = "default"
#: Fields the CLI offers as flags (``--sample-rate`` for ``sample_rate``, ...); the rest come from a file.
OVERRIDABLE_FIELDS = (
    "sample_rate",
    "fmin",
    "fmax",
    "n_mels",
    "n_mfcc",
    "deltas",
    "window_seconds",
    "hop_seconds",
)
_NESTED_KEYS = ("feature_config", "features")


class FeatureSpecError(BeeaudioError, ValueError):
    """A feature configuration that cannot be used (unknown preset, unreadable file, invalid field): the
    command is not run (exit 2), the message names the source and the rule broken."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class FrontEnd:
    """A named feature configuration: one of the front ends an experiment compares."""

    name: str
    config: FeatureConfig

    def __post_init__(self) -> None:
        if not self.name or "," in self.name:
            raise FeatureSpecError(f"a front end needs a name without commas, got {self.name!r}")

    def describe(self) -> str:
        c = self.config
        return f"{c.fmin:g}–{c.fmax:g} Hz at {c.sample_rate} Hz, {c.n_mels} mel bands, {c.n_mfcc} MFCCs"


def preset(*, name: str, representation: str = "stats") -> FeatureConfig:
    """The preset ``name`` (see the module docstring) for a model taking ``representation``."""
    if name not in PRESETS:
        raise FeatureSpecError(f"unknown feature preset {name!r}; presets are {', '.join(PRESETS)}")
    return FeatureConfig(**PRESETS[name], representation=representation)


def preset_name(*, config: FeatureConfig) -> str | None:
    """The preset that is exactly ``config`` (for its representation), or None."""
    for name in PRESETS:
        if preset(name=name, representation=config.representation) == config:
            return name
    return None


def read_feature_file(*, path: Path) -> dict[str, Any]:
    """The feature fields of a JSON or TOML file (by suffix; another suffix is tried as JSON, then TOML),
    unvalidated. :class:`FeatureSpecError` names the file when it cannot be read or parsed."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise FeatureSpecError(f"feature file {path}: cannot read it: {exc}") from exc
    suffix = path.suffix.lower()
    parsers = (
        [_parse_toml]
        if suffix == ".toml"
        else [_parse_json]
        if suffix == ".json"
        else [_parse_json, _parse_toml]
    )
    errors = []
    for parse in parsers:
        try:
            data = parse(text)
            break
        except ValueError as exc:  # json.JSONDecodeError and tomllib.TOMLDecodeError are ValueErrors
            errors.append(str(exc))
    else:
        raise FeatureSpecError(f"feature file {path}: not valid {'/'.join(_kinds(parsers))}: {errors[-1]}")
    if not isinstance(data, dict):
        raise FeatureSpecError(f"feature file {path}: expected a table of FeatureConfig fields")
    for key in _NESTED_KEYS:
        if isinstance(data.get(key), dict):
            return dict(data[key])
    return data


def _parse_json(text: str) -> Any:
    return json.loads(text)


def _parse_toml(text: str) -> Any:
    return tomllib.loads(text)


def _kinds(parsers: list[Any]) -> list[str]:
    return ["JSON" if p is _parse_json else "TOML" for p in parsers]


def resolve(
    *,
    spec: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    representation: str = "stats",
) -> FeatureConfig:
    """The feature configuration named by ``spec`` (a preset name or a JSON/TOML file; None: ``default``)
    with ``overrides`` (field → value; None values are ignored) applied on top, validated as a bundle's.

    ``representation`` is the one the model takes; a file that names another one is refused (a model
    cannot read features of the other shape). :class:`FeatureSpecError` (exit 2) otherwise.
    """
    fields, source = _base_fields(spec=spec)
    given = {k: v for k, v in (overrides or {}).items() if v is not None}
    unknown = sorted(set(given) - set(OVERRIDABLE_FIELDS))
    if unknown:
        raise FeatureSpecError(
            f"cannot override feature fields {unknown}; flags exist for {OVERRIDABLE_FIELDS}"
        )
    if given:
        source += " with " + ", ".join(f"--{k.replace('_', '-')} {v:g}" for k, v in given.items())
    fields.update(given)
    fields.setdefault("representation", representation)
    try:
        config = FeatureConfig.from_dict(fields)
    except (ValueError, TypeError) as exc:
        raise FeatureSpecError(f"feature config ({source}): {exc}") from exc
    if config.representation != representation:
        raise FeatureSpecError(
            f"feature config ({source}) has representation {config.representation!r}, but the model takes "
            f"{representation!r}: drop the field from the file or choose the other model"
        )
    log.debug("feature config (%s): %s", source, config.to_dict())
    return config


def front_end(
    *,
    spec: str | Path | None = None,
    overrides: Mapping[str, Any] | None = None,
    representation: str = "stats",
) -> FrontEnd:
    """:func:`resolve` with a name: the preset's name, or the file's stem."""
    config = resolve(spec=spec, overrides=overrides, representation=representation)
    if spec is None:
        name = DEFAULT_PRESET
    elif str(spec) in PRESETS and not Path(spec).is_file():
        name = str(spec)
    else:
        name = Path(spec).stem
    return FrontEnd(name=name, config=config)


def _base_fields(*, spec: str | Path | None) -> tuple[dict[str, Any], str]:
    if spec is None:
        return dict(PRESETS[DEFAULT_PRESET]), f"preset {DEFAULT_PRESET!r}"
    text = str(spec)
    path = Path(text).expanduser()
    # A file wins over a preset of the same name: the user pointed at something that exists.
    if path.is_file():
        return read_feature_file(path=path), f"file {path}"
    if text in PRESETS:
        return dict(PRESETS[text]), f"preset {text!r}"
    looks_like_path = path.suffix.lower() in (".json", ".toml") or "/" in text
    what = f"no such feature file {text!r}" if looks_like_path else f"unknown feature preset {text!r}"
    raise FeatureSpecError(f"{what}: give a JSON or TOML file, or a preset ({', '.join(PRESETS)})")

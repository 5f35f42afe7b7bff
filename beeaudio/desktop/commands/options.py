"""Options shared by several sub-commands, so they read and behave the same everywhere."""

from __future__ import annotations

import argparse
from pathlib import Path

from beeaudio.core.features import FeatureConfig
from beeaudio.desktop.datasets import default_cache_dir
from beeaudio.desktop.feature_presets import PRESETS, resolve


def _split(text: str, *, kind: str) -> tuple[str, ...]:
    values = tuple(v.strip() for v in text.split(",") if v.strip())
    if not values:
        raise argparse.ArgumentTypeError(f"expected comma-separated {kind}, got {text!r}")
    return values


def _int_list(text: str, *, minimum: int, kind: str) -> tuple[int, ...]:
    try:
        values = tuple(int(v) for v in _split(text, kind="integers"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}") from exc
    if any(v < minimum for v in values):
        raise argparse.ArgumentTypeError(f"expected {kind} integers, got {text!r}")
    return values


def positive_int_list(text: str) -> tuple[int, ...]:
    """``"16,32,64"`` → ``(16, 32, 64)``: bitrates, layer counts and widths are all positive."""
    return _int_list(text, minimum=1, kind="positive")


def nonnegative_int_list(text: str) -> tuple[int, ...]:
    """``"0,1,2"`` → ``(0, 1, 2)``: seeds may be 0."""
    return _int_list(text, minimum=0, kind="non-negative")


def nonnegative_number_list(text: str) -> tuple[float, ...]:
    """``"0,1,2.5"`` → ``(0.0, 1.0, 2.5)``: minutes, shares."""
    try:
        values = tuple(float(v) for v in _split(text, kind="numbers"))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc
    if any(not v >= 0 for v in values):  # `not >=` also refuses NaN
        raise argparse.ArgumentTypeError(f"expected non-negative numbers, got {text!r}")
    return values


def name_list(text: str) -> tuple[str, ...]:
    """``"none, cmn"`` → ``("none", "cmn")``: names, presets or files."""
    return _split(text, kind="names")


def add_cache_options(parser: argparse.ArgumentParser) -> None:
    cache = parser.add_mutually_exclusive_group()
    cache.add_argument(
        "--cache", type=Path, default=None, help=f"feature cache folder (default {default_cache_dir()})"
    )
    cache.add_argument("--no-cache", action="store_true", help="do not cache features")


def cache_dir(args: argparse.Namespace) -> Path | None:
    return None if args.no_cache else (args.cache or default_cache_dir())


# -- the feature configuration -------------------------------------------------------------------------------
#: Flag, FeatureConfig field, type, metavar, what it is: the fields a user commonly changes.
_FEATURE_FLAGS = (
    ("--sample-rate", "sample_rate", int, "HZ", "rate every recording is resampled to before the features"),
    ("--fmin", "fmin", float, "HZ", "lowest frequency of the mel bands"),
    ("--fmax", "fmax", float, "HZ", "highest frequency of the mel bands (at most half the sample rate)"),
    ("--n-mels", "n_mels", int, "N", "mel bands"),
    ("--n-mfcc", "n_mfcc", int, "N", "cepstral coefficients kept (at most --n-mels)"),
    ("--deltas", "deltas", int, "N", "0, 1 or 2: orders of delta features added"),
    ("--window-seconds", "window_seconds", float, "SECONDS", "analysis window"),
    ("--hop-seconds", "hop_seconds", float, "SECONDS", "hop between windows"),
)


def add_feature_options(parser: argparse.ArgumentParser) -> None:
    """``--features FILE|PRESET`` and the common FeatureConfig fields as flags (which override it)."""
    group = parser.add_argument_group(
        "feature configuration",
        "What the model hears; recorded in the run, the report and the bundle. The flags override the "
        "preset or file.",
    )
    group.add_argument(
        "--features",
        metavar="FILE|PRESET",
        default=None,
        help=f"a JSON or TOML FeatureConfig (e.g. a run's feature_config.json), or a preset: "
        f"{', '.join(PRESETS)} (default: default, 100-1000 Hz at 8 kHz)",
    )
    for flag, _field, kind, metavar, text in _FEATURE_FLAGS:
        group.add_argument(
            flag, type=kind, default=None, metavar=metavar, help=f"{text} (default: the preset's)"
        )


def feature_overrides(args: argparse.Namespace) -> dict[str, float | int]:
    """The feature fields given as flags (unset flags are left out)."""
    values = {field: getattr(args, flag[2:].replace("-", "_")) for flag, field, *_ in _FEATURE_FLAGS}
    return {k: v for k, v in values.items() if v is not None}


def feature_config(args: argparse.Namespace, *, representation: str) -> FeatureConfig:
    """The FeatureConfig of ``--features`` and the flags; FeatureSpecError (exit 2) if it is invalid."""
    return resolve(spec=args.features, overrides=feature_overrides(args), representation=representation)

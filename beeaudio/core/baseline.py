"""A hive's baseline: feature statistics of a period declared normal, and features relative to it.

Colonies and microphones differ more from hive to hive than a few training hives can teach, and swarming
is a change relative to *that* colony's normal. A model whose bundle declares a ``normalization`` section
(:class:`NormalizationSpec`) takes its features relative to the hive's baseline:

* kind ``cmn/1`` (per-hive cepstral mean normalisation, as the reference author's earlier MFCC system
  used): the baseline's mean cepstrum is subtracted from the window's static cepstral coefficients. A fixed
  linear filter (the microphone, its mounting, the hive body, the recorder's gain) adds a constant to every
  frame's cepstrum, so this removes it; deltas and standard deviations do not change under a constant and
  are left as they are.
* kind ``feature-mean/1``: *every* feature minus its mean over the calibration windows — the cepstral means
  as in ``cmn/1``, and also the window's temporal texture (the standard deviations, the deltas) relative to
  how much this colony's normal sound moves. Colonies differ in how rough and modulated their normal hum is,
  and a recorder's self-noise and gain control change it too; relative to the colony's own normal, a swarm
  is rougher whatever the colony.

One function makes the baseline everywhere: :func:`fit_baseline` over a set of feature windows, called by
training on each training hive's normal windows and by ``beeaudio device calibrate`` on the windows of the
declared-normal recordings whose signal check is ``ok``; :func:`relative_features` applies it.

On a device the baseline is a small JSON file (``beeaudio.baseline/1``) in the state folder, named by the
feature configuration's fingerprint (:func:`baseline_path`): it survives restarts, a model update whose
features are computed the same way finds it, and a model with another feature configuration does not (its
baseline would be in other units). Only numpy and the standard library: a hive device runs this.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.features import FeatureConfig
from beeaudio.core.fsio import write_text_atomic
from beeaudio.core.novelty import window_summary

__all__ = [
    "BASELINE_DIR",
    "BASELINE_SCHEMA",
    "CMN",
    "FEATURE_MEAN",
    "MIN_WINDOWS",
    "NORMALIZATIONS",
    "BaselineError",
    "HiveBaseline",
    "NormalizationSpec",
    "baseline_path",
    "fit_baseline",
    "load_baseline",
    "relative_features",
    "remove_baseline",
    "save_baseline",
]

BASELINE_SCHEMA = "beeaudio.baseline/1"
#: Per-hive cepstral mean normalisation: the static cepstral means minus the hive's.
CMN = "cmn/1"
#: Every feature minus the hive's mean of it.
FEATURE_MEAN = "feature-mean/1"
#: The normalisation kinds this code computes.
NORMALIZATIONS = (CMN, FEATURE_MEAN)
#: Folder of the state directory that holds the baselines.
BASELINE_DIR = "calibration"
#: Fewest windows a baseline is made from by default: 20 windows are 21 s of audio; below that a few
#: odd windows (a beekeeper opening the hive) move the mean cepstrum by more than the states differ.
MIN_WINDOWS = 20
_MAX_TEXT = 200
_MAX_SOURCES = 1000


class BaselineError(ValueError):
    """A baseline or a normalisation section that cannot be used; the message says what and where."""


@dataclass(frozen=True)
class NormalizationSpec:
    """The manifest's ``normalization`` section: the model's features are relative to a hive baseline.

    ``kind``: :data:`CMN`. ``calibration_label``: the label whose windows made each training hive's
    baseline (what a beekeeper must declare the calibration period to be). ``min_windows``: the fewest
    windows of a baseline the model was trained with. ``info``: what training recorded (hives, windows).
    """

    kind: str = CMN
    calibration_label: str = "normal"
    min_windows: int = MIN_WINDOWS
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "baseline": "hive",
            "calibration_label": self.calibration_label,
            "min_windows": int(self.min_windows),
            **self.info,
        }

    @classmethod
    def from_json(cls, data: Any) -> NormalizationSpec:
        """Parse strictly: a kind this code does not compute is an error (the model's features could not be
        made), not something to skip."""
        if not isinstance(data, dict):
            raise BaselineError(f"'normalization' must be an object, got {type(data).__name__}")
        missing = [k for k in ("kind", "baseline", "calibration_label", "min_windows") if k not in data]
        if missing:
            raise BaselineError(f"'normalization' section lacks {', '.join(missing)}")
        kind, scope, label, least = (
            data["kind"],
            data["baseline"],
            data["calibration_label"],
            data["min_windows"],
        )
        if kind not in NORMALIZATIONS:
            raise BaselineError(
                f"normalization kind {kind!r} is not one this beeaudio computes"
                f" ({', '.join(NORMALIZATIONS)}): upgrade beeaudio to run this model"
            )
        if scope != "hive":
            raise BaselineError(f"normalization baseline must be 'hive', got {scope!r}")
        if not isinstance(label, str) or not label or len(label) > _MAX_TEXT:
            raise BaselineError(f"normalization calibration_label must be a label name, got {label!r}")
        if isinstance(least, bool) or not isinstance(least, int) or not 1 <= least <= 10**7:
            raise BaselineError(f"normalization min_windows must be a positive integer, got {least!r}")
        reserved = ("kind", "baseline", "calibration_label", "min_windows")
        info = {k: v for k, v in data.items() if k not in reserved}
        return cls(kind=kind, calibration_label=label, min_windows=least, info=info)


@dataclass(frozen=True)
class HiveBaseline:
    """Statistics of one hive's calibration windows, for one feature configuration.

    ``mean``/``std``: per value of the window summary (:func:`beeaudio.core.novelty.window_summary`: the
    ``stats`` features, or the mean and standard deviation over time of ``frames`` features), over the
    calibration windows; the first ``n_mfcc`` values of ``mean`` are the hive's mean cepstrum.
    """

    feature_config: FeatureConfig
    mean: tuple[float, ...]
    std: tuple[float, ...]
    windows: int
    hive_id: str = ""
    created_at: str = ""
    seconds: float = 0.0
    sources: tuple[str, ...] = ()
    skipped: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        width = 2 * self.feature_config.features_per_frame
        if len(self.mean) != width or len(self.std) != width:
            raise BaselineError(
                f"a baseline has {width} means and deviations, got {len(self.mean)}/{len(self.std)}"
            )
        if not all(math.isfinite(v) for v in (*self.mean, *self.std)) or min(self.std) < 0:
            raise BaselineError("a baseline's means and deviations must be finite (deviations >= 0)")
        if self.windows < 1:
            raise BaselineError(f"a baseline needs at least one window, got {self.windows}")

    @property
    def fingerprint(self) -> str:
        return self.feature_config.fingerprint()

    @property
    def cepstral_mean(self) -> np.ndarray:
        """The hive's mean cepstrum ``(n_mfcc,)`` float64: what CMN subtracts."""
        return np.asarray(self.mean[: self.feature_config.n_mfcc], dtype=np.float64)

    def to_json(self) -> dict[str, Any]:
        return {
            "schema": BASELINE_SCHEMA,
            "feature_fingerprint": self.fingerprint,
            "feature_config": self.feature_config.to_dict(),
            "hive_id": self.hive_id,
            "created_at": self.created_at,
            "windows": int(self.windows),
            "seconds": float(self.seconds),
            "sources": list(self.sources),
            "skipped": dict(self.skipped),
            # repr() of a float reads back as the same float: the file holds the exact baseline.
            "mean": [float(v) for v in self.mean],
            "std": [float(v) for v in self.std],
        }

    @classmethod
    def from_json(cls, data: Any) -> HiveBaseline:
        """Parse a baseline file's content strictly; :class:`BaselineError` names what is wrong."""
        if not isinstance(data, dict):
            raise BaselineError(f"a baseline is a JSON object, got {type(data).__name__}")
        if data.get("schema") != BASELINE_SCHEMA:
            raise BaselineError(
                f"unknown baseline schema {data.get('schema')!r} (this beeaudio reads {BASELINE_SCHEMA})"
            )
        try:
            config = FeatureConfig.from_dict(data["feature_config"])
        except (KeyError, TypeError, ValueError) as exc:
            raise BaselineError(f"baseline feature_config unusable: {exc}") from exc
        if data.get("feature_fingerprint") != config.fingerprint():
            raise BaselineError("baseline feature_fingerprint does not match its feature_config")

        def numbers(name: str) -> tuple[float, ...]:
            value = data.get(name)
            if not isinstance(value, list) or not all(
                isinstance(v, int | float) and not isinstance(v, bool) for v in value
            ):
                raise BaselineError(f"baseline {name!r} must be a list of numbers")
            return tuple(float(v) for v in value)

        windows, seconds = data.get("windows"), data.get("seconds", 0.0)
        if isinstance(windows, bool) or not isinstance(windows, int):
            raise BaselineError(f"baseline 'windows' must be an integer, got {windows!r}")
        if isinstance(seconds, bool) or not isinstance(seconds, int | float) or not math.isfinite(seconds):
            raise BaselineError(f"baseline 'seconds' must be a number, got {seconds!r}")
        texts = {k: data.get(k, "") for k in ("hive_id", "created_at")}
        if not all(isinstance(v, str) and len(v) <= _MAX_TEXT for v in texts.values()):
            raise BaselineError("baseline 'hive_id' and 'created_at' must be short strings")
        sources, skipped = data.get("sources", []), data.get("skipped", {})
        if (
            not isinstance(sources, list)
            or len(sources) > _MAX_SOURCES
            or not all(isinstance(s, str) for s in sources)
        ):
            raise BaselineError("baseline 'sources' must be a list of file names")
        if not isinstance(skipped, dict) or not all(
            isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in skipped.items()
        ):
            raise BaselineError("baseline 'skipped' must map verdicts to counts")
        return cls(
            feature_config=config,
            mean=numbers("mean"),
            std=numbers("std"),
            windows=windows,
            hive_id=texts["hive_id"],
            created_at=texts["created_at"],
            seconds=float(seconds),
            sources=tuple(sources),
            skipped=dict(skipped),
        )

    def describe(self) -> str:
        where = f" of {len(self.sources)} recordings" if self.sources else ""
        return (
            f"{self.windows} windows ({self.seconds / 60:.1f} min){where}, feature config {self.fingerprint}"
            + (f", made {self.created_at}" if self.created_at else "")
        )


def fit_baseline(
    *,
    features: np.ndarray,
    config: FeatureConfig,
    hive_id: str = "",
    sources: tuple[str, ...] = (),
    skipped: dict[str, int] | None = None,
    created_at: str | None = None,
) -> HiveBaseline:
    """The baseline of these calibration windows ``(n, *config.feature_shape)``: the mean and standard
    deviation of each window-summary value over them (float64 arithmetic on the float32 features)."""
    summary = window_summary(features=np.asarray(features, dtype=np.float32), config=config)
    if summary.shape[0] == 0:
        raise BaselineError("no calibration windows: a baseline needs recordings of the hive")
    return HiveBaseline(
        feature_config=config,
        mean=tuple(float(v) for v in summary.mean(axis=0)),
        std=tuple(float(v) for v in summary.std(axis=0)),
        windows=int(summary.shape[0]),
        hive_id=hive_id,
        created_at=created_at if created_at is not None else datetime.now(UTC).isoformat(timespec="seconds"),
        seconds=float(summary.shape[0] * config.hop_seconds),  # the audio the windows advance over
        sources=tuple(sources),
        skipped=dict(skipped or {}),
    )


def relative_features(*, features: np.ndarray, baseline: HiveBaseline, kind: str = CMN) -> np.ndarray:
    """Windows ``(n, *feature_shape)`` relative to the hive's baseline, float32: for :data:`CMN`, the static
    cepstral coefficients (the first ``n_mfcc`` values of the last axis, for ``stats`` their means, for
    ``frames`` each frame's) minus the baseline's mean cepstrum; for :data:`FEATURE_MEAN`, every value minus
    the baseline's mean of it (``frames``: every frame minus the baseline's mean frame)."""
    if kind not in NORMALIZATIONS:
        raise BaselineError(
            f"normalization kind {kind!r} unknown; this code computes {', '.join(NORMALIZATIONS)}"
        )
    config = baseline.feature_config
    x = np.asarray(features, dtype=np.float32)
    if x.shape[-len(config.feature_shape) :] != tuple(config.feature_shape):
        raise BaselineError(
            f"features of shape {x.shape} are not windows of the baseline's config {config.feature_shape}"
        )
    out = x.astype(np.float64)
    if kind == CMN:
        out[..., : config.n_mfcc] -= baseline.cepstral_mean
    else:
        width = out.shape[-1]  # stats: the whole summary; frames: its first half, the mean frame
        out -= np.asarray(baseline.mean[:width], dtype=np.float64)
    return out.astype(np.float32)


# -- the device's file --------------------------------------------------------------------------------
def baseline_path(*, state_dir: Path, config: FeatureConfig) -> Path:
    """Where the baseline for features of ``config`` lives in a device's state folder."""
    return Path(state_dir) / BASELINE_DIR / f"baseline-{config.fingerprint()}.json"


def save_baseline(*, state_dir: Path, baseline: HiveBaseline) -> Path:
    """Write the baseline atomically and durably (a power cut leaves the old file or the new one)."""
    path = baseline_path(state_dir=state_dir, config=baseline.feature_config)
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text_atomic(path, json.dumps(baseline.to_json(), indent=1) + "\n", durable=True)


def load_baseline(*, state_dir: Path, config: FeatureConfig) -> HiveBaseline | None:
    """The saved baseline for features of ``config``, or None when there is none. A file that is there but
    unreadable, or made for another feature configuration, raises :class:`BaselineError`."""
    path = baseline_path(state_dir=state_dir, config=config)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as exc:
        raise BaselineError(f"{path}: cannot read the baseline: {exc}") from exc
    try:
        baseline = HiveBaseline.from_json(json.loads(text))
    except json.JSONDecodeError as exc:
        raise BaselineError(f"{path}: not a baseline (invalid JSON: {exc})") from exc
    except BaselineError as exc:
        raise BaselineError(f"{path}: {exc}") from exc
    if baseline.feature_config != config:
        raise BaselineError(f"{path}: made for another feature configuration ({baseline.fingerprint})")
    return baseline


def remove_baseline(*, state_dir: Path, config: FeatureConfig) -> bool:
    """Delete the baseline for ``config``; True if there was one."""
    path = baseline_path(state_dir=state_dir, config=config)
    try:
        path.unlink()
    except FileNotFoundError:
        return False
    return True

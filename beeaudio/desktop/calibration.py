"""Per-hive calibration on the desktop: each hive's baseline from its normal windows, features relative to it.

Training a model that takes features relative to the hive's baseline (``beeaudio train --calibration cmn``)
needs every hive's baseline computed the way a device computes it (:func:`beeaudio.core.baseline.fit_baseline`
over windows of a period declared normal), and an honest test: a test hive's baseline comes from a
*calibration* recording of it (its first recording of the calibration label, by recording id), which is
then left out of the scores, as a device calibrated on a normal period is judged on what came after.

:func:`calibrate_split` does that for a split window set; :func:`read_microphones` reads the microphone
column a ``beeaudio synth`` manifest carries, which :mod:`beeaudio.desktop.experiments.calibration` groups
by. Only numpy at import time.
"""

from __future__ import annotations

import csv
import dataclasses
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.baseline import CMN, FEATURE_MEAN, HiveBaseline, fit_baseline, relative_features
from beeaudio.core.features import FeatureConfig

__all__ = [
    "CALIBRATIONS",
    "CalibratedSplit",
    "apply_baselines",
    "calibrate_split",
    "calibration_recordings",
    "hive_baselines",
    "read_microphones",
]

log = logging.getLogger(__name__)

#: ``beeaudio train --calibration``: "none" (plain features), "cmn" (per-hive cepstral mean normalisation)
#: or "feature-mean" (every feature relative to the hive's mean of it); see :mod:`beeaudio.core.baseline`.
CALIBRATIONS = ("none", "cmn", "feature-mean")
_KIND = {"cmn": CMN, "feature-mean": FEATURE_MEAN}


def kind_of(calibration: str) -> str:
    """The normalisation kind (:data:`beeaudio.core.baseline.NORMALIZATIONS`) of a ``--calibration`` value."""
    if calibration not in _KIND:
        raise ValueError(
            f"calibration {calibration!r} has no normalisation; choose one of {', '.join(CALIBRATIONS)}"
        )
    return _KIND[calibration]


def hive_baselines(
    *,
    features: np.ndarray,
    hives: np.ndarray,
    mask: np.ndarray,
    config: FeatureConfig,
) -> dict[str, HiveBaseline]:
    """Each hive's baseline from its windows selected by ``mask`` (e.g. its normal windows); hives without
    any selected window get none."""
    hives = np.asarray(hives).astype(str)
    out: dict[str, HiveBaseline] = {}
    for hive in sorted(set(hives[mask].tolist())):
        chosen = mask & (hives == hive)
        out[hive] = fit_baseline(features=features[chosen], config=config, hive_id=hive, created_at="")
    return out


def apply_baselines(
    *, features: np.ndarray, hives: np.ndarray, baselines: Mapping[str, HiveBaseline], kind: str = CMN
) -> np.ndarray:
    """Every window relative to its hive's baseline (KeyError names a hive without one)."""
    hives = np.asarray(hives).astype(str)
    out = np.empty_like(np.asarray(features, dtype=np.float32))
    for hive in sorted(set(hives.tolist())):
        if hive not in baselines:
            raise KeyError(f"hive {hive!r} has no baseline (no calibration windows)")
        where = hives == hive
        out[where] = relative_features(features=features[where], baseline=baselines[hive], kind=kind)
    return out


def calibration_recordings(*, windows: Any, label: int, hives: Iterable[str], per_hive: int = 1) -> list[str]:
    """The recordings that calibrate each of ``hives``: its first ``per_hive`` recordings (by id) whose
    windows carry ``label``."""
    hive_of = np.asarray(windows.hives).astype(str)
    recs = np.asarray(windows.recordings).astype(str)
    labels = np.asarray(windows.labels)
    chosen: list[str] = []
    for hive in hives:
        candidates = sorted(set(recs[(hive_of == hive) & (labels == label)].tolist()))
        chosen.extend(candidates[:per_hive])
    return chosen


@dataclass
class CalibratedSplit:
    """Train and test windows relative to their hives' baselines (test without its calibration windows)."""

    train: Any  # WindowSet
    test: Any  # WindowSet
    train_baselines: dict[str, HiveBaseline]
    test_baselines: dict[str, HiveBaseline]
    calibration_recordings: list[str]
    dropped_hives: list[str] = field(default_factory=list)

    def info(self) -> dict[str, Any]:
        return {
            "train_hives": sorted(self.train_baselines),
            "test_hives": sorted(self.test_baselines),
            "test_calibration_recordings": self.calibration_recordings,
            "train_baseline_windows": {h: b.windows for h, b in sorted(self.train_baselines.items())},
            "test_baseline_windows": {h: b.windows for h, b in sorted(self.test_baselines.items())},
            "dropped_hives": self.dropped_hives,
        }


def calibrate_split(
    *,
    train: Any,
    test: Any,
    config: FeatureConfig,
    calibration_label: str,
    kind: str = CMN,
    test_calibration_per_hive: int = 1,
) -> CalibratedSplit:
    """Make both sides relative to their hives' baselines.

    A training hive's baseline is made from all its windows labelled ``calibration_label`` (the best
    estimate of its normal); a test hive's from its first ``test_calibration_per_hive`` such recordings,
    whose windows then leave the test set. A hive without any such window has no baseline: it is dropped
    (and named in the log), because a device could not calibrate it either.
    """
    names = tuple(train.label_names)
    if calibration_label not in names:
        raise ValueError(f"calibration label {calibration_label!r} is not one of the labels {list(names)}")
    label = names.index(calibration_label)
    dropped: list[str] = []

    train_hives = np.asarray(train.hives).astype(str)
    train_baselines = hive_baselines(
        features=train.features, hives=train_hives, mask=np.asarray(train.labels) == label, config=config
    )
    keep = np.isin(train_hives, list(train_baselines))
    dropped += sorted(set(train_hives[~keep].tolist()))

    test_hives = np.asarray(test.hives).astype(str)
    cal_recs = calibration_recordings(
        windows=test, label=label, hives=sorted(set(test_hives.tolist())), per_hive=test_calibration_per_hive
    )
    is_cal = np.isin(np.asarray(test.recordings).astype(str), cal_recs)
    test_baselines = hive_baselines(features=test.features, hives=test_hives, mask=is_cal, config=config)
    test_keep = np.isin(test_hives, list(test_baselines)) & ~is_cal
    dropped += sorted(set(test_hives[~np.isin(test_hives, list(test_baselines))].tolist()))
    if dropped:
        log.warning(
            "hives without %r windows cannot be calibrated and are left out: %s", calibration_label, dropped
        )
    train_kept, test_kept = train.subset(np.flatnonzero(keep)), test.subset(np.flatnonzero(test_keep))
    if len(train_kept) == 0 or len(test_kept) == 0:
        raise ValueError(
            f"no {'training' if len(train_kept) == 0 else 'test'} windows left after calibration"
        )
    return CalibratedSplit(
        train=dataclasses.replace(
            train_kept,
            features=apply_baselines(
                features=train_kept.features, hives=train_kept.hives, baselines=train_baselines, kind=kind
            ),
        ),
        test=dataclasses.replace(
            test_kept,
            features=apply_baselines(
                features=test_kept.features, hives=test_kept.hives, baselines=test_baselines, kind=kind
            ),
        ),
        train_baselines=train_baselines,
        test_baselines=test_baselines,
        calibration_recordings=cal_recs,
        dropped_hives=dropped,
    )


def read_microphones(*, data: Path) -> dict[str, str]:
    """Recording id → microphone family, from the ``microphone`` column of ``data/manifest.csv`` (empty when
    the dataset has no such column)."""
    manifest = Path(data) / "manifest.csv" if Path(data).is_dir() else Path(data)
    if not manifest.is_file():
        return {}
    with manifest.open(newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if "microphone" not in (reader.fieldnames or []):
            return {}
        out: dict[str, str] = {}
        for row in reader:
            recording = (row.get("recording") or "").strip() or Path(row["path"]).with_suffix("").as_posix()
            out[recording] = (row.get("microphone") or "").strip()
    return out

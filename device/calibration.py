"""The hive's baseline on the device: learn it from a declared-normal period, keep it, give it to the model.

``beeaudio device calibrate`` runs :func:`calibrate`: every window of the recordings of a period the
beekeeper declares normal (files or folders given, else the archive folder, optionally only recordings
that start within ``--since``/``--until``), through the model's own front end; the windows whose signal
check is ``ok`` make the baseline (:func:`beeaudio.core.baseline.fit_baseline`, the very function training
uses on each training hive's normal windows), saved in the state folder under the feature configuration's
fingerprint. The agent gives it to every model that takes features relative to a baseline
(:func:`attach_baseline`) when the model loads and between recordings, so a new baseline is used from the
next recording on, a restart finds it, a model update that computes its features the same way keeps it,
and a model with another feature configuration does not use it (and says it is uncalibrated).

Numpy only (through :mod:`beeaudio.core`): this runs on the hive device.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np

from beeaudio.core import audio as audio_io
from beeaudio.core import features as feats
from beeaudio.core.baseline import (
    MIN_WINDOWS,
    BaselineError,
    HiveBaseline,
    baseline_path,
    fit_baseline,
    load_baseline,
    save_baseline,
)
from beeaudio.core.features import FeatureConfig
from beeaudio.core.quality import QualityConfig, check_window
from beeaudio.core.wire import QUALITY_OK
from beeaudio.device import sources

log = logging.getLogger(__name__)

__all__ = [
    "BaselineStatus",
    "CalibrationError",
    "CalibrationResult",
    "attach_baseline",
    "baseline_status",
    "calibrate",
]


class CalibrationError(BaselineError):
    """A calibration that cannot be made (no recordings, too few usable windows); the message says why."""


@dataclass(frozen=True)
class BaselineStatus:
    """What the device knows about the hive's baseline for one model: whether the model needs one, the
    baseline it has (or None), and why it has none (``problem``)."""

    needed: bool
    baseline: HiveBaseline | None
    problem: str = ""

    @property
    def calibrated(self) -> bool:
        return not self.needed or self.baseline is not None

    def line(self) -> str:
        """One line for ``beeaudio device status``."""
        if self.baseline is not None:
            use = "the current model uses it" if self.needed else "the current model does not use one"
            return f"baseline from {self.baseline.describe()}; {use}"
        if not self.needed:
            return "none (the current model does not use a hive baseline)"
        return (
            "UNCALIBRATED: the current model takes features relative to the hive's baseline and this device "
            f"has none ({self.problem}); its readings are 'uncalibrated', no evidence of any state, until "
            "`beeaudio device calibrate` learns one from recordings of a period you know was normal"
        )


def baseline_status(
    *, config: FeatureConfig, needed: bool, state_dir: Path, hive_id: str = ""
) -> BaselineStatus:
    """The baseline in ``state_dir`` for features of ``config``, checked against the device's hive id."""
    try:
        baseline = load_baseline(state_dir=state_dir, config=config)
    except BaselineError as exc:
        return BaselineStatus(needed=needed, baseline=None, problem=f"unusable baseline file: {exc}")
    if baseline is None:
        where = baseline_path(state_dir=state_dir, config=config)
        return BaselineStatus(
            needed=needed, baseline=None, problem=f"no {where.name} for feature config {config.fingerprint()}"
        )
    if (
        baseline.hive_id
        and hive_id
        and _assigned(hive_id)
        and _assigned(baseline.hive_id)
        and baseline.hive_id != hive_id
    ):
        # A device moved to another hive: the old colony's normal is not this one's.
        return BaselineStatus(
            needed=needed,
            baseline=None,
            problem=f"the baseline was learnt on hive {baseline.hive_id!r}, this device is hive {hive_id!r}",
        )
    return BaselineStatus(needed=needed, baseline=baseline)


def _assigned(hive_id: str) -> bool:
    return hive_id not in ("", "unassigned")


def attach_baseline(*, classifier, state_dir: Path, hive_id: str = "") -> BaselineStatus:  # type: ignore[no-untyped-def]
    """Give ``classifier`` (a :class:`beeaudio.core.inference.Classifier`) the hive's baseline for its
    feature config, or take it away when there is none (any more); logs when that changes."""
    status = baseline_status(
        config=classifier.config, needed=classifier.needs_baseline, state_dir=state_dir, hive_id=hive_id
    )
    before = classifier.baseline
    classifier.set_baseline(status.baseline)
    if classifier.needs_baseline and before != status.baseline:
        if status.baseline is not None:
            log.info("hive baseline in use: %s", status.baseline.describe())
        else:
            log.warning(
                "the model needs the hive's baseline: %s; its readings are 'uncalibrated'", status.problem
            )
    return status


@dataclass(frozen=True)
class CalibrationResult:
    baseline: HiveBaseline
    path: Path
    files: int
    skipped_files: dict[str, str]


def _inputs(paths: Sequence[Path], patterns: Sequence[str]) -> list[Path]:
    found: list[Path] = []
    for path in paths:
        found.extend(sources.input_files(path=Path(path), patterns=patterns))
    return sorted(dict.fromkeys(found))


def calibrate(
    *,
    paths: Sequence[Path],
    config: FeatureConfig,
    state_dir: Path,
    hive_id: str = "",
    patterns: Sequence[str] = ("*.wav", "*.mp3", "*.flac", "*.ogg"),
    name_time_formats: Sequence[str] = (),
    name_timezone: str = "UTC",
    since: datetime | None = None,
    until: datetime | None = None,
    min_windows: int = MIN_WINDOWS,
    quality: QualityConfig | None = None,
    save: bool = True,
) -> CalibrationResult:
    """Learn the hive's baseline from the recordings under ``paths`` (those starting in [since, until) when
    given) and save it in ``state_dir`` (unless ``save`` is False). Windows whose signal check is not ``ok``
    are left out and counted; recordings that cannot be decoded are skipped and named. Raises
    :class:`CalibrationError` when fewer than ``min_windows`` usable windows remain."""
    files = _inputs(paths, patterns)
    if not files:
        raise CalibrationError(
            f"no recordings in {', '.join(map(str, paths))}: record a period you know was normal (e.g. "
            '[source] after = "archive" for a few hours) and pass it with --input'
        )
    quality = quality or QualityConfig()
    summaries: list[np.ndarray] = []
    skipped: Counter[str] = Counter()
    bad_files: dict[str, str] = {}
    used: list[str] = []
    for path in files:
        try:
            info = audio_io.probe(path)
            if since is not None or until is not None:
                start = sources.recording_start(
                    path=path, duration_s=info.duration_s, formats=name_time_formats, timezone=name_timezone
                )
                if (since is not None and start < since) or (until is not None and start >= until):
                    continue
            kept = 0
            for _start_s, samples in audio_io.iter_windows(path, config=config):
                verdict = check_window(
                    samples=samples, sample_rate=config.sample_rate, config=quality
                ).verdict
                if verdict != QUALITY_OK:
                    skipped[verdict] += 1
                    continue
                summaries.append(feats.window_features(audio=samples, config=config)[0])
                kept += 1
        except (audio_io.AudioError, OSError) as exc:
            bad_files[path.name] = str(exc)
            log.warning("calibration: skipping %s: %s", path, exc)
            continue
        if kept:
            used.append(path.name)
    if len(summaries) < min_windows:
        period = "" if since is None and until is None else f" between {since or '...'} and {until or '...'}"
        raise CalibrationError(
            f"{len(summaries)} usable windows from {len(used)} recordings{period} "
            f"({sum(skipped.values())} left out by the signal check: {dict(skipped) or 'none'}; "
            f"{len(bad_files)} unreadable): a baseline needs at least {min_windows}"
        )
    baseline = fit_baseline(
        features=np.stack(summaries),
        config=config,
        hive_id=hive_id,
        sources=tuple(used),
        skipped=dict(skipped),
    )
    path = (
        save_baseline(state_dir=state_dir, baseline=baseline)
        if save
        else baseline_path(state_dir=state_dir, config=config)
    )
    return CalibrationResult(baseline=baseline, path=path, files=len(used), skipped_files=bad_files)

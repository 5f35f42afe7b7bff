"""What both experiments share: the dataset and its one hive-grouped split, seeding, provenance.

The split comes from :func:`beeaudio.desktop.datasets.grouped_split` with the experiment's seed, the same call
``beeaudio train`` makes, so an experiment's test hives are the test hives of ``beeaudio train --seed``
on the same data.
"""

from __future__ import annotations

import logging
import platform
import shlex
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.features import FeatureConfig
from beeaudio.core.fsio import write_json
from beeaudio.desktop import training
from beeaudio.desktop.feature_presets import FrontEnd, preset_name

log = logging.getLogger(__name__)

Transform = Callable[[np.ndarray, int], np.ndarray]

#: Training overrides of ``--quick``: enough epochs to learn the tiny test data, few enough for seconds.
QUICK_TRAINING = {"epochs": 20, "patience": 20, "batch_size": 32, "learning_rate": 3e-3, "dropout": 0.0}


@dataclass
class Dataset:
    """A dataset folder cut into windows, with its one hive-grouped split."""

    path: Path
    recordings: list[Any]  # beeaudio.desktop.datasets.Recording
    windows: Any  # beeaudio.desktop.datasets.WindowSet
    train_idx: np.ndarray
    test_idx: np.ndarray
    synthetic: bool

    @property
    def label_names(self) -> tuple[str, ...]:
        return tuple(self.windows.label_names)

    @property
    def train_hives(self) -> list[str]:
        return sorted({str(h) for h in np.asarray(self.windows.hives)[self.train_idx].tolist()})

    @property
    def test_hives(self) -> list[str]:
        return sorted({str(h) for h in np.asarray(self.windows.hives)[self.test_idx].tolist()})

    def summary(self) -> dict[str, Any]:
        labels = np.asarray(self.windows.labels)
        names = self.label_names
        return {
            "path": str(self.path),
            "synthetic": self.synthetic,
            "recordings": len(self.recordings),
            "hives": len({r.hive for r in self.recordings}),
            "windows": int(labels.size),
            "class_windows": {n: int(np.sum(labels == i)) for i, n in enumerate(names)},
            "train_windows": int(self.train_idx.size),
            "test_windows": int(self.test_idx.size),
            "train_hives": self.train_hives,
            "test_hives": self.test_hives,
            "load_seconds": float(self.windows.load_seconds),
            "compute_seconds": float(self.windows.compute_seconds),
            "cache_hits": int(self.windows.cache_hits),
        }


def load_dataset(
    *,
    data: Path,
    feature_config: FeatureConfig,
    cache_dir: Path | None,
    test_fraction: float,
    seed: int,
) -> Dataset:
    """Discover the recordings under ``data``, cut them into windows and split them by hive."""
    from beeaudio.desktop import datasets as datasets
    from beeaudio.desktop.training.train import is_synthetic

    data = Path(data)
    recordings = datasets.discover(root=data)
    if not recordings:
        raise ValueError(f"{data}: no recordings found (expected manifest.csv, class folders or known names)")
    windows = datasets.build_windows(
        recordings=recordings, config=feature_config, cache_dir=cache_dir, progress=False
    )
    if len(windows.label_names) < 2:
        raise ValueError(f"{data}: need at least two labels, found {list(windows.label_names)}")
    train_idx, test_idx = datasets.grouped_split(windows=windows, test_fraction=test_fraction, seed=seed)
    shared = set(np.asarray(windows.hives)[train_idx].astype(str)) & set(
        np.asarray(windows.hives)[test_idx].astype(str)
    )
    if shared:
        raise RuntimeError(f"grouped split shares hives {sorted(shared)}")
    return Dataset(
        path=data,
        recordings=list(recordings),
        windows=windows,
        train_idx=np.asarray(train_idx, dtype=np.int64),
        test_idx=np.asarray(test_idx, dtype=np.int64),
        synthetic=is_synthetic(data),
    )


def transformed_windows(
    *,
    dataset: Dataset,
    feature_config: FeatureConfig,
    cache_dir: Path | None,
    transform: Transform,
    transform_key: str,
    recordings: Sequence[Any] | None = None,
) -> tuple[Any, np.ndarray]:
    """Windows of (some of) the dataset's recordings after ``transform`` (e.g. an MP3 round trip), and,
    for each of them, the index of the clean window at the same recording and start (so the one split
    applies to every condition)."""
    from beeaudio.desktop import datasets as datasets

    chosen = dataset.recordings if recordings is None else list(recordings)
    windows = datasets.build_windows(
        recordings=chosen,
        config=feature_config,
        cache_dir=cache_dir,
        label_names=dataset.label_names,
        transform=transform,
        transform_key=transform_key,
        progress=False,
    )
    return windows, align(reference=dataset.windows, other=windows)


def _keys(windows: Any) -> list[tuple[str, str, int]]:
    hives = np.asarray(windows.hives).astype(str)
    recordings = np.asarray(windows.recordings).astype(str)
    starts = np.round(np.asarray(windows.starts, dtype=np.float64) * 1000).astype(np.int64)
    return list(zip(hives.tolist(), recordings.tolist(), starts.tolist(), strict=True))


def align(*, reference: Any, other: Any) -> np.ndarray:
    """For each window of ``other``, the index of the ``reference`` window with the same hive, recording
    and start; ValueError if one has none (a transform that changed the length would do that)."""
    index = {key: i for i, key in enumerate(_keys(reference))}
    keys = _keys(other)
    missing = [key for key in keys if key not in index]
    if missing:
        raise ValueError(f"{len(missing)} transformed windows have no clean counterpart, e.g. {missing[0]}")
    return np.array([index[key] for key in keys], dtype=np.int64)


def data_summary(
    *, data: Path, recordings: Sequence[Any], windows: Any, hives: int | None = None
) -> dict[str, Any]:
    """What an experiment's results say about its data: where, synthetic or not, how much, how long."""
    from beeaudio.desktop.training.train import is_synthetic

    return {
        "path": str(data),
        "synthetic": is_synthetic(data),
        "recordings": len(recordings),
        "hives": len({r.hive for r in recordings}) if hives is None else hives,
        "windows": len(windows),
        "load_seconds": float(windows.load_seconds),
        "compute_seconds": float(windows.compute_seconds),
        "cache_hits": int(windows.cache_hits),
    }


def seed_statistics(*, cell: Sequence[dict[str, Any]], metrics: Sequence[str]) -> dict[str, float | None]:
    """``metric`` and ``metric_sd`` for each metric over the rows of one cell (one row per seed): the mean
    and the sample standard deviation (ddof 1; 0 with one seed) of its finite values, None without any."""
    out: dict[str, float | None] = {}
    for metric in metrics:
        values = np.array([r[metric] for r in cell if r.get(metric) is not None], dtype=np.float64)
        values = values[np.isfinite(values)]
        out[metric] = float(values.mean()) if values.size else None
        out[f"{metric}_sd"] = float(values.std(ddof=1)) if values.size > 1 else (0.0 if values.size else None)
    return out


def seed_everything(*, seed: int) -> None:
    """Seed Python, numpy and TensorFlow (``fit_model`` reseeds before every model).

    TensorFlow's global op-determinism switch is deliberately not turned on: it would change every later
    TensorFlow user in the process (tests run in one), and the dense CPU kernels these small models use
    already give the same result run to run on one machine; the report says so.
    """
    import keras

    keras.utils.set_random_seed(seed)


def quiet_tensorflow() -> None:
    """TensorFlow without its start-up chatter, and without oneDNN's kernels (training.quiet_tensorflow):
    they reorder float sums, and an experiment compares conditions, so every run computes alike."""
    training.quiet_tensorflow()


def provenance(*, command: Sequence[str] | None) -> dict[str, Any]:
    """The command line, the git commit of the source tree (if any) and the software versions."""
    root = Path(__file__).resolve().parents[2]
    commit, dirty = None, None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
        dirty = bool(status.strip())
    except (OSError, subprocess.SubprocessError):
        log.debug("no git commit available for %s", root)
    versions: dict[str, str] = {"python": platform.python_version(), "numpy": np.__version__}
    for name in ("tensorflow", "keras", "sklearn"):
        module = sys.modules.get(name)
        if module is not None:
            versions[name] = str(getattr(module, "__version__", "?"))
    from beeaudio import __version__

    versions["beeaudio"] = __version__
    argv = list(command) if command is not None else ["beeaudio", *sys.argv[1:]]
    return {
        "command": shlex.join(argv),
        "git_commit": commit,
        "git_dirty": dirty,
        "versions": versions,
        "machine": platform.machine(),
    }


def accuracy(*, y_true: np.ndarray, probabilities: np.ndarray) -> dict[str, float]:
    """Accuracy and balanced accuracy (mean per-class recall) of argmax predictions."""
    y_true = np.asarray(y_true, dtype=np.int64)
    pred = np.asarray(probabilities).argmax(axis=1)
    recalls = [float(np.mean(pred[y_true == c] == c)) for c in np.unique(y_true)]
    return {
        "accuracy": float(np.mean(pred == y_true)) if y_true.size else 0.0,
        "balanced_accuracy": float(np.mean(recalls)) if recalls else 0.0,
        "windows": int(y_true.size),
    }


#: TrainConfig overrides the experiment commands express as options (the rest are named in the report).
_EXPRESSED_OVERRIDES = ("feature_config", "codec_weighting")


def feature_argument(*, front_end: FrontEnd, out: Path) -> str:
    """What to pass to ``--features`` / ``--band`` to get ``front_end`` back: its preset's name when it is
    that preset unchanged, else a JSON file written to ``out/features/<name>.json`` (so the name, which
    labels the report's rows, comes back too)."""
    if preset_name(config=front_end.config) == front_end.name:
        return front_end.name
    path = Path(out) / "features" / f"{front_end.name}.json"
    write_json(path, front_end.config.to_dict())
    return str(path)


def front_end_of(*, training: dict[str, Any]) -> FrontEnd:
    """The front end of a training-overrides dict: its ``feature_config`` (a FeatureConfig or its dict),
    named after the preset it equals (else ``custom``), or the ``default`` preset."""
    given = training.get("feature_config")
    if given is None:
        return FrontEnd(name="default", config=FeatureConfig())
    config = given if isinstance(given, FeatureConfig) else FeatureConfig.from_dict(dict(given))
    return FrontEnd(name=preset_name(config=config) or "custom", config=config)


def unexpressed_overrides(*, training: dict[str, Any]) -> dict[str, Any]:
    """Training overrides given from Python that no experiment option expresses (the report lists them
    next to the command, which would otherwise not reproduce the run)."""
    return {k: v for k, v in training.items() if k not in _EXPRESSED_OVERRIDES}

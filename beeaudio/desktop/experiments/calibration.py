"""``beeaudio experiment calibration``: does per-hive calibration help on microphones training never heard?

For every seed, two grouped splits of the dataset's hives:

* ``unseen-microphones`` — the test hives are all the hives of ``test_families`` microphone families
  (the manifest's ``microphone`` column, which ``beeaudio synth --variation wide`` writes); no training
  hive has a microphone of those families (and, as always, no hive or recording is on both sides);
* ``unseen-hives`` — as many test hives, drawn so that every test hive's family keeps training hives:
  new colonies, known kinds of microphone. The contrast says how much of the loss is the microphone's.

and on each, the ``beeaudio train`` DNN (:func:`beeaudio.desktop.training.train.fit_model`, same
configuration) trained twice: on plain features (``none``) and on features relative to each hive's
baseline (``cmn``, :func:`beeaudio.desktop.calibration.calibrate_split`: a training hive's baseline from
its normal windows; a test hive's from its first normal recording, the "declared-normal period"). Both are
scored on the same windows: the test hives' windows minus those calibration recordings. Per cell:
accuracy, balanced accuracy, the share of normal windows called swarm (false alarms: what made 34 % of a
real non-swarming series "swarm" in issue 9), swarm recall, and the share of test windows the novelty
detector fitted on the same training windows flags unfamiliar. The report gives mean ± sd over seeds.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.desktop import calibration
from beeaudio.desktop.experiments import common

log = logging.getLogger(__name__)

SPLITS = ("unseen-microphones", "unseen-hives")
CONDITIONS = ("none", "cmn", "feature-mean")
METRICS = ("accuracy", "balanced_accuracy", "false_alarm", "swarm_recall", "unfamiliar")


@dataclass(frozen=True)
class CalibrationConfig:
    """What the experiment runs: ``seeds`` (each draws its own splits and trains its own models),
    ``test_families`` families held out per seed, the label that calibrates (``normal``), ``novelty``
    (fit a detector per model to measure the unfamiliar share), ``quick`` (short training, for tests),
    ``training`` (TrainConfig overrides)."""

    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    test_families: int = 3
    splits: tuple[str, ...] = SPLITS
    conditions: tuple[str, ...] = CONDITIONS
    calibration_label: str = "normal"
    swarm_label: str = "swarm"
    novelty: bool = True
    quick: bool = False
    training: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "splits", tuple(self.splits))
        object.__setattr__(self, "conditions", tuple(self.conditions))
        if not self.conditions or any(c not in CONDITIONS for c in self.conditions):
            raise ValueError(f"conditions must be among {CONDITIONS}, got {self.conditions}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers, got {self.seeds}")
        if self.test_families < 1:
            raise ValueError(f"test_families must be at least 1, got {self.test_families}")
        unknown = [s for s in self.splits if s not in SPLITS]
        if unknown or not self.splits:
            raise ValueError(f"splits must be among {SPLITS}, got {self.splits}")


def command_line(*, data: Path, out: Path, config: CalibrationConfig) -> list[str]:
    argv = ["beeaudio", "experiment", "calibration", "--data", str(data), "--out", str(out)]
    argv += ["--seeds", ",".join(map(str, config.seeds)), "--test-families", str(config.test_families)]
    argv += ["--conditions", ",".join(config.conditions)] if config.conditions != CONDITIONS else []
    argv += ["--quick"] if config.quick else []
    argv += ["--no-novelty"] if not config.novelty else []
    return argv


def _train_config(config: CalibrationConfig, *, seed: int) -> Any:  # -> TrainConfig
    from beeaudio.desktop.training.train import TrainConfig

    overrides: dict[str, Any] = {"model": "dnn", "seed": seed}
    if config.quick:
        overrides.update(common.QUICK_TRAINING)
    overrides.update(config.training)
    overrides.update({"verbose": 0, "progress": False})
    return TrainConfig(**overrides)


def hive_families(*, windows: Any, microphones: dict[str, str]) -> dict[str, str]:
    """Each hive's microphone family (from its recordings); a hive with recordings of several families, or
    a dataset without the column, is a ValueError that says so."""
    hives = np.asarray(windows.hives).astype(str)
    recs = np.asarray(windows.recordings).astype(str)
    if not microphones:
        raise ValueError(
            "the dataset's manifest.csv has no 'microphone' column: generate it with "
            "`beeaudio synth --variation wide`, or add the column (one family name per recording)"
        )
    families: dict[str, set[str]] = {}
    for hive, rec in set(zip(hives.tolist(), recs.tolist(), strict=True)):
        if rec not in microphones:
            raise ValueError(f"recording {rec!r} is not in the manifest's microphone column")
        families.setdefault(hive, set()).add(microphones[rec])
    mixed = {h: sorted(f) for h, f in families.items() if len(f) > 1}
    if mixed:
        raise ValueError(f"hives recorded with several microphone families: {mixed}")
    return {h: next(iter(f)) for h, f in sorted(families.items())}


def _has_both(windows: Any, hives: Sequence[str], n_labels: int) -> bool:
    mask = np.isin(np.asarray(windows.hives).astype(str), list(hives))
    return len(np.unique(np.asarray(windows.labels)[mask])) == n_labels


def split_hives(
    *, windows: Any, families: dict[str, str], split: str, test_families: int, seed: int
) -> tuple[list[str], list[str]]:
    """(test families, test hives) of one split for one seed; the training hives are all the others.

    ``unseen-microphones``: ``test_families`` families drawn at random (every label must stay on both
    sides). ``unseen-hives``: as many test hives as that draw gave, each from a family that keeps at least
    one training hive."""
    names = sorted(set(families.values()))
    if len(names) <= test_families:
        raise ValueError(
            f"{len(names)} microphone families ({names}): cannot hold out {test_families} of them"
        )
    n_labels = len(windows.label_names)
    rng = np.random.default_rng(seed)
    for _ in range(100):
        held = sorted(rng.choice(names, size=test_families, replace=False).tolist())
        test = sorted(h for h, f in families.items() if f in held)
        train = [h for h in families if h not in test]
        if _has_both(windows, test, n_labels) and _has_both(windows, train, n_labels):
            break
    else:
        raise ValueError("no draw of test families keeps every label on both sides")
    if split == "unseen-microphones":
        return held, test
    n_test = len(test)
    rng = np.random.default_rng(seed + 104729)
    for _ in range(100):
        remaining = {f: sum(1 for v in families.values() if v == f) for f in names}
        chosen: list[str] = []
        for hive in rng.permutation(sorted(families)).tolist():
            if len(chosen) == n_test:
                break
            if remaining[families[hive]] > 1:
                chosen.append(hive)
                remaining[families[hive]] -= 1
        train = [h for h in families if h not in chosen]
        if (
            len(chosen) == n_test
            and _has_both(windows, chosen, n_labels)
            and _has_both(windows, train, n_labels)
        ):
            return sorted({families[h] for h in chosen}), sorted(chosen)
    raise ValueError("cannot draw test hives whose families all keep training hives")


def score(
    *, probabilities: np.ndarray, labels: np.ndarray, names: Sequence[str], config: CalibrationConfig
) -> dict[str, float]:
    """The cell's metrics (shares in [0, 1]) from the model's probabilities on the scored windows."""
    pred = np.asarray(probabilities).argmax(axis=1)
    y = np.asarray(labels)
    normal, swarm = names.index(config.calibration_label), names.index(config.swarm_label)
    recalls = [float(np.mean(pred[y == c] == c)) for c in np.unique(y)]
    return {
        "accuracy": float(np.mean(pred == y)),
        "balanced_accuracy": float(np.mean(recalls)),
        "false_alarm": float(np.mean(pred[y == normal] == swarm)) if np.any(y == normal) else float("nan"),
        "swarm_recall": float(np.mean(pred[y == swarm] == swarm)) if np.any(y == swarm) else float("nan"),
    }


def run_cell(
    *, train: Any, test: Any, seed: int, config: CalibrationConfig, feature_config: Any
) -> dict[str, Any]:
    """Train one DNN on ``train`` and score it on ``test`` (both already in the cell's feature space)."""
    from beeaudio.desktop.training import novelty_fit
    from beeaudio.desktop.training.train import fit_model

    tc = _train_config(config, seed=seed)
    names = list(train.label_names)
    t0 = time.perf_counter()
    fit = fit_model(
        features=train.features, labels=train.labels, hives=train.hives, n_classes=len(names), config=tc
    )
    probabilities = np.asarray(fit.model.predict(test.features, verbose=0))
    row: dict[str, Any] = score(probabilities=probabilities, labels=test.labels, names=names, config=config)
    row["unfamiliar"] = None
    if config.novelty:
        detector = novelty_fit.fit_detector(
            features=train.features, labels=train.labels, hives=train.hives, config=feature_config,
            n_classes=len(names),
        ).detector  # fmt: skip
        row["unfamiliar"] = novelty_fit.flagged_share(detector=detector, features=test.features)
    row.update(
        {
            "test_windows": len(test),
            "train_windows": len(train),
            "epochs_run": fit.epochs_run,
            "seconds": round(time.perf_counter() - t0, 2),
        }
    )
    return row


def run_calibration(
    *,
    data: Path,
    out: Path,
    config: CalibrationConfig,
    cache_dir: Path | None = None,
    command: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Run every seed × split × condition; write ``report.md``, ``results.json`` and ``calibration.png``
    into ``out``; return the results."""
    from beeaudio.desktop import datasets
    from beeaudio.desktop.experiments import calibration_report

    common.quiet_tensorflow()
    started = time.perf_counter()
    data, out = Path(data), Path(out)
    feature_config = _train_config(config, seed=config.seeds[0]).features
    recordings = datasets.discover(root=data)
    windows = datasets.build_windows(
        recordings=recordings, config=feature_config, cache_dir=cache_dir, progress=False
    )
    families = hive_families(windows=windows, microphones=calibration.read_microphones(data=data))
    hives = np.asarray(windows.hives).astype(str)
    rows: list[dict[str, Any]] = []
    for seed in config.seeds:
        for split in config.splits:
            held, test_hives = split_hives(
                windows=windows, families=families, split=split, test_families=config.test_families, seed=seed
            )
            is_test = np.isin(hives, test_hives)
            train_set, test_set = (
                windows.subset(np.flatnonzero(~is_test)),
                windows.subset(np.flatnonzero(is_test)),
            )
            calibrated = {
                condition: calibration.calibrate_split(
                    train=train_set,
                    test=test_set,
                    config=feature_config,
                    calibration_label=config.calibration_label,
                    kind=calibration.kind_of(condition),
                )
                for condition in ("cmn", *config.conditions)
                if condition != "none"
            }
            reference = calibrated["cmn"]  # every kind has the same baselines and calibration recordings
            # Every condition is scored on the same windows: the test hives minus their calibration ones.
            scored = np.isin(np.asarray(test_set.recordings).astype(str), reference.calibration_recordings)
            plain_test = test_set.subset(
                np.flatnonzero(~scored & np.isin(test_set.hives, list(reference.test_baselines)))
            )
            plain_train = train_set.subset(
                np.flatnonzero(np.isin(train_set.hives, list(reference.train_baselines)))
            )
            cells = {
                "none": (plain_train, plain_test),
                **{c: (v.train, v.test) for c, v in calibrated.items()},
            }
            for condition in config.conditions:
                train_cell, test_cell = cells[condition]
                row = run_cell(
                    train=train_cell, test=test_cell, seed=seed, config=config, feature_config=feature_config
                )
                row.update(
                    {
                        "seed": seed,
                        "split": split,
                        "condition": condition,
                        "test_families": held,
                        "test_hives": test_hives,
                        "calibration_recordings": len(reference.calibration_recordings),
                    }
                )
                rows.append(row)
                log.info(
                    "seed %d %s %s: accuracy %.2f %%, false alarms %.2f %%", seed, split, condition,
                    100 * row["accuracy"], 100 * row["false_alarm"],
                )  # fmt: skip
    results: dict[str, Any] = {
        "experiment": "calibration",
        "provenance": {
            **common.provenance(
                command=list(command) if command else command_line(data=data, out=out, config=config)
            ),
            "library_overrides": common.unexpressed_overrides(training=config.training),
        },
        "config": {
            **asdict(config),
            "seeds": list(config.seeds),
            "splits": list(config.splits),
            "conditions": list(config.conditions),
        },
        "train_config": _train_config(config, seed=config.seeds[0]).to_dict(),
        "feature_config": feature_config.to_dict(),
        "data": {
            **common.data_summary(data=data, recordings=recordings, windows=windows, hives=len(families)),
            "families": {
                f: sorted(h for h, v in families.items() if v == f) for f in sorted(set(families.values()))
            },
        },
        "rows": rows,
        "summary": summarize(rows=rows),
        "timing": {"total_seconds": time.perf_counter() - started},
    }
    calibration_report.write_report(out=out, results=results)
    log.info("calibration experiment written to %s in %.0f s", out, results["timing"]["total_seconds"])
    return results


def summarize(*, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof 1; 0 with one seed) over seeds of every metric, per split
    × condition."""
    out: list[dict[str, Any]] = []
    for split in SPLITS:
        for condition in CONDITIONS:  # the report's order, whatever order the rows came in
            cell = [r for r in rows if r["split"] == split and r["condition"] == condition]
            if not cell:
                continue
            entry: dict[str, Any] = {
                "split": split,
                "condition": condition,
                "seeds": [r["seed"] for r in cell],
            }
            entry.update(common.seed_statistics(cell=cell, metrics=METRICS))
            out.append(entry)
    return out

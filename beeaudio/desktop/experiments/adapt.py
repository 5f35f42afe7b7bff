"""``beeaudio experiment adapt``: how much does a beekeeper's labelling buy on hives the model has not heard?

For every seed:

1. **Target hives.** With a ``microphone`` column in the manifest (``beeaudio synth --variation wide``),
   the hives of ``test_families`` microphone families (``unseen-microphones``,
   :func:`beeaudio.desktop.experiments.calibration.split_hives`); without one, a hive-grouped split's
   test hives (``unseen-hives``; the report says which). The **base** model is the ``beeaudio train`` DNN
   trained on every other hive, with its novelty
   detector (:func:`beeaudio.desktop.training.novelty_fit.fit_detector`) and anchors (its training windows).
2. **Calibration and test part.** Of each target hive's recordings of each class, the first
   ``calibration_share`` (by recording id) are the part the beekeeper listens to; the rest are the test part.
   Labelled windows come only from the calibration part and the scores only from the test part, so no
   labelled window (nor any window of a labelled recording) is ever scored.
3. **Labelling, simulated.** For each budget of ``minutes``, ``minutes × 60 / window`` windows of the
   calibration part are chosen by each ``strategy`` with the rules of ``beeaudio label suggest``
   (:func:`beeaudio.desktop.suggest.choose`; windows at least one window apart, so the minutes are minutes
   of distinct audio, and an even share per hive), scored by the base model, and labelled from the ground
   truth: the simulated beekeeper never errs.
4. **Fine-tuning** from the base (:func:`beeaudio.desktop.finetune.fine_tune`, the defaults of
   ``beeaudio train --init-from``), scored on the test part. ``0`` minutes is the base itself; with
   ``scratch``, a DNN trained from nothing on the same labelled windows of the first strategy is scored too.

The report gives accuracy, balanced accuracy, false alarms (normal windows called swarm) and swarm recall as
mean ± sd over seeds per strategy and budget (:mod:`beeaudio.desktop.experiments.adapt_report`).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.desktop.experiments import common

log = logging.getLogger(__name__)

METRICS = ("accuracy", "balanced_accuracy", "false_alarm", "swarm_recall")
#: What the labelled windows come from: the suggestion strategies of ``beeaudio label suggest``.
STRATEGIES = ("informative", "uncertain", "unfamiliar", "random")
SCRATCH = "scratch"


@dataclass(frozen=True)
class AdaptConfig:
    """What the experiment runs (see the module docstring): labelled ``minutes`` per budget, ``seeds``,
    suggestion ``strategies``, ``test_families`` microphone families held out (or that many hive-grouped
    test hives' share, ``test_fraction``, without a microphone column), ``calibration_share`` of each target
    hive's recordings per class that may be labelled, ``scratch`` (also train from nothing on the labels),
    ``quick`` (short training, for tests), ``training`` (TrainConfig overrides of the base) and
    ``fine_tune`` (TrainConfig overrides of the fine-tuning)."""

    minutes: tuple[float, ...] = (0.0, 1.0, 2.0, 5.0, 10.0)
    seeds: tuple[int, ...] = (0, 1, 2)
    strategies: tuple[str, ...] = ("informative", "random")
    test_families: int = 2
    test_fraction: float = 0.25
    calibration_share: float = 0.75
    scratch: bool = True
    quick: bool = False
    training: dict[str, Any] = field(default_factory=dict)
    fine_tune: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "minutes", tuple(sorted({float(m) for m in self.minutes})))
        object.__setattr__(self, "seeds", tuple(int(s) for s in self.seeds))
        object.__setattr__(self, "strategies", tuple(self.strategies))
        if not self.minutes or any(not (math.isfinite(m) and m >= 0) for m in self.minutes):
            raise ValueError(f"minutes must be non-negative numbers, got {self.minutes}")
        if not self.seeds or len(set(self.seeds)) != len(self.seeds):
            raise ValueError(f"seeds must be distinct integers, got {self.seeds}")
        unknown = [s for s in self.strategies if s not in STRATEGIES]
        if unknown or not self.strategies or len(set(self.strategies)) != len(self.strategies):
            raise ValueError(f"strategies must be distinct names from {STRATEGIES}, got {self.strategies}")
        if not 0.0 < self.calibration_share < 1.0:
            raise ValueError(f"calibration_share must be in (0, 1), got {self.calibration_share}")
        if self.test_families < 1:
            raise ValueError(f"test_families must be at least 1, got {self.test_families}")


def command_line(*, data: Path, out: Path, config: AdaptConfig) -> list[str]:
    argv = ["beeaudio", "experiment", "adapt", "--data", str(data), "--out", str(out)]
    argv += ["--minutes", ",".join(f"{m:g}" for m in config.minutes)]
    argv += ["--seeds", ",".join(map(str, config.seeds)), "--strategies", ",".join(config.strategies)]
    argv += [
        "--test-families",
        str(config.test_families),
        "--calibration-share",
        f"{config.calibration_share:g}",
    ]
    argv += [] if config.scratch else ["--no-scratch"]
    argv += ["--quick"] if config.quick else []
    return argv


def _train_config(config: AdaptConfig, *, seed: int, fine_tune: bool) -> Any:  # -> TrainConfig
    from beeaudio.desktop.finetune import FINE_TUNE_DEFAULTS
    from beeaudio.desktop.training.train import TrainConfig

    overrides: dict[str, Any] = {"model": "dnn", "seed": seed}
    if config.quick:
        overrides.update(common.QUICK_TRAINING)
    overrides.update(config.training)
    if fine_tune:
        overrides.update(FINE_TUNE_DEFAULTS)
        if config.quick:
            overrides.update({"epochs": 10, "patience": 10})
        overrides.update(config.fine_tune)
    overrides.update({"verbose": 0, "progress": False})
    return TrainConfig(**overrides)


def score(*, probabilities: np.ndarray, labels: np.ndarray, names: Sequence[str]) -> dict[str, float]:
    """Accuracy, balanced accuracy, the share of normal windows called swarm and swarm recall (NaN when the
    test windows have no such class)."""
    pred = np.asarray(probabilities).argmax(axis=1)
    y = np.asarray(labels)
    recalls = [float(np.mean(pred[y == c] == c)) for c in np.unique(y)]
    out = {"accuracy": float(np.mean(pred == y)), "balanced_accuracy": float(np.mean(recalls))}
    normal = names.index("normal") if "normal" in names else None
    swarm = names.index("swarm") if "swarm" in names else None
    out["false_alarm"] = (
        float(np.mean(pred[y == normal] == swarm))
        if normal is not None and swarm is not None and np.any(y == normal)
        else float("nan")
    )
    out["swarm_recall"] = (
        float(np.mean(pred[y == swarm] == swarm))
        if swarm is not None and np.any(y == swarm)
        else float("nan")
    )
    return out


def target_hives(
    *, windows: Any, data: Path, config: AdaptConfig, seed: int
) -> tuple[str, list[str], list[str]]:
    """(split name, held-out microphone families or [], target hives) for one seed."""
    from beeaudio.desktop import calibration, datasets
    from beeaudio.desktop.experiments.calibration import hive_families, split_hives

    microphones = calibration.read_microphones(data=data)
    if microphones:
        families = hive_families(windows=windows, microphones=microphones)
        if len(set(families.values())) > config.test_families:
            held, hives = split_hives(
                windows=windows, families=families, split="unseen-microphones",
                test_families=config.test_families, seed=seed,
            )  # fmt: skip
            return "unseen-microphones", held, hives
    _, test_idx = datasets.grouped_split(windows=windows, test_fraction=config.test_fraction, seed=seed)
    return "unseen-hives", [], sorted({str(h) for h in np.asarray(windows.hives)[test_idx].tolist()})


def calibration_part(*, windows: Any, hives: Sequence[str], share: float) -> tuple[np.ndarray, np.ndarray]:
    """Boolean masks (calibration part, test part) over ``windows``: of each target hive's recordings of each
    class, the first ``share`` by recording id (at least one, and at least one left for the test part when
    there are two or more) may be labelled; the rest are scored."""
    hive_of = np.asarray(windows.hives).astype(str)
    recs = np.asarray(windows.recordings).astype(str)
    labels = np.asarray(windows.labels)
    calibrate = np.zeros(len(labels), dtype=bool)
    target = np.isin(hive_of, list(hives))
    for hive in hives:
        for label in np.unique(labels[hive_of == hive]):
            mine = sorted(set(recs[(hive_of == hive) & (labels == label)].tolist()))
            k = max(1, min(len(mine) - 1, round(share * len(mine)))) if len(mine) > 1 else 1
            calibrate |= np.isin(recs, mine[:k]) & (hive_of == hive)
    return calibrate & target, target & ~calibrate


def _base(*, train: Any, config: AdaptConfig, seed: int, feature_config: Any) -> tuple[Any, Any]:
    """The base model as a :class:`beeaudio.desktop.finetune.Base` (anchors: its training windows) and its
    novelty detector."""
    from beeaudio.desktop.finetune import Base
    from beeaudio.desktop.training import novelty_fit
    from beeaudio.desktop.training.train import fit_model, representative_windows

    tc = _train_config(config, seed=seed, fine_tune=False)
    names = tuple(train.label_names)
    fit = fit_model(
        features=train.features, labels=train.labels, hives=train.hives, n_classes=len(names), config=tc
    )
    detector = novelty_fit.fit_detector(
        features=train.features,
        labels=train.labels,
        hives=train.hives,
        config=feature_config,
        n_classes=len(names),
    ).detector
    base = Base(
        source=Path("base"),
        kind="run",
        model=fit.model,
        feature_config=feature_config,
        label_names=names,
        model_kind="dnn",
        layers=int(tc.layers),
        units=int(tc.units),
        anchors=representative_windows(train.features, seed=seed),
        summary={"kind": "experiment", "epochs_run": fit.epochs_run},
    )
    return base, detector


def _scored_pool(*, pool: Any, base: Any, detector: Any) -> Any:  # -> ScoredWindows
    from beeaudio.desktop.suggest import ScoredWindows

    n = len(pool)
    return ScoredWindows(
        files=np.asarray(pool.recordings).astype(str),
        hives=np.asarray(pool.hives).astype(str),
        starts=np.asarray(pool.starts, dtype=np.float64),
        probabilities=np.asarray(base.model.predict(pool.features, verbose=0), dtype=np.float64),
        novelty=np.asarray(detector.score(pool.features), dtype=np.float64),
        threshold=detector.threshold,
        # SYNTHETIC windows all carry a signal; real recordings go through the signal check in label suggest.
        usable=np.ones(n, dtype=bool),
        labelled=np.zeros(n, dtype=bool),
        label_names=tuple(pool.label_names),
        window_seconds=base.feature_config.window_seconds,
    )


def _labelled(*, pool: Any, scored: Any, n: int, strategy: str, seed: int) -> np.ndarray:
    """Indices into ``pool`` of the ``n`` windows ``strategy`` suggests (one window apart, even per hive)."""
    from beeaudio.desktop.suggest import SuggestConfig, choose

    chosen = choose(
        windows=scored,
        config=SuggestConfig(n=n, min_gap_s=scored.window_seconds, strategy=strategy, seed=seed),
    )
    index = {
        (str(f), round(float(s), 3)): i
        for i, (f, s) in enumerate(zip(scored.files, scored.starts, strict=True))
    }
    return np.array([index[(c.file, round(c.start_s, 3))] for c in chosen], dtype=np.int64)


def run_seed(
    *, windows: Any, data: Path, config: AdaptConfig, seed: int, feature_config: Any
) -> list[dict[str, Any]]:
    """Every strategy × budget of one seed (module docstring), as rows."""
    from beeaudio.desktop.finetune import fine_tune
    from beeaudio.desktop.training.train import fit_model

    split, held, targets = target_hives(windows=windows, data=data, config=config, seed=seed)
    hive_of = np.asarray(windows.hives).astype(str)
    train = windows.subset(np.flatnonzero(~np.isin(hive_of, targets)))
    calibrate, scored_part = calibration_part(windows=windows, hives=targets, share=config.calibration_share)
    pool, test = windows.subset(np.flatnonzero(calibrate)), windows.subset(np.flatnonzero(scored_part))
    names = list(windows.label_names)
    t0 = time.perf_counter()
    base, detector = _base(train=train, config=config, seed=seed, feature_config=feature_config)
    common_row = {
        "seed": seed, "split": split, "test_families": held, "target_hives": targets,
        "base_train_windows": len(train), "pool_windows": len(pool), "test_windows": len(test),
        "pool_minutes": round(_distinct_minutes(pool, feature_config.window_seconds), 2),
        "test_unfamiliar": float(np.mean(detector.unfamiliar(detector.score(test.features)))),
    }  # fmt: skip
    base_row = score(
        probabilities=base.model.predict(test.features, verbose=0), labels=test.labels, names=names
    )
    rows = [
        {**common_row, "strategy": s, "minutes": 0.0, "labelled_windows": 0, "labelled_classes": {},
         **base_row, "seconds": round(time.perf_counter() - t0, 2)}
        for s in config.strategies
    ]  # fmt: skip
    scored = _scored_pool(pool=pool, base=base, detector=detector)
    tc = _train_config(config, seed=seed, fine_tune=True)
    for minutes in (m for m in config.minutes if m > 0):
        n = round(minutes * 60.0 / feature_config.window_seconds)
        for j, strategy in enumerate(config.strategies):
            t0 = time.perf_counter()
            pick = _labelled(pool=pool, scored=scored, n=n, strategy=strategy, seed=seed)
            labelled = pool.subset(pick)
            classes = {names[c]: int(np.sum(labelled.labels == c)) for c in np.unique(labelled.labels)}
            fit = fine_tune(
                base=base, features=labelled.features, labels=labelled.labels, hives=labelled.hives, config=tc
            )
            row = score(
                probabilities=fit.model.predict(test.features, verbose=0), labels=test.labels, names=names
            )
            rows.append(
                {**common_row, "strategy": strategy, "minutes": minutes, "labelled_windows": len(pick),
                 "labelled_classes": classes, **row, "epochs_run": fit.epochs_run,
                 "seconds": round(time.perf_counter() - t0, 2)}
            )  # fmt: skip
            log.info(
                "seed %d, %g min (%d windows), %s: accuracy %.2f %%", seed, minutes, len(pick), strategy,
                100 * row["accuracy"],
            )  # fmt: skip
            if config.scratch and j == 0 and len(np.unique(labelled.labels)) >= 2:
                t0 = time.perf_counter()
                scratch_config = _train_config(config, seed=seed, fine_tune=False)
                fit = fit_model(
                    features=labelled.features, labels=labelled.labels, hives=labelled.hives,
                    n_classes=len(names), config=scratch_config,
                )  # fmt: skip
                row = score(
                    probabilities=fit.model.predict(test.features, verbose=0), labels=test.labels, names=names
                )
                rows.append(
                    {**common_row, "strategy": SCRATCH, "labels_from": strategy, "minutes": minutes,
                     "labelled_windows": len(pick), "labelled_classes": classes, **row,
                     "epochs_run": fit.epochs_run, "seconds": round(time.perf_counter() - t0, 2)}
                )  # fmt: skip
    return rows


def _distinct_minutes(windows: Any, window_seconds: float) -> float:
    """Minutes of distinct audio in a set of windows (overlapping windows counted once)."""
    total = 0.0
    recs = np.asarray(windows.recordings).astype(str)
    starts = np.asarray(windows.starts, dtype=np.float64)
    for rec in np.unique(recs):
        s = np.sort(starts[recs == rec])
        total += float(np.sum(np.minimum(np.diff(s), window_seconds))) + window_seconds
    return total / 60.0


def summarize(*, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """Mean and sample standard deviation (ddof 1; 0 with one seed) over seeds of every metric, per strategy
    × budget, in the order strategies and budgets first appear."""
    out: list[dict[str, Any]] = []
    keys = list(dict.fromkeys((r["strategy"], r["minutes"]) for r in rows))
    for strategy, minutes in keys:
        cell = [r for r in rows if r["strategy"] == strategy and r["minutes"] == minutes]
        entry: dict[str, Any] = {
            "strategy": strategy,
            "minutes": minutes,
            "seeds": [r["seed"] for r in cell],
            "labelled_windows": float(np.mean([r["labelled_windows"] for r in cell])),
        }
        entry.update(common.seed_statistics(cell=cell, metrics=METRICS))
        out.append(entry)
    return out


def run_adapt(
    *,
    data: Path,
    out: Path,
    config: AdaptConfig,
    cache_dir: Path | None = None,
    command: Sequence[str] | None = None,
    progress: bool = False,
) -> dict[str, Any]:
    """Run every seed; write ``report.md``, ``results.json`` and ``adapt.png`` into ``out``; return the
    results."""
    from tqdm.auto import tqdm

    from beeaudio.desktop import datasets
    from beeaudio.desktop.experiments import adapt_report

    common.quiet_tensorflow()
    started = time.perf_counter()
    data, out = Path(data), Path(out)
    base_config = _train_config(config, seed=config.seeds[0], fine_tune=False)
    feature_config = base_config.features
    recordings = datasets.discover(root=data)
    windows = datasets.build_windows(
        recordings=recordings, config=feature_config, cache_dir=cache_dir, progress=False
    )
    if len(windows.label_names) < 2:
        raise ValueError(f"{data}: need at least two labels, found {list(windows.label_names)}")
    rows: list[dict[str, Any]] = []
    for seed in tqdm(config.seeds, desc="seeds", unit="seed", disable=not progress):
        rows += run_seed(windows=windows, data=data, config=config, seed=seed, feature_config=feature_config)
    results: dict[str, Any] = {
        "experiment": "adapt",
        "provenance": {
            **common.provenance(
                command=list(command) if command else command_line(data=data, out=out, config=config)
            ),
            "library_overrides": {
                **common.unexpressed_overrides(training=config.training),
                **{f"fine_tune.{k}": v for k, v in config.fine_tune.items()},
            },
        },
        "config": {**asdict(config), "minutes": list(config.minutes), "seeds": list(config.seeds)},
        "base_train_config": base_config.to_dict(),
        "fine_tune_config": _train_config(config, seed=config.seeds[0], fine_tune=True).to_dict(),
        "feature_config": feature_config.to_dict(),
        "data": common.data_summary(data=data, recordings=recordings, windows=windows),
        "rows": rows,
        "summary": summarize(rows=rows),
        "timing": {"total_seconds": time.perf_counter() - started},
    }
    adapt_report.write_report(out=out, results=results)
    log.info("adapt experiment written to %s in %.0f s", out, results["timing"]["total_seconds"])
    return results

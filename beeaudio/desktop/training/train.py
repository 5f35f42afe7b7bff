"""Train a hive-sound classifier into a run folder.

:func:`train_run` reads a dataset folder, cuts it into feature windows (cached on disk by
:func:`beeaudio.desktop.datasets.build_windows`), splits it by hive into train and test (never sharing a
hive or a
recording), splits the train hives again by hive for early stopping, trains with class weights, scores the
held-out hives and writes the run folder:

``model.keras``, ``train_config.json``, ``feature_config.json``, ``split.json``, ``heldout.npz`` (the test
windows, for the exporter's checks), ``representative.npz`` (training windows for int8 calibration),
``novelty.npz`` and ``novelty.json`` (the novelty detector fitted on the training windows, its threshold
chosen on held-out training hives: :mod:`beeaudio.desktop.training.novelty_fit`), ``metrics.json`` and
the plots ``confusion.png`` and ``training_curves.png``.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.features import FeatureConfig
from beeaudio.core.fsio import write_json
from beeaudio.desktop.training import novelty_fit
from beeaudio.desktop.training.evaluate import compute_metrics

log = logging.getLogger(__name__)

#: Files of a run folder, by role.
MODEL_FILE = "model.keras"
TRAIN_CONFIG_FILE = "train_config.json"
FEATURE_CONFIG_FILE = "feature_config.json"
SPLIT_FILE = "split.json"
HELDOUT_FILE = "heldout.npz"
REPRESENTATIVE_FILE = "representative.npz"
METRICS_FILE = "metrics.json"
CONFUSION_PLOT = "confusion.png"
CURVES_PLOT = "training_curves.png"
#: Training windows kept for int8 calibration (the exporter's representative dataset).
REPRESENTATIVE_WINDOWS = 1000

Transform = Callable[[np.ndarray, int], np.ndarray]

MODEL_KINDS = ("dnn", "cnn")
#: MP3 bitrates (kbps) codec augmentation draws from by default.
CODEC_BITRATES = (16, 24, 32, 48, 64)
#: How codec augmentation draws a recording's bitrate: "inverse" (chance proportional to 1/kbps, the
#: default) or "uniform". See :func:`codec_bitrate`.
CODEC_WEIGHTINGS = ("inverse", "uniform")
#: The representation of :class:`beeaudio.core.features.FeatureConfig` each family takes.
REPRESENTATION = {"dnn": "stats", "cnn": "frames"}
_DEFAULT_SIZE = {"dnn": (3, 128), "cnn": (2, 32)}


@dataclass
class TrainConfig:
    """Everything that decides a training run (saved as ``train_config.json``).

    ``layers``/``units`` default by model: dnn 3 × 128 (the reference paper's feed-forward network),
    cnn 2 conv blocks × 32 filters. ``feature_config`` defaults to :class:`FeatureConfig` with the
    representation the model takes ("stats" for dnn, "frames" for cnn). ``validation_fraction`` of the
    train hives (grouped by hive) decides early stopping. ``codec_augment`` adds a copy of every training
    recording re-encoded as MP3 at one of ``codec_bitrates``, drawn per recording as ``codec_weighting``
    says (:func:`codec_bitrate`; multi-condition training, test stays clean). A copy carries its
    recording's hive, so copies of validation hives are validation windows, never fitting windows.
    ``quantize_input`` trains on features rounded to the int8 model's input grid
    (:class:`beeaudio.desktop.training.models.InputQuantization`), so the int8 export agrees with the
    Keras model. ``calibration="cmn"`` trains on features relative to each hive's baseline (per-hive
    cepstral mean normalisation, :mod:`beeaudio.desktop.calibration`): every hive's baseline from its
    ``calibration_label`` windows, a test hive's from its first such recording, left out of the scores;
    the bundle then needs each device's baseline (``beeaudio device calibrate``). ``init_from`` (a run
    folder or a float32 dnn bundle) fine-tunes that model instead of training a new one
    (:mod:`beeaudio.desktop.finetune`): its feature config, architecture and labels must be these, and with
    one hive the check is on other recordings of that hive, with a warning (``metrics["warnings"]``).
    """

    model: str = "dnn"
    layers: int | None = None
    units: int | None = None
    dropout: float = 0.2
    epochs: int = 60
    batch_size: int = 64
    patience: int = 8
    learning_rate: float = 1e-3
    seed: int = 0
    test_fraction: float = 0.25
    validation_fraction: float = 0.2
    feature_config: FeatureConfig | None = None
    codec_augment: bool = False
    codec_bitrates: tuple[int, ...] = CODEC_BITRATES
    codec_weighting: str = CODEC_WEIGHTINGS[0]
    quantize_input: bool = True
    calibration: str = "none"
    calibration_label: str = "normal"
    init_from: str | None = None
    verbose: int = 1
    progress: bool = True

    def __post_init__(self) -> None:
        if self.model not in MODEL_KINDS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(MODEL_KINDS)}")
        default_layers, default_units = _DEFAULT_SIZE[self.model]
        self.layers = default_layers if self.layers is None else int(self.layers)
        self.units = default_units if self.units is None else int(self.units)
        if self.feature_config is None:
            self.feature_config = FeatureConfig(representation=REPRESENTATION[self.model])
        elif isinstance(self.feature_config, dict):
            self.feature_config = FeatureConfig.from_dict(self.feature_config)
        if self.feature_config.representation != REPRESENTATION[self.model]:
            raise ValueError(
                f"model {self.model!r} takes the {REPRESENTATION[self.model]!r} feature representation, "
                f"the feature config has {self.feature_config.representation!r}"
            )
        self.codec_bitrates = tuple(int(b) for b in self.codec_bitrates)
        if any(b <= 0 for b in self.codec_bitrates):
            raise ValueError(f"codec_bitrates must be positive kbps values, got {self.codec_bitrates}")
        if self.codec_weighting not in CODEC_WEIGHTINGS:
            raise ValueError(
                f"codec_weighting must be one of {', '.join(CODEC_WEIGHTINGS)}, got {self.codec_weighting!r}"
            )
        if not 0.0 < self.test_fraction < 1.0 or not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError("test_fraction must be in (0, 1) and validation_fraction in [0, 1)")
        if self.epochs < 1 or self.batch_size < 1 or self.patience < 1:
            raise ValueError("epochs, batch_size and patience must be at least 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.codec_augment and not self.codec_bitrates:
            raise ValueError("codec_augment needs at least one bitrate")
        from beeaudio.desktop.calibration import CALIBRATIONS

        if self.calibration not in CALIBRATIONS:
            raise ValueError(
                f"calibration must be one of {', '.join(CALIBRATIONS)}, got {self.calibration!r}"
            )
        if self.init_from is not None and self.calibration != "none":
            raise ValueError("fine-tuning (init_from) with calibration is not supported yet")

    @property
    def features(self) -> FeatureConfig:
        assert self.feature_config is not None  # set by __post_init__
        return self.feature_config

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["feature_config"] = self.features.to_dict()
        d["codec_bitrates"] = list(self.codec_bitrates)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}")
        return cls(**d)


@dataclass
class FitResult:
    model: Any  # keras.Model
    history: dict[str, list[float]]
    epochs_run: int
    best_epoch: int
    train_seconds: float
    validation_hives: list[str] = field(default_factory=list)


@dataclass
class TrainResult:
    run: Path
    metrics: dict[str, Any]


def codec_bitrate(
    *, audio: np.ndarray, bitrates: Sequence[int], seed: int, weighting: str = CODEC_WEIGHTINGS[0]
) -> int:
    """The bitrate codec augmentation encodes this recording at: drawn from ``bitrates`` by a hash of the
    audio's first samples and ``seed`` (deterministic, so the feature cache stays valid).

    ``"inverse"`` draws a bitrate with chance proportional to 1/kbps (16, 32, 64: 57, 29, 14 %), because
    the low bitrates are the ones that change the features: the encoder low-passes at ~5.5 kHz at 16-24
    kbps (16 kHz audio) against ~7 kHz from 32 kbps, and the high bitrates are close to the clean copy
    every recording already has. With a uniform draw over 16/32/64 only a third of the recordings get a
    16 kbps copy, and a full-band model trained so recovers less at 16 kbps than with the inverse draw
    (measured in ``docs/results.md``, "Codec augmentation at the low end").
    """
    rates = tuple(int(b) for b in bitrates)
    if not rates:
        raise ValueError("codec augmentation needs at least one bitrate")
    digest = zlib.crc32(np.asarray(audio[:8192], dtype=np.float32).tobytes(), seed)
    if weighting == "uniform":
        return rates[digest % len(rates)]
    if weighting != "inverse":
        raise ValueError(
            f"unknown codec weighting {weighting!r}; choose one of {', '.join(CODEC_WEIGHTINGS)}"
        )
    weights = 1.0 / np.asarray(rates, dtype=np.float64)
    edges = np.cumsum(weights / weights.sum())
    return rates[min(int(np.searchsorted(edges, digest / 2**32, side="right")), len(rates) - 1)]


def codec_transform(
    *, bitrates: Sequence[int], seed: int, weighting: str = CODEC_WEIGHTINGS[0]
) -> tuple[Transform, str]:
    """An MP3 round trip at the bitrate :func:`codec_bitrate` gives each recording, and the cache key that
    names it (the uniform draw keeps the key it had before weighting existed, so old caches stay valid)."""
    from beeaudio.desktop.codec import mp3_roundtrip

    rates = tuple(int(b) for b in bitrates)
    codec_bitrate(audio=np.zeros(1, dtype=np.float32), bitrates=rates, seed=seed, weighting=weighting)

    def transform(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        kbps = codec_bitrate(audio=audio, bitrates=rates, seed=seed, weighting=weighting)
        return mp3_roundtrip(audio=audio, sample_rate=sample_rate, bitrate_kbps=kbps)

    draw = "" if weighting == "uniform" else f"-{weighting}"
    return transform, f"mp3-{'-'.join(map(str, rates))}{draw}-seed{seed}"


def representative_windows(features: np.ndarray, *, seed: int) -> np.ndarray:
    """Up to :data:`REPRESENTATIVE_WINDOWS` training windows for int8 calibration, always including the
    windows holding the smallest and largest value, so the calibrated input range is the one the model's
    :class:`~beeaudio.desktop.training.models.InputQuantization` was trained with."""
    flat = features.reshape(len(features), -1)
    extremes = {int(np.argmin(flat.min(axis=1))), int(np.argmax(flat.max(axis=1)))}
    rng = np.random.default_rng(seed)
    rest = [int(i) for i in rng.permutation(len(features)) if int(i) not in extremes]
    pick = sorted(extremes) + sorted(rest[: max(0, REPRESENTATIVE_WINDOWS - len(extremes))])
    return features[pick].astype(np.float32)


def class_weights(*, labels: np.ndarray, n_classes: int) -> dict[int, float]:
    """Inverse-frequency weights (``n / (k * count)``) so the rarer class is not ignored."""
    counts = np.bincount(np.asarray(labels, dtype=np.int64), minlength=n_classes).astype(float)
    present = counts > 0
    weights = np.where(present, counts.sum() / (present.sum() * np.maximum(counts, 1.0)), 0.0)
    return {i: float(w) for i, w in enumerate(weights)}


def fit_model(
    *,
    features: np.ndarray,
    labels: np.ndarray,
    hives: np.ndarray,
    n_classes: int,
    config: TrainConfig,
) -> FitResult:
    """Build and train a model on these windows; early stopping on a hive-grouped validation split.

    The validation hives are drawn from ``hives`` (never a window-level split: windows of one recording are
    near-duplicates). With fewer than 3 hives there is no validation split and all ``epochs`` run.
    """
    import keras
    import tensorflow as tf

    from beeaudio.desktop.training.models import build_model, input_range

    keras.utils.set_random_seed(config.seed)
    hives = np.asarray(hives).astype(str)
    validation_hives = _validation_hives(
        hives=hives, labels=labels, fraction=config.validation_fraction, seed=config.seed
    )
    val_mask = np.isin(hives, validation_hives)
    x_fit, y_fit = features[~val_mask], labels[~val_mask]
    validation = (features[val_mask], labels[val_mask]) if val_mask.any() else None

    model = build_model(
        kind=config.model,
        train_features=x_fit,
        n_classes=n_classes,
        layers=int(config.layers or 1),
        units=int(config.units or 1),
        dropout=config.dropout,
        input_range=input_range(features) if config.quantize_input else None,
    )
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    callbacks = []
    if validation is not None:
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.patience, restore_best_weights=True, verbose=0
            )
        )
    # tf.data pipelines: Keras's numpy adapter rebuilds its iterators every epoch, which costs more than
    # an epoch of these small models. Class weights travel as per-window sample weights.
    weights = class_weights(labels=y_fit, n_classes=n_classes)
    sample_weights = np.array([weights[int(c)] for c in y_fit], dtype=np.float32)
    train_data = (
        tf.data.Dataset.from_tensor_slices((x_fit.astype(np.float32), y_fit.astype(np.int64), sample_weights))
        .shuffle(len(y_fit), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(2)
    )
    validation_data = None
    if validation is not None:
        validation_data = (
            tf.data.Dataset.from_tensor_slices(
                (validation[0].astype(np.float32), validation[1].astype(np.int64))
            )
            .batch(max(256, config.batch_size))
            .prefetch(2)
        )
    started = time.perf_counter()
    fitted = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,  # the dataset shuffles itself, seeded
        verbose=config.verbose,
    )
    train_seconds = time.perf_counter() - started
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    epochs_run = len(history.get("loss", []))
    best_epoch = int(np.argmin(history["val_loss"])) + 1 if "val_loss" in history else epochs_run
    return FitResult(
        model=model,
        history=history,
        epochs_run=epochs_run,
        best_epoch=best_epoch,
        train_seconds=train_seconds,
        validation_hives=sorted(validation_hives),
    )


def _validation_hives(*, hives: np.ndarray, labels: np.ndarray, fraction: float, seed: int) -> list[str]:
    """A seeded share of the hives for validation, keeping every class present on both sides if it can."""
    unique = sorted(set(hives.tolist()))
    n_val = round(fraction * len(unique))
    if fraction <= 0 or len(unique) < 3 or n_val < 1:
        if fraction > 0:
            log.warning("only %d training hive(s): no validation split, training all epochs", len(unique))
        return []
    n_val = min(n_val, len(unique) - 1)
    rng = np.random.default_rng(seed + 7919)
    classes = set(np.unique(labels).tolist())
    choice: list[str] = []
    for _ in range(20):
        choice = sorted(rng.choice(unique, size=n_val, replace=False).tolist())
        mask = np.isin(hives, choice)
        if (
            set(np.unique(labels[mask]).tolist()) == classes
            and set(np.unique(labels[~mask]).tolist()) == classes
        ):
            break
    return choice


def train_run(
    *,
    data: Path,
    out: Path,
    config: TrainConfig,
    cache_dir: Path | None = None,
    transform: Transform | None = None,
    transform_key: str = "",
) -> TrainResult:
    """Train on the recordings under ``data`` and write the run folder ``out`` (see the module docstring).

    ``transform`` (with a ``transform_key`` naming it for the feature cache) is applied to a copy of every
    training recording, added to the clean training windows (multi-condition training); the test hives are
    always scored on clean audio. ``config.codec_augment`` is this with an MP3 round trip.
    """
    from beeaudio.desktop import datasets as datasets
    from beeaudio.desktop.training import plots

    started = time.perf_counter()
    data, out = Path(data), Path(out)
    feature_config = config.features
    recordings = datasets.discover(root=data)
    if not recordings:
        raise ValueError(
            f"{data}: no recordings found (expected manifest.csv, class folders or known file names)"
        )
    base = None
    if config.init_from is not None:
        # Fine-tuning (beeaudio.desktop.finetune): the base's features, architecture and label order.
        from beeaudio.desktop import finetune

        base = finetune.load_base(source=Path(config.init_from))
        finetune.check_compatible(base=base, config=config, labels=sorted({r.label for r in recordings}))
        log.info("fine-tuning from %s", finetune.describe(base))
    windows = datasets.build_windows(
        recordings=recordings,
        config=feature_config,
        cache_dir=cache_dir,
        label_names=base.label_names if base is not None else None,
        progress=config.progress,
    )
    label_names = tuple(windows.label_names)
    if len(label_names) < 2:
        raise ValueError(f"{data}: need at least two labels to train, found {list(label_names)}")
    split_name, split_warnings = "test (hive-grouped)", []
    if base is not None:
        train_idx, test_idx, split_name, split_warnings = finetune.split_windows(
            windows=windows, test_fraction=config.test_fraction, seed=config.seed
        )
    else:
        train_idx, test_idx = datasets.grouped_split(
            windows=windows, test_fraction=config.test_fraction, seed=config.seed
        )
    train_set, test_set = windows.subset(train_idx), windows.subset(test_idx)
    train_hives = sorted({str(h) for h in train_set.hives.tolist()})
    test_hives = sorted({str(h) for h in test_set.hives.tolist()})
    if set(train_hives) & set(test_hives) and not split_warnings:
        raise RuntimeError(f"grouped split shares hives {sorted(set(train_hives) & set(test_hives))}")
    log.info(
        "%d windows from %d recordings: train %d windows (%d hives), test %d windows (%d hives)",
        len(windows.labels), len(recordings), len(train_set.labels), len(train_hives),
        len(test_set.labels), len(test_hives),
    )  # fmt: skip

    calibrated = None
    if config.calibration != "none":
        train_set, test_set, calibrated = _calibrate(train=train_set, test=test_set, config=config)
        train_hives = sorted({str(h) for h in train_set.hives.tolist()})
        test_hives = sorted({str(h) for h in test_set.hives.tolist()})
    x_train, y_train, h_train = train_set.features, train_set.labels, np.asarray(train_set.hives).astype(str)
    load_seconds, compute_seconds, cache_hits = (
        windows.load_seconds,
        windows.compute_seconds,
        windows.cache_hits,
    )
    augmented = 0
    if config.codec_augment and transform is None:
        transform, transform_key = codec_transform(
            bitrates=config.codec_bitrates, seed=config.seed, weighting=config.codec_weighting
        )
    if transform is not None:
        train_recordings = [r for r in recordings if r.hive in set(train_hives)]
        extra = datasets.build_windows(
            recordings=train_recordings,
            config=feature_config,
            cache_dir=cache_dir,
            label_names=label_names,
            transform=transform,
            transform_key=transform_key or "transform",
            progress=config.progress,
        )
        if calibrated is not None:
            # The copy is what a device with that codec records: its baseline comes from its own windows.
            extra, _, _ = _calibrate(train=extra, test=None, config=config)
        augmented = len(extra.labels)
        x_train = np.concatenate([x_train, extra.features])
        y_train = np.concatenate([y_train, extra.labels])
        h_train = np.concatenate([h_train, np.asarray(extra.hives).astype(str)])
        load_seconds += extra.load_seconds
        compute_seconds += extra.compute_seconds
        cache_hits += extra.cache_hits

    if base is not None:
        fit = finetune.fine_tune(base=base, features=x_train, labels=y_train, hives=h_train, config=config)
        x_novelty, y_novelty, h_novelty = finetune.detector_windows(
            base=base, features=x_train, labels=y_train, hives=h_train, seed=config.seed
        )
    else:
        fit = fit_model(
            features=x_train, labels=y_train, hives=h_train, n_classes=len(label_names), config=config
        )
        x_novelty, y_novelty, h_novelty = x_train, y_train, h_train
    novelty = novelty_fit.fit_detector(
        features=x_novelty,
        labels=y_novelty,
        hives=h_novelty,
        config=feature_config,
        n_classes=len(label_names),
    )
    test_flagged = novelty_fit.flagged_share(detector=novelty.detector, features=test_set.features)
    probabilities = fit.model.predict(test_set.features, verbose=0)
    train_probabilities = fit.model.predict(train_set.features, verbose=0)
    metrics = compute_metrics(
        y_true=test_set.labels,
        y_pred=np.argmax(probabilities, axis=1),
        label_names=label_names,
        hives=test_set.hives,
        recordings=test_set.recordings,
        probabilities=probabilities,
    )
    metrics.update(
        {
            "split": split_name,
            "warnings": split_warnings,
            "init_from": base.summary if base is not None else None,
            "model": config.model,
            "model_summary": f"{fit.model.name}: {fit.model.count_params()} parameters",
            "params": int(fit.model.count_params()),
            "train_accuracy": float(np.mean(np.argmax(train_probabilities, axis=1) == train_set.labels)),
            "train_hives": train_hives,
            "test_hives": test_hives,
            "validation_hives": fit.validation_hives,
            "dataset": {
                "path": str(data),
                "synthetic": is_synthetic(data),
                # In the dataset summary, so that the bundle's training summary names the base too.
                "fine_tuned_from": base.summary if base is not None else None,
                "recordings": len(recordings),
                "hives": len(set(train_hives) | set(test_hives)),
                "windows": len(windows.labels),
                "train_windows": len(train_set.labels),
                "augmented_windows": augmented,
                "test_windows": len(test_set.labels),
                "class_counts": {
                    name: int(np.sum(windows.labels == i)) for i, name in enumerate(label_names)
                },
                "window_seconds": feature_config.window_seconds,
            },
            "calibration": {"kind": config.calibration, **(calibrated.info() if calibrated else {})},
            "novelty": {
                "threshold": novelty.detector.threshold,
                "threshold_rule": novelty.info["threshold_rule"],
                "test_flagged": test_flagged,
            },
            "training": {
                "epochs_run": fit.epochs_run,
                "best_epoch": fit.best_epoch,
                "history": fit.history,
            },
            "timing": {
                "load_seconds": load_seconds,
                "compute_seconds": compute_seconds,
                "data_seconds": load_seconds + compute_seconds,
                "cache_hits": cache_hits,
                "train_seconds": fit.train_seconds,
                "total_seconds": time.perf_counter() - started,
            },
        }
    )

    out.mkdir(parents=True, exist_ok=True)
    fit.model.save(out / MODEL_FILE)
    write_json(out / TRAIN_CONFIG_FILE, config.to_dict())
    write_json(out / FEATURE_CONFIG_FILE, feature_config.to_dict())
    write_json(
        out / SPLIT_FILE,
        {
            "seed": config.seed,
            "test_fraction": config.test_fraction,
            "train_hives": train_hives,
            "test_hives": test_hives,
            "validation_hives": fit.validation_hives,
            "train_recordings": sorted({str(r) for r in train_set.recordings.tolist()}),
            "test_recordings": sorted({str(r) for r in test_set.recordings.tolist()}),
        },
    )
    np.savez_compressed(
        out / HELDOUT_FILE,
        features=test_set.features.astype(np.float32),
        labels=test_set.labels.astype(np.int64),
        hives=np.asarray(test_set.hives).astype(str),
        recordings=np.asarray(test_set.recordings).astype(str),
        starts=np.asarray(test_set.starts, dtype=np.float64),
        label_names=np.asarray(label_names),
    )
    np.savez_compressed(out / REPRESENTATIVE_FILE, features=representative_windows(x_train, seed=config.seed))
    novelty_fit.save_fit(fit=novelty, run=out)
    metrics["timing"]["total_seconds"] = time.perf_counter() - started
    write_json(out / METRICS_FILE, metrics)
    plots.plot_confusion(
        confusion=metrics["confusion_matrix"],
        labels=label_names,
        path=out / CONFUSION_PLOT,
        title=f"{config.model} on held-out hives: accuracy {100 * metrics['accuracy']:.1f} %",
    )
    plots.plot_training_curves(
        history=fit.history, path=out / CURVES_PLOT, title=f"{fit.model.name} training"
    )
    log.info(
        "test accuracy %.2f %% on %d held-out hives (%d windows); run written to %s",
        100 * metrics["accuracy"], len(test_hives), len(test_set.labels), out,
    )  # fmt: skip
    return TrainResult(run=out, metrics=metrics)


def _calibrate(*, train: Any, test: Any | None, config: TrainConfig) -> tuple[Any, Any, Any]:
    """Both sides relative to their hives' baselines (:func:`beeaudio.desktop.calibration.calibrate_split`);
    with ``test`` None, only ``train`` (every hive's baseline from its own calibration windows)."""
    from beeaudio.desktop import calibration

    kind = calibration.kind_of(config.calibration)
    if test is None:
        names = tuple(train.label_names)
        mask = np.asarray(train.labels) == names.index(config.calibration_label)
        baselines = calibration.hive_baselines(
            features=train.features, hives=train.hives, mask=mask, config=config.features
        )
        kept = train.subset(np.flatnonzero(np.isin(np.asarray(train.hives).astype(str), list(baselines))))
        relative = calibration.apply_baselines(
            features=kept.features, hives=kept.hives, baselines=baselines, kind=kind
        )
        return dataclasses.replace(kept, features=relative), None, None
    split = calibration.calibrate_split(
        train=train, test=test, config=config.features, calibration_label=config.calibration_label, kind=kind
    )
    log.info(
        "calibration %s: %d training hives, %d test hives calibrated on %d recordings (left out of scores)",
        config.calibration, len(split.train_baselines), len(split.test_baselines),
        len(split.calibration_recordings),
    )  # fmt: skip
    return split.train, split.test, split


def is_synthetic(data: Path) -> bool:
    """Whether the dataset says it was made by ``beeaudio synth`` (its manifest or README says so)."""
    for name in ("manifest.csv", "README.md", "README.txt", "SYNTHETIC"):
        path = data / name
        if path.is_file():
            try:
                head = path.read_text(errors="replace")[:4096].lower()
            except OSError:
                continue
            if "synthetic" in head or "beeaudio.desktop.synth" in head:
                return True
    return False


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())

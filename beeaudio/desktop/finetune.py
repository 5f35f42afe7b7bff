"""Fine-tune a trained model on a beekeeper's few labels: ``beeaudio train --init-from RUN_OR_BUNDLE``.

A model trained on other hives starts far closer to a new hive than a model trained from nothing on the
minutes a beekeeper can label, so the new model starts from the base's weights, feature configuration and
normalisation (the ``Normalization`` layer's statistics stay the base's: the labelled windows are too few to
re-estimate them) and trains with a lower learning rate, for few epochs, in small batches; early stopping
on a hive-grouped validation split of the labelled hives only when asked for (:data:`FINE_TUNE_DEFAULTS`
says why it is off by default).

**Anchors.** A run folder keeps up to 1000 of its training windows (``representative.npz``). They join the
fine-tuning, labelled with what the base model says about them and weighted to :data:`ANCHOR_SHARE` of the
labelled windows' total weight: the new hives' labels move the boundary where the new hives are, the anchors
keep it where the base's hives were, and a beekeeper who labelled only one class (a calm colony) does not
get a model that calls everything calm. A bundle keeps no training windows, so a fine-tuning from a bundle
has no anchors (its metrics say so).

**Bases.** :func:`load_base` takes a run folder (``model.keras``, ``feature_config.json``,
``train_config.json``, the labels from ``metrics.json``) or a ``.beemodel`` bundle. From a bundle, only a
float32 ``dnn`` can be rebuilt honestly: its TF-Lite graph is read op by op through the interpreter (the
input rounding, the standardisation, each dense layer's constant weights), rebuilt as the Keras model
``beeaudio train`` makes, and accepted only if the rebuilt model gives the bundle's outputs on its
self-test windows and on random windows within the input range. An int8 bundle's weights are rounded to
8 bits (fine-tuning them would start from a different model than the one deployed), a ``cnn`` or any graph
of another shape is not rebuilt; both are refused with a message naming what to pass instead.
"""

from __future__ import annotations

import json
import logging
import math
import time
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.errors import EXIT_USAGE, BeeaudioError
from beeaudio.core.features import FeatureConfig

log = logging.getLogger(__name__)

__all__ = [
    "ANCHOR_SHARE",
    "FINE_TUNE_DEFAULTS",
    "Base",
    "BaseError",
    "base_feature_config",
    "fine_tune",
    "load_base",
    "rebuild_dnn",
]

#: TrainConfig values a fine-tuning uses unless told otherwise: half the from-scratch learning rate (1e-3)
#: and epochs (60), small batches (16, so that a minute of labels still gives a few steps per epoch) and no
#: validation split (``validation_fraction`` 0: every labelled window trains; early stopping with
#: ``patience`` 10 when a share is given). Measured with ``beeaudio experiment adapt``'s split on the
#: SYNTHETIC wide benchmark (seed 1, base 62.5 %, 1/2/5 labelled minutes): 1e-4 with batches of 64 and
#: early stopping (patience 5) on a validation hive of the labelled windows reached 94.8-100 % and often
#: stopped after 1-6 epochs; 5e-4, batches of 16 and patience 10 reached 97.4-100 %; the same without a
#: validation split 99.1-100 %. A validation hive holds out a quarter of the few labels and stops on noise.
FINE_TUNE_DEFAULTS = {
    "learning_rate": 5e-4,
    "epochs": 30,
    "patience": 10,
    "batch_size": 16,
    "validation_fraction": 0.0,
}
#: Total weight of the anchors (the base's training windows, labelled by the base) relative to the
#: labelled windows' total weight.
ANCHOR_SHARE = 0.5
#: Most anchors used: twice the labelled windows (at least 64), so that an epoch stays short.
_ANCHORS_PER_LABEL = 2
_MIN_ANCHORS = 64
#: How close the rebuilt model must be to the bundle (probabilities; float32 kernels differ by ~1e-6).
_REBUILD_ATOL = 1e-4
_QUANT_OPS = ("MUL", "ROUND", "ADD", "MINIMUM", "MAXIMUM", "SUB", "MUL")


class BaseError(BeeaudioError):
    """A base model that cannot be fine-tuned (or a training option that contradicts it); the message says
    what to pass instead. The command is not run (exit 2)."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class Base:
    """A model to fine-tune: its Keras model, feature configuration, labels and architecture, the training
    windows it keeps (``anchors``, a run's ``representative.npz``; None from a bundle) and what to record
    about it in the new run (``summary``)."""

    source: Path
    kind: str  # "run" or "bundle"
    model: Any  # keras.Model
    feature_config: FeatureConfig
    label_names: tuple[str, ...]
    model_kind: str
    layers: int
    units: int
    anchors: np.ndarray | None = None
    summary: dict[str, Any] = field(default_factory=dict)


# -- reading the base --------------------------------------------------------------------------------------
def _is_run(source: Path) -> bool:
    return source.is_dir()


def base_feature_config(*, source: Path) -> FeatureConfig:
    """The base's feature configuration, read without TensorFlow (a run's ``feature_config.json`` or the
    bundle's manifest), so that a command can check its options before loading anything."""
    from beeaudio.desktop.training import train as training

    source = Path(source)
    if _is_run(source):
        path = source / training.FEATURE_CONFIG_FILE
        if not path.is_file():
            raise BaseError(
                f"{source}: not a training run (no {training.FEATURE_CONFIG_FILE}) and not a bundle"
            )
        return FeatureConfig.from_dict(training.read_json(path))
    return _manifest(source).feature_config


def _manifest(source: Path) -> Any:  # -> BundleManifest
    from beeaudio.core.bundle import BundleError, read_bundle

    if not source.is_file():
        raise BaseError(f"{source}: no such run folder or bundle")
    try:
        return read_bundle(source).manifest
    except (BundleError, zipfile.BadZipFile) as exc:
        raise BaseError(f"{source}: cannot read the bundle: {exc}") from exc


def load_base(*, source: Path, runtime: str | None = None) -> Base:
    """The base of a fine-tuning from a run folder or a float32 ``dnn`` bundle (module docstring)."""
    source = Path(source)
    if _is_run(source):
        return _load_run(source)
    return _load_bundle(source, runtime=runtime)


def _load_run(run: Path) -> Base:
    from beeaudio.desktop.training import train as training
    from beeaudio.desktop.training.models import load_model

    missing = [
        name
        for name in (training.MODEL_FILE, training.FEATURE_CONFIG_FILE, training.TRAIN_CONFIG_FILE)
        if not (run / name).is_file()
    ]
    if missing:
        raise BaseError(f"{run}: not a complete training run, missing {', '.join(missing)}")
    train_config = training.read_json(run / training.TRAIN_CONFIG_FILE)
    if train_config.get("calibration", "none") != "none":
        raise BaseError(
            f"{run}: trained on features relative to each hive's baseline (calibration"
            f" {train_config['calibration']!r}); fine-tuning such a model is not supported yet: give a run"
            " trained without --calibration"
        )
    metrics = (
        training.read_json(run / training.METRICS_FILE) if (run / training.METRICS_FILE).is_file() else {}
    )
    names = metrics.get("labels")
    if not names:
        with np.load(run / training.HELDOUT_FILE, allow_pickle=False) as held:
            names = [str(x) for x in held["label_names"].tolist()]
    anchors = None
    if (run / training.REPRESENTATIVE_FILE).is_file():
        with np.load(run / training.REPRESENTATIVE_FILE, allow_pickle=False) as npz:
            anchors = npz["features"].astype(np.float32)
    config = FeatureConfig.from_dict(training.read_json(run / training.FEATURE_CONFIG_FILE))
    return Base(
        source=run,
        kind="run",
        model=load_model(run / training.MODEL_FILE),
        feature_config=config,
        label_names=tuple(str(n) for n in names),
        model_kind=str(train_config.get("model", "dnn")),
        layers=int(train_config["layers"]),
        units=int(train_config["units"]),
        anchors=anchors,
        summary={
            "path": str(run),
            "kind": "run",
            "model": train_config.get("model"),
            "accuracy": metrics.get("accuracy"),
            "train_hives": metrics.get("train_hives"),
            "dataset": (metrics.get("dataset") or {}).get("path"),
            "synthetic": (metrics.get("dataset") or {}).get("synthetic"),
        },
    )


def _load_bundle(path: Path, *, runtime: str | None) -> Base:
    from beeaudio.core.bundle import read_bundle

    manifest = _manifest(path)
    run_hint = "give the run folder it was exported from (`--init-from runs/NAME`)"
    if manifest.quantization != "float32":
        raise BaseError(
            f"{path}: an {manifest.quantization} bundle: its weights are rounded to 8 bits, so fine-tuning"
            f" would not start from the model you deployed; {run_hint}, or a float32 export of it"
            " (`beeaudio export --quantize float32`)"
        )
    if manifest.normalization is not None:
        raise BaseError(f"{path}: the bundle takes features relative to a hive baseline; {run_hint}")
    if manifest.feature_mean is not None:
        raise BaseError(
            f"{path}: the bundle standardises its input outside the model (an older export); {run_hint}"
        )
    training_info = manifest.training or {}
    kind = training_info.get("model")
    if kind != "dnn":
        raise BaseError(
            f"{path}: a {kind or 'model of unknown kind'}; only a dnn is rebuilt from a bundle: {run_hint}"
        )
    bundle = read_bundle(path)
    model = rebuild_dnn(
        model_bytes=bundle.model_bytes,
        feature_shape=tuple(manifest.feature_shape),
        n_classes=len(manifest.labels),
        check=bundle.selftest.features,
        runtime=runtime,
        where=str(path),
    )
    dense = [layer for layer in model.layers if layer.__class__.__name__ == "Dense"]
    return Base(
        source=path,
        kind="bundle",
        model=model,
        feature_config=manifest.feature_config,
        label_names=tuple(manifest.labels),
        model_kind="dnn",
        layers=len(dense) - 1,
        units=int(dense[0].units),
        anchors=None,
        summary={
            "path": str(path),
            "kind": "bundle",
            "model": "dnn",
            "model_name": manifest.model_name,
            "model_version": manifest.model_version,
            "model_sha256": manifest.model_sha256,
            "accuracy": training_info.get("accuracy"),
            "train_hives": training_info.get("train_hives"),
            "synthetic": (training_info.get("dataset") or {}).get("synthetic"),
        },
    )


# -- rebuilding a dnn from its TF-Lite graph ---------------------------------------------------------------
def _ops(interpreter: Any, where: str) -> list[dict[str, Any]]:
    get = getattr(interpreter, "_get_ops_details", None)
    if get is None:
        raise BaseError(
            f"{where}: this TF-Lite runtime does not list a model's operators: give the run folder"
        )
    return [op for op in get() if op["op_name"] != "DELEGATE"]


def rebuild_dnn(
    *,
    model_bytes: bytes,
    feature_shape: tuple[int, ...],
    n_classes: int,
    check: np.ndarray,
    runtime: str | None = None,
    where: str = "bundle",
) -> Any:
    """The Keras ``dnn`` (input rounding, ``Normalization``, dense ReLU layers, softmax) of a float32
    TF-Lite graph, with the graph's constant weights. Refused (:class:`BaseError`) unless the graph is
    exactly that chain and the rebuilt model matches it on ``check`` and on random windows."""
    import keras

    from beeaudio.core.inference import make_interpreter
    from beeaudio.desktop.training.models import INPUT_QUANTIZATION_LAYER, InputQuantization

    interpreter, _ = make_interpreter(model_bytes=model_bytes, runtime=runtime)
    ops = _ops(interpreter, where)
    constants = {}
    for detail in interpreter.get_tensor_details():
        try:
            constants[int(detail["index"])] = np.array(interpreter.get_tensor(detail["index"]))
        except ValueError:  # an activation tensor: no data until the model runs
            continue

    def const(op: dict[str, Any], position: int) -> np.ndarray:
        index = int(op["inputs"][position])
        if index not in constants:
            raise BaseError(f"{where}: operator {op['op_name']} has no constant operand: not a dnn graph")
        return constants[index]

    def unsupported(reason: str) -> BaseError:
        names = " ".join(op["op_name"] for op in ops)
        return BaseError(
            f"{where}: cannot rebuild this graph as a dnn ({reason}; operators: {names}): give the run folder"
        )

    names = [op["op_name"] for op in ops]
    position = 0
    quantization = None
    if tuple(names[: len(_QUANT_OPS)]) == _QUANT_OPS:
        inverse, zero_point = float(const(ops[0], 1)), float(const(ops[2], 1))
        scale = float(const(ops[6], 1))
        if not math.isclose(inverse * scale, 1.0, rel_tol=1e-4):
            raise unsupported("the input rounding's scales disagree")
        quantization = ((-128.0 - zero_point) * scale, (127.0 - zero_point) * scale)
        position = len(_QUANT_OPS)
    if names[position : position + 2] not in (["SUB", "MUL"], ["SUB", "DIV"]):
        raise unsupported("no standardisation after the input")
    mean = const(ops[position], 1).reshape(-1).astype(np.float64)
    factor = const(ops[position + 1], 1).reshape(-1).astype(np.float64)
    std = 1.0 / factor if names[position + 1] == "MUL" else factor
    position += 2
    dense = []
    while position < len(ops) and names[position] == "FULLY_CONNECTED":
        op = ops[position]
        dense.append((const(op, 1).T.astype(np.float32), const(op, 2).astype(np.float32)))
        position += 1
    if names[position:] != ["SOFTMAX"] or len(dense) < 2:
        raise unsupported("expected dense layers and a softmax")

    inputs = keras.Input(shape=feature_shape, name="features")
    x = inputs
    if quantization is not None:
        x = InputQuantization(
            minimum=quantization[0], maximum=quantization[1], name=INPUT_QUANTIZATION_LAYER
        )(x)
    x = keras.layers.Normalization(axis=-1, mean=mean, variance=std**2, name="normalize")(x)
    layers = []
    for i in range(len(dense) - 1):
        layer = keras.layers.Dense(dense[i][0].shape[1], activation="relu", name=f"dense_{i + 1}")
        x = layer(x)
        layers.append(layer)
        x = keras.layers.Dropout(0.2, name=f"dropout_{i + 1}")(x)
    last = keras.layers.Dense(n_classes, activation="softmax", name="probabilities")
    outputs = last(x)
    layers.append(last)
    model = keras.Model(inputs, outputs, name=f"dnn_{len(dense) - 1}x{dense[0][0].shape[1]}")
    try:
        for layer, weights in zip(layers, dense, strict=True):
            layer.set_weights(list(weights))
    except ValueError as exc:
        raise unsupported(f"weights of unexpected shapes: {exc}") from exc
    _check_rebuild(
        model=model, model_bytes=model_bytes, check=check, mean=mean, std=std, runtime=runtime, where=where
    )
    return model


def _check_rebuild(
    *,
    model: Any,
    model_bytes: bytes,
    check: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    runtime: str | None,
    where: str,
) -> None:
    from beeaudio.core.inference import ModelRunner

    rng = np.random.default_rng(0)
    noise = (mean + std * rng.standard_normal((32, mean.size))).astype(np.float32)
    windows = np.concatenate([np.asarray(check, dtype=np.float32).reshape(-1, mean.size), noise])
    expected = ModelRunner(model_bytes=model_bytes, runtime=runtime).run(windows)
    got = np.asarray(model.predict(windows, verbose=0))
    delta = float(np.max(np.abs(got - expected)))
    if not delta <= _REBUILD_ATOL:
        raise BaseError(
            f"{where}: the dnn rebuilt from the bundle differs from it by up to {delta:.3g} (allowed"
            f" {_REBUILD_ATOL:g}): give the run folder it was exported from"
        )
    log.info(
        "rebuilt the dnn of %s from its TF-Lite graph (max |Δ| %.2g on %d windows)",
        where,
        delta,
        len(windows),
    )


# -- fine-tuning -------------------------------------------------------------------------------------------
def _anchors(*, base: Base, n_labelled: int, seed: int) -> tuple[np.ndarray, np.ndarray] | None:
    """Up to twice as many of the base's training windows as there are labelled windows, with the base's
    own labels for them."""
    if base.anchors is None or not len(base.anchors):
        return None
    count = min(len(base.anchors), max(_MIN_ANCHORS, _ANCHORS_PER_LABEL * n_labelled))
    pick = np.sort(np.random.default_rng(seed).permutation(len(base.anchors))[:count])
    x = base.anchors[pick]
    y = np.asarray(base.model.predict(x, verbose=0)).argmax(axis=1).astype(np.int64)
    return x, y


def fine_tune(
    *,
    base: Base,
    features: np.ndarray,
    labels: np.ndarray,
    hives: np.ndarray,
    config: Any,  # beeaudio.desktop.training.train.TrainConfig
    anchor_share: float = ANCHOR_SHARE,
) -> Any:  # -> FitResult
    """Train a copy of ``base.model`` on the labelled windows (and the anchors); the base is not changed.

    Early stopping watches a hive-grouped validation split of ``hives`` when ``config.validation_fraction``
    asks for one and there are three or more hives, else all ``config.epochs`` run. Class weights as in
    :func:`beeaudio.desktop.training.train.fit_model`.
    """
    import keras
    import tensorflow as tf

    from beeaudio.desktop.training.train import FitResult, _validation_hives, class_weights

    if features.shape[1:] != tuple(base.feature_config.feature_shape):
        raise BaseError(
            f"windows of shape {features.shape[1:]}; the base takes {base.feature_config.feature_shape}"
        )
    keras.utils.set_random_seed(config.seed)
    labels = np.asarray(labels, dtype=np.int64)
    hives = np.asarray(hives).astype(str)
    n_classes = len(base.label_names)
    validation_hives = _validation_hives(
        hives=hives, labels=labels, fraction=config.validation_fraction, seed=config.seed
    )
    val = np.isin(hives, validation_hives)
    x_fit, y_fit = features[~val].astype(np.float32), labels[~val]
    weights = class_weights(labels=y_fit, n_classes=n_classes)
    w_fit = np.array([weights[int(c)] for c in y_fit], dtype=np.float32)
    anchored = _anchors(base=base, n_labelled=len(y_fit), seed=config.seed) if anchor_share > 0 else None
    if anchored is not None:
        x_a, y_a = anchored
        w_a = np.full(len(y_a), anchor_share * float(w_fit.sum()) / len(y_a), dtype=np.float32)
        x_fit, y_fit, w_fit = (
            np.concatenate([x_fit, x_a]),
            np.concatenate([y_fit, y_a]),
            np.concatenate([w_fit, w_a]),
        )

    model = keras.models.clone_model(base.model)
    model.set_weights(base.model.get_weights())
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=config.learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    train_data = (
        tf.data.Dataset.from_tensor_slices((x_fit, y_fit, w_fit))
        .shuffle(len(y_fit), seed=config.seed, reshuffle_each_iteration=True)
        .batch(config.batch_size)
        .prefetch(2)
    )
    validation_data, callbacks = None, []
    if val.any():
        validation_data = (
            tf.data.Dataset.from_tensor_slices((features[val].astype(np.float32), labels[val]))
            .batch(max(256, config.batch_size))
            .prefetch(2)
        )
        callbacks.append(
            keras.callbacks.EarlyStopping(
                monitor="val_loss", patience=config.patience, restore_best_weights=True
            )
        )
    started = time.perf_counter()
    fitted = model.fit(
        train_data,
        validation_data=validation_data,
        epochs=config.epochs,
        callbacks=callbacks,
        shuffle=False,
        verbose=config.verbose,
    )
    history = {k: [float(v) for v in values] for k, values in fitted.history.items()}
    epochs_run = len(history.get("loss", []))
    return FitResult(
        model=model,
        history=history,
        epochs_run=epochs_run,
        best_epoch=int(np.argmin(history["val_loss"])) + 1 if "val_loss" in history else epochs_run,
        train_seconds=time.perf_counter() - started,
        validation_hives=sorted(validation_hives),
    )


def describe(base: Base) -> str:
    """One line for logs: what the fine-tuning starts from."""
    return json.dumps({k: v for k, v in base.summary.items() if v is not None}, default=str)


# -- what train_run asks of a base -------------------------------------------------------------------------
#: What a run's metrics say about its check when all its labelled windows come from one hive.
ONE_HIVE_SPLIT = "test (one hive: other recordings of the same hive; says little about other hives)"
ONE_HIVE_WARNING = (
    "all labelled windows come from one hive: the accuracy printed is on other windows of that same hive and"
    " says little about how the model does on other hives (or on this hive another day); label windows of a"
    " second hive for a grouped check"
)


def check_compatible(*, base: Base, config: Any, labels: Sequence[str]) -> None:
    """Refuse (:class:`BaseError`) a training configuration or labels the base cannot be fine-tuned with:
    another feature configuration, model family or size, or labels the base does not have."""
    if config.features != base.feature_config:
        raise BaseError(
            f"features asked for differ from {base.source}'s: "
            f"{feature_difference(asked=config.features, base=base.feature_config)}; fine-tuning keeps the"
            f" base's front end (leave out"
            f" --features and the feature flags, or pass --features {base.source}"
            f"{'/feature_config.json' if base.kind == 'run' else ''})"
        )
    if (config.model, config.layers, config.units) != (base.model_kind, base.layers, base.units):
        raise BaseError(
            f"{base.source} is a {base.model_kind} {base.layers} x {base.units}; fine-tuning keeps its"
            f" architecture (asked for {config.model} {config.layers} x {config.units})"
        )
    unknown = sorted(set(labels) - set(base.label_names))
    if unknown:
        raise BaseError(
            f"the labels name {unknown}, which {base.source} does not know ({', '.join(base.label_names)}):"
            " correct those labels, or train from scratch (without --init-from) to learn a new class"
        )


def split_windows(
    *, windows: Any, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, str, list[str]]:
    """Train and test indices for a fine-tuning, the split's name and warnings: hive-grouped with two or
    more hives (:func:`beeaudio.desktop.datasets.grouped_split`); with one hive, by recording (whole
    recordings on one side) and, with one recording, its last windows in time — with
    :data:`ONE_HIVE_WARNING`."""
    from dataclasses import replace

    from beeaudio.desktop import datasets

    if len(set(np.asarray(windows.hives).astype(str).tolist())) >= 2:
        train_idx, test_idx = datasets.grouped_split(windows=windows, test_fraction=test_fraction, seed=seed)
        return train_idx, test_idx, "test (hive-grouped)", []
    log.warning(ONE_HIVE_WARNING)
    recordings = np.asarray(windows.recordings).astype(str)
    if len(set(recordings.tolist())) >= 2:
        by_recording = replace(windows, hives=recordings)
        train_idx, test_idx = datasets.grouped_split(
            windows=by_recording, test_fraction=test_fraction, seed=seed
        )
    else:
        order = np.argsort(np.asarray(windows.starts), kind="stable")
        n_test = min(len(order) - 1, max(1, round(test_fraction * len(order))))
        train_idx, test_idx = np.sort(order[:-n_test]), np.sort(order[-n_test:])
    return train_idx, test_idx, ONE_HIVE_SPLIT, [ONE_HIVE_WARNING]


def detector_windows(
    *, base: Base, features: np.ndarray, labels: np.ndarray, hives: np.ndarray, seed: int, groups: int = 5
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The windows the fine-tuned model's novelty detector is fitted on: the labelled training windows and
    the anchors, which are spread over ``groups`` pseudo-hives so that the threshold's held-out folds score
    base windows against a fit that includes the labelled hives (a single "base" group held out would be
    scored against the labelled windows alone, and its distances would loosen the threshold for all)."""
    anchored = _anchors(base=base, n_labelled=len(labels), seed=seed)
    if anchored is None:
        return features, labels, hives
    x_a, y_a = anchored
    h_a = np.array([f"base-{i % groups}" for i in range(len(y_a))])
    return (
        np.concatenate([features, x_a]),
        np.concatenate([np.asarray(labels, dtype=np.int64), y_a]),
        np.concatenate([np.asarray(hives).astype(str), h_a]),
    )


def base_architecture(*, source: Path) -> tuple[str, int | None, int | None]:
    """The base's model family, layers and units, read without TensorFlow (a run's ``train_config.json`` or
    the bundle manifest's training summary; None where it does not say)."""
    from beeaudio.desktop.training import train as training

    source = Path(source)
    if _is_run(source):
        path = source / training.TRAIN_CONFIG_FILE
        if not path.is_file():
            raise BaseError(
                f"{source}: not a training run (no {training.TRAIN_CONFIG_FILE}) and not a bundle"
            )
        info = training.read_json(path)
    else:
        info = _manifest(source).training or {}
    layers, units = info.get("layers"), info.get("units")
    return (
        str(info.get("model") or "dnn"),
        None if layers is None else int(layers),
        None if units is None else int(units),
    )


def feature_difference(*, asked: FeatureConfig, base: FeatureConfig) -> str:
    """The fields two feature configurations differ in, as ``name asked (base has X)``, for messages."""
    a, b = asked.to_dict(), base.to_dict()
    return ", ".join(
        f"{k} {a.get(k)} (the base has {b.get(k)})" for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)
    )

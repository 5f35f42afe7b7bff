"""Export a training run as a verified ``.beemodel`` bundle (TF-Lite float32 or full-integer int8).

Conversion goes through ``tf.lite.TFLiteConverter.from_keras_model``, the path that works with Keras 3
(``from_concrete_functions`` with a Keras 3 model gives NaNs), with builtin ops only so ``ai_edge_litert``,
``tflite_runtime`` 2.14 and ``tf.lite`` all run the result. int8 is full-integer: int8 input and output,
calibrated on the run's training windows.

The export checks itself before it writes anything. The converted model is run, through the same
inference code a hive device uses, on every held-out window of the run; it must give the Keras model's
label on at least :data:`MIN_AGREEMENT` of them, and an int8 model must lose at most
:data:`MAX_INT8_ACCURACY_DROP` accuracy against the float32 conversion. Otherwise :class:`ExportError`
says which check failed and by how much. The figures go into the manifest's ``training`` dict and into
the run's ``metrics.json`` (under ``export``).

The run's novelty detector (fitted at training, :mod:`beeaudio.desktop.training.novelty_fit`) goes into the
bundle, with the share of the run's held-out *test*-hive windows it flags recorded in the manifest's
``novelty`` section. A run made before runs kept a detector is exported without one, with a warning.

A run trained with ``calibration="cmn"`` or ``"feature-mean"`` (features relative to each hive's
baseline) is exported with the manifest's ``normalization`` section and format version 2
(:data:`beeaudio.core.bundle.NORMALIZED_FORMAT_VERSION`): its held-out windows, self-test and int8
calibration windows are already relative features, and a device must have the hive's baseline
(``beeaudio device calibrate``) before its readings count.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import warnings
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.baseline import MIN_WINDOWS, NormalizationSpec
from beeaudio.core.bundle import (
    BUNDLE_FORMAT_VERSION,
    NORMALIZED_FORMAT_VERSION,
    QUANTIZATIONS,
    BundleError,
    BundleManifest,
    SelfTest,
)
from beeaudio.core.errors import BeeaudioError
from beeaudio.core.features import FeatureConfig
from beeaudio.core.fsio import write_json
from beeaudio.core.inference import ModelRunner
from beeaudio.core.native_stderr import native_stderr_to_log
from beeaudio.core.novelty import NoveltyDetector
from beeaudio.desktop.bundle_writer import selftest_tolerance_for_model, write_bundle
from beeaudio.desktop.training import novelty_fit
from beeaudio.desktop.training import train as training

log = logging.getLogger(__name__)

#: What TF-Lite's converter prints from C++ on every conversion: to the debug log, not the terminal.
_ROUTINE_CONVERTER_LINES = ("fully_quantize:", "INFO: ")

#: Share of held-out windows on which the exported model must give the Keras model's label.
MIN_AGREEMENT = 0.99
#: Largest accuracy an int8 model may lose against its float32 conversion (1 point).
MAX_INT8_ACCURACY_DROP = 0.01
#: Windows in the bundle's self-test.
SELFTEST_WINDOWS = 8


class ExportError(BeeaudioError):
    """The run cannot be exported, or the exported model failed its checks; nothing was written."""


def convert(*, model: Any, quantize: str, calibration: np.ndarray | None = None) -> bytes:
    """A Keras model as a TF-Lite flatbuffer: float32, or full-integer int8 calibrated on ``calibration``."""
    import tensorflow as tf

    if quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "float32":
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    else:
        if calibration is None or len(calibration) == 0:
            raise ValueError("int8 conversion needs calibration windows")
        samples = np.asarray(calibration, dtype=np.float32)

        def representative_dataset():
            for i in range(len(samples)):
                yield [samples[i : i + 1]]

        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = tf.int8
        converter.inference_output_type = tf.int8
        # Per-channel dense weights need FULLY_CONNECTED op versions that tflite-runtime 2.14 (32-bit Pi OS)
        # rejects; per-tensor costs nothing measurable at this size.
        converter._experimental_disable_per_channel_quantization_for_dense_layers = True
    # The Keras 3 path prints the SavedModel signature to stdout and warns about input statistics that
    # full-integer conversion does not need, and the int8 calibrator prints its settings from C++
    # ("fully_quantize: 0, inference_type: 6, ..."); keep the CLI's output readable.
    captured = io.StringIO()
    with (
        warnings.catch_warnings(),
        contextlib.redirect_stdout(captured),
        native_stderr_to_log(routine=_ROUTINE_CONVERTER_LINES, source="converter"),
    ):
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs")
        flatbuffer = converter.convert()
    log.debug("converter output: %s", captured.getvalue())
    return bytes(flatbuffer)


def tflite_predict(
    *, model_bytes: bytes, features: np.ndarray, runtime: str | None = None
) -> tuple[np.ndarray, str]:
    """Probabilities of a TF-Lite model for ``features`` (float32), computed by the device's own
    :class:`beeaudio.core.inference.ModelRunner` (quantised, one window per call, as on a hive); and the
    runtime's name."""
    runner = ModelRunner(model_bytes=model_bytes, runtime=runtime)
    x = np.asarray(features, dtype=np.float32)
    if tuple(runner.input.shape[1:]) != x.shape[1:]:
        raise ExportError(
            f"the converted model takes {list(runner.input.shape)}, the features are {list(x.shape)}"
        )
    return runner.run(x), runner.runtime


def _read_run(run: Path) -> dict[str, Any]:
    needed = (
        training.MODEL_FILE, training.FEATURE_CONFIG_FILE, training.HELDOUT_FILE,
        training.REPRESENTATIVE_FILE, training.METRICS_FILE, training.TRAIN_CONFIG_FILE,
    )  # fmt: skip
    if not run.is_dir():
        raise ExportError(f"{run}: no such run folder (make one with 'beeaudio train')")
    missing = [name for name in needed if not (run / name).is_file()]
    if missing:
        raise ExportError(f"{run}: not a complete training run, missing {', '.join(missing)}")
    with np.load(run / training.HELDOUT_FILE, allow_pickle=False) as heldout:
        held = {key: heldout[key] for key in heldout.files}
    with np.load(run / training.REPRESENTATIVE_FILE, allow_pickle=False) as representative:
        calibration = representative["features"]
    if len(held["labels"]) == 0:
        raise ExportError(f"{run}: the run has no held-out windows to check the export on")
    return {
        "feature_config": FeatureConfig.from_dict(training.read_json(run / training.FEATURE_CONFIG_FILE)),
        "train_config": training.read_json(run / training.TRAIN_CONFIG_FILE),
        "metrics": training.read_json(run / training.METRICS_FILE),
        "heldout": held,
        "calibration": calibration,
    }


def _selftest_indices(labels: np.ndarray, n: int) -> np.ndarray:
    """``n`` held-out windows spread over the classes and over the set, deterministic."""
    picks: list[int] = []
    classes = np.unique(labels)
    per_class = max(1, n // len(classes))
    for c in classes:
        where = np.flatnonzero(labels == c)
        picks.extend(
            where[np.linspace(0, len(where) - 1, min(per_class, len(where))).round().astype(int)].tolist()
        )
    return np.array(sorted(set(picks))[:n], dtype=np.int64)


def _swarm_label(labels: tuple[str, ...]) -> str:
    for label in labels:
        if "swarm" in label.lower():
            return label
    log.warning(
        "no label names a swarm in %s: using %r as the bundle's swarm label", list(labels), labels[-1]
    )
    return labels[-1]


def export_bundle(
    *,
    run: Path,
    out: Path,
    quantize: str = "int8",
    model_name: str | None = None,
    model_version: str | None = None,
    runtime: str | None = None,
    min_agreement: float = MIN_AGREEMENT,
    max_int8_drop: float = MAX_INT8_ACCURACY_DROP,
) -> Path:
    """Convert ``run``'s Keras model, check it on the run's held-out windows, and write the bundle ``out``.

    Raises :class:`ExportError` (and writes nothing) when the run is incomplete, the conversion fails, or
    a check fails. On success the checks are recorded in the manifest and in ``run/metrics.json``.
    ``min_agreement`` and ``max_int8_drop`` exist for tiny held-out sets (tests), where one window is
    more than a point: keep the defaults for any model you deploy.
    """
    from beeaudio.desktop.training import models

    run, out = Path(run), Path(out)
    if quantize not in QUANTIZATIONS:
        raise ExportError(f"quantize must be one of {', '.join(QUANTIZATIONS)}, got {quantize!r}")
    parts = _read_run(run)
    feature_config: FeatureConfig = parts["feature_config"]
    metrics: dict[str, Any] = parts["metrics"]
    held = parts["heldout"]
    features = held["features"].astype(np.float32)
    labels_true = held["labels"].astype(np.int64)
    label_names = tuple(str(x) for x in held["label_names"].tolist())
    try:
        model = models.load_model(run / training.MODEL_FILE)
    except Exception as exc:  # keras raises many types for a damaged file
        raise ExportError(f"{run / training.MODEL_FILE}: cannot load the Keras model: {exc}") from exc

    keras_probs = np.asarray(model.predict(features, verbose=0), dtype=np.float32)
    if not np.all(np.isfinite(keras_probs)):
        raise ExportError(
            f"{run}: the Keras model outputs NaN or infinity on the held-out windows: broken model"
        )
    keras_pred = keras_probs.argmax(axis=1)

    try:
        float_bytes = convert(model=model, quantize="float32")
        model_bytes = float_bytes
        if quantize == "int8":
            # The runtime's input quantisation does what the model's InputQuantization layer does, and the
            # Normalization is folded into the first dense layer (see integer_export_model).
            integer_model = models.integer_export_model(model)
            model_bytes = convert(model=integer_model, quantize="int8", calibration=parts["calibration"])
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError ...
        raise ExportError(f"{run}: TF-Lite conversion ({quantize}) failed: {exc}") from exc
    if quantize == "int8":
        _check_input_grid(model=model, model_bytes=model_bytes, runtime=runtime)

    float_probs, runtime_name = tflite_predict(model_bytes=float_bytes, features=features, runtime=runtime)
    probs = (
        float_probs
        if quantize == "float32"
        else tflite_predict(model_bytes=model_bytes, features=features, runtime=runtime)[0]
    )
    checks = _check_export(
        quantize=quantize,
        keras_pred=keras_pred,
        float_probs=float_probs,
        probs=probs,
        labels_true=labels_true,
        label_names=label_names,
        min_agreement=min_agreement,
        max_int8_drop=max_int8_drop,
    )
    checks["runtime"] = runtime_name
    checks["heldout_windows"] = len(labels_true)
    checks["keras_accuracy"] = float(np.mean(keras_pred == labels_true))

    detector, novelty_info = _novelty(run=run, config=feature_config, n_labels=len(label_names), held=held)
    checks["novelty_threshold"] = detector.threshold if detector is not None else None
    checks["novelty_heldout_flagged"] = novelty_info.get("heldout_flagged")

    pick = _selftest_indices(labels_true, SELFTEST_WINDOWS)
    # Kernels differ between runtimes (XNNPACK and the builtin kernels of LiteRT and tflite-runtime 2.14
    # round the logits one step apart): the tolerance comes from the model's logit and output quantisation
    # and from what the two kernel families give for the held-out windows (the manifest records both).
    tolerance = selftest_tolerance_for_model(model_bytes=model_bytes, runtime=runtime, features=features)
    atol = tolerance.atol
    selftest = SelfTest(features=features[pick], expected=probs[pick], atol=atol)

    from beeaudio.core.fsio import sha256_hex

    digest = sha256_hex(model_bytes)
    train_config = parts["train_config"]
    normalization = _normalization(train_config=train_config, metrics=metrics)
    manifest = BundleManifest(
        format_version=BUNDLE_FORMAT_VERSION if normalization is None else NORMALIZED_FORMAT_VERSION,
        model_name=model_name or f"hive-{train_config.get('model', 'model')}",
        model_version=model_version or f"{datetime.now(UTC):%Y%m%d}-{digest[:8]}",
        labels=label_names,
        swarm_label=_swarm_label(label_names),
        feature_config=feature_config,
        input_shape=(),
        input_dtype="",
        output_shape=(),
        output_dtype="",
        quantization=quantize,
        model_sha256=digest,
        training={
            "model": train_config.get("model"),
            "layers": train_config.get("layers"),
            "units": train_config.get("units"),
            "params": metrics.get("params"),
            "seed": train_config.get("seed"),
            "codec_augment": train_config.get("codec_augment"),
            "dataset": metrics.get("dataset"),
            "train_hives": metrics.get("train_hives"),
            "test_hives": metrics.get("test_hives"),
            "accuracy": checks["accuracy"],
            "per_class": checks["per_class"],
            "export_checks": {k: v for k, v in checks.items() if k != "per_class"},
        },
        created_at="",
        normalization=normalization,
        selftest=tolerance,
    )
    try:
        path = write_bundle(
            path=out,
            manifest=manifest,
            model_bytes=model_bytes,
            selftest=selftest,
            novelty=detector,
            novelty_info=novelty_info,
        )
    except BundleError as exc:
        raise ExportError(f"the bundle failed its own verification, not written: {exc}") from exc

    metrics.setdefault("export", {})[quantize] = {
        **checks,
        "bundle": str(path),
        "bundle_bytes": path.stat().st_size,
        "model_bytes": len(model_bytes),
        "model_sha256": digest,
        "model_name": manifest.model_name,
        "model_version": manifest.model_version,
    }
    # metrics.json is read by users and tools while they look at a run: never leave it half written.
    write_json(run / training.METRICS_FILE, metrics)
    log.info(
        "exported %s (%s, %.1f KB): accuracy %.2f %% on %d held-out windows, agreement with Keras %.2f %%",
        path, quantize, path.stat().st_size / 1024, 100 * checks["accuracy"], len(labels_true),
        100 * checks["agreement"],
    )  # fmt: skip
    return path


def _normalization(*, train_config: dict[str, Any], metrics: dict[str, Any]) -> NormalizationSpec | None:
    """The manifest's ``normalization`` section for a run trained on features relative to hive baselines."""
    calibration = train_config.get("calibration", "none")
    if calibration in (None, "none"):
        return None
    from beeaudio.desktop.calibration import kind_of

    try:
        kind = kind_of(calibration)
    except ValueError as exc:
        raise ExportError(f"the run was trained with calibration {calibration!r}: {exc}") from exc
    info = metrics.get("calibration", {})
    test_windows = [int(w) for w in info.get("test_baseline_windows", {}).values()]
    return NormalizationSpec(
        kind=kind,
        calibration_label=str(train_config.get("calibration_label", "normal")),
        min_windows=MIN_WINDOWS,
        info={
            "train_hives": len(info.get("train_hives", [])),
            "test_calibration": "the first normal recording of each test hive, left out of the scores",
            "test_baseline_windows": min(test_windows) if test_windows else None,
        },
    )


def _novelty(
    *, run: Path, config: FeatureConfig, n_labels: int, held: dict[str, np.ndarray]
) -> tuple[NoveltyDetector | None, dict[str, Any]]:
    """The run's novelty detector and what the manifest says about it, with the share of the held-out
    test-hive windows it flags; (None, {}) for a run made before runs kept one."""
    try:
        loaded = novelty_fit.load_fit(run=run, config=config, n_classes=n_labels)
    except (ValueError, KeyError, OSError) as exc:
        raise ExportError(f"{run}: the run's novelty detector is unreadable: {exc}") from exc
    if loaded is None:
        log.warning(
            "%s has no novelty detector (trained before beeaudio fitted one): the bundle gets none, so "
            "devices will not flag unfamiliar audio; retrain the run to add it",
            run,
        )
        return None, {}
    detector, info = loaded
    features = held["features"].astype(np.float32)
    flagged = novelty_fit.flagged_share(detector=detector, features=features)
    hives = sorted({str(h) for h in held["hives"].tolist()}) if "hives" in held else []
    log.info(
        "novelty detector: threshold %.3g, flags %.2f %% of %d held-out test-hive windows",
        detector.threshold, 100 * flagged, len(features),
    )  # fmt: skip
    section = {k: v for k, v in info.items() if k in ("fitted_on", "threshold_rule")}
    section.update({"heldout_flagged": flagged, "heldout_windows": len(features), "heldout_hives": hives})
    return detector, section


def _check_input_grid(*, model: Any, model_bytes: bytes, runtime: str | None) -> None:
    """Warn when the converter quantises the input on another grid than the model was trained on."""
    from beeaudio.desktop.training.models import INPUT_QUANTIZATION_LAYER

    try:
        layer = model.get_layer(INPUT_QUANTIZATION_LAYER)
    except ValueError:
        return
    quant = ModelRunner(model_bytes=model_bytes, runtime=runtime).input.quant
    if quant is None or not (
        math.isclose(quant.scale, layer.scale, rel_tol=1e-4) and quant.zero_point == int(layer.zero_point)
    ):
        log.warning(
            "int8 input grid %s differs from the trained one (scale %.6g, zero point %d)",
            quant, layer.scale, int(layer.zero_point),
        )  # fmt: skip


def _check_export(
    *,
    quantize: str,
    keras_pred: np.ndarray,
    float_probs: np.ndarray,
    probs: np.ndarray,
    labels_true: np.ndarray,
    label_names: tuple[str, ...],
    min_agreement: float = MIN_AGREEMENT,
    max_int8_drop: float = MAX_INT8_ACCURACY_DROP,
) -> dict[str, Any]:
    """The agreement and accuracy figures; ExportError when a check fails."""
    from beeaudio.desktop.training.evaluate import compute_metrics

    if not (np.all(np.isfinite(probs)) and np.all(np.isfinite(float_probs))):
        raise ExportError("the converted model outputs NaN or infinity on held-out windows: not exported")
    pred = probs.argmax(axis=1)
    float_pred = float_probs.argmax(axis=1)
    agreement = float(np.mean(pred == keras_pred))
    float_accuracy = float(np.mean(float_pred == labels_true))
    accuracy = float(np.mean(pred == labels_true))
    per_class = compute_metrics(y_true=labels_true, y_pred=pred, label_names=label_names)
    checks: dict[str, Any] = {
        "quantization": quantize,
        "accuracy": accuracy,
        "agreement": agreement,
        "min_agreement": min_agreement,
        "float32_accuracy": float_accuracy,
        "float32_agreement": float(np.mean(float_pred == keras_pred)),
        "confusion_matrix": per_class["confusion_matrix"],
        "per_class": per_class["per_class"],
    }
    if quantize == "int8":
        checks["int8_accuracy"] = accuracy
        checks["int8_accuracy_drop"] = float_accuracy - accuracy
        checks["max_int8_accuracy_drop"] = max_int8_drop
    if agreement < min_agreement:
        raise ExportError(
            f"the {quantize} TF-Lite model gives the Keras model's label on only {100 * agreement:.2f} % of "
            f"{len(pred)} held-out windows (need >= {100 * min_agreement:.0f} %): not exported. "
            "Train longer or on more data, or export --quantize float32"
        )
    if quantize == "int8" and float_accuracy - accuracy > max_int8_drop + 1e-12:
        raise ExportError(
            f"int8 accuracy {100 * accuracy:.2f} % is {100 * (float_accuracy - accuracy):.2f} points "
            f"below float32 "
            f"{100 * float_accuracy:.2f} % on {len(pred)} held-out windows (allowed "
            f"{100 * max_int8_drop:.0f}): not exported; try --quantize float32"
        )
    return checks

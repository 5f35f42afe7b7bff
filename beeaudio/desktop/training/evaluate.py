"""Metrics, and evaluation of an exported bundle on a dataset folder.

No TensorFlow here: :func:`evaluate_bundle` runs the bundle through
:class:`beeaudio.core.inference.Classifier`,
exactly as a hive device would, and :func:`compute_metrics` is plain numpy, shared with training so a run's
``metrics.json`` and ``beeaudio evaluate`` report the same shape.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

SPLITS = ("all", "test", "train")


def compute_metrics(
    *,
    y_true: np.ndarray,
    y_pred: np.ndarray,
    label_names: Sequence[str],
    hives: np.ndarray | None = None,
    recordings: np.ndarray | None = None,
    probabilities: np.ndarray | None = None,
) -> dict[str, Any]:
    """Accuracy, per-class precision/recall/F1, confusion matrix, per-hive and per-recording accuracy.

    ``confusion_matrix[i][j]`` counts windows of true class ``i`` predicted as ``j``. Per-recording accuracy
    scores each recording by the label of its mean probabilities (or its majority vote without them), the
    way ``beeaudio classify`` labels a file.
    """
    y_true = np.asarray(y_true, dtype=np.int64)
    y_pred = np.asarray(y_pred, dtype=np.int64)
    if y_true.shape != y_pred.shape or y_true.ndim != 1:
        raise ValueError(f"y_true {y_true.shape} and y_pred {y_pred.shape} must be equal 1-D arrays")
    n_classes = len(label_names)
    confusion = np.zeros((n_classes, n_classes), dtype=np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    per_class: dict[str, dict[str, float | int]] = {}
    for i, name in enumerate(label_names):
        tp = int(confusion[i, i])
        predicted = int(confusion[:, i].sum())
        support = int(confusion[i, :].sum())
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        per_class[name] = {"precision": precision, "recall": recall, "f1": f1, "support": support}
    n = int(y_true.size)
    metrics: dict[str, Any] = {
        "windows": n,
        "accuracy": float(np.mean(y_true == y_pred)) if n else 0.0,
        "balanced_accuracy": float(np.mean([per_class[c]["recall"] for c in label_names])) if n else 0.0,
        "macro_f1": float(np.mean([per_class[c]["f1"] for c in label_names])) if n else 0.0,
        "per_class": per_class,
        "labels": list(label_names),
        "confusion_matrix": confusion.tolist(),
    }
    if hives is not None:
        hives = np.asarray(hives).astype(str)
        metrics["per_hive"] = {
            str(h): {
                "accuracy": float(np.mean(y_true[hives == h] == y_pred[hives == h])),
                "windows": int(np.sum(hives == h)),
            }
            for h in sorted(set(hives.tolist()))
        }
    if recordings is not None:
        metrics["recordings"] = _recording_metrics(
            y_true=y_true,
            y_pred=y_pred,
            recordings=np.asarray(recordings).astype(str),
            probabilities=probabilities,
        )
    return metrics


def _recording_metrics(
    *, y_true: np.ndarray, y_pred: np.ndarray, recordings: np.ndarray, probabilities: np.ndarray | None
) -> dict[str, Any]:
    correct = 0
    names = sorted(set(recordings.tolist()))
    for name in names:
        mask = recordings == name
        truth = np.bincount(y_true[mask]).argmax()
        if probabilities is not None:
            label = int(np.argmax(np.asarray(probabilities)[mask].mean(axis=0)))
        else:
            label = int(np.bincount(y_pred[mask]).argmax())
        correct += int(label == truth)
    return {"count": len(names), "accuracy": correct / len(names) if names else 0.0}


def evaluate_bundle(
    *,
    model: Path,
    data: Path,
    run: Path | None = None,
    split: str = "all",
    cache_dir: Path | None = None,
    runtime: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Evaluate a ``.beemodel`` on the recordings under ``data`` with the device's inference code.

    ``split="test"`` (or ``"train"``) keeps only the hives of that side of ``run``'s ``split.json``, so a
    bundle is scored on exactly the held-out hives of its training run. Recordings whose label the model
    does not know are skipped with a warning. Returns the :func:`compute_metrics` dictionary plus the model,
    runtime, split and timing.
    """
    from beeaudio.core.inference import Classifier
    from beeaudio.desktop import datasets as datasets

    if split not in SPLITS:
        raise ValueError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    if split != "all" and run is None:
        raise ValueError(
            f"split {split!r} needs the training run folder (--run) to know which hives it held out"
        )
    classifier = Classifier.load(Path(model), runtime=runtime)
    labels = classifier.labels
    recordings = datasets.discover(root=Path(data))
    if not recordings:
        raise ValueError(
            f"{data}: no recordings found (expected manifest.csv, class folders or known file names)"
        )
    unknown = sorted({r.label for r in recordings} - set(labels))
    if unknown:
        log.warning("skipping recordings labelled %s: the model knows only %s", unknown, list(labels))
        recordings = [r for r in recordings if r.label in labels]
    if split != "all":
        hives = set(json.loads((Path(run) / "split.json").read_text())[f"{split}_hives"])
        recordings = [r for r in recordings if r.hive in hives]
    if not recordings:
        raise ValueError(f"{data}: no recordings left to evaluate (split={split}, labels={list(labels)})")

    windows = datasets.build_windows(
        recordings=recordings,
        config=classifier.config,
        cache_dir=cache_dir,
        label_names=labels,
        progress=progress,
    )
    started = time.perf_counter()
    probabilities = classifier.predict(windows.features)
    inference_seconds = time.perf_counter() - started
    metrics = compute_metrics(
        y_true=windows.labels,
        y_pred=np.argmax(probabilities, axis=1),
        label_names=labels,
        hives=windows.hives,
        recordings=windows.recordings,
        probabilities=probabilities,
    )
    metrics.update(
        {
            "model": str(model),
            "model_name": classifier.manifest.model_name,
            "model_version": classifier.manifest.model_version,
            "quantization": classifier.manifest.quantization,
            "runtime": classifier.runtime,
            "data": str(data),
            "split": split,
            "hives": sorted({str(h) for h in windows.hives.tolist()}),
            "timing": {
                "load_seconds": windows.load_seconds,
                "compute_seconds": windows.compute_seconds,
                "cache_hits": windows.cache_hits,
                "inference_seconds": inference_seconds,
                "inference_ms_per_window": 1000 * inference_seconds / max(1, len(windows.labels)),
            },
        }
    )
    return metrics

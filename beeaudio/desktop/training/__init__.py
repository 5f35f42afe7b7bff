"""Training, evaluation and export: the only part of beeaudio that imports TensorFlow.

* :mod:`beeaudio.desktop.training.train` — :class:`TrainConfig` and :func:`train_run` (dataset folder →
run folder).
* :mod:`beeaudio.desktop.training.models` — the ``dnn`` and ``cnn`` model families.
* :mod:`beeaudio.desktop.training.export` — :func:`export_bundle` (run folder → verified ``.beemodel``).
* :mod:`beeaudio.desktop.training.evaluate` — :func:`evaluate_bundle` and :func:`compute_metrics` (no
TensorFlow).
* :mod:`beeaudio.desktop.training.plots` — confusion matrix and training curves (matplotlib, Agg).

Importing this package imports nothing heavy; TensorFlow loads with the submodules that need it.
"""

from __future__ import annotations

import importlib
import logging
import os
from typing import Any

_EXPORTS = {
    "TrainConfig": "beeaudio.desktop.training.train",
    "TrainResult": "beeaudio.desktop.training.train",
    "train_run": "beeaudio.desktop.training.train",
    "export_bundle": "beeaudio.desktop.training.export",
    "ExportError": "beeaudio.desktop.training.export",
    "evaluate_bundle": "beeaudio.desktop.training.evaluate",
    "compute_metrics": "beeaudio.desktop.training.evaluate",
}

__all__ = sorted([*_EXPORTS, "quiet_tensorflow"])


def quiet_tensorflow() -> None:
    """Keep TensorFlow's start-up chatter (CPU features, oneDNN, "Assets written to") out of a command's
    output: it says nothing to a beekeeper. Call it before TensorFlow is first imported."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    # TF 2.21 announces oneDNN's custom operations through absl's logger, which TF_CPP_MIN_LOG_LEVEL no
    # longer governs (two lines on every train and export); with them off there is nothing to announce,
    # and float sums are not reordered by them (the experiments turned them off for that already).
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    logging.getLogger("tensorflow").setLevel(logging.WARNING)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'beeaudio.desktop.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

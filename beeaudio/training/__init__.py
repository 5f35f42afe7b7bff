"""Training, evaluation and export: the only part of beeaudio that imports TensorFlow.

* :mod:`beeaudio.training.train` — :class:`TrainConfig` and :func:`train_run` (dataset folder → run folder).
* :mod:`beeaudio.training.models` — the ``dnn`` and ``cnn`` model families.
* :mod:`beeaudio.training.export` — :func:`export_bundle` (run folder → verified ``.beemodel``).
* :mod:`beeaudio.training.evaluate` — :func:`evaluate_bundle` and :func:`compute_metrics` (no TensorFlow).
* :mod:`beeaudio.training.plots` — confusion matrix and training curves (matplotlib, Agg).

Importing this package imports nothing heavy; TensorFlow loads with the submodules that need it.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "TrainConfig": "beeaudio.training.train",
    "TrainResult": "beeaudio.training.train",
    "train_run": "beeaudio.training.train",
    "export_bundle": "beeaudio.training.export",
    "ExportError": "beeaudio.training.export",
    "evaluate_bundle": "beeaudio.training.evaluate",
    "compute_metrics": "beeaudio.training.evaluate",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'beeaudio.training' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)

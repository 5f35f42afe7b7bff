"""Fitting the bundle's novelty detector (:mod:`beeaudio.core.novelty`) on a run's training windows.

:func:`fit_detector` fits each view's class-conditional Gaussians (shared covariance, shrunk towards its
average variance) on the training windows and chooses the threshold on hives the fit did not see: the
training hives are split into up to :attr:`NoveltyFitConfig.max_folds` groups, each group is scored by
views fitted on the other groups (every training hive is a validation hive once; the test hives are never
used), each view's distances are scaled by their ``reference_quantile``, and the threshold is the
``threshold_quantile`` of the combined held-out scores times ``margin``. The detector that ships is fitted
on all training windows with those references; its distances to new hives run a little lower than the
folds' (it saw more hives), so the threshold errs towards flagging fewer windows.

The training run keeps the result in ``novelty.npz`` (the detector's arrays and the held-out scores) and
``novelty.json`` (what the manifest's ``novelty`` section says about the fit); the exporter puts it in the
bundle and measures the share of test-hive windows it flags.
"""

from __future__ import annotations

import io
import logging
import math
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core import novelty
from beeaudio.core.features import FeatureConfig
from beeaudio.core.fsio import write_bytes_atomic, write_json
from beeaudio.core.novelty import GaussianView, NoveltyDetector

log = logging.getLogger(__name__)

#: Files of a run folder that hold the fitted detector.
NOVELTY_ARRAYS_FILE = "novelty.npz"
NOVELTY_INFO_FILE = "novelty.json"
_SCORES = "heldout__scores"
_HIVES = "heldout__hives"


@dataclass(frozen=True)
class NoveltyFitConfig:
    """How the detector is fitted and its threshold chosen.

    * ``shrinkage = 0.05``: the shared covariance is ``(1 - a) S + a (tr S / d) I``. Some feature
      combinations barely vary over the training hives, and an unshrunk inverse turns tiny differences
      along them into large distances on every new hive (the threshold then has to be loose for all). On
      the default benchmark 0.01-0.05 flag the same share of test-hive windows; 0.2 starts to flag more.
    * ``reference_quantile = 0.99``: each view's distance is divided by its 99th percentile on held-out
      hives, so the two views weigh the same.
    * ``threshold_quantile = 0.995``, ``margin = 1.0``: the threshold flags 0.5 % of the held-out
      training-hive windows; the issue asks for at most 2 % on hives no part of training saw, and hives
      differ, so the share on new hives is higher than on the folds (on the benchmark's folds the
      per-hive share ranges 0-2 % at this quantile).
    * ``max_folds = 10``: hive groups for the held-out scores (every hive its own group up to 10 hives).
    """

    shrinkage: float = 0.05
    reference_quantile: float = 0.99
    threshold_quantile: float = 0.995
    margin: float = 1.0
    max_folds: int = 10

    def __post_init__(self) -> None:
        if not 0.0 <= self.shrinkage <= 1.0:
            raise ValueError(f"shrinkage must be in [0, 1], got {self.shrinkage}")
        for name in ("reference_quantile", "threshold_quantile"):
            if not 0.5 <= getattr(self, name) <= 1.0:
                raise ValueError(f"{name} must be in [0.5, 1], got {getattr(self, name)}")
        if not (math.isfinite(self.margin) and self.margin > 0):
            raise ValueError(f"margin must be positive, got {self.margin}")
        if self.max_folds < 2:
            raise ValueError(f"max_folds must be at least 2, got {self.max_folds}")


@dataclass(frozen=True)
class NoveltyFit:
    """A fitted detector, the held-out scores its threshold was chosen on, and what to say about it."""

    detector: NoveltyDetector
    heldout_scores: np.ndarray
    heldout_hives: np.ndarray
    info: dict[str, Any]


def fit_view(*, x: np.ndarray, labels: np.ndarray, n_classes: int, shrinkage: float) -> GaussianView:
    """Class means and a shared shrunk covariance of ``x`` ``(n, d)``; ``reference`` 1 (set later).

    A class without windows here gets the overall mean (so a fold missing a class still scores)."""
    x = np.asarray(x, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    mean = x.mean(axis=0)
    scale = np.maximum(x.std(axis=0), 1e-6)
    z = (x - mean) / scale
    class_means = np.zeros((n_classes, x.shape[1]))
    present = np.zeros(n_classes, dtype=bool)
    for c in range(n_classes):
        rows = labels == c
        if rows.any():
            class_means[c] = z[rows].mean(axis=0)
            present[c] = True
    residuals = z - class_means[labels]
    cov = residuals.T @ residuals / max(1, len(z) - int(present.sum()))
    d = cov.shape[0]
    cov = (1.0 - shrinkage) * cov + shrinkage * (np.trace(cov) / d) * np.eye(d)
    # P = V diag(1/λ) Vᵀ = L Lᵀ with L = V diag(1/√λ): eigh is stable where a Cholesky of a nearly
    # singular covariance is not, and the floor keeps a flat direction from dividing by zero.
    eigenvalues, vectors = np.linalg.eigh(cov)
    eigenvalues = np.maximum(eigenvalues, 1e-9 * max(float(eigenvalues.max()), 1e-12))
    whitener = vectors / np.sqrt(eigenvalues)[None, :]
    return GaussianView(mean=mean, scale=scale, class_means=class_means, whitener=whitener, reference=1.0)


def _fit_views(
    *, inputs: dict[str, np.ndarray], labels: np.ndarray, n_classes: int, shrinkage: float
) -> dict[str, GaussianView]:
    return {
        name: fit_view(x=x, labels=labels, n_classes=n_classes, shrinkage=shrinkage)
        for name, x in inputs.items()
    }


def _folds(hives: np.ndarray, max_folds: int) -> list[np.ndarray]:
    """Hive groups (boolean masks over the windows): hives in sorted order dealt round-robin."""
    unique = sorted(set(hives.tolist()))
    n = min(len(unique), max_folds)
    groups = [unique[i::n] for i in range(n)]
    return [np.isin(hives, group) for group in groups]


def fit_detector(
    *,
    features: np.ndarray,
    labels: np.ndarray,
    hives: np.ndarray,
    config: FeatureConfig,
    n_classes: int,
    fit_config: NoveltyFitConfig = NoveltyFitConfig(),
) -> NoveltyFit:
    """Fit the detector on training windows ``(n, *config.feature_shape)`` and choose its threshold on
    held-out groups of the training hives (see the module docstring). With one training hive there is no
    held-out hive: the threshold then comes from its own windows (in-sample) and a warning says so."""
    labels = np.asarray(labels, dtype=np.int64)
    hives = np.asarray(hives).astype(str)
    if not len(labels) == len(hives) == len(features) or len(labels) < 2:
        raise ValueError("need at least two windows, with one label and one hive each")
    inputs = novelty.view_inputs(features=features, config=config)
    fc = fit_config
    folds = _folds(hives, fc.max_folds)
    distances = {name: np.zeros(len(labels)) for name in inputs}
    if len(folds) >= 2:
        for held in folds:
            views = _fit_views(
                inputs={k: v[~held] for k, v in inputs.items()},
                labels=labels[~held],
                n_classes=n_classes,
                shrinkage=fc.shrinkage,
            )
            for name, view in views.items():
                distances[name][held] = view.distance(inputs[name][held])
        method = "held-out hive groups of the training hives"
    else:
        log.warning(
            "one training hive: the novelty threshold comes from its own windows, so new hives will be "
            "flagged more often than the figure says; train on two or more hives"
        )
        views = _fit_views(inputs=inputs, labels=labels, n_classes=n_classes, shrinkage=fc.shrinkage)
        distances = {name: view.distance(inputs[name]) for name, view in views.items()}
        method = "in-sample (one training hive)"
    references = {
        name: max(float(np.quantile(d, fc.reference_quantile)), 1e-6) for name, d in distances.items()
    }
    scores = np.max(np.stack([distances[name] / references[name] for name in inputs]), axis=0)
    threshold = float(np.quantile(scores, fc.threshold_quantile)) * fc.margin
    final = _fit_views(inputs=inputs, labels=labels, n_classes=n_classes, shrinkage=fc.shrinkage)
    detector = NoveltyDetector(
        config=config,
        views={
            name: GaussianView(
                mean=view.mean,
                scale=view.scale,
                class_means=view.class_means,
                whitener=view.whitener,
                reference=references[name],
            )
            for name, view in final.items()
        },
        threshold=threshold,
    )
    info = {
        "kind": novelty.KIND,
        "views": list(detector.views),
        "threshold": threshold,
        "fitted_on": {
            "windows": len(labels),
            "hives": len(set(hives.tolist())),
            "class_windows": np.bincount(labels, minlength=n_classes).tolist(),
        },
        "threshold_rule": {
            "method": method,
            "folds": len(folds),
            "windows": len(scores),
            "flagged": float(np.mean(scores > threshold)),
            **asdict(fc),
        },
    }
    return NoveltyFit(detector=detector, heldout_scores=scores, heldout_hives=hives, info=info)


def flagged_share(*, detector: NoveltyDetector, features: np.ndarray) -> float:
    """Share of windows the detector calls unfamiliar (0 for no windows)."""
    if len(features) == 0:
        return 0.0
    return float(np.mean(detector.unfamiliar(detector.score(features))))


# -- the run folder ----------------------------------------------------------------------------------------
def save_fit(*, fit: NoveltyFit, run: Path) -> None:
    """Write ``novelty.npz`` and ``novelty.json`` into the run folder."""
    buffer = io.BytesIO()
    np.savez_compressed(
        buffer,
        **fit.detector.to_arrays(),
        **{_SCORES: fit.heldout_scores.astype(np.float64), _HIVES: fit.heldout_hives.astype(str)},
    )
    write_bytes_atomic(Path(run) / NOVELTY_ARRAYS_FILE, buffer.getvalue())
    write_json(Path(run) / NOVELTY_INFO_FILE, fit.info)


def load_fit(
    *, run: Path, config: FeatureConfig, n_classes: int
) -> tuple[NoveltyDetector, dict[str, Any]] | None:
    """The run's detector and its info, or None for a run made before runs kept one."""
    run = Path(run)
    arrays_path, info_path = run / NOVELTY_ARRAYS_FILE, run / NOVELTY_INFO_FILE
    if not (arrays_path.is_file() and info_path.is_file()):
        return None
    import json

    info = json.loads(info_path.read_text())
    with np.load(arrays_path, allow_pickle=False) as npz:
        arrays = {key: npz[key] for key in npz.files if not key.startswith("heldout__")}
    detector = NoveltyDetector.from_arrays(
        arrays,
        config=config,
        views=tuple(info["views"]),
        threshold=float(info["threshold"]),
        n_classes=n_classes,
    )
    return detector, info

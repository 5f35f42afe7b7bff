"""Unfamiliar sound: how far a window is from everything the model was trained on.

A classifier answers for any input, and it answers confidently about sounds it has never heard (white noise,
a voice, rain on the roof). The bundle's novelty detector scores each window against the training
windows; beyond the bundle's threshold the window is *unfamiliar* and no evidence of any hive state.

The detector (kind :data:`KIND`) looks at a window through two **views**, each a set of class-conditional
Gaussians with one shared, shrunk covariance (Lee et al. 2018, "A simple unified framework for detecting
out-of-distribution samples"); a view's distance is the smallest Mahalanobis distance to a class mean:

* ``features``: the model's window features, standardised (for the ``frames`` representation, their mean
  and standard deviation over time: the same 2 × features-per-frame summary as ``stats``);
* ``shape``: two numbers for how peaked the window's spectrum is: the log energy of the mean cepstrum
  beyond level and tilt (coefficients 2 and up), and the height in dB of the highest band of the
  smoothed log-mel spectrum (the mean cepstrum transformed back) over its median band. A colony's hum is
  harmonic, so its spectrum has peaks 15-25 dB over the valleys; noise, rain and hiss are flat, and a
  steady tone is one peak 60 dB over nothing. A flat spectrum has cepstral coefficients near 0, which in
  the ``features`` view is the *centre* of the hives (their coefficients vary in sign from hive to hive),
  so noise looks typical there; here it is far outside, and so is a tone.

Each view's distance is divided by its ``reference`` (a high quantile of that view's distances on hives the
fit did not see), and the score is the larger of the two: one unit means "as far as the far end of
unseen hives". The threshold comes from the same held-out distances (see
``beeaudio.desktop.training.novelty_fit``). Imports only numpy: a hive device runs this.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np

from beeaudio.core.features import FeatureConfig, _dct_matrix
from beeaudio.core.wire import MAX_NOVELTY

__all__ = [
    "KIND",
    "MEMBER",
    "VIEWS",
    "GaussianView",
    "NoveltyDetector",
    "view_dims",
    "view_inputs",
    "window_summary",
]

#: The detector's kind, as the manifest names it; another kind is a detector this code cannot compute.
KIND = "gaussian-views/1"
#: The bundle member holding the detector's arrays.
MEMBER = "novelty.npz"
#: The views this code computes, in order.
VIEWS = ("features", "shape")
#: Floor under the cepstral energy before its logarithm: digital silence has none at all.
_SHAPE_FLOOR = 1e-6
_ARRAYS = ("mean", "scale", "class_means", "whitener", "reference")


def window_summary(*, features: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Windows ``(n, *config.feature_shape)`` as ``(n, 2 * features_per_frame)`` float64: the ``stats``
    features as they are, the ``frames`` ones as their mean and standard deviation over time."""
    x = np.asarray(features, dtype=np.float64)
    if x.shape[1:] != tuple(config.feature_shape):
        raise ValueError(f"features of shape {x.shape}; the config's windows are {config.feature_shape}")
    if config.representation == "stats":
        return x
    return np.concatenate([x.mean(axis=1), x.std(axis=1)], axis=-1)


def _shape(summary: np.ndarray, config: FeatureConfig) -> np.ndarray:
    cepstrum = summary[:, : config.n_mfcc]  # the window's mean cepstrum
    ripple = np.log(np.sum(cepstrum[:, 2:] ** 2, axis=1) + _SHAPE_FLOOR)  # without level (c0) and tilt (c1)
    # The DCT is orthonormal, so its transpose turns the kept coefficients back into a smoothed log-mel
    # spectrum (dB per band).
    smoothed = cepstrum @ _dct_matrix(config.n_mfcc, config.n_mels)
    peak_db = np.max(smoothed, axis=1) - np.median(smoothed, axis=1)
    return np.stack([ripple, peak_db], axis=1)


def view_dims(config: FeatureConfig) -> dict[str, int]:
    """Width of each view's input for windows of ``config``."""
    dims = {"features": 2 * config.features_per_frame}
    if config.n_mfcc > 2:
        dims["shape"] = 2
    return dims


def view_inputs(*, features: np.ndarray, config: FeatureConfig) -> dict[str, np.ndarray]:
    """Each view's input ``(n, dim)`` float64 for windows ``(n, *config.feature_shape)``."""
    summary = window_summary(features=features, config=config)
    out = {"features": summary}
    if config.n_mfcc > 2:
        out["shape"] = _shape(summary, config)
    return out


@dataclass(frozen=True)
class GaussianView:
    """Class-conditional Gaussians with a shared covariance in one standardised space.

    ``mean``/``scale`` standardise the input; ``class_means`` ``(k, d)`` are in the standardised space;
    ``whitener`` ``(d, d)`` is a factor ``L`` of the shrunk precision matrix (``P = L Lᵀ``), so the squared
    Mahalanobis distance to class ``c`` is ``‖(z - μ_c) L‖²``; ``reference`` is the distance that counts
    as one unit of score.
    """

    mean: np.ndarray
    scale: np.ndarray
    class_means: np.ndarray
    whitener: np.ndarray
    reference: float

    def check(self, *, dim: int, n_classes: int) -> None:
        """ValueError unless every array has the shape ``dim``/``n_classes`` imply and finite values."""
        shapes = {
            "mean": (dim,),
            "scale": (dim,),
            "class_means": (n_classes, dim),
            "whitener": (dim, dim),
        }
        for name, shape in shapes.items():
            value = np.asarray(getattr(self, name))
            if value.shape != shape:
                raise ValueError(f"{name} has shape {value.shape}, expected {shape}")
            if not np.all(np.isfinite(value)):
                raise ValueError(f"{name} has non-finite values")
        if not np.all(np.asarray(self.scale) > 0):
            raise ValueError("scale values must be positive")
        if not (math.isfinite(self.reference) and 0.0 < self.reference <= MAX_NOVELTY):
            raise ValueError(f"reference must be a positive finite distance, got {self.reference!r}")

    def distance(self, x: np.ndarray) -> np.ndarray:
        """Smallest Mahalanobis distance over the classes, ``(n,)`` float64, for inputs ``(n, d)``."""
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        diff = z[:, None, :] - np.asarray(self.class_means, dtype=np.float64)[None, :, :]  # (n, k, d)
        projected = diff @ np.asarray(self.whitener, dtype=np.float64)
        return np.sqrt(np.min(np.sum(projected * projected, axis=-1), axis=1))


@dataclass(frozen=True)
class NoveltyDetector:
    """A bundle's novelty detector: its views, for windows of ``config``, and the threshold of its score."""

    config: FeatureConfig
    views: Mapping[str, GaussianView]
    threshold: float
    kind: str = KIND

    def __post_init__(self) -> None:
        if self.kind != KIND:
            raise ValueError(f"unknown novelty detector kind {self.kind!r}; this code computes {KIND!r}")
        if not (math.isfinite(self.threshold) and 0.0 < self.threshold <= MAX_NOVELTY):
            raise ValueError(f"threshold must be a positive finite number, got {self.threshold!r}")
        dims = view_dims(self.config)
        if not self.views or not set(self.views) <= set(dims):
            raise ValueError(f"views {sorted(self.views)}; this code computes {', '.join(dims)}")
        counts = {np.asarray(view.class_means).shape[0] for view in self.views.values()}
        if len(counts) != 1:
            raise ValueError("the views disagree on the number of classes")
        n_classes = int(counts.pop())
        for name, view in self.views.items():
            try:
                view.check(dim=dims[name], n_classes=n_classes)
            except ValueError as exc:
                raise ValueError(f"view {name!r}: {exc}") from exc

    @property
    def n_classes(self) -> int:
        return int(np.asarray(next(iter(self.views.values())).class_means).shape[0])

    def view_scores(self, features: np.ndarray) -> dict[str, np.ndarray]:
        """Each view's distance in units of its reference, ``(n,)`` per view."""
        inputs = view_inputs(features=features, config=self.config)
        return {name: view.distance(inputs[name]) / view.reference for name, view in self.views.items()}

    def score(self, features: np.ndarray) -> np.ndarray:
        """Novelty scores ``(n,)`` float64 of windows ``(n, *feature_shape)``: the largest view score,
        capped at :data:`beeaudio.core.wire.MAX_NOVELTY` so every score fits an event."""
        x = np.asarray(features)
        if x.shape == tuple(self.config.feature_shape):
            x = x[None]
        scores = np.max(np.stack(list(self.view_scores(x).values())), axis=0)
        return np.where(np.isfinite(scores), np.minimum(scores, MAX_NOVELTY), MAX_NOVELTY)

    def unfamiliar(self, scores: np.ndarray) -> np.ndarray:
        """Which scores are beyond the threshold (the same rule as ``ClassificationEvent.unfamiliar``)."""
        return np.asarray(scores) > self.threshold

    # -- the bundle member ---------------------------------------------------------------------------------
    def to_arrays(self) -> dict[str, np.ndarray]:
        """The arrays of :data:`MEMBER`, ``"<view>__<array>"`` (float32; the reference as float64)."""
        out: dict[str, np.ndarray] = {}
        for name, view in self.views.items():
            for array in _ARRAYS[:-1]:
                out[f"{name}__{array}"] = np.asarray(getattr(view, array), dtype=np.float32)
            out[f"{name}__reference"] = np.asarray(view.reference, dtype=np.float64)
        return out

    @classmethod
    def from_arrays(
        cls,
        arrays: Mapping[str, np.ndarray],
        *,
        config: FeatureConfig,
        views: tuple[str, ...],
        threshold: float,
        n_classes: int,
    ) -> NoveltyDetector:
        """Rebuild a detector from :meth:`to_arrays`, strictly: exactly the keys the views need, each of the
        shape ``config`` and ``n_classes`` imply; ValueError says what is wrong."""
        dims = view_dims(config)
        unknown_views = [v for v in views if v not in dims]
        if unknown_views or not views or len(set(views)) != len(views):
            raise ValueError(f"views {list(views)}; this code computes {', '.join(dims)} (each once)")
        expected = {f"{v}__{a}" for v in views for a in _ARRAYS}
        if set(arrays) != expected:
            extra, missing = sorted(set(arrays) - expected), sorted(expected - set(arrays))
            raise ValueError(f"arrays missing {missing or 'none'}, unexpected {extra or 'none'}")
        built: dict[str, GaussianView] = {}
        for v in views:
            reference = np.asarray(arrays[f"{v}__reference"])
            if reference.shape != () or reference.dtype.kind != "f":
                raise ValueError(f"{v}__reference must be a float scalar")
            view = GaussianView(
                mean=np.asarray(arrays[f"{v}__mean"], dtype=np.float64),
                scale=np.asarray(arrays[f"{v}__scale"], dtype=np.float64),
                class_means=np.asarray(arrays[f"{v}__class_means"], dtype=np.float64),
                whitener=np.asarray(arrays[f"{v}__whitener"], dtype=np.float64),
                reference=float(reference),
            )
            try:
                view.check(dim=dims[v], n_classes=n_classes)
            except ValueError as exc:
                raise ValueError(f"view {v!r}: {exc}") from exc
            built[v] = view
        return cls(config=config, views=built, threshold=float(threshold))

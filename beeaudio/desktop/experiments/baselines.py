"""The two baselines the DNN is compared with, on the same windows and the same split.

* :func:`fit_gmm` — one Gaussian mixture per class over the window's MFCC statistics (the family of the
  HMM/GMM system the reference paper improved on), classifying by the largest class log-likelihood plus
  log prior.
* :func:`fit_band_logreg` — a logistic regression on a few band levels, in the spirit of the Open Source
  Beehives analyser, which compares the energy of a handful of frequency bands. The band levels are
  read from the same front end: the window's mean MFCC vector, inverted through the orthonormal DCT
  onto the mel bands (the smoothed mean log-mel spectrum, dB), averaged into :data:`N_BANDS` bands of
  the 100–1000 Hz analysis band. So the baselines see exactly the audio the DNN sees, MP3 or not.

Both use scikit-learn and return a :class:`Baseline` with ``predict_proba`` and ``params`` (the number of
fitted parameters, for the size tables).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.fft import idct
from sklearn.linear_model import LogisticRegression
from sklearn.mixture import GaussianMixture
from sklearn.preprocessing import StandardScaler

from beeaudio.core.features import FeatureConfig

#: Mixture components per class of the GMM baseline.
GMM_COMPONENTS = 4
#: Bands of the band-level baseline (equal shares of the mel bands between fmin and fmax).
N_BANDS = 6


@dataclass
class Baseline:
    name: str
    scaler: StandardScaler
    model: Any  # LogisticRegression or list[GaussianMixture]
    log_priors: np.ndarray | None
    transform: str  # "stats" (the feature vector as is) or "bands"
    config: FeatureConfig
    params: int

    def inputs(self, features: np.ndarray) -> np.ndarray:
        x = band_levels(features=features, config=self.config) if self.transform == "bands" else features
        return self.scaler.transform(np.asarray(x, dtype=np.float64))

    def predict_proba(self, features: np.ndarray) -> np.ndarray:
        x = self.inputs(features)
        if isinstance(self.model, LogisticRegression):
            return self.model.predict_proba(x)
        assert self.log_priors is not None
        loglik = np.stack([gmm.score_samples(x) for gmm in self.model], axis=1) + self.log_priors
        loglik -= loglik.max(axis=1, keepdims=True)
        probs = np.exp(loglik)
        return probs / probs.sum(axis=1, keepdims=True)


def band_levels(*, features: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Mean level (dB) of :data:`N_BANDS` bands per window, from the ``stats`` features' mean MFCCs."""
    if config.representation != "stats":
        raise ValueError(f"band levels need the 'stats' representation, got {config.representation!r}")
    x = np.asarray(features, dtype=np.float64)
    cepstrum = np.zeros((x.shape[0], config.n_mels))
    # The stats vector starts with the per-coefficient means of the MFCCs (then deltas, then stds).
    cepstrum[:, : config.n_mfcc] = x[:, : config.n_mfcc]
    log_mel = idct(cepstrum, type=2, norm="ortho", axis=1)
    bands = np.array_split(np.arange(config.n_mels), min(N_BANDS, config.n_mels))
    return np.stack([log_mel[:, band].mean(axis=1) for band in bands], axis=1)


def fit_band_logreg(
    *, features: np.ndarray, labels: np.ndarray, config: FeatureConfig, seed: int
) -> Baseline:
    """Logistic regression on the band levels (balanced class weights)."""
    x = band_levels(features=features, config=config)
    scaler = StandardScaler().fit(x)
    model = LogisticRegression(max_iter=2000, class_weight="balanced", random_state=seed)
    model.fit(scaler.transform(x), np.asarray(labels))
    params = int(model.coef_.size + model.intercept_.size)
    return Baseline(
        name="band-logreg",
        scaler=scaler,
        model=model,
        log_priors=None,
        transform="bands",
        config=config,
        params=params,
    )


def fit_gmm(
    *,
    features: np.ndarray,
    labels: np.ndarray,
    n_classes: int,
    config: FeatureConfig,
    seed: int,
    components: int = GMM_COMPONENTS,
) -> Baseline:
    """One diagonal-covariance Gaussian mixture per class over the standardised MFCC statistics."""
    x_raw = np.asarray(features, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    scaler = StandardScaler().fit(x_raw)
    x = scaler.transform(x_raw)
    models: list[GaussianMixture] = []
    counts = np.bincount(labels, minlength=n_classes)
    if np.any(counts == 0):
        raise ValueError(f"every class needs training windows for the GMM baseline, counts {counts.tolist()}")
    params = 0
    for c in range(n_classes):
        k = int(min(components, counts[c]))
        gmm = GaussianMixture(
            n_components=k, covariance_type="diag", reg_covar=1e-3, random_state=seed, max_iter=200
        )
        gmm.fit(x[labels == c])
        models.append(gmm)
        params += k * (2 * x.shape[1] + 1)
    # Equal priors: the classes are balanced by design in training, and the DNN uses class weights.
    log_priors = np.full(n_classes, -np.log(n_classes))
    return Baseline(
        name="gmm",
        scaler=scaler,
        model=models,
        log_priors=log_priors,
        transform="stats",
        config=config,
        params=params,
    )

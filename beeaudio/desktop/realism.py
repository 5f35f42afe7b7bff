"""How far SYNTHETIC windows are from real ones: a grouped real-vs-synthetic classifier and band levels.

The question is not whether a classifier can tell this generator from one particular colony (with enough
features it always can), but *how easily* and *by what*: :func:`measure` fits a small classifier that
separates synthetic windows from real recordings and reports its grouped AUC (0.5: indistinguishable, 1.0:
every synthetic window is told apart), on all window features and on three groups of them:

* ``shape`` — the mean cepstrum past the level (coefficients 1..n-1): the spectral envelope;
* ``level`` — coefficient 0 of the mean cepstrum: the loudness in the band;
* ``texture`` — the standard deviations over the window and the deltas: how the sound moves in 2 s.

With one real colony (all the project can use), that AUC saturates: any generator that draws many
colonies makes most of them unlike this one, and one feature group is enough to tell them apart. So
:func:`measure` also reports **coverage**, which asks what matters for a model trained on synthetic hives:
is the real colony *inside* the spread of synthetic hives? Every synthetic window's distance to the nearest
window of *another* synthetic hive (standardised features, leave-one-hive-out) sets the reach of the
synthetic set (its 95th percentile); a real window is covered when its distance to the nearest synthetic
window is within that reach. 1.0: the real windows look like one more synthetic hive; 0: like none.

Grouped means that no group is on both sides of a fold: a synthetic hive is a group, a real recording is
cut into blocks of ``block_seconds`` and each block is a group (a recording is one colony and one
microphone; its blocks are as close to each other as windows can be, so blocks are the finest honest unit
when the real data are a handful of files). Both sides go through the same front end: decoded, resampled
to the front end's rate (the 2205 Hz Open Source Beehives preset by default, a band both 2205 Hz and 16 kHz
recordings can feed), cut into the same windows, and cached by
:func:`beeaudio.desktop.datasets.build_windows`.

:func:`band_levels` gives each window's smoothed log-mel spectrum (the mean cepstrum transformed back,
dB per band), which :func:`plot_band_levels` draws for both sides.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.audio import AudioError, probe
from beeaudio.core.features import FeatureConfig, _dct_matrix, _filterbank
from beeaudio.desktop.datasets import AUDIO_SUFFIXES, Recording, build_windows

__all__ = [
    "FEATURE_GROUPS",
    "RealismConfig",
    "Windows",
    "band_centres",
    "band_levels",
    "feature_groups",
    "measure",
    "plot_band_levels",
    "real_windows",
    "synthetic_windows",
]

log = logging.getLogger(__name__)

FEATURE_GROUPS = ("all", "shape", "level", "texture")


@dataclass(frozen=True)
class RealismConfig:
    """How the two sides are compared.

    * ``block_seconds = 20``: a real recording longer than this is cut into blocks of it, each its own
      group (the 107 s OSBH recording gives 5 blocks; a 2 s clip is one group).
    * ``folds = 5``: grouped cross-validation folds (fewer when there are fewer groups on a side).
    * ``max_windows_per_group = 60``: synthetic hives have hundreds of windows each; a few dozen per hive
      describe it as well and keep the fit quick.
    """

    block_seconds: float = 20.0
    folds: int = 5
    max_windows_per_group: int = 60
    seed: int = 0

    def __post_init__(self) -> None:
        if not self.block_seconds > 0:
            raise ValueError(f"block_seconds must be positive, got {self.block_seconds}")
        if self.folds < 2:
            raise ValueError(f"folds must be at least 2, got {self.folds}")
        if self.max_windows_per_group < 1:
            raise ValueError("max_windows_per_group must be at least 1")


@dataclass(frozen=True)
class Windows:
    """Feature windows of one side with the group of each (a synthetic hive, a real recording's block)."""

    features: np.ndarray
    groups: np.ndarray
    sources: tuple[str, ...] = field(default=())

    def __len__(self) -> int:
        return int(self.features.shape[0])


def _thin(
    features: np.ndarray, groups: np.ndarray, *, limit: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    keep: list[np.ndarray] = []
    for group in np.unique(groups):
        where = np.flatnonzero(groups == group)
        keep.append(np.sort(rng.permutation(where)[:limit]) if where.size > limit else where)
    pick = np.concatenate(keep)
    return features[pick], groups[pick]


def real_windows(
    *,
    paths: Sequence[Path],
    config: FeatureConfig,
    realism: RealismConfig,
    cache_dir: Path | None = None,
) -> Windows:
    """Windows of real recordings (files, or folders searched for audio), each recording cut into blocks.

    Recordings whose Nyquist frequency is below the front end's band are left out (and logged): they hold
    nothing there to compare."""
    files: list[Path] = []
    for path in paths:
        path = Path(path)
        if path.is_dir():
            files.extend(sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES))
        elif path.is_file():
            files.append(path)
        else:
            raise FileNotFoundError(f"{path}: no such real recording or folder")
    recordings: list[Recording] = []
    for path in files:
        try:
            info = probe(path)
        except AudioError as exc:
            log.warning("skipping %s: %s", path, exc)
            continue
        if info.sample_rate / 2 < config.fmax:
            log.warning("skipping %s: %d Hz holds nothing up to %g Hz", path, info.sample_rate, config.fmax)
            continue
        blocks = max(1, int(info.duration_s // realism.block_seconds))
        for b in range(blocks):
            start = b * realism.block_seconds
            end = None if b == blocks - 1 else (b + 1) * realism.block_seconds
            name = f"real:{path.name}#{b}"
            recordings.append(
                Recording(path=path, label="real", hive=name, recording=name, start_s=start, end_s=end)
            )
    if not recordings:
        raise ValueError(f"no usable real recordings in {[str(p) for p in paths]}")
    windows = build_windows(recordings=recordings, config=config, cache_dir=cache_dir, progress=False)
    return Windows(
        features=windows.features.astype(np.float64),
        groups=np.asarray(windows.hives).astype(str),
        sources=tuple(str(p) for p in dict.fromkeys(r.path for r in recordings)),
    )


def synthetic_windows(
    *,
    recordings: Sequence[Recording],
    config: FeatureConfig,
    realism: RealismConfig,
    cache_dir: Path | None = None,
) -> Windows:
    """Windows of a synthetic dataset's recordings, grouped by hive and thinned per hive."""
    windows = build_windows(recordings=list(recordings), config=config, cache_dir=cache_dir, progress=False)
    features, groups = _thin(
        windows.features.astype(np.float64),
        np.asarray(windows.hives).astype(str),
        limit=realism.max_windows_per_group,
        seed=realism.seed,
    )
    return Windows(features=features, groups=np.char.add("synth:", groups))


def feature_groups(config: FeatureConfig) -> dict[str, np.ndarray]:
    """Column indices of each feature group (:data:`FEATURE_GROUPS`) in a ``stats`` window."""
    if config.representation != "stats":
        raise ValueError("the realism measure takes the 'stats' representation")
    n = config.n_mfcc
    everything = np.arange(2 * config.features_per_frame)
    return {
        "all": everything,
        "shape": np.arange(1, n),
        "level": np.arange(0, 1),
        "texture": np.setdiff1d(everything, np.arange(n)),
    }


def _folds(groups: np.ndarray, *, folds: int, seed: int) -> list[np.ndarray]:
    """Group ids of each fold: the groups of each side dealt out at random so every fold has some of both."""
    rng = np.random.default_rng(seed)
    out: list[list[str]] = [[] for _ in range(folds)]
    for prefix in ("synth:", "real:"):
        side = [g for g in np.unique(groups).tolist() if g.startswith(prefix)]
        for i, g in enumerate(rng.permutation(side).tolist()):
            out[i % folds].append(g)
    return [np.asarray(f) for f in out if f]


def _grouped_auc(
    x: np.ndarray, y: np.ndarray, groups: np.ndarray, *, folds: int, seed: int
) -> tuple[float, list[float]]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    scores = np.full(y.shape, np.nan)
    per_fold: list[float] = []
    for held in _folds(groups, folds=folds, seed=seed):
        test = np.isin(groups, held)
        train = ~test
        if len(np.unique(y[train])) < 2:
            continue
        model = make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, class_weight="balanced", max_iter=5000)
        )
        model.fit(x[train], y[train])
        scores[test] = model.predict_proba(x[test])[:, 1]
        if len(np.unique(y[test])) == 2:
            per_fold.append(float(roc_auc_score(y[test], scores[test])))
    done = np.isfinite(scores)
    return float(roc_auc_score(y[done], scores[done])), per_fold


def measure(
    *, synthetic: Windows, real: Windows, config: FeatureConfig, realism: RealismConfig
) -> dict[str, Any]:
    """Grouped AUC of a logistic regression telling real (positive) from synthetic windows, per feature
    group; and the median band levels of each side."""
    x = np.concatenate([synthetic.features, real.features])
    y = np.concatenate([np.zeros(len(synthetic)), np.ones(len(real))]).astype(np.int64)
    groups = np.concatenate([synthetic.groups, real.groups])
    real_groups = len(np.unique(real.groups))
    folds = min(realism.folds, real_groups, len(np.unique(synthetic.groups)))
    if folds < 2:
        raise ValueError(
            f"need at least two groups on each side for a grouped AUC; real has {real_groups}: pass longer "
            "or more real recordings, or a shorter block_seconds"
        )
    aucs: dict[str, Any] = {}
    for name, columns in feature_groups(config).items():
        auc, per_fold = _grouped_auc(x[:, columns], y, groups, folds=folds, seed=realism.seed)
        aucs[name] = {"auc": auc, "per_fold": per_fold}
    coverage = {name: _coverage(synthetic, real, columns) for name, columns in feature_groups(config).items()}
    synth_levels = band_levels(features=synthetic.features, config=config)
    real_levels = band_levels(features=real.features, config=config)
    return {
        "auc": {name: value["auc"] for name, value in aucs.items()},
        "auc_per_fold": {name: value["per_fold"] for name, value in aucs.items()},
        "coverage": {name: value["coverage"] for name, value in coverage.items()},
        "distance_ratio": {name: value["median_ratio"] for name, value in coverage.items()},
        "folds": folds,
        "synthetic_windows": len(synthetic),
        "synthetic_groups": len(np.unique(synthetic.groups)),
        "real_windows": len(real),
        "real_groups": real_groups,
        "real_sources": list(real.sources),
        "band_hz": band_centres(config).round(1).tolist(),
        "median_relative_db": {
            "synthetic": np.median(_relative(synth_levels), axis=0).round(2).tolist(),
            "real": np.median(_relative(real_levels), axis=0).round(2).tolist(),
        },
        "median_level_db": {
            "synthetic": float(np.median(synth_levels.mean(axis=1))),
            "real": float(np.median(real_levels.mean(axis=1))),
        },
        "peak_band_hz": {
            "synthetic": _peak_hz(synth_levels, config),
            "real": _peak_hz(real_levels, config),
        },
    }


#: Quantile of the synthetic set's leave-one-hive-out nearest-neighbour distances that sets its reach.
COVERAGE_QUANTILE = 0.95


def _nearest(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance from each row of ``a`` to its nearest row of ``b``."""
    d2 = np.sum(a * a, axis=1)[:, None] - 2.0 * a @ b.T + np.sum(b * b, axis=1)[None, :]
    return np.sqrt(np.maximum(np.min(d2, axis=1), 0.0))


def _coverage(synthetic: Windows, real: Windows, columns: np.ndarray) -> dict[str, float]:
    """Share of real windows within the synthetic set's reach (see the module docstring), and the median
    ratio of a real window's distance to that reach (< 1: inside)."""
    xs = synthetic.features[:, columns]
    mean, scale = xs.mean(axis=0), xs.std(axis=0) + 1e-9
    zs, zr = (xs - mean) / scale, (real.features[:, columns] - mean) / scale
    within = np.concatenate(
        [_nearest(zs[synthetic.groups == g], zs[synthetic.groups != g]) for g in np.unique(synthetic.groups)]
    )
    reach = float(np.quantile(within, COVERAGE_QUANTILE))
    distances = _nearest(zr, zs)
    return {
        "coverage": float(np.mean(distances <= reach)),
        "median_ratio": float(np.median(distances) / reach) if reach > 0 else float("inf"),
    }


def band_centres(config: FeatureConfig) -> np.ndarray:
    """Centre frequency (Hz) of each mel band: the frequency its triangle peaks at."""
    weights = _filterbank(config.sample_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
    freqs = np.linspace(0.0, config.sample_rate / 2, 1 + config.n_fft // 2)
    return freqs[np.argmax(weights, axis=1)]


def band_levels(*, features: np.ndarray, config: FeatureConfig) -> np.ndarray:
    """Each window's smoothed log-mel spectrum, dB per band ``(n, n_mels)``: its mean cepstrum transformed
    back (the DCT is orthonormal, so the transpose inverts the kept coefficients)."""
    cepstrum = np.asarray(features, dtype=np.float64)[:, : config.n_mfcc]
    return cepstrum @ _dct_matrix(config.n_mfcc, config.n_mels)


def _relative(levels: np.ndarray) -> np.ndarray:
    return levels - levels.mean(axis=1, keepdims=True)


def _peak_hz(levels: np.ndarray, config: FeatureConfig) -> dict[str, float]:
    """Quartiles of the frequency of each window's loudest band."""
    peaks = band_centres(config)[np.argmax(levels, axis=1)]
    q25, q50, q75 = np.percentile(peaks, [25, 50, 75])
    return {"q25": float(q25), "median": float(q50), "q75": float(q75)}


def plot_band_levels(
    *, sides: dict[str, np.ndarray], config: FeatureConfig, path: Path, title: str = ""
) -> Path:
    """Per-band level distributions of each side (median and 10-90 % range): absolute (left) and relative
    to the window's mean over the bands (right, the spectral shape)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    centres = band_centres(config)
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for name, features in sides.items():
        levels = band_levels(features=features, config=config)
        for ax, values in ((axes[0], levels), (axes[1], _relative(levels))):
            lo, mid, hi = np.percentile(values, [10, 50, 90], axis=0)
            (line,) = ax.plot(centres, mid, marker=".", label=f"{name} ({len(levels)} windows)")
            ax.fill_between(centres, lo, hi, color=line.get_color(), alpha=0.18)
    axes[0].set_ylabel("band level, dB (smoothed log-mel)")
    axes[1].set_ylabel("band level minus the window's mean, dB")
    for ax in axes:
        ax.set_xlabel("mel band centre, Hz")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

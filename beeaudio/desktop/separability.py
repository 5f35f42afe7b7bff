"""How separable the synthetic classes are, and by what: one mel band's level, or the whole pattern.

A generator whose classes a single band's level separates would teach a model a shortcut that real hives
do not offer. :func:`separability` renders a synthetic set in memory exactly as ``beeaudio synth`` writes
it, then scores a StandardScaler + MLP and a logistic regression on hive-grouped splits, the best
single-band threshold rule learnt on the training hives, and the MLP on a random window split (which
shares hives between train and test and flatters it). ``bench/separability.py`` prints it; the tests use
the helpers. Needs scikit-learn (the ``train`` extra).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from beeaudio.core.audio import resample
from beeaudio.core.features import FeatureConfig, mel_filterbank, window_features, window_start_samples
from beeaudio.desktop import synth
from beeaudio.desktop.synth import SynthConfig, hive_seed, render_recording

CONFIG = FeatureConfig()


def band_levels(audio: np.ndarray, config: FeatureConfig = CONFIG) -> np.ndarray:
    """Mean mel-band power (dB) of every analysis window: (n_windows, n_mels)."""
    fb = mel_filterbank(config=config)
    window = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(config.n_fft) / config.n_fft)
    out = []
    for s in window_start_samples(n_samples=audio.size, config=config):
        seg = audio[s : s + config.window_samples]
        frames = np.lib.stride_tricks.sliding_window_view(seg, config.n_fft)[:: config.hop_length]
        power = np.abs(np.fft.rfft(frames * window, axis=1)) ** 2
        out.append(10 * np.log10(np.maximum((power @ fb.T).mean(axis=0), 1e-12)))
    return np.array(out)


def best_band_rule(bands: np.ndarray, labels: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """The single (band, threshold, direction) rule with the best training accuracy (binary labels)."""
    best = (-1.0, 0, 0.0, 1)
    for b in range(bands.shape[1]):
        for threshold in np.quantile(bands[:, b], np.linspace(0.01, 0.99, 99)):
            for sign in (1, -1):
                accuracy = float(np.mean(((sign * (bands[:, b] - threshold)) > 0) == labels))
                if accuracy > best[0]:
                    best = (accuracy, b, float(threshold), sign)
    _, band, threshold, sign = best
    return lambda x: ((sign * (x[:, band] - threshold)) > 0).astype(int)


def synthetic_features(
    *, seed: int, hives: int, recordings: int, seconds: float, classes: tuple[str, ...] = ("normal", "swarm")
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(MFCC-stats features, mel-band levels, labels, hive index) of a synthetic set rendered in memory
    exactly as generate_dataset renders it (16 kHz, 16-bit quantised, resampled to the model rate)."""
    xs, bs, ys, hs = [], [], [], []
    for h in range(1, hives + 1):
        for li, label in enumerate(classes):
            for r in range(1, recordings + 1):
                audio = render_recording(
                    hive_seed=hive_seed(seed=seed, index=h),
                    label=label,
                    seconds=seconds,
                    sample_rate=16000,
                    seed=synth._derive(seed, "recording", h, label, r),
                )
                audio = resample(
                    np.round(audio * 32767) / 32767, orig_rate=16000, target_rate=CONFIG.sample_rate
                )
                feats = window_features(audio=audio, config=CONFIG)
                xs.append(feats)
                bs.append(band_levels(audio))
                ys += [li] * len(feats)
                hs += [h - 1] * len(feats)
    return np.concatenate(xs), np.concatenate(bs), np.array(ys), np.array(hs)


def separability(*, seed: int, splits: int = 5) -> dict[str, float]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupShuffleSplit, train_test_split
    from sklearn.neural_network import MLPClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    c = SynthConfig(seed=seed)
    started = time.perf_counter()
    x, bands, y, hives = synthetic_features(
        seed=seed, hives=c.hives, recordings=c.recordings_per_class, seconds=c.seconds, classes=c.classes
    )
    render_s = time.perf_counter() - started

    def mlp():
        return make_pipeline(
            StandardScaler(), MLPClassifier((64, 64), alpha=1e-3, max_iter=400, random_state=0)
        )

    results: dict[str, list[float]] = {"mlp": [], "logreg": [], "one_band": [], "one_band_train": []}
    for train, test in GroupShuffleSplit(n_splits=splits, test_size=0.25, random_state=0).split(x, y, hives):
        results["mlp"].append(mlp().fit(x[train], y[train]).score(x[test], y[test]))
        lr = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000)).fit(x[train], y[train])
        results["logreg"].append(lr.score(x[test], y[test]))
        rule = best_band_rule(bands[train], y[train])
        results["one_band"].append(float(np.mean(rule(bands[test]) == y[test])))
        results["one_band_train"].append(float(np.mean(rule(bands[train]) == y[train])))
    train, test = train_test_split(np.arange(y.size), test_size=0.25, random_state=0)
    random_mlp = mlp().fit(x[train], y[train]).score(x[test], y[test])
    rule = best_band_rule(bands[train], y[train])
    out = {f"grouped_{k}_mean": float(np.mean(v)) for k, v in results.items()}
    out |= {f"grouped_{k}_min": float(np.min(v)) for k, v in results.items()}
    out |= {"random_mlp": float(random_mlp), "random_one_band": float(np.mean(rule(bands[test]) == y[test]))}
    out |= {"windows": float(y.size), "render_and_features_s": render_s}
    return out

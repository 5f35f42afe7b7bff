"""The novelty detector's arithmetic on the device side (numpy only): distances equal textbook Mahalanobis,
the views see what they should, the arrays round-trip strictly, and scores always fit an event."""

from __future__ import annotations

import numpy as np
import pytest

from beeaudio.core import audio, novelty
from beeaudio.core.features import FeatureConfig, window_features
from beeaudio.core.novelty import GaussianView, NoveltyDetector, view_inputs, window_summary
from beeaudio.core.wire import MAX_NOVELTY
from tests.fixtures.novelty import small_detector
from tests.fixtures.signals import render
from tests.fixtures.tflite_models import feature_windows, synthetic_sound

CONFIG = FeatureConfig()


def random_view(*, d: int, k: int, seed: int) -> tuple[GaussianView, np.ndarray]:
    """A view with a random SPD precision matrix, and that matrix."""
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((d, d))
    precision = a @ a.T + d * np.eye(d)
    view = GaussianView(
        mean=rng.standard_normal(d),
        scale=rng.uniform(0.5, 2.0, d),
        class_means=rng.standard_normal((k, d)),
        whitener=np.linalg.cholesky(precision),
        reference=1.0,
    )
    return view, precision


def test_view_distance_is_the_smallest_mahalanobis_distance_over_classes() -> None:
    from scipy.spatial.distance import mahalanobis

    view, precision = random_view(d=6, k=3, seed=1)
    x = np.random.default_rng(2).standard_normal((20, 6)) * 3
    z = (x - view.mean) / view.scale
    expected = [min(mahalanobis(row, mu, precision) for mu in view.class_means) for row in z]
    np.testing.assert_allclose(view.distance(x), expected, rtol=1e-10)


def test_frames_are_summarised_as_the_stats_features() -> None:
    signal = synthetic_sound(seconds=6.0, seed=5)
    stats = window_features(audio=signal, config=CONFIG)
    frames_config = FeatureConfig(representation="frames")
    frames = window_features(audio=signal, config=frames_config)
    np.testing.assert_allclose(window_summary(features=frames, config=frames_config), stats, atol=1e-3)
    np.testing.assert_array_equal(window_summary(features=stats, config=CONFIG), stats)
    with pytest.raises(ValueError, match="shape"):
        window_summary(features=frames, config=CONFIG)


def _shape_of(signal: np.ndarray, rate: int = 16000) -> np.ndarray:
    resampled = audio.resample(signal, orig_rate=rate, target_rate=8000)
    return view_inputs(features=window_features(audio=resampled, config=CONFIG), config=CONFIG)["shape"]


def test_the_shape_view_tells_a_harmonic_hum_from_flat_noise_and_from_a_tone() -> None:
    """Flat spectra have nearly no cepstral energy past the tilt, a tone has one peak high over nothing,
    a hum's harmonics are in between on both."""
    hum = _shape_of(synthetic_sound(seconds=4.0, seed=1, sample_rate=16000))
    noise = _shape_of(render(kind="white_noise", seconds=4.0, level_dbfs=-30, seed=1).audio)
    t = np.arange(4 * 16000) / 16000
    tone = _shape_of(
        0.1 * np.sin(2 * np.pi * 440 * t) + 1e-4 * np.random.default_rng(0).standard_normal(t.size)
    )
    assert hum.shape == (len(hum), 2)
    assert noise[:, 0].max() + 2.0 < hum[:, 0].min()  # e-fold differences in ripple energy, not a hair
    assert noise[:, 1].max() < 3.0 < hum[:, 1].min()  # dB of the highest band over the median one
    assert tone[:, 1].min() > 40.0 > hum[:, 1].max()


def test_scores_flag_noise_and_not_the_training_kind_of_sound() -> None:
    detector = small_detector()
    familiar = window_features(audio=synthetic_sound(seconds=8.0, seed=99), config=CONFIG)
    assert detector.unfamiliar(detector.score(familiar)).mean() <= 0.2
    for kind in ("white_noise", "speech_like", "tones"):
        clip = render(kind=kind, seconds=6.0, level_dbfs=-25, seed=3)
        windows = window_features(
            audio=audio.resample(clip.audio, orig_rate=16000, target_rate=8000), config=CONFIG
        )
        assert detector.unfamiliar(detector.score(windows)).all(), kind


def test_scores_are_finite_and_capped_even_for_digital_silence() -> None:
    detector = small_detector()
    silent = window_features(audio=np.zeros(CONFIG.window_samples), config=CONFIG)
    score = detector.score(silent)
    assert score.shape == (1,) and np.isfinite(score).all() and 0 < score[0] <= MAX_NOVELTY
    assert detector.unfamiliar(score).all()
    assert detector.score(silent[0]).shape == (1,)  # one window without the batch axis


def test_arrays_round_trip_and_give_the_same_scores() -> None:
    detector = small_detector()
    arrays = detector.to_arrays()
    assert {a.dtype for k, a in arrays.items() if not k.endswith("reference")} == {np.dtype(np.float32)}
    again = NoveltyDetector.from_arrays(
        arrays, config=CONFIG, views=tuple(detector.views), threshold=detector.threshold, n_classes=2
    )
    windows = feature_windows(config=CONFIG)
    np.testing.assert_allclose(again.score(windows), detector.score(windows), rtol=1e-5)


def _broken(arrays: dict[str, np.ndarray], key: str, value: np.ndarray | None) -> dict[str, np.ndarray]:
    out = dict(arrays)
    if value is None:
        del out[key]
    else:
        out[key] = value
    return out


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("features__mean", None, "missing"),
        ("features__extra", np.zeros(3), "unexpected"),
        ("features__mean", np.zeros(51, np.float32), "shape"),
        ("features__whitener", np.zeros((52, 51), np.float32), "shape"),
        ("features__class_means", np.zeros((3, 52), np.float32), "shape"),
        ("features__scale", np.zeros(52, np.float32), "positive"),
        ("shape__mean", np.array([np.nan, 0.0], np.float32), "non-finite"),
        ("shape__reference", np.array(-1.0), "reference"),
        ("shape__reference", np.array([1.0, 2.0]), "scalar"),
    ],
)
def test_from_arrays_is_strict(key: str, value: np.ndarray | None, message: str) -> None:
    detector = small_detector()
    arrays = _broken(detector.to_arrays(), key, value)
    with pytest.raises(ValueError, match=message):
        NoveltyDetector.from_arrays(
            arrays, config=CONFIG, views=tuple(detector.views), threshold=1.0, n_classes=2
        )


@pytest.mark.parametrize(
    "views, threshold, message",
    [(("features", "pitch"), 1.0, "computes"), ((), 1.0, "computes"), (("features",), -1.0, "threshold")],
)
def test_unknown_views_and_bad_thresholds_are_refused(views, threshold, message) -> None:
    arrays = small_detector().to_arrays()
    arrays = {k: v for k, v in arrays.items() if k.split("__")[0] in views} or arrays
    with pytest.raises(ValueError, match=message):
        NoveltyDetector.from_arrays(arrays, config=CONFIG, views=views, threshold=threshold, n_classes=2)


def test_module_constants() -> None:
    assert novelty.VIEWS == ("features", "shape") and novelty.MEMBER == "novelty.npz"
    assert novelty.view_dims(CONFIG) == {"features": 52, "shape": 2}
    assert novelty.view_dims(FeatureConfig(n_mfcc=2, deltas=0)) == {"features": 4}

"""The numpy resampler a device uses where soxr is not installed (32-bit ARM: PyPI has no armv7l wheel of
soxr), held to soxr on this machine.

What it must keep: the number of samples (windows fall where they fall with soxr), the timing (no delay),
the band the model listens to (features within the 1e-4 the front end is held to against librosa), no
aliasing into that band, and streaming (``iter_windows``) giving exactly the samples of one call (``load``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import soxr

from beeaudio.core import audio
from beeaudio.core.audio import SincResampler, iter_windows, load, sinc_resample
from beeaudio.core.features import FeatureConfig, window_features
from tests.fixtures.audio import hive_like
from tests.fixtures.tflite_models import synthetic_sound

CONFIG = FeatureConfig()  # 8 kHz, band 100-1000 Hz
#: The front end's tolerance against librosa on the cepstra (tests/core/test_features.py).
FEATURE_ATOL = 1e-4
RATES = [(16000, 8000), (44100, 8000), (48000, 8000), (22050, 8000), (11025, 8000), (8000, 16000)]


@pytest.mark.parametrize(("orig", "target"), [*RATES, (44100, 16000), (8001, 8000)])
@pytest.mark.parametrize("n", [1, 7, 1000, 1001, 12345])
def test_the_number_of_samples_is_soxrs(orig: int, target: int, n: int) -> None:
    x = np.zeros(n, dtype=np.float32)
    assert sinc_resample(x, orig_rate=orig, target_rate=target).shape == soxr.resample(x, orig, target).shape


@pytest.mark.parametrize(("orig", "target"), RATES)
def test_tones_in_the_band_come_out_as_with_soxr(orig: int, target: int) -> None:
    """Same amplitude and same timing (both are zero-delay, linear phase): equal to float32 rounding."""
    t = np.arange(3 * orig) / orig
    x = (0.3 * np.sin(2 * np.pi * 230 * t) + 0.2 * np.sin(2 * np.pi * 950 * t + 1)).astype(np.float32)
    ours, theirs = sinc_resample(x, orig_rate=orig, target_rate=target), soxr.resample(x, orig, target)
    inner = slice(target // 10, -target // 10)  # the edges: both pad with zeros, through other filters
    np.testing.assert_allclose(ours[inner], theirs[inner], atol=5e-6)


@pytest.mark.parametrize(("orig", "alias_of"), [(16000, 7500.0), (44100, 8500.0), (48000, 15700.0)])
def test_nothing_folds_into_the_band(orig: int, alias_of: float) -> None:
    """A tone above 4 kHz that decimation would fold to ~300-500 Hz, inside the band, is 100 dB down."""
    t = np.arange(2 * orig) / orig
    out = sinc_resample(np.sin(2 * np.pi * alias_of * t).astype(np.float32), orig_rate=orig, target_rate=8000)
    inner = out[800:-800]
    assert np.sqrt(np.mean(inner.astype(np.float64) ** 2)) < 1e-5 * np.sqrt(0.5)


@pytest.mark.parametrize(("orig", "target"), RATES)
def test_streaming_gives_exactly_the_one_call_samples(orig: int, target: int) -> None:
    x = hive_like(orig, 5.0, seed=orig)
    whole = sinc_resample(x, orig_rate=orig, target_rate=target)
    rng = np.random.default_rng(target)
    for _ in range(3):
        stream = SincResampler(orig_rate=orig, target_rate=target)
        cuts = np.sort(rng.choice(np.arange(1, x.size), size=12, replace=False))
        pieces = np.split(x, cuts)
        got = [stream.resample_chunk(p, last=i == len(pieces) - 1) for i, p in enumerate(pieces)]
        assert np.array_equal(np.concatenate(got), whole)


@pytest.mark.parametrize("orig", [16000, 44100, 48000, 22050, 11025])
def test_features_stay_within_the_front_end_tolerance(orig: int) -> None:
    for seed in range(3):
        x = synthetic_sound(seconds=6.0, seed=seed, sample_rate=orig)
        ours = window_features(audio=sinc_resample(x, orig_rate=orig, target_rate=8000), config=CONFIG)
        theirs = window_features(audio=np.asarray(soxr.resample(x, orig, 8000), np.float32), config=CONFIG)
        np.testing.assert_allclose(ours, theirs, atol=FEATURE_ATOL)


def test_a_device_without_soxr_decodes_streams_and_matches_soxr(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As on a 32-bit Pi without soxr: ``load`` and ``iter_windows`` resample with SincResampler, the
    streamed windows are exactly the loaded ones, and their features are soxr's to 1e-4."""
    path = tmp_path / "hive.wav"
    sf.write(path, hive_like(16000, 20.0, seed=3), 16000, subtype="PCM_16")
    with_soxr = load(path, sample_rate=CONFIG.sample_rate)
    monkeypatch.setattr(audio, "soxr", None)
    whole = load(path, sample_rate=CONFIG.sample_rate)
    assert whole.shape == with_soxr.shape
    windows = list(iter_windows(path, config=CONFIG, block_seconds=3.3))
    assert len(windows) == 19
    for start, samples in windows:
        first = round(start * CONFIG.sample_rate)
        assert np.array_equal(samples, whole[first : first + CONFIG.window_samples])
    np.testing.assert_allclose(
        window_features(audio=whole, config=CONFIG),
        window_features(audio=with_soxr, config=CONFIG),
        atol=FEATURE_ATOL,
    )


def test_a_resampler_takes_no_chunk_after_its_last() -> None:
    stream = SincResampler(orig_rate=16000, target_rate=8000)
    stream.resample_chunk(np.zeros(100, np.float32), last=True)
    with pytest.raises(ValueError, match="last chunk"):
        stream.resample_chunk(np.zeros(100, np.float32))


def test_this_process_says_which_resampler_it_uses() -> None:
    assert audio.RESAMPLER == "soxr"  # soxr is installed here; the armhf userland runs the other one

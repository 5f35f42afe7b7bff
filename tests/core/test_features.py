"""The numpy MFCC front end, held to librosa on synthetic and real hive audio.

Tolerance (stated once, used everywhere): ``max |ours - librosa| < 1e-3`` in cepstral dB units, for
coefficients of magnitude up to ~600 (a relative error of a few 1e-6). librosa works in float32 and we in
float64; the differences measured are float32 rounding, at most ~1.2e-4.
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core import audio, features
from beeaudio.core.features import (
    DELTA_WIDTH,
    FeatureConfig,
    FeatureWorkspace,
    delta,
    features_of_windows,
    level_dbfs,
    mel_filterbank,
    mfcc,
    window_features,
    window_start_samples,
    window_starts,
)
from tests.conftest import require

try:  # the reference implementation; part of the "train" extra, absent on a device
    import librosa
except ImportError:  # pragma: no cover - depends on the environment
    librosa = None


@pytest.fixture
def needs_librosa() -> None:
    require(librosa is not None, "librosa (the reference MFCC) is not installed")


MFCC_ATOL = 1e-3
SR = 8000

CONFIGS = {
    "default": FeatureConfig(),
    "wideband16k": FeatureConfig(
        sample_rate=16000, n_fft=1024, hop_length=320, n_mels=40, fmin=0.0, fmax=8000.0, n_mfcc=20
    ),
    "odd_sizes": FeatureConfig(
        n_fft=400, hop_length=160, n_mels=16, fmin=50.0, fmax=2500.0, n_mfcc=10, deltas=2
    ),
}


def librosa_mfcc(y: np.ndarray, c: FeatureConfig) -> np.ndarray:
    """The reference: librosa's MFCC with our conventions, as (frames, n_mfcc)."""
    mel = librosa.feature.melspectrogram(
        y=y,
        sr=c.sample_rate,
        n_fft=c.n_fft,
        hop_length=c.hop_length,
        n_mels=c.n_mels,
        fmin=c.fmin,
        fmax=c.fmax,
        center=False,
    )
    return librosa.feature.mfcc(S=librosa.power_to_db(mel, top_db=None), n_mfcc=c.n_mfcc).T


def assert_close_to_librosa(ours: np.ndarray, ref: np.ndarray) -> None:
    assert ours.shape == ref.shape
    scale = float(np.max(np.abs(ref)))
    err = float(np.max(np.abs(ours.astype(np.float64) - ref)))
    assert err < MFCC_ATOL, f"max abs diff {err:.3g} for coefficients up to {scale:.3g}"


def synthetic_signals(sr: int, seconds: float = 3.0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    t = np.arange(int(sr * seconds)) / sr
    hum = sum(0.2 / k * np.sin(2 * np.pi * 240 * k * t + k) for k in range(1, 5))
    am = (1 + 0.5 * np.sin(2 * np.pi * 3 * t)) * np.sin(2 * np.pi * 450 * t)  # piping-like pulsed tone
    chirp = 0.4 * np.sin(2 * np.pi * (100 * t + 150 * t**2))
    clicks = np.zeros_like(t)
    clicks[:: sr // 7] = 0.9
    out = {
        "hum+noise": hum + 0.05 * rng.standard_normal(t.size),
        "pulsed_tone": 0.3 * am,
        "chirp": chirp,
        "clicks": clicks,
        "very_quiet_noise": 1e-5 * rng.standard_normal(t.size),
        "silence_then_noise": np.concatenate(
            [np.zeros(t.size // 2), 0.1 * rng.standard_normal(t.size - t.size // 2)]
        ),
    }
    return {name: sig.astype(np.float32) for name, sig in out.items()}


# -- filterbank, DCT and MFCC against librosa --
@pytest.mark.parametrize("name", CONFIGS)
def test_filterbank_equals_librosa(needs_librosa: None, name: str) -> None:
    c = CONFIGS[name]
    ref = librosa.filters.mel(sr=c.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels, fmin=c.fmin, fmax=c.fmax)
    ours = mel_filterbank(config=c)
    np.testing.assert_allclose(ours, ref, rtol=1e-5, atol=1e-7)
    assert not ours.flags.writeable, "the cached filterbank must not be mutable by callers"


@pytest.mark.parametrize("name", CONFIGS)
def test_mfcc_matches_librosa_on_synthetic_signals(needs_librosa: None, name: str) -> None:
    c = CONFIGS[name]
    for signal_name, y in synthetic_signals(c.sample_rate).items():
        ours = mfcc(audio=y, config=c)
        assert ours.dtype == np.float32, signal_name
        assert ours.shape == (1 + (y.size - c.n_fft) // c.hop_length, c.n_mfcc)
        assert_close_to_librosa(ours, librosa_mfcc(y, c))


def test_mfcc_matches_librosa_on_real_osbh_recordings(needs_librosa: None, real_data_dir: Path) -> None:
    c = FeatureConfig()
    files = sorted((real_data_dir / "osbh").glob("*.wav"))
    assert len(files) >= 4
    for path in files:
        y = audio.load(path, sample_rate=c.sample_rate, max_band_hz=c.fmax)
        assert_close_to_librosa(mfcc(audio=y, config=c), librosa_mfcc(y, c))


def test_mfcc_matches_librosa_on_real_mp3(needs_librosa: None, real_data_dir: Path) -> None:
    c = CONFIGS["wideband16k"]
    y = audio.load(real_data_dir / "buzzdetect" / "testbuzz.mp3", sample_rate=c.sample_rate)
    assert_close_to_librosa(mfcc(audio=y, config=c), librosa_mfcc(y, c))


@pytest.mark.parametrize("order", [1, 2])
def test_delta_matches_librosa_interp(needs_librosa: None, order: int) -> None:
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.standard_normal((61, 13)), axis=0)  # (frames, coefficients)
    ref = librosa.feature.delta(x.T, width=DELTA_WIDTH, order=order, mode="interp").T
    np.testing.assert_allclose(delta(features=x, order=order), ref, rtol=1e-9, atol=1e-9)
    # The exact minimum number of frames works too (edges only, no interior).
    short = x[:DELTA_WIDTH]
    ref_short = librosa.feature.delta(short.T, width=DELTA_WIDTH, order=order, mode="interp").T
    np.testing.assert_allclose(delta(features=short, order=order), ref_short, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="at least 9 frames"):
        delta(features=x[:8], order=order)
    batch = np.stack([x, -2 * x, x**2])  # (windows, frames, coefficients), as window_features uses it
    ref_batch = librosa.feature.delta(batch, width=DELTA_WIDTH, order=order, mode="interp", axis=1)
    np.testing.assert_allclose(delta(features=batch, order=order, axis=1), ref_batch, rtol=1e-9, atol=1e-8)


@pytest.mark.parametrize("name", CONFIGS)
def test_window_features_are_librosa_stats_per_window(needs_librosa: None, name: str) -> None:
    c = CONFIGS[name]
    y = synthetic_signals(c.sample_rate, seconds=5.3)["hum+noise"]
    feats = window_features(audio=y, config=c)
    starts = window_starts(n_samples=y.size, config=c)
    assert feats.shape == (len(starts), 2 * c.n_mfcc * (1 + c.deltas)) == (len(starts), *c.feature_shape)
    assert feats.dtype == np.float32
    for i, start in enumerate(starts):
        first = round(start * c.sample_rate)
        ref = librosa_mfcc(y[first : first + c.window_samples], c)  # (frames, n_mfcc)
        parts = [ref] + [
            librosa.feature.delta(ref.T, width=9, order=k, mode="interp").T for k in range(1, c.deltas + 1)
        ]
        stacked = np.concatenate(parts, axis=1)
        expected = np.concatenate([stacked.mean(axis=0), stacked.std(axis=0)])
        assert_close_to_librosa(feats[i], expected)


# -- the batched front end ---------------------------------------------------------------------------------
def textbook_window_features(y: np.ndarray, c: FeatureConfig) -> np.ndarray:
    """Window by window, frame by frame, as written down: Hann in time, the whole power spectrum, the
    mel matrix, the DCT, ``delta`` and the statistics, all in float64."""
    rows = []
    for start in window_start_samples(n_samples=y.size, config=c):
        window = np.asarray(y[start : start + c.window_samples], dtype=np.float64)
        frames = np.stack(
            [window[i : i + c.n_fft] for i in range(0, c.window_samples - c.n_fft + 1, c.hop_length)]
        )
        power = np.abs(np.fft.rfft(frames * features._periodic_hann(c.n_fft), axis=-1)) ** 2
        db = 10.0 * np.log10(np.maximum(power @ mel_filterbank(config=c).T, 1e-10))
        ceps = db @ features._dct_matrix(c.n_mfcc, c.n_mels).T
        stacked = np.concatenate([ceps] + [delta(features=ceps, order=k) for k in range(1, c.deltas + 1)], 1)
        if c.representation == "stats":
            rows.append(np.concatenate([stacked.mean(axis=0), stacked.std(axis=0)]))
        else:
            rows.append(stacked)
    return np.asarray(rows)


@pytest.mark.parametrize("name", [*CONFIGS, "frames"])
def test_the_batched_front_end_computes_the_textbook_features(name: str) -> None:
    """One FFT call for all frames, the Hann window applied to the band's bins as its 3-tap spectrum, the
    deltas as a matrix product: the textbook features to float32 rounding."""
    c = CONFIGS.get(name) or FeatureConfig(representation="frames")
    y = synthetic_signals(c.sample_rate, seconds=6.1)["hum+noise"]
    expected = textbook_window_features(y, c)
    np.testing.assert_allclose(window_features(audio=y, config=c), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", CONFIGS)
def test_separate_windows_and_a_reused_workspace_give_the_same_features(name: str) -> None:
    c = CONFIGS[name]
    y = synthetic_signals(c.sample_rate, seconds=9.4)["chirp"]
    expected = window_features(audio=y, config=c)
    starts = window_start_samples(n_samples=y.size, config=c)
    windows = np.stack([y[s : s + c.window_samples] for s in starts])
    workspace = FeatureWorkspace()
    for count in (len(windows), 1, 3, len(windows)):  # the workspace's arrays grow, shrink back, regrow
        got = features_of_windows(windows=windows[:count], config=c, workspace=workspace)
        np.testing.assert_allclose(got, expected[:count], rtol=1e-6, atol=1e-6)
    one_by_one = [window_features(audio=w, config=c, workspace=workspace)[0] for w in windows]
    np.testing.assert_allclose(np.asarray(one_by_one), expected, rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="windows must be"):
        features_of_windows(windows=windows[:, 1:], config=c)


def test_long_windows_compute_deltas_without_a_frames_squared_matrix() -> None:
    """A bundle may declare a 60 s window of short frames (~16 000 frames): its deltas must not build the
    dense frames x frames matrix the short windows use (2 GB), and they are the same features."""
    import tracemalloc

    c = FeatureConfig(n_fft=128, hop_length=64, n_mels=13, window_seconds=60.0, hop_seconds=60.0)
    assert c.frames_per_window > features.DELTA_MATRIX_MAX_FRAMES
    y = synthetic_signals(c.sample_rate, seconds=60.0)["hum+noise"]
    tracemalloc.start()
    try:
        got = window_features(audio=y, config=c)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 200 * 2**20, f"{peak / 2**20:.0f} MB for one 60 s window"
    np.testing.assert_allclose(got, textbook_window_features(y, c), rtol=1e-6, atol=1e-6)


def test_a_band_at_the_spectrums_edge_is_windowed_in_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """Bin 0 has no lower neighbour for the windowing in the spectrum: a band that reaches it (no mel
    filter of a valid configuration does, but rounding might) is windowed in time, to the same features."""
    c = FeatureConfig()
    y = synthetic_signals(SR, seconds=4.0)["hum+noise"]
    expected = window_features(audio=y, config=c)
    plan = features._plan(c)
    lo = plan.band.start
    widened = dataclasses.replace(
        plan,
        band=slice(0, plan.band.stop),
        mel_pairs=np.concatenate([np.zeros((2 * lo, c.n_mels)), plan.mel_pairs]),
    )
    monkeypatch.setattr(features, "_plan", lambda config: widened)
    np.testing.assert_allclose(window_features(audio=y, config=c), expected, rtol=1e-9, atol=1e-9)


def test_frames_representation_is_the_mfcc_delta_matrix() -> None:
    c = FeatureConfig(representation="frames")
    y = synthetic_signals(SR, seconds=4.0)["pulsed_tone"]
    feats = window_features(audio=y, config=c)
    assert feats.shape == (3, c.frames_per_window, c.features_per_frame) == (3, 61, 26)
    assert c.feature_shape == (61, 26)
    window = y[c.hop_samples : c.hop_samples + c.window_samples]
    ceps = mfcc(audio=window, config=c)
    np.testing.assert_allclose(feats[1][:, :13], ceps, atol=1e-4)
    np.testing.assert_allclose(feats[1][:, 13:], delta(features=ceps.astype(np.float64)), atol=1e-3)


def test_windows_start_every_hop_and_use_only_their_own_samples() -> None:
    c = FeatureConfig()
    y = synthetic_signals(SR, seconds=6.5)["chirp"]
    starts = window_starts(n_samples=y.size, config=c)
    np.testing.assert_allclose(starts, [0, 1, 2, 3, 4])  # a 6.5 s signal: windows at 0..4 s, tail dropped
    feats = window_features(audio=y, config=c)
    # Scrambling everything outside window 2 ([2 s, 4 s)) leaves window 2 untouched.
    noisy = np.random.default_rng(1).standard_normal(y.size).astype(np.float32)
    noisy[2 * SR : 4 * SR] = y[2 * SR : 4 * SR]
    other = window_features(audio=noisy, config=c)
    np.testing.assert_array_equal(other[2], feats[2])
    assert not np.allclose(other[1], feats[1])


def test_short_and_empty_inputs_give_no_frames_or_windows() -> None:
    c = FeatureConfig()
    assert mfcc(audio=np.zeros(c.n_fft - 1, np.float32), config=c).shape == (0, c.n_mfcc)
    assert mfcc(audio=np.zeros(c.n_fft, np.float32), config=c).shape == (1, c.n_mfcc)
    assert window_features(audio=np.zeros(c.window_samples - 1, np.float32), config=c).shape == (0, 52)
    assert window_starts(n_samples=0, config=c).shape == (0,)
    with pytest.raises(ValueError, match="mono"):
        mfcc(audio=np.zeros((100, 2)), config=c)


def test_silence_is_finite_at_the_power_floor() -> None:
    c = FeatureConfig()
    feats = window_features(audio=np.zeros(3 * SR, np.float32), config=c)
    assert np.isfinite(feats).all()
    # log10(1e-10) = -100 dB in every band: c0 = -100 * sqrt(n_mels), the rest 0.
    np.testing.assert_allclose(feats[0][0], -100 * math.sqrt(c.n_mels), rtol=1e-6)


# -- the config --
def test_default_config_sizes_and_band_suit_hive_recorders() -> None:
    c = FeatureConfig()
    assert (c.window_samples, c.hop_samples, c.frames_per_window, c.features_per_frame) == (
        16000,
        8000,
        61,
        26,
    )
    assert c.feature_shape == (52,)
    assert c.sample_rate / c.n_fft == pytest.approx(15.625)  # ~15.6 Hz bins
    assert c.fmax <= 2205 / 2, "the 2205 Hz Open Source Beehives recorders must stay usable"
    for term in ("200–300 Hz", "300–600 Hz", "400–500 Hz", "mains hum", "MP3", "2205 Hz", "15.6 Hz"):
        assert term in (FeatureConfig.__doc__ or ""), term


def test_config_round_trips_through_json_and_fingerprint_tracks_every_field() -> None:
    c = FeatureConfig(n_mfcc=20, representation="frames", deltas=2)
    again = FeatureConfig.from_dict(json.loads(json.dumps(c.to_dict())))
    assert again == c and again.fingerprint() == c.fingerprint()
    assert len(c.fingerprint()) == 16
    assert FeatureConfig.from_dict({}) == FeatureConfig()
    assert FeatureConfig.from_dict({"fmin": 100}).fmin == 100.0  # JSON ints for float fields are fine
    fingerprints = {FeatureConfig().fingerprint()}
    for change in ({"n_mfcc": 12}, {"fmin": 120.0}, {"hop_seconds": 0.5}, {"deltas": 0}, {"n_mels": 20}):
        fingerprints.add(FeatureConfig(**change).fingerprint())
    assert len(fingerprints) == 6


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"n_mfcc": 13, "window": 2}, "unknown FeatureConfig keys"),
        ({"version": 2}, "unknown FeatureConfig version"),
        ({"version": "1"}, "version"),
    ],
)
def test_from_dict_refuses_what_it_cannot_reproduce(data: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureConfig.from_dict(data)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fmax": 4500.0}, "Nyquist"),
        ({"sample_rate": 1800}, "Nyquist"),
        ({"fmin": 1000.0}, "fmin < fmax"),
        ({"window_seconds": 0.05}, "shorter than one FFT frame"),
        ({"window_seconds": 0.2}, "deltas need at least 9 frames"),
        ({"n_mfcc": 30}, "n_mfcc 30 > n_mels 24"),
        ({"representation": "mean"}, "representation"),
        ({"deltas": 3}, "deltas"),
        ({"n_mels": 128}, "empty"),
        ({"hop_length": 1024}, "skip samples"),
        ({"n_fft": 512.0}, "integer"),
        ({"deltas": True}, "integer"),
        ({"fmin": float("nan")}, "finite"),
        ({"hop_seconds": 0.0}, "positive"),
        # Bounds of what a device can serve (issue 14, item 5; the limits are in beeaudio.core.wire).
        ({"window_seconds": 1e6}, r"window_seconds 1e\+06 s is longer than the 60 s"),
        ({"hop_seconds": 1e-9}, r"hop_seconds 1e-09 s is shorter than 0.1 s"),
        ({"hop_seconds": 3600.0}, "hop_seconds 3600 s is longer than the 60 s"),
        (
            {"sample_rate": 192000, "n_fft": 2048, "hop_length": 1024, "fmin": 0.0, "fmax": 96000.0},
            r"sample_rate 192000 is outside 1000\.\.48000",
        ),
        ({"n_fft": 16384, "window_seconds": 4.0}, r"n_fft 16384 is outside 1\.\.2048"),
        (
            {
                "sample_rate": 16000,
                "n_fft": 2048,
                "hop_length": 512,
                "n_mels": 160,
                "fmin": 0.0,
                "fmax": 8000.0,
            },
            r"n_mels 160 is outside 1\.\.128",
        ),
        (
            {"sample_rate": 16000, "n_fft": 1024, "hop_length": 64, "n_mels": 40, "fmin": 0.0, "fmax": 8000.0}
            | {"window_seconds": 60.0},
            "14985 FFT frames of 1024 samples",
        ),
    ],
)
def test_invalid_configs_are_refused_with_a_clear_reason(kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        FeatureConfig(**kwargs)


def test_the_presets_and_the_longest_window_are_within_the_bounds() -> None:
    from beeaudio.desktop.feature_presets import PRESETS, preset

    for name in PRESETS:
        for representation in ("stats", "frames"):
            base = preset(name=name, representation=representation)
            # A whole minute (the device's recorder files) hopped at the shortest hop is still served.
            FeatureConfig.from_dict({**base.to_dict(), "window_seconds": 60.0, "hop_seconds": 0.1})


def test_short_windows_work_without_deltas() -> None:
    c = FeatureConfig(window_seconds=0.2, hop_seconds=0.1, deltas=0)
    feats = window_features(audio=synthetic_signals(SR, 1.0)["chirp"], config=c)
    assert feats.shape == (9, 26)


# -- level --
def test_level_dbfs() -> None:
    t = np.arange(SR) / SR
    assert level_dbfs(audio=np.sin(2 * np.pi * 100 * t)) == pytest.approx(-3.0103, abs=1e-3)
    assert level_dbfs(audio=0.1 * np.ones(100)) == pytest.approx(-20.0)
    assert level_dbfs(audio=np.zeros(100)) == -120.0
    assert level_dbfs(audio=np.zeros(0)) == -120.0
    assert level_dbfs(audio=1e-9 * np.ones(10)) == -120.0


def test_features_module_imports_only_numpy() -> None:
    code = (
        "import sys, beeaudio.core.features\n"
        "heavy = ('librosa', 'scipy', 'tensorflow', 'pydub', 'soxr', 'soundfile')\n"
        "bad = [m for m in heavy if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "", f"beeaudio.core.features imported {out}"

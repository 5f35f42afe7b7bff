"""The signal checks before the model: silence, near-silence, dropouts, clipping and DC offset are each
flagged, through the real decoder and resampler where that changes the samples; clean hive audio is not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from beeaudio.core import audio, wire
from beeaudio.core.features import FeatureConfig
from beeaudio.core.quality import QualityConfig, SignalQuality, check_window
from tests.fixtures.audio import hive_like

CONFIG = FeatureConfig()
RATE = CONFIG.sample_rate


def verdicts(path: Path) -> list[str]:
    """The verdict of every window of a file, decoded and resampled as the device does."""
    return [
        check_window(samples=w, sample_rate=RATE).verdict for _, w in audio.iter_windows(path, config=CONFIG)
    ]


def at_level(signal: np.ndarray, dbfs: float) -> np.ndarray:
    signal = np.asarray(signal, dtype=np.float64)
    return (signal * 10 ** (dbfs / 20) / np.sqrt(np.mean(signal**2))).astype(np.float32)


def window(signal: np.ndarray) -> SignalQuality:
    return check_window(samples=signal[: CONFIG.window_samples], sample_rate=RATE)


# -- no signal ---------------------------------------------------------------------------------------------
def test_digital_silence_is_no_signal_through_the_decoder(tmp_path: Path) -> None:
    path = audio.write_wav(tmp_path / "silent.wav", audio=np.zeros(16000 * 6, np.float32), sample_rate=16000)
    assert set(verdicts(path)) == {wire.QUALITY_NO_SIGNAL}
    result = window(np.zeros(CONFIG.window_samples, np.float32))
    assert result.level_dbfs == -120.0 and result.peak == 0.0


def test_near_silence_below_the_floor_is_no_signal(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    # A dead input's converter noise: +-1 step of 16 bits (about -95 dBFS), and a preamplifier's hiss.
    dither = rng.integers(-1, 2, size=16000 * 4) / 32768
    path = audio.write_wav(tmp_path / "dither.wav", audio=dither.astype(np.float32), sample_rate=16000)
    assert set(verdicts(path)) == {wire.QUALITY_NO_SIGNAL}
    hiss = at_level(rng.standard_normal(CONFIG.window_samples), -78.0)
    assert window(hiss).verdict == wire.QUALITY_NO_SIGNAL
    # A constant value has no sound in it either, wherever it sits: no signal comes before a DC offset.
    assert window(np.full(CONFIG.window_samples, 0.5, np.float32)).verdict == wire.QUALITY_NO_SIGNAL


def test_a_quiet_colony_above_the_floor_is_ok() -> None:
    quiet = at_level(hive_like(RATE, 2.0), -55.0)
    result = window(quiet)
    assert result.verdict == wire.QUALITY_OK
    assert result.level_dbfs == pytest.approx(-55.0, abs=0.1)


# -- dropouts ----------------------------------------------------------------------------------------------
def test_resampling_leaves_no_exact_zeros_in_a_dropout() -> None:
    """Why the check counts near-zeros: soxr turns a run of exact zeros into tiny residues."""
    from beeaudio.core.quality import _zero_runs

    signal = hive_like(16000, 3.0)
    signal[16000 : 16000 + 800] = 0.0  # 50 ms
    resampled = audio.resample(signal, orig_rate=16000, target_rate=RATE)
    middle = resampled[8000 + 100 : 8000 + 300]
    assert max(_zero_runs(middle == 0.0)) <= 2  # no run of exact zeros left to find
    assert np.max(np.abs(middle)) < 1e-5


@pytest.mark.parametrize("rate", [8000, 16000, 44100])
def test_a_dropout_in_a_live_window_is_flagged_at_any_rate(rate: int, tmp_path: Path) -> None:
    signal = hive_like(rate, 4.0, seed=1) * 0.5
    start = int(1.3 * rate)
    signal[start : start + int(0.02 * rate)] = 0.0  # a 20 ms buffer the recorder lost
    path = audio.write_wav(tmp_path / f"dropout-{rate}.wav", audio=signal, sample_rate=rate)
    got = verdicts(path)
    # Windows start every second and last two: those holding 1.3 s are the first two.
    assert got[:2] == [wire.QUALITY_DROPOUT, wire.QUALITY_DROPOUT]
    assert set(got[2:]) == {wire.QUALITY_OK}
    found = window(audio.resample(signal, orig_rate=rate, target_rate=RATE)[RATE:])
    assert 0.006 <= found.longest_zero_run_s <= 0.021


def test_a_short_gap_and_zero_crossings_are_not_dropouts() -> None:
    signal = hive_like(RATE, 2.0) * 0.5
    signal[5000 : 5000 + 16] = 0.0  # 2 ms, shorter than min_dropout_seconds
    result = window(signal)
    assert result.verdict == wire.QUALITY_OK and result.longest_zero_run_s == pytest.approx(0.002)


def test_zeros_padding_a_recordings_start_or_end_are_not_dropouts() -> None:
    signal = hive_like(RATE, 2.0) * 0.5
    padded = signal.copy()
    padded[:500] = 0.0  # 63 ms at the start, as the real OSBH Pre-Swarm clip has
    padded[-200:] = 0.0
    result = window(padded)
    assert result.verdict == wire.QUALITY_OK and result.edge_zero_run_s == pytest.approx(500 / RATE)
    mostly_gone = signal.copy()
    mostly_gone[: CONFIG.window_samples // 2] = 0.0  # half the window: the recorder stopped
    assert window(mostly_gone).verdict == wire.QUALITY_DROPOUT


# -- clipping ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("rate", [8000, 16000])
def test_a_clipped_recording_is_flagged_after_resampling(rate: int, tmp_path: Path) -> None:
    loud = np.clip(3.0 * hive_like(rate, 4.0, seed=2) / np.max(np.abs(hive_like(rate, 4.0, seed=2))), -1, 1)
    assert np.mean(np.abs(loud) >= 0.999) > 0.1  # the gain set far too high
    path = audio.write_wav(tmp_path / f"clipped-{rate}.wav", audio=loud.astype(np.float32), sample_rate=rate)
    assert set(verdicts(path)) == {wire.QUALITY_CLIPPED}
    first = window(audio.load(path, sample_rate=RATE))
    assert first.clipped_fraction > 0.05 and first.peak >= 0.99


def test_a_loud_recording_that_does_not_clip_is_ok(tmp_path: Path) -> None:
    signal = hive_like(16000, 4.0, seed=3)
    signal = (0.95 * signal / np.max(np.abs(signal))).astype(np.float32)
    path = audio.write_wav(tmp_path / "loud.wav", audio=signal, sample_rate=16000)
    assert set(verdicts(path)) == {wire.QUALITY_OK}


def test_one_clipped_transient_is_not_a_clipped_window() -> None:
    signal = hive_like(RATE, 2.0) * 0.3
    signal[4000:4080] = 1.0  # 10 ms of a knock at full scale: 0.5 % of the window
    assert window(signal).verdict == wire.QUALITY_OK


# -- DC offset ---------------------------------------------------------------------------------------------
def test_a_large_dc_offset_is_flagged_and_a_small_one_is_not() -> None:
    signal = hive_like(RATE, 2.0) * 0.2
    shifted = window(signal + 0.35)
    assert shifted.verdict == wire.QUALITY_DC_OFFSET and shifted.dc_offset == pytest.approx(0.35, abs=0.01)
    assert shifted.level_dbfs == pytest.approx(window(signal).level_dbfs, abs=0.01)  # level without the DC
    assert window(signal + 0.05).verdict == wire.QUALITY_OK


def test_the_worst_problem_wins() -> None:
    signal = hive_like(RATE, 2.0)
    clipped_and_shifted = np.clip(4.0 * signal + 0.3, -1.0, 1.0)
    assert window(clipped_and_shifted).verdict == wire.QUALITY_CLIPPED
    dropout_and_clipped = np.clip(4.0 * signal, -1.0, 1.0)
    dropout_and_clipped[1000:1400] = 0.0
    assert window(dropout_and_clipped).verdict == wire.QUALITY_DROPOUT
    assert wire.QUALITIES.index(wire.QUALITY_DROPOUT) < wire.QUALITIES.index(wire.QUALITY_CLIPPED)


# -- clean hive audio --------------------------------------------------------------------------------------
def test_synthetic_hive_audio_at_ordinary_levels_is_ok() -> None:
    from beeaudio.desktop.synth import render_timeline

    for hive in range(6):
        for state in ("normal", "swarm"):
            rendered = render_timeline(hive_seed=hive, segments=[(state, 6.0)], sample_rate=16000, seed=hive)
            signal = audio.resample(at_level(rendered, -30.0), orig_rate=16000, target_rate=RATE)
            for start in range(0, len(signal) - CONFIG.window_samples + 1, CONFIG.hop_samples):
                result = check_window(samples=signal[start : start + CONFIG.window_samples], sample_rate=RATE)
                assert result.verdict == wire.QUALITY_OK, (hive, state, start, result)


def test_real_hive_recordings_have_signal(real_data_dir: Path) -> None:
    """The Open Source Beehives clips are real hive audio (2205 Hz, upsampled): never no_signal."""
    files = sorted((real_data_dir / "osbh").glob("*.wav"))
    assert files
    for path in files:
        got = verdicts(path)
        assert wire.QUALITY_NO_SIGNAL not in got, (path.name, got)
        assert got.count(wire.QUALITY_OK) >= 0.9 * len(got), (path.name, got)


# -- the config and the record -----------------------------------------------------------------------------
@pytest.mark.parametrize(
    "field, value",
    [
        ("level_floor_dbfs", 3.0),
        ("level_floor_dbfs", float("nan")),
        ("zero_tolerance", -1.0),
        ("min_dropout_seconds", 0.0),
        ("clip_level", 1.5),
        ("max_clipped_fraction", 1.0),
        ("max_dc_offset", 0.0),
    ],
)
def test_quality_config_refuses_nonsense(field: str, value: float) -> None:
    with pytest.raises(ValueError, match=field):
        QualityConfig(**{field: value})


def test_measures_and_json() -> None:
    t = np.arange(CONFIG.window_samples) / RATE
    sine = (0.5 * np.sin(2 * np.pi * 250 * t)).astype(np.float32)
    result = window(sine)
    assert result.ok and result.level_dbfs == pytest.approx(20 * np.log10(0.5 / np.sqrt(2)), abs=0.01)
    assert result.peak == pytest.approx(0.5, abs=1e-3) and result.clipped_fraction == 0.0
    assert set(result.to_json()) == {
        "verdict", "level_dbfs", "peak", "clipped_fraction", "dc_offset", "longest_zero_run_s",
        "edge_zero_run_s",
    }  # fmt: skip
    stricter = QualityConfig(level_floor_dbfs=-5.0)
    assert check_window(samples=sine, sample_rate=RATE, config=stricter).verdict == wire.QUALITY_NO_SIGNAL
    with pytest.raises(ValueError, match="mono"):
        check_window(samples=np.zeros((2, 100)), sample_rate=RATE)


def test_zero_runs_are_found_from_the_near_zero_positions() -> None:
    """The runs are read off the positions of the near-zero samples; the same lengths as a scan of the
    whole mask (the original way), on masks with runs inside, at both edges, single samples and none."""
    from beeaudio.core.quality import _zero_runs

    def scanned(mask: np.ndarray) -> tuple[int, int]:
        edges = np.diff(np.concatenate(([0], mask.view(np.int8), [0])))
        starts, stops = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        lengths, at_edge = stops - starts, (starts == 0) | (stops == mask.size)
        inside = int(lengths[~at_edge].max()) if (~at_edge).any() else 0
        return inside, int(lengths[at_edge].max()) if at_edge.any() else 0

    rng = np.random.default_rng(3)
    masks = [
        np.zeros(50, bool),
        np.ones(50, bool),
        np.eye(1, 50, 0, dtype=bool)[0],
        np.eye(1, 50, 49, dtype=bool)[0],
    ]
    masks += [rng.random(400) < p for p in (0.01, 0.3, 0.7, 0.95) for _ in range(25)]
    # Only isolated samples (the fast path): touching both edges, neither, and one sample long masks.
    masks += [np.arange(400) % 3 == 0, np.arange(400) % 7 == 3, np.ones(1, bool), np.arange(5) % 4 == 0]
    for mask in masks:
        assert _zero_runs(mask) == scanned(mask)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_the_measures_are_numpys_plain_ones(dtype: type) -> None:
    """The check's sums are written for speed (one float64 copy, the variance from the sum of squares);
    held here to the plain numpy measures on loud, quiet, offset, clipped and silent windows."""
    rng = np.random.default_rng(7)
    noise = rng.standard_normal(CONFIG.window_samples)
    cases = [0.1 * noise, 3e-4 * noise + 0.2, np.clip(4 * noise, -1, 1), 1e-6 * noise, np.full(16000, 0.3)]
    for signal in (np.asarray(case, dtype=dtype) for case in cases):
        result = check_window(samples=signal, sample_rate=RATE)
        plain = signal.astype(np.float64)
        rms = float(np.std(plain))
        expected_level = max(-120.0, 20 * np.log10(rms)) if rms > 1e-12 else -120.0
        assert result.level_dbfs == pytest.approx(expected_level, abs=1e-6)
        assert result.dc_offset == pytest.approx(float(np.mean(plain)), abs=1e-12)
        assert result.peak == float(np.max(np.abs(plain)))
        assert result.clipped_fraction == float(np.mean(np.abs(plain) >= 0.99))

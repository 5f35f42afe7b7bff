"""Decoding, resampling, streaming, MP3 encoding and every way an input file can be broken.

Every file is written inside the test (tmp_path); the real recordings are read from ``real_data_dir``.
"""

from __future__ import annotations

import logging
import pickle
import shutil
import struct
import subprocess
import sys
import tracemalloc
import weakref
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from beeaudio.core.audio import (
    AudioError,
    BandLimitError,
    EmptyAudioError,
    NonFiniteAudioError,
    NotAudioError,
    TooShortAudioError,
    TruncatedAudioError,
    UnsupportedAudioError,
    iter_windows,
    load,
    probe,
    resample,
    write_wav,
)
from beeaudio.core.features import FeatureConfig, window_start_samples, window_starts
from tests.fixtures.audio import hive_like

SR = 8000
CONFIG = FeatureConfig()


def tone(
    *, rate: int, seconds: float, freq: float = 300.0, amp: float = 0.5, channels: int = 1
) -> np.ndarray:
    t = np.arange(round(rate * seconds)) / rate
    mono = amp * np.sin(2 * np.pi * freq * t)
    if channels == 1:
        return mono.astype(np.float32)
    # Channels differ (phase, level) so that mixing to mono is observable.
    cols = [mono * (1 - 0.2 * c) for c in range(channels)]
    return np.stack(cols, axis=1).astype(np.float32)


def peak_hz(y: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(y * np.hanning(y.size)))
    return float(np.argmax(spectrum) * rate / y.size)


# -- decoding every format --
FORMATS = [
    ("WAV", "PCM_U8", 11025, 1, ".wav"),
    ("WAV", "PCM_16", 8000, 1, ".wav"),
    ("WAV", "PCM_24", 44100, 2, ".wav"),
    ("WAV", "PCM_32", 16000, 3, ".wav"),
    ("WAV", "FLOAT", 22050, 1, ".wav"),
    ("WAV", "DOUBLE", 6300, 2, ".wav"),
    ("FLAC", "PCM_16", 48000, 2, ".flac"),
    ("FLAC", "PCM_24", 2205, 1, ".flac"),
    ("OGG", "VORBIS", 16000, 2, ".ogg"),
    ("MP3", "MPEG_LAYER_III", 32000, 1, ".mp3"),
    ("MP3", "MPEG_LAYER_III", 22050, 2, ".mp3"),
]


@pytest.mark.parametrize(("fmt", "subtype", "rate", "channels", "suffix"), FORMATS)
def test_every_format_decodes_to_mono_float32_at_the_model_rate(
    tmp_path: Path, fmt: str, subtype: str, rate: int, channels: int, suffix: str
) -> None:
    src = tone(rate=rate, seconds=2.5, channels=channels)
    path = tmp_path / f"x{suffix}"
    sf.write(path, src, rate, format=fmt, subtype=subtype)

    info = probe(path)
    assert (info.container, info.subtype, info.sample_rate, info.channels) == (fmt, subtype, rate, channels)
    assert info.duration_s == pytest.approx(2.5, abs=0.06)

    y = load(path, sample_rate=SR)
    assert y.dtype == np.float32 and y.ndim == 1
    assert y.size == pytest.approx(2.5 * SR, abs=0.06 * SR)
    assert peak_hz(y, SR) == pytest.approx(300.0, abs=2.0)
    if fmt in ("WAV", "FLAC"):  # lossless: equal to the channel mean resampled, within quantisation
        mono = src if channels == 1 else src.mean(axis=1)
        expected = resample(mono, orig_rate=rate, target_rate=SR)
        assert y.size == expected.size
        quantum = {"PCM_U8": 0.02, "PCM_16": 2e-4}.get(subtype, 1e-6)
        np.testing.assert_allclose(y, expected, atol=quantum + 2e-6)


@pytest.mark.parametrize(
    ("fmt", "subtype", "misnamed_as"),
    [("MP3", "MPEG_LAYER_III", "x.ogg"), ("MP3", "MPEG_LAYER_III", "x.wav"), ("FLAC", "PCM_16", "x.mp3"),
     ("WAV", "PCM_16", "x.flac"), ("OGG", "VORBIS", "x.wav"), ("WAV", "FLOAT", "x")],
)  # fmt: skip
def test_files_are_recognised_by_content_not_extension(
    tmp_path: Path, fmt: str, subtype: str, misnamed_as: str
) -> None:
    real = tmp_path / "real"
    sf.write(real, tone(rate=16000, seconds=2.0), 16000, format=fmt, subtype=subtype)
    path = tmp_path / misnamed_as
    shutil.move(real, path)
    assert probe(path).container == fmt
    assert peak_hz(load(path, sample_rate=SR), SR) == pytest.approx(300.0, abs=2.0)


def test_real_osbh_recordings_decode_and_fit_the_default_band(real_data_dir: Path) -> None:
    for name in ("2205_Active.wav", "2205_Swarm.wav", "2205_Pre-Swarm.wav"):
        path = real_data_dir / "osbh" / name
        info = probe(path)
        assert (info.container, info.sample_rate, info.channels, info.frames) == ("WAV", 2205, 1, 4410)
        windows = list(iter_windows(path, config=CONFIG))
        assert [start for start, _ in windows] == [0.0]
        assert windows[0][1].shape == (CONFIG.window_samples,)
        assert np.isfinite(windows[0][1]).all() and np.abs(windows[0][1]).max() > 1e-3
    long_file = real_data_dir / "osbh" / "2205_unlabeled_107s.wav"
    starts = [start for start, _ in iter_windows(long_file, config=CONFIG, block_seconds=7.0)]
    assert starts == list(np.arange(len(starts), dtype=float)) and len(starts) >= 100


def test_real_osbh_recordings_are_refused_by_a_model_listening_above_their_nyquist(
    real_data_dir: Path,
) -> None:
    path = real_data_dir / "osbh" / "2205_Swarm.wav"
    wide = FeatureConfig(fmax=2000.0)
    with pytest.raises(BandLimitError) as caught:
        iter_windows(path, config=wide)
    message = str(caught.value)
    assert message.startswith(f"{path}: ")
    assert "2205 Hz" in message and "1102.5 Hz" in message and "2000 Hz" in message
    assert "fmax" in message  # says what to do
    with pytest.raises(BandLimitError):
        load(path, sample_rate=8000, max_band_hz=2000.0)
    assert load(path, sample_rate=8000, max_band_hz=1000.0).size == 16000


def test_real_mp3_decodes(real_data_dir: Path) -> None:
    path = real_data_dir / "buzzdetect" / "testbuzz.mp3"
    info = probe(path)
    assert (info.container, info.sample_rate, info.channels) == ("MP3", 32000, 1)
    assert info.duration_s == pytest.approx(6.5, abs=0.1)
    y = load(path, sample_rate=SR, max_band_hz=CONFIG.fmax)
    assert y.size == pytest.approx(info.duration_s * SR, abs=2)
    starts = [s for s, _ in iter_windows(path, config=CONFIG, block_seconds=1.3)]
    assert starts == [0.0, 1.0, 2.0, 3.0, 4.0]


def test_a_1000_hz_recording_is_refused_for_the_default_band(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "lofi.wav", audio=tone(rate=1000, seconds=4, freq=200), sample_rate=1000)
    with pytest.raises(BandLimitError, match="500 Hz"):
        iter_windows(path, config=CONFIG)
    with pytest.raises(BandLimitError):
        load(path, sample_rate=SR, max_band_hz=CONFIG.fmax)
    assert load(path, sample_rate=SR).size == 4 * SR  # without a band to protect, it decodes


# -- streaming equals whole-file loading --
@pytest.mark.parametrize(
    ("rate", "channels", "fmt", "seconds", "block_seconds"),
    [
        (8000, 1, "WAV", 7.3, 0.37),  # no resampling; blocks shorter than a window
        (2205, 1, "WAV", 9.0, 1.0),  # the OSBH rate; file length an exact multiple of the block
        (44100, 2, "FLAC", 6.6, 2.9),  # stereo, odd ratio
        (32000, 1, "MP3", 6.0, 0.5),
    ],
)
def test_iter_windows_equals_windows_cut_from_load(
    tmp_path: Path, rate: int, channels: int, fmt: str, seconds: float, block_seconds: float
) -> None:
    src = hive_like(rate, seconds)
    if channels == 2:
        src = np.stack([src, 0.5 * src[::-1]], axis=1)
    path = tmp_path / f"x.{fmt.lower()}"
    sf.write(path, src, rate, format=fmt)
    whole = load(path, sample_rate=CONFIG.sample_rate)
    expected_starts = window_starts(n_samples=whole.size, config=CONFIG)
    got = list(iter_windows(path, config=CONFIG, block_seconds=block_seconds))
    assert [s for s, _ in got] == list(expected_starts)
    for start, samples in got:
        first = round(start * CONFIG.sample_rate)
        # soxr's streaming and one-shot resamplers are the same filter: equal to float32 rounding.
        np.testing.assert_allclose(samples, whole[first : first + CONFIG.window_samples], atol=1e-6)
    # A different block size gives the same windows.
    again = list(iter_windows(path, config=CONFIG, block_seconds=60.0))
    assert len(again) == len(got)
    np.testing.assert_allclose(again[-1][1], got[-1][1], atol=1e-6)


def test_streaming_an_mp3_prints_nothing_from_libmpg123(
    tmp_path: Path, capfd: pytest.CaptureFixture[str], caplog: pytest.LogCaptureFixture
) -> None:
    """libsndfile's libmpg123 prints "error: part2_3_length (...) too large for available bit count" to
    file descriptor 2 at some block boundaries of 16 kHz MP3s (python-soundfile issue 402), although the
    samples are right: every MP3 longer than a block filled a beekeeper's terminal or a device's journal
    with "error" lines. They go to the debug log instead."""
    path = tmp_path / "x.mp3"
    sf.write(path, hive_like(16000, 30.0), 16000, format="MP3")
    capfd.readouterr()
    with caplog.at_level(logging.DEBUG, logger="beeaudio.core"):
        streamed = [samples for _, samples in iter_windows(path, config=CONFIG, block_seconds=1.0)]
    said = capfd.readouterr()
    assert "libmpg123" not in said.err and "libmpg123" not in said.out, said.err[:500]
    assert any("libmpg123" in r.getMessage() and r.levelno == logging.DEBUG for r in caplog.records)
    whole = load(path, sample_rate=CONFIG.sample_rate)  # and the samples are those of one whole read
    starts = window_start_samples(n_samples=whole.size, config=CONFIG)
    assert len(streamed) == len(starts)
    for first, samples in zip(starts, streamed, strict=True):
        np.testing.assert_allclose(samples, whole[first : first + CONFIG.window_samples], atol=1e-6)


@pytest.mark.parametrize(("fmt", "channels"), [("WAV", 1), ("WAV", 2), ("FLAC", 1)])
def test_16_bit_pcm_decodes_to_libsndfiles_own_floats(tmp_path: Path, fmt: str, channels: int) -> None:
    """16-bit PCM is read as int16 and scaled here (faster than libsndfile's conversion): the very same
    float32 samples, full scale included."""
    rng = np.random.default_rng(7)
    pcm = rng.integers(-32768, 32768, size=(3 * SR, channels), dtype=np.int16)
    pcm[:2, 0] = (-32768, 32767)
    path = tmp_path / f"pcm.{fmt.lower()}"
    sf.write(path, pcm, SR, subtype="PCM_16", format=fmt)
    theirs, _ = sf.read(path, dtype="float32", always_2d=True)
    expected = theirs[:, 0] if channels == 1 else theirs.mean(axis=1, dtype=np.float32)
    assert np.array_equal(load(path, sample_rate=SR), expected)


@pytest.mark.parametrize("rate", [16000, 44100])
def test_streaming_in_resampler_pieces_gives_exactly_the_loaded_samples(tmp_path: Path, rate: int) -> None:
    """iter_windows feeds soxr a 60 s block in pieces (audio._SOXR_PIECE_FRAMES): soxr's output does not
    depend on how its input is cut, so every window is bit-identical to the whole-file load, with one
    block or several."""
    path = tmp_path / "long.wav"
    sf.write(path, hive_like(rate, 75.0), rate, subtype="PCM_16")
    whole = load(path, sample_rate=CONFIG.sample_rate)
    for block_seconds in (60.0, 7.7):
        got = list(iter_windows(path, config=CONFIG, block_seconds=block_seconds))
        assert [s for s, _ in got] == list(window_starts(n_samples=whole.size, config=CONFIG))
        for start, samples in got:
            first = round(start * CONFIG.sample_rate)
            expected = whole[first : first + CONFIG.window_samples]
            assert np.array_equal(samples, expected), (block_seconds, start)


def test_an_iterator_dropped_before_its_first_window_closes_its_file(tmp_path: Path) -> None:
    """iter_windows decodes with the handle it probed with; unused, the generator frees it."""
    path = write_wav(tmp_path / "x.wav", audio=hive_like(SR, 3.0), sample_rate=SR)
    windows = iter_windows(path, config=CONFIG)
    handle = weakref.ref(windows.gi_frame.f_locals["handle"])
    assert not handle().closed
    del windows
    assert handle() is None  # freed, and a SoundFile closes its file when it is freed


def test_iter_windows_memory_is_bounded_on_a_20_minute_file(tmp_path: Path) -> None:
    rate, minutes = 11025, 20  # an odd rate, so the streaming resampler runs too
    path = tmp_path / "long.wav"
    rng = np.random.default_rng(0)
    with sf.SoundFile(path, "w", samplerate=rate, channels=1, subtype="PCM_16") as out:
        for _ in range(minutes):
            out.write((0.1 * rng.standard_normal(rate * 60)).astype(np.float32))
    decoded_bytes = minutes * 60 * rate * 4  # float32 of the whole file: 53 MB
    tracemalloc.start()
    try:
        count, last_start = 0, -1.0
        for start, samples in iter_windows(path, config=CONFIG, block_seconds=10.0):
            assert samples.shape == (CONFIG.window_samples,)
            count, last_start = count + 1, start
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert count == minutes * 60 - 1 and last_start == minutes * 60 - 2.0
    assert peak < decoded_bytes / 10, (
        f"peak {peak / 1e6:.1f} MB while streaming a {decoded_bytes / 1e6:.0f} MB file"
    )


# -- broken inputs --
def pcm16_wav_bytes(tmp_path: Path, seconds: float = 3.0) -> bytes:
    path = tmp_path / "good.wav"
    sf.write(path, tone(rate=SR, seconds=seconds), SR, subtype="PCM_16")
    return path.read_bytes()


def assert_names_file_and_cause(error: AudioError, path: Path, *words: str) -> None:
    assert error.path == path
    assert str(error) == f"{path}: {error.reason}"
    for word in words:
        assert word.lower() in error.reason.lower(), (word, error.reason)


def test_empty_files(tmp_path: Path) -> None:
    zero_bytes = tmp_path / "zero.wav"
    zero_bytes.write_bytes(b"")
    with pytest.raises(EmptyAudioError) as caught:
        load(zero_bytes, sample_rate=SR)
    assert_names_file_and_cause(caught.value, zero_bytes, "0 bytes")

    zero_frames = tmp_path / "zero_frames.wav"
    sf.write(zero_frames, np.zeros(0, np.float32), SR)
    with pytest.raises(EmptyAudioError) as caught:
        probe(zero_frames)
    assert_names_file_and_cause(caught.value, zero_frames, "no audio frames")


@pytest.mark.parametrize(
    "content", [b"timestamp,temperature\n2021-01-01,34.5\n" * 20, "random", b"\x89PNG\r\n\x1a\n" + bytes(500)]
)
def test_not_audio(tmp_path: Path, content: bytes | str) -> None:
    path = tmp_path / "recording.wav"
    if content == "random":
        content = np.random.default_rng(5).bytes(20000)
    path.write_bytes(content)
    with pytest.raises(NotAudioError) as caught:
        load(path, sample_rate=SR)
    assert_names_file_and_cause(caught.value, path, "not an audio file")


@pytest.mark.parametrize(
    ("cut_at", "words"), [(10, "header"), (30, "header"), (36, "before its data"), (44, "")]
)
def test_wav_cut_in_its_header_or_before_its_data_is_truncated(
    tmp_path: Path, cut_at: int, words: str
) -> None:
    path = tmp_path / "cut.wav"
    path.write_bytes(pcm16_wav_bytes(tmp_path)[:cut_at])
    with pytest.raises(TruncatedAudioError) as caught:
        probe(path)
    assert_names_file_and_cause(caught.value, path, words)
    with pytest.raises(TruncatedAudioError):
        list(iter_windows(path, config=CONFIG))


def test_wav_whose_header_promises_more_data_is_read_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Decision: the samples present are valid field data, so they are read; the loss is logged and flagged.
    path = tmp_path / "cut.wav"
    path.write_bytes(pcm16_wav_bytes(tmp_path, seconds=5.0)[: 44 + 2 * SR * 3])  # 3 of 5 seconds
    with caplog.at_level(logging.WARNING, logger="beeaudio.core.audio"):
        info = probe(path)
        y = load(path, sample_rate=SR)
    assert info.truncated and info.frames == 3 * SR
    assert y.size == 3 * SR
    assert any("truncated WAV" in r.message and "40000 frames" in r.message for r in caplog.records)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="beeaudio.core.audio"):
        assert [s for s, _ in iter_windows(path, config=CONFIG)] == [0.0, 1.0]
    assert len(caplog.records) == 1, "warned once per file, not once per open"
    assert not probe(write_wav(tmp_path / "ok.wav", audio=y, sample_rate=SR)).truncated


def test_truncated_flac_is_an_error_and_truncated_ogg_is_read_with_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    src = hive_like(SR, 4.0)
    good = tmp_path / "good.flac"
    sf.write(good, src, SR, format="FLAC")
    for cut_at in (20, good.stat().st_size // 2):  # in the header; in the frames (decoder loses sync)
        path = tmp_path / f"cut{cut_at}.flac"
        path.write_bytes(good.read_bytes()[:cut_at])
        with pytest.raises(TruncatedAudioError) as caught:
            load(path, sample_rate=SR)
        assert_names_file_and_cause(caught.value, path)

    good = tmp_path / "good.ogg"
    sf.write(good, src, SR, format="OGG")
    assert not probe(good).truncated
    cut = tmp_path / "cut.ogg"
    cut.write_bytes(good.read_bytes()[:20])
    with pytest.raises(TruncatedAudioError):
        probe(cut)
    cut.write_bytes(good.read_bytes()[: good.stat().st_size * 3 // 4])
    with caplog.at_level(logging.WARNING, logger="beeaudio.core.audio"):
        info = probe(cut)
        y = load(cut, sample_rate=SR)
    assert info.truncated and 0 < y.size < src.size
    assert any("truncated OGG" in r.message for r in caplog.records)


def test_unsupported_wav_encoding_and_container(tmp_path: Path) -> None:
    raw = bytearray(pcm16_wav_bytes(tmp_path))
    raw[20:22] = struct.pack("<H", 0x1234)  # an encoding nobody decodes
    odd = tmp_path / "odd.wav"
    odd.write_bytes(bytes(raw))
    with pytest.raises(UnsupportedAudioError) as caught:
        load(odd, sample_rate=SR)
    assert_names_file_and_cause(caught.value, odd, "0x1234", "PCM")

    aiff = tmp_path / "x.aiff"
    sf.write(aiff, tone(rate=SR, seconds=3), SR, format="AIFF")
    with pytest.raises(UnsupportedAudioError) as caught:
        probe(aiff)
    assert_names_file_and_cause(caught.value, aiff, "AIFF", "WAV, MP3, FLAC, OGG")


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_float_samples(tmp_path: Path, bad: float) -> None:
    y = tone(rate=SR, seconds=5.0)
    y[int(3.5 * SR)] = bad
    path = tmp_path / "float.wav"
    sf.write(path, y, SR, subtype="FLOAT")
    with pytest.raises(NonFiniteAudioError) as caught:
        load(path, sample_rate=SR)
    assert_names_file_and_cause(caught.value, path, "non-finite", "3.500 s")
    windows = iter_windows(path, config=CONFIG, block_seconds=1.0)
    assert next(windows)[0] == 0.0  # found when its block is read, after the clean windows before it
    with pytest.raises(NonFiniteAudioError):
        list(windows)


def test_too_short_for_one_window(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "short.wav", audio=tone(rate=16000, seconds=1.5), sample_rate=16000)
    with pytest.raises(TooShortAudioError) as caught:
        iter_windows(path, config=CONFIG)
    assert_names_file_and_cause(caught.value, path, "1.500 s", "2 s")
    with pytest.raises(TooShortAudioError):
        load(path, sample_rate=SR, min_seconds=2.0)
    assert load(path, sample_rate=SR).size == 12000


def test_errors_are_audio_errors_and_survive_pickling(tmp_path: Path) -> None:
    for cls in (EmptyAudioError, TruncatedAudioError, NotAudioError, UnsupportedAudioError):
        assert issubclass(cls, AudioError)
    for cls in (NonFiniteAudioError, TooShortAudioError, BandLimitError):
        assert issubclass(cls, AudioError)
    error = pickle.loads(pickle.dumps(BandLimitError(tmp_path / "a.wav", "too narrow")))
    assert isinstance(error, BandLimitError) and str(error) == f"{tmp_path / 'a.wav'}: too narrow"
    with pytest.raises(AudioError, match="no such file"):
        probe(tmp_path / "missing.wav")


# -- resampling and writing --
@pytest.mark.parametrize(("orig", "target"), [(2205, 8000), (48000, 8000), (8000, 16000), (8000, 8000)])
def test_resample_keeps_duration_and_pitch(orig: int, target: int) -> None:
    y = tone(rate=orig, seconds=2.0, freq=440.0)
    out = resample(y, orig_rate=orig, target_rate=target)
    assert out.dtype == np.float32 and out.size == 2 * target
    assert peak_hz(out, target) == pytest.approx(440.0, abs=1.0)
    with pytest.raises(ValueError):
        resample(y, orig_rate=0, target_rate=target)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24", "FLOAT"])
def test_write_wav_round_trips_atomically_and_clips_pcm(tmp_path: Path, subtype: str) -> None:
    y = tone(rate=SR, seconds=2.0, amp=1.2)  # over full scale
    path = write_wav(tmp_path / "sub" / "out.wav", audio=y, sample_rate=SR, subtype=subtype)
    back, rate = sf.read(path, dtype="float32")
    assert rate == SR and back.size == y.size and probe(path).subtype == subtype
    if subtype == "FLOAT":
        np.testing.assert_array_equal(back, y)
    else:
        assert back.max() <= 1.0 and back.max() > 0.99  # clipped, not wrapped round to negative
    assert [p.name for p in path.parent.iterdir()] == ["out.wav"]  # no temporary left behind


def test_audio_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, beeaudio.core.audio\n"
        "heavy = ('librosa', 'scipy', 'tensorflow', 'pydub')\n"
        "print(','.join(m for m in heavy if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], check=True, capture_output=True, text=True
    ).stdout.strip()
    assert out == "", f"beeaudio.core.audio imported {out}"

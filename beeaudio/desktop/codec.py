"""MP3 encoding for the desktop: codec experiments, codec augmentation and test recordings.

Encoding goes through pydub + ffmpeg, or libsndfile's LAME where ffmpeg is absent. A hive device only ever
decodes (:mod:`beeaudio.core.audio`), so this lives on the desktop side.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import warnings
from pathlib import Path

import numpy as np
import soundfile as sf

from beeaudio.core.audio import load, resample
from beeaudio.core.fsio import atomic_path

log = logging.getLogger(__name__)

# Sample rates an MP3 (MPEG-1/2/2.5 layer III) stream can carry.
MP3_SAMPLE_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# LAME's encoder delay plus the decoder's (576 + 529 samples), left in by decoders that ignore its tag.
_LAME_DELAY = 1105


def _mp3_rate(sample_rate: int) -> int:
    for rate in MP3_SAMPLE_RATES:
        if rate >= sample_rate:
            return rate
    return MP3_SAMPLE_RATES[-1]


def _soundfile_compression(sample_rate: int, bitrate_kbps: int) -> float:
    # libsndfile maps compression_level c in [0, 1] linearly onto LAME's CBR range of the MPEG version.
    top, bottom = (
        (320.0, 32.0) if sample_rate >= 32000 else (160.0, 8.0) if sample_rate >= 16000 else (64.0, 8.0)
    )
    return float(np.clip((top - bitrate_kbps) / (top - bottom), 0.0, 0.99))


def encode_mp3(*, audio: np.ndarray, sample_rate: int, path: Path, bitrate_kbps: int) -> Path:
    """Encode mono audio as a constant-bitrate MP3 (pydub + ffmpeg; soundfile's LAME where ffmpeg is absent).

    Rates MP3 cannot carry (e.g. 2205 Hz) are first resampled to the next MP3 rate up. The encoder clamps
    the bitrate to what the MPEG version allows (8 kHz streams top out at 64 kbps); the soundfile fallback
    reaches the nearest bitrate LAME offers.
    """
    path = Path(path)
    if bitrate_kbps <= 0:
        raise ValueError(f"bitrate_kbps must be positive, got {bitrate_kbps}")
    signal = np.asarray(audio, dtype=np.float32)
    if signal.ndim != 1:
        raise ValueError(f"encode_mp3 takes mono 1-D audio, got shape {signal.shape}")
    rate = _mp3_rate(sample_rate)
    if rate != sample_rate:
        signal = resample(signal, orig_rate=sample_rate, target_rate=rate)
    signal = np.clip(signal, -1.0, 1.0)
    with atomic_path(path) as tmp_name:
        if shutil.which("ffmpeg") and _pydub_available():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)  # pydub imports audioop (3.11/3.12)
                from pydub import AudioSegment

            pcm = np.round(signal * 32767.0).astype("<i2")
            segment = AudioSegment(pcm.tobytes(), frame_rate=rate, sample_width=2, channels=1)
            segment.export(tmp_name, format="mp3", bitrate=f"{int(bitrate_kbps)}k")
        else:
            log.info("ffmpeg or pydub missing: encoding MP3 with libsndfile's LAME")
            sf.write(
                tmp_name,
                signal,
                rate,
                format="MP3",
                subtype="MPEG_LAYER_III",
                bitrate_mode="CONSTANT",
                compression_level=_soundfile_compression(rate, bitrate_kbps),
            )
    return path


def _pydub_available() -> bool:
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            import pydub  # noqa: F401
    except ImportError:
        return False
    return True


def mp3_roundtrip(*, audio: np.ndarray, sample_rate: int, bitrate_kbps: int) -> np.ndarray:
    """Encode to MP3 and decode back: same rate, same length, time-aligned (codec augmentation)."""
    signal = np.asarray(audio, dtype=np.float32)
    mp3_rate = _mp3_rate(sample_rate)
    with tempfile.TemporaryDirectory(prefix="beeaudio-mp3-") as tmp:
        mp3 = encode_mp3(
            audio=signal, sample_rate=sample_rate, path=Path(tmp) / "x.mp3", bitrate_kbps=bitrate_kbps
        )
        decoded = load(mp3, sample_rate=mp3_rate)
    encoded_frames = round(signal.size * mp3_rate / sample_rate)
    if decoded.size >= encoded_frames + _LAME_DELAY:
        # No gapless (LAME) header was honoured: the encoder's delay is still in front of the signal.
        decoded = decoded[_LAME_DELAY:]
    decoded = resample(decoded, orig_rate=mp3_rate, target_rate=sample_rate)
    if decoded.size >= signal.size:
        return decoded[: signal.size]
    return np.concatenate([decoded, np.zeros(signal.size - decoded.size, dtype=np.float32)])

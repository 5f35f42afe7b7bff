"""MP3 encoding (the desktop's codec tools): chosen bitrates, both encoders, and a delay-free round trip."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.audio import probe
from beeaudio.desktop import codec
from beeaudio.desktop.codec import encode_mp3, mp3_roundtrip
from tests.fixtures.audio import hive_like


def measured_kbps(path: Path) -> float:
    return path.stat().st_size * 8 / probe(path).duration_s / 1000


@pytest.mark.parametrize("encoder", ["pydub", "soundfile"])
def test_encode_mp3_at_a_chosen_bitrate(
    tmp_path: Path, encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if encoder == "soundfile":  # the fallback used where ffmpeg is not installed
        monkeypatch.setattr(codec.shutil, "which", lambda _name: None)
    elif shutil.which("ffmpeg") is None:
        pytest.skip("ffmpeg is not installed")
    y = hive_like(16000, 10.0)
    for kbps in (24, 64):
        path = encode_mp3(audio=y, sample_rate=16000, path=tmp_path / f"{kbps}.mp3", bitrate_kbps=kbps)
        info = probe(path)
        assert (info.container, info.sample_rate) == ("MP3", 16000)
        assert measured_kbps(path) == pytest.approx(kbps, rel=0.2)


@pytest.mark.parametrize("encoder", ["pydub", "soundfile"])
@pytest.mark.parametrize(("rate", "kbps"), [(8000, 16), (16000, 32), (2205, 32), (44100, 64)])
def test_mp3_roundtrip_keeps_rate_length_and_timing(
    rate: int, kbps: int, encoder: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if encoder == "soundfile":  # its LAME writer leaves the encoder delay in at >= 16 kHz
        monkeypatch.setattr(codec.shutil, "which", lambda _name: None)
    y = hive_like(rate, 5.0, seed=2)
    out = mp3_roundtrip(audio=y, sample_rate=rate, bitrate_kbps=kbps)
    assert out.dtype == np.float32 and out.shape == y.shape
    core = slice(rate // 2, -rate // 2)
    lags = range(-200, 201)
    scores = [float(np.dot(np.roll(out, -lag)[core], y[core])) for lag in lags]
    assert lags[int(np.argmax(scores))] == 0, "the codec's delay must be removed"
    assert np.corrcoef(out[core], y[core])[0, 1] > 0.9

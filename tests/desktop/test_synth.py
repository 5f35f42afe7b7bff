"""The synthetic hive generator (beeaudio.desktop.synth): determinism, files, acoustics and separability.

The full separability benchmark quoted in data/README.md is ``python bench/separability.py --seeds 1 2``.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from beeaudio.core.features import (
    FeatureConfig,
    level_dbfs,
)
from beeaudio.desktop import synth
from beeaudio.desktop.synth import (
    SynthConfig,
    generate_dataset,
    hive_profile,
    hive_seed,
    render_recording,
    render_timeline,
)

CONFIG = FeatureConfig()


# -- configuration and determinism -------------------------------------------------------------------------
def test_config_defaults_and_validation() -> None:
    c = SynthConfig()
    assert (c.hives, c.recordings_per_class, c.seconds, c.sample_rate, c.classes, c.seed) == (
        12,
        4,
        30.0,
        16000,
        ("normal", "swarm"),
        1,
    )
    for bad in (
        {"classes": ("normal", "dancing")},
        {"classes": ()},
        {"hives": 0},
        {"seconds": -1.0},
        {"sample_rate": 2000},
        {"classes": ("swarm", "swarm")},
    ):
        with pytest.raises(ValueError):
            SynthConfig(**bad)  # type: ignore[arg-type]


def test_rendering_is_deterministic_and_seeded() -> None:
    a = render_recording(hive_seed=5, label="swarm", seconds=3.0, sample_rate=8000, seed=1)
    b = render_recording(hive_seed=5, label="swarm", seconds=3.0, sample_rate=8000, seed=1)
    c = render_recording(hive_seed=5, label="swarm", seconds=3.0, sample_rate=8000, seed=2)
    assert a.dtype == np.float32 and a.shape == (24000,)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert np.all(np.isfinite(a)) and np.max(np.abs(a)) < 1.0


def test_hives_differ_in_colony_and_microphone() -> None:
    profiles = [hive_profile(hive_seed=hive_seed(seed=1, index=i)) for i in range(1, 13)]
    f0 = np.array([p.f0 for p in profiles])
    gain = np.array([p.level_db + p.mic_gain_db for p in profiles])
    assert f0.min() >= 170 and f0.max() <= 330 and f0.std() > 20
    assert gain.max() - gain.min() > 10  # colony size and mic gain spread more than a state changes level
    assert len({round(p.mic_tilt_db_per_octave, 3) for p in profiles}) == 12
    # Each state's profile has its own random stream: the same hive seed gives the same colony.
    assert hive_profile(hive_seed=42) == hive_profile(hive_seed=42)


# -- acoustics ----------------------------------------------------------------------------------------
def _frame_db(audio: np.ndarray, rate: int, frame_s: float = 0.032) -> np.ndarray:
    """Frame levels (dB) of the 100-1000 Hz band, where the model listens."""
    spectrum = np.fft.rfft(audio.astype(np.float64))
    f = np.fft.rfftfreq(audio.size, 1 / rate)
    audio = np.fft.irfft(np.where((f >= 100) & (f <= 1000), spectrum, 0), audio.size)
    n = int(frame_s * rate)
    frames = audio[: audio.size // n * n].reshape(-1, n)
    return 10 * np.log10(np.mean(frames.astype(np.float64) ** 2, axis=1) + 1e-12)


def _band_share(audio: np.ndarray, rate: int, lo: float, hi: float) -> float:
    power = np.abs(np.fft.rfft(audio)) ** 2
    f = np.fft.rfftfreq(audio.size, 1 / rate)
    return float(power[(f >= lo) & (f < hi)].sum() / power[(f >= 100) & (f < 1000)].sum())


def test_swarm_is_rougher_than_normal_in_every_hive() -> None:
    """Within each colony the swarm recording modulates more (frame-level spread) than the normal one."""
    for index in range(1, 6):
        hs = hive_seed(seed=3, index=index)
        normal = render_recording(
            hive_seed=hs, label="normal", seconds=4.0, sample_rate=8000, seed=7, hour=12.0
        )
        swarm = render_recording(
            hive_seed=hs, label="swarm", seconds=4.0, sample_rate=8000, seed=7, hour=12.0
        )
        assert np.std(_frame_db(swarm, 8000)) > 1.3 * np.std(_frame_db(normal, 8000)), index


def test_piping_has_pulses_near_400_to_500_hz() -> None:
    hs = hive_seed(seed=1, index=2)
    queen = hive_profile(hive_seed=hs).queen_hz
    assert 400 <= queen <= 500
    piping = render_recording(hive_seed=hs, label="piping", seconds=8.0, sample_rate=8000, seed=3, hour=12.0)
    normal = render_recording(hive_seed=hs, label="normal", seconds=8.0, sample_rate=8000, seed=3, hour=12.0)
    lo, hi = 0.9 * queen, 1.05 * queen
    assert _band_share(piping, 8000, lo, hi) > 2 * _band_share(normal, 8000, lo, hi)


def test_timeline_moves_smoothly_from_normal_to_swarm() -> None:
    rate = 8000
    audio = render_timeline(
        hive_seed=9,
        segments=[("normal", 40.0), ("swarm", 40.0)],
        sample_rate=rate,
        seed=1,
        transition_seconds=20.0,
    )
    assert audio.shape == (80 * rate,) and audio.dtype == np.float32 and np.max(np.abs(audio)) < 1.0
    spread = [np.std(_frame_db(audio[s * rate : (s + 5) * rate], rate)) for s in range(0, 80, 5)]
    assert np.mean(spread[-4:]) > 1.5 * np.mean(spread[:4])  # rougher at the end than at the start
    levels = np.array([level_dbfs(audio=audio[s * rate : (s + 1) * rate]) for s in range(80)])
    assert np.max(np.abs(np.diff(levels))) < 6.0  # no jump at the boundary: a gradual change


def test_long_timelines_are_rendered_in_blocks_without_seams() -> None:
    rate = 4000
    seconds = synth.BLOCK_SECONDS * 2 + 10
    audio = render_timeline(
        hive_seed=1, segments=[("normal", seconds)], sample_rate=rate, seed=2, background=False
    )
    assert audio.shape == (round(seconds * rate),)
    boundary = round(synth.BLOCK_SECONDS * rate)
    step = rate // 10
    near = [level_dbfs(audio=audio[i : i + step]) for i in range(boundary - rate, boundary + rate, step)]
    assert np.max(np.abs(np.diff(near))) < 4.0, near  # no click, dip or jump where two blocks meet
    assert np.all(np.isfinite(audio))


def test_timeline_rejects_bad_segments() -> None:
    with pytest.raises(ValueError, match="unknown state"):
        render_timeline(hive_seed=1, segments=[("dancing", 5.0)], sample_rate=8000, seed=0)
    with pytest.raises(ValueError, match="at least one"):
        render_timeline(hive_seed=1, segments=[], sample_rate=8000, seed=0)


# -- the dataset on disk ----------------------------------------------------------------------------------
def test_generate_dataset_writes_wavs_manifest_and_readme(tmp_path: Path) -> None:
    from beeaudio.desktop.datasets import discover

    config = SynthConfig(
        hives=2,
        recordings_per_class=2,
        seconds=3.0,
        sample_rate=8000,
        classes=("normal", "swarm", "queenless", "piping"),
        seed=4,
    )
    manifest = generate_dataset(out=tmp_path, config=config, progress=False)
    assert manifest == tmp_path / "manifest.csv"
    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(synth.MANIFEST_COLUMNS)
    assert len(rows) == 2 * 4 * 2
    assert {r["synthetic"] for r in rows} == {"true"}
    row = rows[0]
    assert (
        row["path"] == "hive01/normal_1.wav"
        and row["hive"] == "hive01"
        and row["recording"] == "hive01/normal_1"
    )
    info = sf.info(tmp_path / row["path"])
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (8000, 1, "PCM_16", 24000)
    assert float(row["start_s"]) == 0.0 and float(row["end_s"]) == 3.0
    readme = (tmp_path / "README.txt").read_text()
    assert "SYNTHETIC" in readme and "not real" in readme.lower()
    recs = discover(root=tmp_path)
    assert {(r.hive, r.label) for r in recs} == {(f"hive0{h}", c) for h in (1, 2) for c in config.classes}

    # Growing the dataset leaves existing recordings bit-identical.
    bigger = generate_dataset(
        out=tmp_path / "big", config=SynthConfig(**{**config.__dict__, "hives": 3}), progress=False
    )
    a, _ = sf.read(tmp_path / "hive02" / "swarm_2.wav")
    b, _ = sf.read(bigger.parent / "hive02" / "swarm_2.wav")
    np.testing.assert_array_equal(a, b)

"""The generator's ``wide`` variation: microphone families (deterministic, in the manifest), headroom, and a
default variation left exactly as the published benchmark was measured on."""

from __future__ import annotations

import csv
import dataclasses
import hashlib
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.features import FeatureConfig
from beeaudio.core.quality import check_window
from beeaudio.desktop import synth
from beeaudio.desktop.synth import (
    FAMILY_NAMES,
    SynthConfig,
    generate_dataset,
    hive_profile,
    hive_seed,
    microphone_of,
    render_recording,
)
from beeaudio.desktop.synth_channel import MICROPHONE_FAMILIES, draw_channel, response_db

#: sha256 (first 16 hex digits) of two default-variation recordings as 16-bit samples, computed with the
#: generator as it was before the wide variation existed (commit ea6e4ef): the default benchmark's files
#: must not change, or every published figure would be from another generator.
DEFAULT_GOLDEN = "1e3a3adadb0eeb3d"


def _pcm16(x: np.ndarray) -> bytes:
    return np.round(np.clip(x, -1, 1) * 32767).astype(np.int16).tobytes()


def test_the_default_variation_is_the_benchmark_it_was() -> None:
    a = render_recording(hive_seed=5, label="swarm", seconds=3.0, sample_rate=8000, seed=1)
    b = render_recording(
        hive_seed=hive_seed(seed=1, index=3), label="normal", seconds=3.0, sample_rate=16000, seed=2, hour=3.0
    )
    assert hashlib.sha256(_pcm16(a) + _pcm16(b)).hexdigest()[:16] == DEFAULT_GOLDEN
    assert hive_profile(hive_seed=5).channel is None and hive_profile(hive_seed=5).microphone == ""
    assert SynthConfig().variation == "default"
    with pytest.raises(ValueError, match="variation"):
        SynthConfig(variation="wild")


def test_families_are_dealt_out_and_deterministic() -> None:
    assert [microphone_of(index=i, variation="wide") for i in range(1, 8)] == [*FAMILY_NAMES, FAMILY_NAMES[0]]
    assert microphone_of(index=3, variation="default") is None
    seed = hive_seed(seed=1, index=2)
    a = hive_profile(hive_seed=seed, variation="wide", microphone="piezo")
    b = hive_profile(hive_seed=seed, variation="wide", microphone="piezo")
    assert a == b and a.microphone == "piezo" and a.channel is not None
    other = hive_profile(hive_seed=seed, variation="wide", microphone="mems")
    assert other.channel != a.channel and other.f0 == a.f0  # the same colony through another microphone
    x = render_recording(
        hive_seed=seed,
        label="normal",
        seconds=2.0,
        sample_rate=8000,
        seed=3,
        variation="wide",
        microphone="usb",
    )
    y = render_recording(
        hive_seed=seed,
        label="normal",
        seconds=2.0,
        sample_rate=8000,
        seed=3,
        variation="wide",
        microphone="usb",
    )
    np.testing.assert_array_equal(x, y)
    with pytest.raises(ValueError, match="unknown microphone family"):
        draw_channel(rng=np.random.default_rng(0), family="ribbon")


def test_the_families_sound_different_in_the_band() -> None:
    """Families differ by more than units of one family: their mean responses over 100-1000 Hz."""
    f = np.geomspace(100.0, 1000.0, 24)
    shapes = {}
    for name in MICROPHONE_FAMILIES:
        units = [
            response_db(channel=draw_channel(rng=np.random.default_rng(s), family=name), freqs=f)
            for s in range(8)
        ]
        curves = np.array([u - u.mean() for u in units])
        shapes[name] = (curves.mean(axis=0), curves.std(axis=0).mean())
    within = max(spread for _, spread in shapes.values())
    between = [np.abs(shapes[a][0] - shapes[b][0]).mean() for a in shapes for b in shapes if a < b]
    assert min(between) > 1.0  # dB on average over the band, for every pair of families
    assert np.median(between) > within  # a typical pair differs more than the units of any one family


def test_wide_dataset_records_the_microphone_and_leaves_headroom(tmp_path: Path) -> None:
    config = SynthConfig(
        hives=7, recordings_per_class=1, seconds=4.0, sample_rate=8000, seed=2, variation="wide"
    )
    manifest = generate_dataset(out=tmp_path, config=config, progress=False)
    with manifest.open() as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == list(synth.MANIFEST_COLUMNS) and "microphone" in rows[0]
    by_hive = {r["hive"]: r["microphone"] for r in rows}
    assert by_hive == {f"hive{i:02d}": microphone_of(index=i, variation="wide") for i in range(1, 8)}
    assert "variation='wide'" in (tmp_path / "README.txt").read_text()
    # Every recording is clear of the signal check: no clipping, no silence (recorders set with headroom).
    import soundfile as sf

    fc = FeatureConfig()
    for row in rows:
        audio, rate = sf.read(tmp_path / row["path"], dtype="float32")
        assert np.max(np.abs(audio)) < 0.99, row
        for start in range(0, len(audio) - fc.window_samples + 1, fc.hop_samples):
            assert check_window(samples=audio[start : start + fc.window_samples], sample_rate=rate).ok, row
    default = generate_dataset(
        out=tmp_path / "d", config=dataclasses.replace(config, variation="default", hives=2), progress=False
    )
    with default.open() as handle:
        assert [r["microphone"] for r in csv.DictReader(handle)] == [
            "hive01-mic",
            "hive01-mic",
            "hive02-mic",
            "hive02-mic",
        ]

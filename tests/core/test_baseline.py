"""The hive baseline: what it holds, what relative features are, its file, and the manifest section."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.baseline import (
    CMN,
    FEATURE_MEAN,
    BaselineError,
    HiveBaseline,
    NormalizationSpec,
    baseline_path,
    fit_baseline,
    load_baseline,
    relative_features,
    remove_baseline,
    save_baseline,
)
from beeaudio.core.bundle import BundleError, BundleManifest
from beeaudio.core.features import FeatureConfig, window_features
from tests.fixtures.audio import hive_like

CONFIG = FeatureConfig()


def features_of(audio: np.ndarray, config: FeatureConfig = CONFIG) -> np.ndarray:
    return window_features(audio=audio.astype(np.float32), config=config)


def filtered(audio: np.ndarray, *, gain_db: float, tilt_db_per_octave: float, rate: int) -> np.ndarray:
    """``audio`` through a fixed linear filter: a gain and an EQ tilt (a different microphone)."""
    spectrum = np.fft.rfft(audio)
    f = np.maximum(np.fft.rfftfreq(audio.size, 1.0 / rate), 1.0)
    spectrum *= 10 ** ((gain_db + tilt_db_per_octave * np.log2(f / 400.0)) / 20)
    return np.fft.irfft(spectrum, audio.size)


def test_baseline_holds_the_mean_and_deviation_of_the_windows() -> None:
    x = features_of(hive_like(8000, 12.0, seed=1))
    b = fit_baseline(features=x, config=CONFIG, hive_id="h1")
    assert b.windows == len(x) and b.fingerprint == CONFIG.fingerprint() and b.hive_id == "h1"
    np.testing.assert_allclose(b.mean, x.astype(np.float64).mean(axis=0))
    np.testing.assert_allclose(b.std, x.astype(np.float64).std(axis=0))
    np.testing.assert_allclose(b.cepstral_mean, x[:, : CONFIG.n_mfcc].astype(np.float64).mean(axis=0))
    with pytest.raises(BaselineError, match="no calibration windows"):
        fit_baseline(features=x[:0], config=CONFIG)


def test_cmn_moves_only_the_static_cepstral_means() -> None:
    x = features_of(hive_like(8000, 12.0, seed=2))
    b = fit_baseline(features=x, config=CONFIG)
    r = relative_features(features=x, baseline=b, kind=CMN)
    n = CONFIG.n_mfcc
    np.testing.assert_allclose(r[:, :n].mean(axis=0), 0.0, atol=1e-3)
    np.testing.assert_array_equal(r[:, n:], x[:, n:])  # deltas and deviations as they were
    everything = relative_features(features=x, baseline=b, kind=FEATURE_MEAN)
    np.testing.assert_allclose(everything.mean(axis=0), 0.0, atol=1e-3)
    with pytest.raises(BaselineError, match="unknown"):
        relative_features(features=x, baseline=b, kind="cmvn/9")


def test_cmn_removes_a_microphone_a_gain_and_a_tilt() -> None:
    """The point of it: the same colony through two microphones gives (nearly) the same relative features."""
    rate = 8000
    colony = hive_like(rate, 30.0, seed=3)
    other_mic = filtered(colony, gain_db=-14.0, tilt_db_per_octave=4.0, rate=rate)
    calibration, test = slice(0, 15 * rate), slice(15 * rate, 30 * rate)
    a = features_of(colony[test])
    b = features_of(other_mic[test])
    rel_a = relative_features(
        features=a, baseline=fit_baseline(features=features_of(colony[calibration]), config=CONFIG)
    )
    rel_b = relative_features(
        features=b, baseline=fit_baseline(features=features_of(other_mic[calibration]), config=CONFIG)
    )
    n = CONFIG.n_mfcc
    raw_gap = np.abs(a[:, :n] - b[:, :n]).mean()
    relative_gap = np.abs(rel_a[:, :n] - rel_b[:, :n]).mean()
    assert raw_gap > 5.0 and raw_gap > 10 * np.abs(rel_a[:, :n]).mean()  # mics differ more than windows
    assert relative_gap < 0.01 * raw_gap


def test_frames_features_are_made_relative_frame_by_frame() -> None:
    config = FeatureConfig(representation="frames")
    x = features_of(hive_like(8000, 8.0, seed=4), config)
    b = fit_baseline(features=x, config=config)
    assert len(b.mean) == 2 * config.features_per_frame
    r = relative_features(features=x, baseline=b, kind=CMN)
    np.testing.assert_allclose(r[..., : config.n_mfcc].mean(axis=(0, 1)), 0.0, atol=1e-3)
    np.testing.assert_array_equal(r[..., config.n_mfcc :], x[..., config.n_mfcc :])


def test_the_file_survives_a_restart_keyed_by_the_feature_config(tmp_path: Path) -> None:
    x = features_of(hive_like(8000, 10.0, seed=5))
    b = fit_baseline(features=x, config=CONFIG, hive_id="hive-1", sources=("a.wav",), skipped={"clipped": 2})
    path = save_baseline(state_dir=tmp_path, baseline=b)
    assert path == baseline_path(state_dir=tmp_path, config=CONFIG) and CONFIG.fingerprint() in path.name
    again = load_baseline(state_dir=tmp_path, config=CONFIG)
    assert again == b  # exactly: the floats read back as they were written
    other = FeatureConfig(fmax=900.0)
    assert load_baseline(state_dir=tmp_path, config=other) is None
    assert remove_baseline(state_dir=tmp_path, config=CONFIG) and not path.exists()
    assert not remove_baseline(state_dir=tmp_path, config=CONFIG)


def test_a_damaged_or_foreign_file_is_refused_with_a_reason(tmp_path: Path) -> None:
    x = features_of(hive_like(8000, 6.0, seed=6))
    path = save_baseline(state_dir=tmp_path, baseline=fit_baseline(features=x, config=CONFIG))
    data = json.loads(path.read_text())
    for change, message in (
        ({"schema": "beeaudio.baseline/9"}, "unknown baseline schema"),
        ({"feature_fingerprint": "0" * 16}, "does not match"),
        ({"mean": data["mean"][:-1]}, "means and deviations"),
        ({"windows": "many"}, "'windows' must be an integer"),
        ({"mean": [float("nan")] * len(data["mean"])}, "finite"),
    ):
        path.write_text(json.dumps({**data, **change}))
        with pytest.raises(BaselineError, match=message):
            load_baseline(state_dir=tmp_path, config=CONFIG)
    path.write_text("{not json")
    with pytest.raises(BaselineError, match="invalid JSON"):
        load_baseline(state_dir=tmp_path, config=CONFIG)


def test_normalization_section_is_read_strictly() -> None:
    spec = NormalizationSpec(kind=CMN, info={"train_hives": 9})
    assert NormalizationSpec.from_json(spec.to_json()) == spec
    for change, message in (
        ({"kind": "cmvn/7"}, "upgrade beeaudio"),
        ({"baseline": "fleet"}, "must be 'hive'"),
        ({"min_windows": 0}, "positive integer"),
        ({"calibration_label": ""}, "label name"),
    ):
        with pytest.raises(BaselineError, match=message):
            NormalizationSpec.from_json({**spec.to_json(), **change})
    with pytest.raises(BaselineError, match="lacks"):
        NormalizationSpec.from_json({"kind": CMN})


def _manifest_json(**changes: object) -> dict:
    base = {
        "format_version": 1,
        "model_name": "m",
        "model_version": "1",
        "labels": ["normal", "swarm"],
        "swarm_label": "swarm",
        "feature_config": CONFIG.to_dict(),
        "input_shape": [1, 52],
        "input_dtype": "float32",
        "output_shape": [1, 2],
        "output_dtype": "float32",
        "quantization": "float32",
        "model_sha256": "0" * 64,
    }
    return {**base, **changes}


def test_a_baseline_model_is_format_2_and_older_manifests_are_unaffected() -> None:
    section = NormalizationSpec().to_json()
    assert BundleManifest.from_json(_manifest_json()).normalization is None  # an older bundle
    m = BundleManifest.from_json(_manifest_json(format_version=2, normalization=section))
    assert m.normalization is not None and m.normalization.kind == CMN
    assert BundleManifest.from_json(m.to_json()) == m
    with pytest.raises(BundleError, match="format 2"):
        BundleManifest.from_json(_manifest_json(normalization=section))
    with pytest.raises(BundleError, match="upgrade beeaudio"):
        BundleManifest.from_json(_manifest_json(format_version=2, normalization={**section, "kind": "x/1"}))
    with pytest.raises(BundleError, match="calibration_label"):
        BundleManifest.from_json(
            _manifest_json(format_version=2, normalization={**section, "calibration_label": "calm"})
        )


def test_hive_baseline_refuses_inconsistent_values() -> None:
    with pytest.raises(BaselineError, match="means and deviations"):
        HiveBaseline(feature_config=CONFIG, mean=(0.0,), std=(1.0,), windows=3)
    with pytest.raises(BaselineError, match="at least one window"):
        HiveBaseline(feature_config=CONFIG, mean=(0.0,) * 52, std=(1.0,) * 52, windows=0)

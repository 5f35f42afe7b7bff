"""Fitting the novelty detector, and the issue's targets: held-out synthetic hives are rarely flagged, clearly
non-hive audio almost always; the trained run and its bundle carry the detector, chosen without the test
hives; a run from before detectors exports without one."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core import audio
from beeaudio.core.features import FeatureConfig, window_features
from beeaudio.desktop.training.novelty_fit import (
    NOVELTY_ARRAYS_FILE,
    NOVELTY_INFO_FILE,
    NoveltyFitConfig,
    fit_detector,
    fit_view,
    flagged_share,
    load_fit,
)
from tests.fixtures.signals import KINDS, non_hive_clips

CONFIG = FeatureConfig()
RATE = CONFIG.sample_rate


def blobs(*, hives: int, per_hive: int, seed: int, shift: float = 0.0) -> tuple[np.ndarray, ...]:
    """Random "stats" windows: per hive a Gaussian around a hive offset, two classes apart."""
    rng = np.random.default_rng(seed)
    d = CONFIG.feature_shape[0]
    base = rng.standard_normal(d) * 3
    features, labels, names = [], [], []
    for h in range(hives):
        offset = base + rng.standard_normal(d) * 0.3 + shift
        for c in (0, 1):
            features.append(offset + c * 1.5 + rng.standard_normal((per_hive, d)))
            labels += [c] * per_hive
            names += [f"hive{h}"] * per_hive
    return np.concatenate(features).astype(np.float32), np.array(labels), np.array(names)


# -- fitting (no model needed) -----------------------------------------------------------------------------
def test_view_distances_are_sklearns_mahalanobis_without_shrinkage() -> None:
    from sklearn.covariance import EmpiricalCovariance

    x, y, _ = blobs(hives=3, per_hive=40, seed=1)
    view = fit_view(x=x, labels=y, n_classes=2, shrinkage=0.0)
    z = (x.astype(np.float64) - view.mean) / view.scale
    residuals = z - view.class_means[y]
    reference = EmpiricalCovariance(assume_centered=True).fit(residuals)
    probe = z[:25] + 0.7
    expected = np.sqrt(np.min([reference.mahalanobis(probe - mu) for mu in view.class_means], axis=0))
    # EmpiricalCovariance divides by n, the fit by n - classes: the same up to that factor.
    np.testing.assert_allclose(
        view.distance(x[:25] + 0.7 * view.scale), expected * np.sqrt(238 / 240), rtol=1e-6
    )


def test_threshold_comes_from_held_out_hives_and_holds_on_new_ones() -> None:
    x, y, h = blobs(hives=8, per_hive=60, seed=2)
    fit = fit_detector(features=x, labels=y, hives=h, config=CONFIG, n_classes=2)
    rule = fit.info["threshold_rule"]
    assert rule["folds"] == 8 and rule["windows"] == len(y) and rule["method"].startswith("held-out")
    assert rule["flagged"] == pytest.approx(0.005, abs=0.003)  # the 99.5th percentile of held-out scores
    assert fit.info["fitted_on"] == {"windows": len(y), "hives": 8, "class_windows": [480, 480]}
    assert sorted(set(fit.heldout_hives.tolist())) == sorted(set(h.tolist()))
    new, _, _ = blobs(hives=8, per_hive=60, seed=2)  # the same hives again: familiar
    assert flagged_share(detector=fit.detector, features=new) <= 0.02
    far, _, _ = blobs(hives=2, per_hive=30, seed=2, shift=6.0)
    assert flagged_share(detector=fit.detector, features=far) == 1.0


def test_one_training_hive_falls_back_to_its_own_windows(caplog: pytest.LogCaptureFixture) -> None:
    x, y, h = blobs(hives=1, per_hive=80, seed=3)
    with caplog.at_level(logging.WARNING):
        fit = fit_detector(features=x, labels=y, hives=h, config=CONFIG, n_classes=2)
    assert fit.info["threshold_rule"]["method"].startswith("in-sample") and "one training hive" in caplog.text


def test_fit_config_refuses_nonsense() -> None:
    for bad in ({"shrinkage": 2.0}, {"threshold_quantile": 0.1}, {"margin": 0.0}, {"max_folds": 1}):
        with pytest.raises(ValueError):
            NoveltyFitConfig(**bad)


# -- the targets on synthetic hives ----------------------------------------------------------------
@pytest.fixture(scope="module")
def eight_hives(tmp_path_factory: pytest.TempPathFactory):
    """Windows of 8 synthetic hives (2 × 2 recordings of 10 s each): 6 to fit on, 2 held out. The tiny
    training fixture's 4 training hives are too few to span hive-to-hive variation (on them pink noise is
    flagged only about a third of the time), and the detector needs no model, so this fits it alone."""
    from beeaudio.desktop import datasets
    from beeaudio.desktop.synth import SynthConfig, generate_dataset

    out = tmp_path_factory.mktemp("eight-hives")
    generate_dataset(out=out, config=SynthConfig(hives=8, recordings_per_class=2, seconds=10.0, seed=11),
                     progress=False)  # fmt: skip
    windows = datasets.build_windows(recordings=datasets.discover(root=out), config=CONFIG, progress=False)
    hives = np.asarray(windows.hives).astype(str)
    held = np.isin(hives, ["hive07", "hive08"])
    fit = fit_detector(
        features=windows.features[~held], labels=windows.labels[~held], hives=hives[~held], config=CONFIG,
        n_classes=len(windows.label_names),
    )  # fmt: skip
    return fit.detector, windows.features[held]


@pytest.mark.slow
def test_held_out_hives_are_rarely_flagged(eight_hives) -> None:
    detector, held_out = eight_hives
    assert len(held_out) >= 60
    assert flagged_share(detector=detector, features=held_out) <= 0.02


@pytest.mark.slow
def test_non_hive_audio_is_flagged(eight_hives, real_data_dir: Path) -> None:
    detector, _ = eight_hives
    windows: dict[str, list[np.ndarray]] = {kind: [] for kind in KINDS}
    for clip in non_hive_clips(per_kind=4, seconds=6.0, seed=5):
        resampled = audio.resample(clip.audio, orig_rate=clip.sample_rate, target_rate=RATE)
        windows[clip.kind].append(window_features(audio=resampled, config=CONFIG))
    buzz = real_data_dir / "buzzdetect" / "testbuzz.mp3"
    windows["flight_buzz_mp3"] = [
        window_features(audio=w, config=CONFIG) for _, w in audio.iter_windows(buzz, config=CONFIG)
    ]
    shares = {
        kind: flagged_share(detector=detector, features=np.concatenate(found))
        for kind, found in windows.items()
    }
    assert min(shares.values()) >= 0.95, shares


# -- the trained run and its bundle ------------------------------------------------------------------------
def test_the_run_keeps_a_detector_chosen_without_the_test_hives(tiny_run: Path) -> None:
    split = json.loads((tiny_run / "split.json").read_text())
    info = json.loads((tiny_run / NOVELTY_INFO_FILE).read_text())
    with np.load(tiny_run / NOVELTY_ARRAYS_FILE) as npz:
        scored_hives = set(npz["heldout__hives"].tolist())
    assert scored_hives == set(split["train_hives"]) and not scored_hives & set(split["test_hives"])
    assert info["fitted_on"]["hives"] == len(split["train_hives"])
    metrics = json.loads((tiny_run / "metrics.json").read_text())
    assert metrics["novelty"]["threshold"] == info["threshold"]
    assert load_fit(run=tiny_run, config=CONFIG, n_classes=2) is not None


def test_the_bundle_records_the_share_of_test_windows_it_flags(tiny_run: Path, tiny_bundle: Path) -> None:
    from beeaudio.core.bundle import read_bundle

    bundle = read_bundle(tiny_bundle)
    spec = bundle.manifest.novelty
    assert bundle.novelty is not None and spec is not None
    with np.load(tiny_run / "heldout.npz") as held:
        features, hives = held["features"], sorted(set(held["hives"].tolist()))
    assert spec.info["heldout_windows"] == len(features) and spec.info["heldout_hives"] == hives
    assert spec.info["heldout_flagged"] == pytest.approx(
        flagged_share(detector=bundle.novelty, features=features)
    )
    assert spec.info["heldout_flagged"] <= 0.1  # tiny run: ~56 windows of two hives
    assert spec.info["threshold_rule"]["folds"] >= 2


def test_the_trained_bundle_flags_noise_and_silence(tiny_bundle: Path, tmp_path: Path) -> None:
    from beeaudio.core.inference import Classifier
    from tests.fixtures.signals import render

    classifier = Classifier.load(tiny_bundle)
    for kind in ("white_noise", "tones", "speech_like"):
        clip = render(kind=kind, seconds=6.0, level_dbfs=-30.0, seed=8)
        path = audio.write_wav(tmp_path / f"{kind}.wav", audio=clip.audio, sample_rate=clip.sample_rate)
        assert classifier.classify_file(path).label == "unfamiliar", kind
    silent = audio.write_wav(
        tmp_path / "silent.wav", audio=np.zeros(6 * 16000, np.float32), sample_rate=16000
    )
    assert classifier.classify_file(silent).label == "no_signal"


def test_a_run_from_before_detectors_exports_without_one(
    tiny_run: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from beeaudio.core.bundle import read_bundle
    from beeaudio.desktop.training.export import export_bundle
    from tests.fixtures.bundles import TINY_MIN_AGREEMENT

    old_run = tmp_path / "old-run"
    shutil.copytree(tiny_run, old_run)
    (old_run / NOVELTY_ARRAYS_FILE).unlink()
    (old_run / NOVELTY_INFO_FILE).unlink()
    with caplog.at_level(logging.WARNING):
        path = export_bundle(
            run=old_run, out=tmp_path / "old.beemodel", quantize="float32", min_agreement=TINY_MIN_AGREEMENT
        )
    assert "has no novelty detector" in caplog.text
    bundle = read_bundle(path)
    assert bundle.novelty is None and bundle.manifest.novelty is None
    assert (
        json.loads((old_run / "metrics.json").read_text())["export"]["float32"]["novelty_threshold"] is None
    )

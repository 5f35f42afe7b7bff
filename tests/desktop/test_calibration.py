"""Per-hive calibration on the desktop: training's baselines, `beeaudio train --calibration`, its bundle on
a device, and `beeaudio experiment calibration` (whose report cells are recomputed from the data)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.baseline import fit_baseline, relative_features
from beeaudio.core.features import FeatureConfig
from beeaudio.desktop import calibration, datasets
from beeaudio.desktop.experiments.calibration_report import SUMMARY_HEADING
from beeaudio.desktop.experiments.report import parse_markdown_table
from beeaudio.desktop.synth import SynthConfig, generate_dataset

CONFIG = FeatureConfig()


@pytest.fixture(scope="module")
def wide_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 hives (two per microphone family) × 2 classes × 2 recordings × 6 s of the wide variation."""
    out = tmp_path_factory.mktemp("wide")
    config = SynthConfig(
        hives=12, recordings_per_class=2, seconds=6.0, sample_rate=8000, seed=5, variation="wide"
    )
    generate_dataset(out=out, config=config, progress=False)
    return out


@pytest.fixture(scope="module")
def wide_windows(wide_dataset: Path):
    return datasets.build_windows(
        recordings=datasets.discover(root=wide_dataset), config=CONFIG, progress=False
    )


def test_calibrate_split_uses_each_hives_normal_and_leaves_the_test_calibration_out(wide_windows) -> None:
    hives = wide_windows.hives.astype(str)
    test_hives = ["hive01", "hive02"]
    is_test = np.isin(hives, test_hives)
    train, test = wide_windows.subset(np.flatnonzero(~is_test)), wide_windows.subset(np.flatnonzero(is_test))
    split = calibration.calibrate_split(train=train, test=test, config=CONFIG, calibration_label="normal")
    assert split.calibration_recordings == ["hive01/normal_1", "hive02/normal_1"]
    assert not set(split.test.recordings.astype(str)) & set(split.calibration_recordings)
    assert len(split.test) == len(test) - sum(np.isin(test.recordings, split.calibration_recordings))
    # A training hive's baseline: the mean cepstrum of all its normal windows, by plain numpy.
    normal = (train.hives == "hive05") & (train.labels == train.label_names.index("normal"))
    expected_mean = train.features[normal][:, : CONFIG.n_mfcc].astype(np.float64).mean(axis=0)
    np.testing.assert_allclose(split.train_baselines["hive05"].cepstral_mean, expected_mean)
    rows = split.train.hives == "hive05"
    np.testing.assert_allclose(
        split.train.features[rows][:, : CONFIG.n_mfcc],
        train.features[train.hives == "hive05"][:, : CONFIG.n_mfcc] - expected_mean,
        atol=1e-4,
    )
    # A test hive's: only its calibration recording.
    cal = test.recordings == "hive01/normal_1"
    np.testing.assert_allclose(
        split.test_baselines["hive01"].mean, fit_baseline(features=test.features[cal], config=CONFIG).mean
    )
    with pytest.raises(ValueError, match="calibration label"):
        calibration.calibrate_split(train=train, test=test, config=CONFIG, calibration_label="calm")


def test_read_microphones(wide_dataset: Path, tmp_path: Path) -> None:
    mics = calibration.read_microphones(data=wide_dataset)
    assert mics["hive03/swarm_2"] == "piezo" and len(set(mics.values())) == 6
    (tmp_path / "manifest.csv").write_text("path,label\nx.wav,normal\n")
    assert calibration.read_microphones(data=tmp_path) == {}


@pytest.mark.slow
def test_a_cmn_run_exports_a_format_2_bundle_the_device_runs_through_its_baseline(
    wide_dataset, tmp_path
) -> None:
    from beeaudio.core.bundle import NORMALIZED_FORMAT_VERSION, read_bundle
    from beeaudio.core.inference import Classifier
    from beeaudio.desktop.training.export import export_bundle
    from beeaudio.desktop.training.train import train_run
    from tests.fixtures.bundles import tiny_train_config

    run = tmp_path / "run"
    result = train_run(data=wide_dataset, out=run, config=tiny_train_config(calibration="cmn"))
    info = result.metrics["calibration"]
    assert info["kind"] == "cmn" and info["test_calibration_recordings"]
    bundle = export_bundle(
        run=run, out=tmp_path / "cmn.beemodel", quantize="float32", min_agreement=0.9, max_int8_drop=1.0
    )
    manifest = read_bundle(bundle).manifest
    assert manifest.format_version == NORMALIZED_FORMAT_VERSION and manifest.normalization.kind == "cmn/1"
    classifier = Classifier.load(bundle)
    assert classifier.needs_baseline and not classifier.calibrated
    # The device's path: raw windows of a test hive, its calibration recording as the baseline.
    windows = datasets.build_windows(
        recordings=datasets.discover(root=wide_dataset), config=CONFIG, progress=False
    )
    hive = result.metrics["test_hives"][0]
    cal_rec = next(r for r in info["test_calibration_recordings"] if r.startswith(hive))
    baseline = fit_baseline(features=windows.features[windows.recordings == cal_rec], config=CONFIG)
    classifier.set_baseline(baseline)
    later = (windows.hives == hive) & (windows.recordings != cal_rec)
    device = classifier.score(windows.features[later]).probabilities
    with np.load(run / "heldout.npz") as held:  # training's relative features of the same windows
        mine = held["hives"] == hive
        np.testing.assert_allclose(
            held["features"][mine],
            relative_features(features=windows.features[later], baseline=baseline),
            atol=1e-4,
        )
        training = classifier.predict(held["features"][mine])
    np.testing.assert_allclose(device, training, atol=1e-4)


@pytest.mark.slow
def test_the_experiment_report_comes_from_the_run(wide_dataset: Path, tmp_path: Path) -> None:
    from beeaudio.cli import main
    from beeaudio.desktop.training.train import TrainConfig, fit_model

    out = tmp_path / "report"
    code = main(
        ["experiment", "calibration", "--data", str(wide_dataset), "--out", str(out), "--seeds", "0,1",
         "--test-families", "2", "--conditions", "none,cmn", "--quick", "--no-novelty", "--no-cache"]
    )  # fmt: skip
    assert code == 0
    results = json.loads((out / "results.json").read_text())
    assert results["data"]["synthetic"] and (out / "calibration.png").stat().st_size > 1000
    report = (out / "report.md").read_text()
    assert "SYNTHETIC" in report and results["provenance"]["command"] in report
    table = parse_markdown_table(text=report, heading=SUMMARY_HEADING)
    assert len(table) == 4 and len(results["rows"]) == 2 * 2 * 2
    # A summary cell is the mean ± sd of its rows.
    cell = next(r for r in table if r["split"] == "unseen-microphones" and r["calibration"].startswith("cmn"))
    rows = [r for r in results["rows"] if r["split"] == "unseen-microphones" and r["condition"] == "cmn"]
    values = np.array([r["balanced_accuracy"] for r in rows])
    assert cell["balanced %"] == f"{100 * values.mean():.2f} ± {100 * values.std(ddof=1):.2f}"

    # One row recomputed from the audio: no cache, the split read from the manifest with the csv module,
    # the baselines by plain numpy, the same model configuration.
    row = next(
        r
        for r in results["rows"]
        if r["seed"] == 1 and r["split"] == "unseen-microphones" and r["condition"] == "cmn"
    )
    with (wide_dataset / "manifest.csv").open() as handle:
        family = {r["hive"]: r["microphone"] for r in csv.DictReader(handle)}
    assert row["test_hives"] == sorted(h for h, f in family.items() if f in row["test_families"])
    windows = datasets.build_windows(
        recordings=datasets.discover(root=wide_dataset), config=CONFIG, progress=False
    )
    normal = windows.labels == windows.label_names.index("normal")
    test = np.isin(windows.hives, row["test_hives"])
    calibrating = test & normal & np.char.endswith(windows.recordings.astype(str), "normal_1")
    x = windows.features.astype(np.float64).copy()
    for hive in sorted(set(windows.hives.tolist())):
        mine = windows.hives == hive
        source = mine & (calibrating if hive in row["test_hives"] else normal)
        x[mine, : CONFIG.n_mfcc] -= (
            windows.features[source][:, : CONFIG.n_mfcc].astype(np.float64).mean(axis=0)
        )
    train_cfg = TrainConfig(**{**results["train_config"], "seed": 1})
    fit = fit_model(
        features=x[~test].astype(np.float32), labels=windows.labels[~test], hives=windows.hives[~test],
        n_classes=2, config=train_cfg,
    )  # fmt: skip
    scored = test & ~calibrating
    predicted = fit.model.predict(x[scored].astype(np.float32), verbose=0).argmax(axis=1)
    y = windows.labels[scored]
    balanced = np.mean([np.mean(predicted[y == c] == c) for c in (0, 1)])
    assert row["test_windows"] == int(scored.sum())
    assert abs(balanced - row["balanced_accuracy"]) < 0.02

"""The experiments: ``beeaudio experiment codec|sweep --quick`` end to end through the CLI.

The checks are about where the numbers come from: every expected row is there, report.md says what
results.json says, one cell is recomputed independently from the data (with a real MP3 round trip and no
feature cache), the sweep's int8 accuracy is recomputed from the written bundle, and another seed gives
other numbers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from beeaudio.cli import main
from beeaudio.desktop.experiments.report import (
    CODEC_PLOT,
    CODEC_TABLE_HEADING,
    SWEEP_PLOT,
    SWEEP_TABLE_HEADING,
    parse_markdown_table,
)

pytestmark = pytest.mark.slow

BITRATES = (16, 32)


def _run_codec(data: Path, out: Path, cache: Path, *extra: str) -> dict:
    argv = ["-q", "experiment", "codec", "--data", str(data), "--out", str(out), "--cache", str(cache)]
    argv += ["--bitrates", ",".join(map(str, BITRATES)), "--quick", *extra]
    assert main(argv) == 0
    return json.loads((out / "results.json").read_text())


@pytest.fixture(scope="module")
def codec_run(tiny_dataset: Path, tiny_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("codec")
    _run_codec(tiny_dataset, out, tiny_cache_dir, "--seed", "0")
    return out


@pytest.fixture(scope="module")
def sweep_run(tiny_dataset: Path, tiny_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sweep")
    argv = ["-q", "experiment", "sweep", "--data", str(tiny_dataset), "--out", str(out)]
    argv += ["--cache", str(tiny_cache_dir), "--layers", "1,2", "--units", "16", "--quick", "--seed", "0"]
    assert main(argv) == 0
    return out


def test_codec_report_has_one_row_per_condition_and_bitrate(codec_run: Path) -> None:
    results = json.loads((codec_run / "results.json").read_text())
    tests = {"wav", *(f"mp3-{k}" for k in BITRATES)}
    grouped = {(r["model"], r["train"]) for r in results["rows"] if r["split"] == "grouped"}
    expected = {("dnn", "wav"), ("dnn", "codec-aug"), *(("dnn", f"mp3-{k}") for k in BITRATES)}
    expected |= {(m, t) for m in ("gmm", "band-logreg") for t in ("wav", "codec-aug")}
    assert expected <= grouped
    for model, train in grouped:
        cells = [
            r for r in results["rows"] if (r["model"], r["train"], r["split"]) == (model, train, "grouped")
        ]
        assert sorted(r["test"] for r in cells) == sorted(tests), (model, train)
        for r in cells:
            assert 0.0 <= r["accuracy"] <= 1.0
            assert r["windows"] == results["data"]["test_windows"]
    random_rows = [r for r in results["rows"] if r["split"] == "random"]
    assert sorted(r["test"] for r in random_rows) == sorted(tests)
    assert results["data"]["synthetic"] is True
    assert not set(results["data"]["train_hives"]) & set(results["data"]["test_hives"])
    assert (codec_run / CODEC_PLOT).stat().st_size > 10_000


def test_codec_report_md_agrees_with_results_json(codec_run: Path) -> None:
    results = json.loads((codec_run / "results.json").read_text())
    text = (codec_run / "report.md").read_text()
    table = parse_markdown_table(text=text, heading=CODEC_TABLE_HEADING)
    assert len(table) == len(results["rows"])
    for md, row in zip(table, results["rows"], strict=True):
        assert (md["model"], md["train"], md["split"], md["test"]) == (
            row["model"], row["train"], row["split"], row["test"],
        )  # fmt: skip
        assert md["accuracy %"] == f"{100 * row['accuracy']:.2f}"
        assert md["windows"] == str(row["windows"])
    assert "SYNTHETIC" in text
    assert results["provenance"]["command"] in text
    assert "--seed 0" in results["provenance"]["command"]
    assert '"seed": 0' in text


def test_codec_cell_recomputed_independently(codec_run: Path, tiny_dataset: Path) -> None:
    """The GMM baseline trained on WAV and scored on MP3-16, recomputed from the audio: real MP3 round
    trip, no feature cache, the same split call."""
    from beeaudio.core.features import FeatureConfig
    from beeaudio.desktop import datasets as datasets
    from beeaudio.desktop.codec import mp3_roundtrip
    from beeaudio.desktop.experiments.baselines import fit_gmm

    results = json.loads((codec_run / "results.json").read_text())
    config = FeatureConfig.from_dict(results["feature_config"])
    recordings = datasets.discover(root=tiny_dataset)
    clean = datasets.build_windows(recordings=recordings, config=config, progress=False)
    train_idx, test_idx = datasets.grouped_split(windows=clean, test_fraction=0.25, seed=0)
    assert sorted({str(h) for h in clean.hives[test_idx]}) == results["data"]["test_hives"]

    def to_mp3(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return mp3_roundtrip(audio=audio, sample_rate=sample_rate, bitrate_kbps=16)

    coded = datasets.build_windows(
        recordings=recordings, config=config, label_names=clean.label_names, transform=to_mp3,
        transform_key="mp3-16", progress=False,
    )  # fmt: skip
    assert coded.features.shape == clean.features.shape
    assert not np.allclose(coded.features, clean.features)  # the codec really changed the audio
    gmm = fit_gmm(
        features=clean.features[train_idx], labels=clean.labels[train_idx], n_classes=2, config=config, seed=0
    )
    expected = float(np.mean(gmm.predict_proba(coded.features[test_idx]).argmax(1) == coded.labels[test_idx]))
    row = next(
        r
        for r in results["rows"]
        if (r["model"], r["train"], r["split"], r["test"]) == ("gmm", "wav", "grouped", "mp3-16")
    )
    assert row["accuracy"] == pytest.approx(expected, abs=1e-9)


def test_codec_numbers_change_with_the_seed(
    codec_run: Path, tiny_dataset: Path, tiny_cache_dir: Path, tmp_path: Path
) -> None:
    first = json.loads((codec_run / "results.json").read_text())
    second = _run_codec(
        tiny_dataset, tmp_path, tiny_cache_dir, "--seed", "5", "--no-matched", "--no-random-split"
    )
    assert second["config"]["seed"] == 5

    def fingerprint(results: dict) -> list:
        rows = [r for r in results["rows"] if r["split"] == "grouped" and r["train"] in ("wav", "codec-aug")]
        return [
            results["data"]["test_hives"],
            [(r["model"], r["train"], r["test"], r["accuracy"]) for r in rows],
        ]

    assert fingerprint(first) != fingerprint(second)


def test_sweep_report_has_one_row_per_cell_and_its_numbers_come_from_the_bundles(sweep_run: Path) -> None:
    from beeaudio.core.inference import Classifier

    results = json.loads((sweep_run / "results.json").read_text())
    rows = results["rows"]
    assert [(r["layers"], r["units"]) for r in rows] == [(1, 16), (2, 16)]
    # One more hidden 16 × 16 dense layer (weights + biases) is the whole difference in parameters.
    assert rows[1]["params"] - rows[0]["params"] == 16 * 16 + 16
    for row in rows:
        bundle = sweep_run / row["bundle"]
        assert row["bundle_kb"] == pytest.approx(bundle.stat().st_size / 1024)
        assert row["ms_per_window"] > 0
        classifier = Classifier.load(bundle, num_threads=1)
        run = sweep_run / "cells" / f"dnn-{row['layers']}x{row['units']}"
        with np.load(run / "heldout.npz") as held:
            predicted = classifier.predict(held["features"]).argmax(axis=1)
            assert row["int8_accuracy"] == pytest.approx(float(np.mean(predicted == held["labels"])))
    table = parse_markdown_table(text=(sweep_run / "report.md").read_text(), heading=SWEEP_TABLE_HEADING)
    assert [(t["layers"], t["units"], t["parameters"]) for t in table] == [
        (str(r["layers"]), str(r["units"]), str(r["params"])) for r in rows
    ]
    assert [t["accuracy %"] for t in table] == [f"{100 * r['accuracy']:.2f}" for r in rows]
    assert {b["model"] for b in results["baselines"]} == {"gmm", "band-logreg"}
    assert (sweep_run / SWEEP_PLOT).stat().st_size > 10_000


def test_band_levels_invert_the_cepstrum() -> None:
    """With all coefficients kept, the band levels are exactly the band means of the log-mel spectrum."""
    from scipy.fft import dct

    from beeaudio.core.features import FeatureConfig
    from beeaudio.desktop.experiments.baselines import N_BANDS, band_levels

    config = FeatureConfig(n_mels=24, n_mfcc=24, deltas=0)
    rng = np.random.default_rng(0)
    log_mel = rng.normal(size=(5, 24)) * 10 - 40
    features = np.concatenate([dct(log_mel, type=2, norm="ortho", axis=1), np.ones((5, 24))], axis=1)
    bands = np.array_split(np.arange(24), N_BANDS)
    expected = np.stack([log_mel[:, b].mean(axis=1) for b in bands], axis=1)
    np.testing.assert_allclose(band_levels(features=features, config=config), expected, atol=1e-9)

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
from tests.fixtures.bundles import TINY_RECORDINGS_PER_CLASS

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


# -- the front-end ablation (--band) ------------------------------------------------------------------------
ABLATION_BITRATES = (16,)
SEEDED = ("wav", "codec-aug", "codec-aug-every")


@pytest.fixture(scope="module")
def ablation_run(tiny_dataset: Path, tiny_cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ablation")
    argv = ["-q", "experiment", "codec", "--data", str(tiny_dataset), "--out", str(out), "--cache"]
    argv += [str(tiny_cache_dir), "--band", "default,fullband", "--bitrates", "16", "--repeats", "2"]
    argv += ["--no-matched", "--no-random-split", "--quick", "--seed", "0"]
    assert main(argv) == 0
    return out


def test_ablation_table_comes_from_the_seeds_of_the_run(ablation_run: Path) -> None:
    from beeaudio.desktop.experiments.report import ABLATION_TABLE_HEADING, mean_sd

    results = json.loads((ablation_run / "results.json").read_text())
    assert [b["name"] for b in results["bands"]] == ["default", "fullband"]
    assert results["bands"][1]["feature_config"]["fmax"] == 8000.0
    assert results["seeds"] == [0, 1]
    seed_rows = results["seed_rows"]
    tests = ["wav", *(f"mp3-{k}" for k in ABLATION_BITRATES)]
    keys = {(a["band"], a["train"], a["test"]) for a in results["ablation"]}
    assert keys == {(b, t, x) for b in ("default", "fullband") for t in SEEDED for x in tests}
    for a in results["ablation"]:
        values = [
            r["accuracy"]
            for r in seed_rows
            if (r["band"], r["train"], r["test"]) == (a["band"], a["train"], a["test"])
        ]
        assert [
            r["seed"]
            for r in seed_rows
            if (r["band"], r["train"], r["test"]) == (a["band"], a["train"], a["test"])
        ] == [0, 1]
        assert a["mean"] == pytest.approx(float(np.mean(values)))
        assert a["sd"] == pytest.approx(float(np.std(values, ddof=1)))
    # Seed 0 of the seed rows is the model of the one-seed tables, not another training.
    for r in (r for r in seed_rows if r["seed"] == 0):
        row = next(
            x
            for x in results["rows"]
            if (x["band"], x["model"], x["train"], x["split"], x["test"])
            == (r["band"], "dnn", r["train"], "grouped", r["test"])
        )
        assert row["accuracy"] == r["accuracy"]
    table = parse_markdown_table(
        text=(ablation_run / "report.md").read_text(), heading=ABLATION_TABLE_HEADING
    )
    assert len(table) == 2 * len(SEEDED)
    for line in table:
        for test in tests:
            a = next(
                a
                for a in results["ablation"]
                if (a["band"], a["train"], a["test"]) == (line["front end"], line["trained on"], test)
            )
            assert line[test.upper()] == mean_sd(a["mean"], a["sd"])
    assert (ablation_run / CODEC_PLOT).stat().st_size > 10_000


def test_ablation_augmentation_is_the_test_encoder_and_keeps_validation_hives_apart(
    ablation_run: Path,
) -> None:
    results = json.loads((ablation_run / "results.json").read_text())
    for band in results["bands"]:
        aug = band["augmentation"]
        n_hives = len(band["data"]["train_hives"])
        assert aug["unmatched_recordings"] == []
        assert sum(n for by_label in aug["draws"].values() for n in by_label.values()) == aug["recordings"]
        assert aug["recordings"] == n_hives * 2 * TINY_RECORDINGS_PER_CLASS  # hives × classes × recordings
        models = {m["train"]: m for m in band["models"] if m["model"] == "dnn"}
        assert models["codec-aug"]["train_windows"] == 2 * models["wav"]["train_windows"]
        v = models["codec-aug"]["validation"]
        assert set(v["hives"]) < set(band["data"]["train_hives"])
        assert v["copy_windows"] == v["clean_windows"] > 0  # one copy per validation window, validated on
        assert v["fit_copy_windows"] == models["wav"]["train_windows"] - v["clean_windows"]


def test_ablation_fullband_cells_recomputed_independently(ablation_run: Path, tiny_dataset: Path) -> None:
    """Two full-band cells recomputed from the audio, with no feature cache: the GMM trained on WAV and
    scored on MP3-16, and the DNN with codec augmentation at training seed 1 (a retrained seed) on MP3-16."""
    from beeaudio.core.features import FeatureConfig
    from beeaudio.desktop import datasets as datasets
    from beeaudio.desktop.codec import mp3_roundtrip
    from beeaudio.desktop.experiments.baselines import fit_gmm
    from beeaudio.desktop.training.train import TrainConfig, codec_transform, fit_model

    results = json.loads((ablation_run / "results.json").read_text())
    band = results["bands"][1]
    config = FeatureConfig.from_dict(band["feature_config"])
    assert config.fmax == 8000.0 and config.sample_rate == 16000
    recordings = datasets.discover(root=tiny_dataset)
    clean = datasets.build_windows(recordings=recordings, config=config, progress=False)
    train_idx, test_idx = datasets.grouped_split(windows=clean, test_fraction=0.25, seed=0)

    def to_mp3(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        return mp3_roundtrip(audio=audio, sample_rate=sample_rate, bitrate_kbps=16)

    coded = datasets.build_windows(
        recordings=recordings, config=config, label_names=clean.label_names, transform=to_mp3,
        transform_key="mp3-16", progress=False,
    )  # fmt: skip
    y_test = coded.labels[test_idx]
    gmm = fit_gmm(
        features=clean.features[train_idx], labels=clean.labels[train_idx], n_classes=2, config=config, seed=0
    )
    expected_gmm = float(np.mean(gmm.predict_proba(coded.features[test_idx]).argmax(1) == y_test))
    row = next(
        r
        for r in results["rows"]
        if (r["band"], r["model"], r["train"], r["test"]) == ("fullband", "gmm", "wav", "mp3-16")
    )
    assert row["accuracy"] == pytest.approx(expected_gmm, abs=1e-9)

    tc = TrainConfig.from_dict({**band["train_config"], "seed": 1})
    train_hives = set(band["data"]["train_hives"])
    transform, key = codec_transform(bitrates=ABLATION_BITRATES, seed=0, weighting=tc.codec_weighting)
    copies = datasets.build_windows(
        recordings=[r for r in recordings if r.hive in train_hives], config=config,
        label_names=clean.label_names, transform=transform, transform_key=key, progress=False,
    )  # fmt: skip
    fit = fit_model(
        features=np.concatenate([clean.features[train_idx], copies.features]),
        labels=np.concatenate([clean.labels[train_idx], copies.labels]),
        hives=np.concatenate([clean.hives[train_idx], copies.hives]).astype(str),
        n_classes=2,
        config=tc,
    )
    predicted = np.asarray(fit.model(coded.features[test_idx], training=False)).argmax(1)
    expected_dnn = float(np.mean(predicted == y_test))
    seed_row = next(
        r
        for r in results["seed_rows"]
        if (r["band"], r["train"], r["test"], r["seed"]) == ("fullband", "codec-aug", "mp3-16", 1)
    )
    # Same data, same seed, same kernels: the same model (one window of slack for float reduction order).
    assert seed_row["accuracy"] == pytest.approx(expected_dnn, abs=1.0 / len(y_test) + 1e-9)


def test_a_library_run_prints_a_complete_command(
    tiny_dataset: Path, tiny_cache_dir: Path, tmp_path: Path
) -> None:
    import shlex

    from beeaudio.cli import build_parser
    from beeaudio.desktop.experiments.codec import CodecConfig, run_codec

    config = CodecConfig(
        bitrates=(16,), quick=True, matched=False, baselines=False, random_split=False, bands=("fullband",)
    )
    results = run_codec(data=tiny_dataset, out=tmp_path, config=config, cache_dir=tiny_cache_dir)
    command = results["provenance"]["command"]
    assert command.startswith(f"beeaudio experiment codec --data {tiny_dataset} --out {tmp_path}")
    assert "--features fullband" in command and "--bitrates 16" in command and "--quick" in command
    assert command in (tmp_path / "report.md").read_text()
    args = build_parser().parse_args(shlex.split(command)[1:])
    assert (args.features, args.bitrates, args.no_matched, args.no_baselines) == (
        "fullband",
        (16,),
        True,
        True,
    )


def test_codec_bitrate_draw_favours_low_bitrates_and_keeps_the_uniform_key() -> None:
    """The augmentation's bitrate draw: deterministic per recording, 1/kbps-weighted by default (16, 32, 64
    kbps: 4/7, 2/7, 1/7), uniform on request with the cache key the uniform draw always had."""
    from beeaudio.desktop.training.train import TrainConfig, codec_bitrate, codec_transform

    rng = np.random.default_rng(0)
    recordings = [rng.standard_normal(8192).astype(np.float32) for _ in range(3000)]
    for weighting, expected in (("inverse", (4 / 7, 2 / 7, 1 / 7)), ("uniform", (1 / 3, 1 / 3, 1 / 3))):
        drawn = [
            codec_bitrate(audio=a, bitrates=(64, 16, 32), seed=0, weighting=weighting) for a in recordings
        ]
        shares = [drawn.count(k) / len(drawn) for k in (16, 32, 64)]
        assert shares == pytest.approx(expected, abs=0.03), weighting
    again = [codec_bitrate(audio=a, bitrates=(64, 16, 32), seed=0) for a in recordings[:50]]
    assert again == [codec_bitrate(audio=a, bitrates=(64, 16, 32), seed=0) for a in recordings[:50]]
    assert again != [codec_bitrate(audio=a, bitrates=(64, 16, 32), seed=1) for a in recordings[:50]]
    assert codec_transform(bitrates=(16, 32), seed=3, weighting="uniform")[1] == "mp3-16-32-seed3"
    assert codec_transform(bitrates=(16, 32), seed=3)[1] == "mp3-16-32-inverse-seed3"
    assert TrainConfig().codec_weighting == "inverse"
    with pytest.raises(ValueError, match="codec_weighting"):
        TrainConfig(codec_weighting="loud")
    with pytest.raises(ValueError, match="unknown codec weighting"):
        codec_transform(bitrates=(16,), seed=0, weighting="loud")

"""Fine-tuning from a run or a bundle (beeaudio.desktop.finetune, ``beeaudio train --init-from``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.features import FeatureConfig
from tests.fixtures.bundles import tiny_train_config

pytestmark = pytest.mark.slow


# -- a shifted target, in feature space ---------------------------------------------------------------------
def blobs(*, n: int, hives: int, shifted: bool, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Windows of 52 features. Base hives: the class is in feature 0 (±1.5). Shifted hives (another kind of
    microphone): feature 0 says nothing, the class is in feature 1, and feature 2 sits at +4, where no
    base hive ever was."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    x = rng.normal(0.0, 0.5, (n, 52))
    sign = np.where(y == 1, 1.5, -1.5)
    if shifted:
        x[:, 1] += sign
        x[:, 2] += 4.0
    else:
        x[:, 0] += sign
    h = np.array([f"{'t' if shifted else 'b'}{i % hives}" for i in range(n)])
    return x.astype(np.float32), y.astype(np.int64), h


def test_fine_tuning_from_a_run_improves_on_a_shifted_target() -> None:
    from beeaudio.desktop import finetune
    from beeaudio.desktop.training.train import fit_model, representative_windows

    config = tiny_train_config(epochs=30, patience=5, dropout=0.0)
    x, y, h = blobs(n=600, hives=6, shifted=False, seed=0)
    base_fit = fit_model(features=x, labels=y, hives=h, n_classes=2, config=config)
    base = finetune.Base(
        source=Path("base"), kind="run", model=base_fit.model, feature_config=FeatureConfig(),
        label_names=("normal", "swarm"), model_kind="dnn", layers=2, units=32,
        anchors=representative_windows(x, seed=0),
    )  # fmt: skip
    x_t, y_t, h_t = blobs(n=400, hives=4, shifted=True, seed=1)
    labelled = np.isin(h_t, ["t0", "t1"]) & (np.arange(len(y_t)) < 80)  # 40 windows: ~a minute and a half
    scored = ~np.isin(h_t, ["t0", "t1"])  # never a hive that was labelled
    before = np.mean(np.argmax(base.model.predict(x_t[scored], verbose=0), axis=1) == y_t[scored])
    tune = tiny_train_config(**finetune.FINE_TUNE_DEFAULTS, dropout=0.0)
    fit = finetune.fine_tune(
        base=base, features=x_t[labelled], labels=y_t[labelled], hives=h_t[labelled], config=tune
    )
    after = np.mean(np.argmax(fit.model.predict(x_t[scored], verbose=0), axis=1) == y_t[scored])
    assert before < 0.75, before
    assert after > before + 0.15, (before, after)
    # The base is a copy's starting point, not changed; the base's own hives are still known.
    assert np.mean(np.argmax(base.model.predict(x, verbose=0), axis=1) == y) > 0.95
    assert np.mean(np.argmax(fit.model.predict(x, verbose=0), axis=1) == y) > 0.9
    assert fit.epochs_run <= tune.epochs and fit.validation_hives == []


# -- train_run --init-from on a label-file dataset -------------------------------------------------------
def label_file_dataset(*, tiny_dataset: Path, out: Path, hives: list[str]) -> Path:
    """The tiny dataset's recordings of ``hives`` in the label-file layout: <hive>/<name>.wav, each with a
    label file naming its class on two spans (a beekeeper's corrected suggestions)."""
    import csv

    with (tiny_dataset / "manifest.csv").open() as handle:
        rows = [r for r in csv.DictReader(handle) if r["hive"] in hives]
    for row in rows:
        target = out / row["hive"] / Path(row["path"]).name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(tiny_dataset / row["path"], target)
        target.with_suffix(".txt").write_text(
            f"0.000000\t3.000000\t{row['label']}\n4.000000\t7.000000\t{row['label']}\n"
        )
    return out


def test_train_init_from_a_run_records_the_base_and_checks_by_hive(
    tiny_run: Path, tiny_dataset: Path, tiny_cache_dir: Path, tmp_path: Path
) -> None:
    from beeaudio.desktop import finetune
    from beeaudio.desktop.training.train import TrainConfig, train_run

    data = label_file_dataset(
        tiny_dataset=tiny_dataset, out=tmp_path / "mine", hives=["hive01", "hive02", "hive03"]
    )
    base_features = FeatureConfig.from_dict(json.loads((tiny_run / "feature_config.json").read_text()))
    kept = {
        k: v
        for k, v in tiny_train_config().to_dict().items()
        if k not in ("feature_config", "init_from", *finetune.FINE_TUNE_DEFAULTS)
    }
    config = TrainConfig(
        **kept, **finetune.FINE_TUNE_DEFAULTS, feature_config=base_features, init_from=str(tiny_run)
    )
    result = train_run(data=data, out=tmp_path / "tuned", config=config, cache_dir=tiny_cache_dir)
    m = result.metrics
    assert m["init_from"]["path"] == str(tiny_run) and m["init_from"]["kind"] == "run"
    assert m["dataset"]["fine_tuned_from"]["path"] == str(tiny_run)
    assert json.loads((tmp_path / "tuned" / "train_config.json").read_text())["init_from"] == str(tiny_run)
    assert m["split"] == "test (hive-grouped)" and m["warnings"] == []
    assert not set(m["train_hives"]) & set(m["test_hives"])
    # Exactly the labelled spans: 2 spans of 3 s = 2 windows each, per recording.
    assert m["dataset"]["windows"] == 3 * 4 * 2 * 2
    # One hive: the check is on its other recordings, and says so.
    one = label_file_dataset(tiny_dataset=tiny_dataset, out=tmp_path / "one", hives=["hive04"])
    single = train_run(data=one, out=tmp_path / "tuned-one", config=config, cache_dir=tiny_cache_dir).metrics
    assert single["split"] == finetune.ONE_HIVE_SPLIT and single["warnings"] == [finetune.ONE_HIVE_WARNING]
    assert single["train_hives"] == single["test_hives"] == ["hive04"]
    split = json.loads((tmp_path / "tuned-one" / "split.json").read_text())
    assert not set(split["train_recordings"]) & set(split["test_recordings"])


def test_init_from_refuses_other_features_architectures_and_labels(
    tiny_run: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from beeaudio.cli import main

    data = label_file_dataset(tiny_dataset=tiny_dataset, out=tmp_path / "mine", hives=["hive01", "hive02"])
    common = [
        "train",
        "--data",
        str(data),
        "--init-from",
        str(tiny_run),
        "--out",
        str(tmp_path / "o"),
        "--no-cache",
    ]
    assert main(["-q", *common, "--fmax", "900"]) == 2
    assert "fmax 900.0 (the base has 1000.0)" in capsys.readouterr().err
    assert main(["-q", *common, "--units", "64"]) == 2
    assert "--units 64: the base" in capsys.readouterr().err
    (data / "hive01" / "swarm_1.txt").write_text("0\t3\tpiping\n")
    assert main(["-q", *common]) == 2
    assert "['piping']" in capsys.readouterr().err and not (tmp_path / "o").exists()


# -- from a bundle ------------------------------------------------------------------------------------------
def test_a_float32_dnn_bundle_is_rebuilt_and_fine_tuned_and_exports(
    tiny_bundle_float32: Path, tiny_run: Path, tiny_dataset: Path, tiny_cache_dir: Path, tmp_path: Path
) -> None:
    from beeaudio.core.bundle import read_bundle
    from beeaudio.core.inference import Classifier
    from beeaudio.desktop import finetune
    from beeaudio.desktop.training.export import export_bundle
    from beeaudio.desktop.training.train import TrainConfig, train_run

    base = finetune.load_base(source=tiny_bundle_float32)
    with np.load(tiny_run / "heldout.npz") as held:
        features = held["features"]
    expected = Classifier.load(tiny_bundle_float32).predict(features)
    np.testing.assert_allclose(base.model.predict(features, verbose=0), expected, atol=1e-4)
    assert (base.kind, base.model_kind, base.layers, base.units, base.anchors) == (
        "bundle",
        "dnn",
        2,
        32,
        None,
    )
    data = label_file_dataset(
        tiny_dataset=tiny_dataset, out=tmp_path / "mine", hives=["hive01", "hive02", "hive05"]
    )
    config = TrainConfig(
        model="dnn", layers=2, units=32, **finetune.FINE_TUNE_DEFAULTS, feature_config=base.feature_config,
        init_from=str(tiny_bundle_float32), verbose=0, progress=False,
    )  # fmt: skip
    m = train_run(data=data, out=tmp_path / "tuned", config=config, cache_dir=tiny_cache_dir).metrics
    assert m["init_from"]["kind"] == "bundle" and m["init_from"]["model_sha256"]
    bundle = export_bundle(
        run=tmp_path / "tuned", out=tmp_path / "tuned.beemodel", quantize="int8",
        min_agreement=0.5, max_int8_drop=1.0,  # a few held-out windows: structure, not accuracy
    )  # fmt: skip
    # The deployed bundle names what it was fine-tuned from in its training summary.
    summary = read_bundle(bundle).manifest.training["dataset"]
    assert summary["fine_tuned_from"]["path"] == str(tiny_bundle_float32)


def test_an_int8_bundle_is_refused_with_what_to_pass_instead(
    tiny_bundle: Path, tiny_dataset: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from beeaudio.cli import main
    from beeaudio.desktop import finetune

    with pytest.raises(finetune.BaseError, match=r"int8 bundle.*run folder it was exported from.*float32"):
        finetune.load_base(source=tiny_bundle)
    data = label_file_dataset(tiny_dataset=tiny_dataset, out=tmp_path / "mine", hives=["hive01", "hive02"])
    argv = ["-q", "train", "--data", str(data), "--init-from", str(tiny_bundle), "--out", str(tmp_path / "o")]
    assert main([*argv, "--no-cache"]) == 2
    assert "--quantize float32" in capsys.readouterr().err

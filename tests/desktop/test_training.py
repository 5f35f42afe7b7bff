"""Training, export and evaluation (beeaudio.desktop.training) on the tiny synthetic dataset of
fixtures_bundle."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from beeaudio.desktop.training.evaluate import compute_metrics
from tests.fixtures.bundles import TINY_MAX_INT8_DROP, TINY_MIN_AGREEMENT

pytestmark = pytest.mark.slow

RUN_FILES = (
    "model.keras",
    "train_config.json",
    "feature_config.json",
    "split.json",
    "heldout.npz",
    "representative.npz",
    "metrics.json",
    "confusion.png",
    "training_curves.png",
)


def _metrics(run: Path) -> dict:
    return json.loads((run / "metrics.json").read_text())


def _heldout(run: Path) -> dict[str, np.ndarray]:
    with np.load(run / "heldout.npz", allow_pickle=False) as npz:
        return {key: npz[key] for key in npz.files}


# -- metrics -----------------------------------------------------------------------------------------------
def test_compute_metrics_by_hand() -> None:
    y_true = np.array([0, 0, 0, 1, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 1, 1, 1, 1, 0, 1])
    hives = np.array(["a", "a", "a", "a", "b", "b", "b", "b"])
    m = compute_metrics(y_true=y_true, y_pred=y_pred, label_names=["normal", "swarm"], hives=hives)
    assert m["confusion_matrix"] == [[2, 1], [1, 4]]
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["per_class"]["normal"] == pytest.approx(
        {"precision": 2 / 3, "recall": 2 / 3, "f1": 2 / 3, "support": 3}
    )
    assert m["per_class"]["swarm"]["precision"] == pytest.approx(4 / 5)
    assert m["per_class"]["swarm"]["recall"] == pytest.approx(4 / 5)
    assert m["per_hive"] == {"a": {"accuracy": 0.75, "windows": 4}, "b": {"accuracy": 0.75, "windows": 4}}


# -- the run folder ----------------------------------------------------------------------------------------
def test_training_writes_every_run_artefact(tiny_run: Path) -> None:
    for name in RUN_FILES:
        assert (tiny_run / name).is_file(), f"run folder lacks {name}"
        assert (tiny_run / name).stat().st_size > 0, f"{name} is empty"
    assert (tiny_run / "confusion.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    m = _metrics(tiny_run)
    for key in (
        "accuracy",
        "per_class",
        "per_hive",
        "confusion_matrix",
        "labels",
        "timing",
        "dataset",
        "params",
    ):
        assert key in m, f"metrics.json lacks {key}"
    for key in ("load_seconds", "compute_seconds", "cache_hits", "train_seconds"):
        assert key in m["timing"]
    assert m["labels"] == ["normal", "swarm"]
    assert m["dataset"]["synthetic"] is True
    assert m["params"] > 0
    train_config = json.loads((tiny_run / "train_config.json").read_text())
    assert train_config["model"] == "dnn" and train_config["layers"] == 2 and train_config["units"] == 32


def test_metrics_agree_with_the_confusion_matrix_and_heldout_windows(tiny_run: Path) -> None:
    m = _metrics(tiny_run)
    held = _heldout(tiny_run)
    cm = np.array(m["confusion_matrix"])
    assert cm.sum() == m["windows"] == len(held["labels"]) == m["dataset"]["test_windows"]
    assert m["accuracy"] == pytest.approx(np.trace(cm) / cm.sum())
    for i, label in enumerate(m["labels"]):
        c = m["per_class"][label]
        assert c["support"] == cm[i].sum() == int(np.sum(held["labels"] == i))
        assert c["recall"] == pytest.approx(cm[i, i] / cm[i].sum())
        assert c["precision"] == pytest.approx(cm[i, i] / cm[:, i].sum() if cm[:, i].sum() else 0.0)
    assert sum(h["windows"] for h in m["per_hive"].values()) == m["windows"]
    assert sorted(m["per_hive"]) == m["test_hives"]
    # Keras's own predictions on heldout.npz give the reported accuracy: the figures come from the run.
    from beeaudio.desktop.training.models import load_model

    model = load_model(tiny_run / "model.keras")
    pred = model.predict(held["features"], verbose=0).argmax(axis=1)
    assert float(np.mean(pred == held["labels"])) == pytest.approx(m["accuracy"])


def test_grouped_split_shares_no_hive_or_recording(tiny_run: Path) -> None:
    split = json.loads((tiny_run / "split.json").read_text())
    assert split["train_hives"] and split["test_hives"]
    assert not set(split["train_hives"]) & set(split["test_hives"])
    assert not set(split["train_recordings"]) & set(split["test_recordings"])
    assert set(split["validation_hives"]) <= set(split["train_hives"])
    held = _heldout(tiny_run)
    assert set(held["hives"].tolist()) == set(split["test_hives"])
    assert set(held["recordings"].tolist()) <= set(split["test_recordings"])


def test_input_quantization_layer_rounds_like_the_int8_runtime() -> None:
    from beeaudio.core.bundle import QuantParams
    from beeaudio.core.inference import dequantize, quantize
    from beeaudio.desktop.training.models import InputQuantization

    rng = np.random.default_rng(0)
    x = rng.normal(-20.0, 40.0, size=(64, 52)).astype(np.float32)
    layer = InputQuantization(minimum=-150.0, maximum=40.0)
    quant = QuantParams(scale=layer.scale, zero_point=int(layer.zero_point))
    expected = dequantize(values=quantize(values=x, dtype="int8", quant=quant), quant=quant)
    np.testing.assert_allclose(np.asarray(layer(x)), expected, atol=1e-4)
    assert len(np.unique(np.asarray(layer(x)))) <= 256


# -- export ------------------------------------------------------------------------------------------------
def test_int8_bundle_loads_and_agrees_with_keras(tiny_run: Path, tiny_bundle: Path) -> None:
    from beeaudio.core.inference import Classifier
    from beeaudio.desktop.training.models import load_model

    classifier = Classifier.load(tiny_bundle)
    m = classifier.manifest
    assert m.quantization == "int8" and m.input_dtype == "int8" and m.output_dtype == "int8"
    assert m.labels == ("normal", "swarm") and m.swarm_label == "swarm"
    assert tiny_bundle.stat().st_size < 100 * 1024
    held = _heldout(tiny_run)
    probs = classifier.predict(held["features"])
    keras_pred = load_model(tiny_run / "model.keras").predict(held["features"], verbose=0).argmax(1)
    agreement = float(np.mean(probs.argmax(axis=1) == keras_pred))
    assert agreement >= TINY_MIN_AGREEMENT
    checks = m.training["export_checks"]
    assert checks["agreement"] == pytest.approx(agreement)
    assert checks["int8_accuracy"] == pytest.approx(float(np.mean(probs.argmax(axis=1) == held["labels"])))
    assert checks["float32_accuracy"] - checks["int8_accuracy"] <= TINY_MAX_INT8_DROP
    assert checks["min_agreement"] == TINY_MIN_AGREEMENT
    recorded = _metrics(tiny_run)["export"]["int8"]
    assert recorded["agreement"] == pytest.approx(agreement)
    assert recorded["bundle_bytes"] == tiny_bundle.stat().st_size


def test_float32_bundle_matches_keras_closely(tiny_run: Path, tiny_bundle_float32: Path) -> None:
    from beeaudio.core.inference import Classifier
    from beeaudio.desktop.training.models import load_model

    classifier = Classifier.load(tiny_bundle_float32)
    assert classifier.manifest.quantization == "float32"
    held = _heldout(tiny_run)
    keras_probs = load_model(tiny_run / "model.keras").predict(held["features"], verbose=0)
    np.testing.assert_allclose(classifier.predict(held["features"]), keras_probs, atol=1e-4)


def _listing(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


def test_export_refuses_disagreement_and_writes_nothing(
    tiny_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from beeaudio.desktop.training import export

    real_predict = export.tflite_predict

    def disagreeing(**kwargs):
        probs, runtime = real_predict(**kwargs)
        return probs[:, ::-1].copy(), runtime  # every label swapped

    monkeypatch.setattr(export, "tflite_predict", disagreeing)
    metrics_before = (tiny_run / "metrics.json").read_bytes()
    out = tmp_path / "bad.beemodel"
    with pytest.raises(export.ExportError, match="Keras model's label"):
        export.export_bundle(run=tiny_run, out=out, quantize="float32")
    assert _listing(tmp_path) == []
    assert (tiny_run / "metrics.json").read_bytes() == metrics_before


def test_export_refuses_a_broken_model(tiny_run: Path, tmp_path: Path) -> None:
    from beeaudio.desktop.training.export import ExportError, export_bundle
    from beeaudio.desktop.training.models import load_model

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    model = load_model(run / "model.keras")
    model.set_weights([np.full_like(w, np.nan) for w in model.get_weights()])
    model.save(run / "model.keras")
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    with pytest.raises(ExportError, match="NaN"):
        export_bundle(run=run, out=out_dir / "broken.beemodel", quantize="int8")
    assert _listing(out_dir) == []


def test_export_refuses_an_incomplete_run(tiny_run: Path, tmp_path: Path) -> None:
    from beeaudio.desktop.training.export import ExportError, export_bundle

    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    (run / "heldout.npz").unlink()
    with pytest.raises(ExportError, match=r"missing heldout\.npz"):
        export_bundle(run=run, out=tmp_path / "x.beemodel")
    with pytest.raises(ExportError, match="no such run folder"):
        export_bundle(run=tmp_path / "nothing", out=tmp_path / "x.beemodel")
    assert not (tmp_path / "x.beemodel").exists()


def test_export_check_refuses_an_int8_accuracy_drop() -> None:
    from beeaudio.desktop.training.export import ExportError, _check_export

    labels = np.array([0, 1] * 50)
    float_probs = np.eye(2, dtype=np.float32)[labels]  # float32: all right
    int8_pred = labels.copy()
    int8_pred[:2] = 1 - int8_pred[:2]  # int8: 2 points worse
    int8_probs = np.eye(2, dtype=np.float32)[int8_pred]
    common = {"float_probs": float_probs, "labels_true": labels, "label_names": ("normal", "swarm")}
    with pytest.raises(ExportError, match="points below float32"):
        _check_export(quantize="int8", keras_pred=int8_pred, probs=int8_probs, **common)
    ok = _check_export(quantize="float32", keras_pred=labels, probs=float_probs, **common)
    assert ok["agreement"] == 1.0 and ok["accuracy"] == 1.0


# -- evaluation of a bundle --------------------------------------------------------------------------------
def test_evaluate_bundle_on_the_test_split_matches_the_export(
    tiny_dataset: Path, tiny_run: Path, tiny_bundle: Path, tiny_cache_dir: Path
) -> None:
    from beeaudio.desktop.training.evaluate import evaluate_bundle

    m = evaluate_bundle(
        model=tiny_bundle,
        data=tiny_dataset,
        run=tiny_run,
        split="test",
        cache_dir=tiny_cache_dir,
        progress=False,
    )
    split = json.loads((tiny_run / "split.json").read_text())
    assert m["hives"] == sorted(split["test_hives"])
    assert m["windows"] == _metrics(tiny_run)["windows"]
    assert m["accuracy"] == pytest.approx(_metrics(tiny_run)["export"]["int8"]["int8_accuracy"])
    assert np.array(m["confusion_matrix"]).sum() == m["windows"]
    everything = evaluate_bundle(
        model=tiny_bundle, data=tiny_dataset, cache_dir=tiny_cache_dir, progress=False
    )
    assert everything["windows"] > m["windows"]
    with pytest.raises(ValueError, match="--run"):
        evaluate_bundle(model=tiny_bundle, data=tiny_dataset, split="test")


# -- cache and the codec-augmentation hook -----------------------------------------------------------------
def test_feature_cache_makes_the_second_run_load_faster(
    tiny_dataset: Path, tiny_run: Path, tmp_path: Path
) -> None:
    from beeaudio.desktop.training.train import train_run
    from tests.fixtures.bundles import tiny_train_config

    # A cache of its own: the session cache may already be warm, depending on which tests ran first.
    # "Faster" is asserted as "decoded and computed nothing" (timers stay at exactly 0), not as a
    # wall-clock comparison, which another job on the machine could flip.
    cache = tmp_path / "cache"
    config = tiny_train_config(epochs=1)
    first = train_run(data=tiny_dataset, out=tmp_path / "r1", config=config, cache_dir=cache).metrics
    second = train_run(data=tiny_dataset, out=tmp_path / "r2", config=config, cache_dir=cache).metrics
    assert first["timing"]["cache_hits"] == 0
    assert first["timing"]["load_seconds"] > 0
    assert second["timing"]["cache_hits"] == second["dataset"]["recordings"] > 0
    assert second["timing"]["load_seconds"] == 0.0
    assert second["timing"]["compute_seconds"] == 0.0
    assert second["test_hives"] == first["test_hives"] == _metrics(tiny_run)["test_hives"]


def test_transform_hook_adds_training_windows_only(
    tiny_dataset: Path, tiny_run: Path, tiny_cache_dir: Path, tmp_path: Path
) -> None:
    from beeaudio.desktop.training.train import train_run
    from tests.fixtures.bundles import tiny_train_config

    calls = []

    def quieter(audio: np.ndarray, sample_rate: int) -> np.ndarray:
        calls.append(sample_rate)
        return audio * 0.5

    result = train_run(
        data=tiny_dataset,
        out=tmp_path / "run",
        config=tiny_train_config(epochs=1),
        cache_dir=tiny_cache_dir,
        transform=quieter,
        transform_key="half-level",
    )
    d = result.metrics["dataset"]
    assert calls, "the transform was never called"
    assert d["augmented_windows"] == d["train_windows"]
    assert result.metrics["windows"] == d["test_windows"]


def test_cnn_trains_on_frames_and_converts(tiny_dataset: Path, tiny_cache_dir: Path, tmp_path: Path) -> None:
    from beeaudio.desktop.training.export import convert, tflite_predict
    from beeaudio.desktop.training.train import TrainConfig, train_run

    config = TrainConfig(model="cnn", layers=1, units=8, epochs=1, verbose=0, progress=False, seed=1)
    assert config.features.representation == "frames"
    result = train_run(data=tiny_dataset, out=tmp_path / "cnn", config=config, cache_dir=tiny_cache_dir)
    held = _heldout(result.run)
    assert held["features"].ndim == 3
    from beeaudio.desktop.training.models import load_model

    model = load_model(result.run / "model.keras")
    probs, _ = tflite_predict(
        model_bytes=convert(model=model, quantize="float32"), features=held["features"][:16]
    )
    np.testing.assert_allclose(probs, model.predict(held["features"][:16], verbose=0), atol=1e-4)


def test_train_config_rejects_a_mismatched_representation() -> None:
    from beeaudio.core.features import FeatureConfig
    from beeaudio.desktop.training.train import TrainConfig

    with pytest.raises(ValueError, match="representation"):
        TrainConfig(model="dnn", feature_config=FeatureConfig(representation="frames"))
    with pytest.raises(ValueError, match="unknown model"):
        TrainConfig(model="svm")
    restored = TrainConfig.from_dict(TrainConfig(model="cnn").to_dict())
    assert restored.features.representation == "frames" and restored.layers == 2

"""The model bundle file: what write_bundle writes, and every bundle read_bundle / Classifier.load refuse."""

from __future__ import annotations

import json
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.bundle import (
    BUNDLE_FORMAT_VERSION,
    MANIFEST_MEMBER,
    MODEL_MEMBER,
    SELFTEST_MEMBER,
    BundleError,
    BundleManifest,
    SelfTest,
    read_bundle,
)
from beeaudio.core.features import FeatureConfig
from beeaudio.core.inference import Classifier
from beeaudio.desktop.bundle_writer import write_bundle
from tests.fixtures.tflite_models import (
    LABELS,
    built_model,
    draft_manifest,
    rewrite_bundle,
    selftest_for,
    write_test_bundle,
)


@pytest.fixture(scope="module")
def float_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "float.beemodel"
    return write_test_bundle(path=path, built=built_model(quantization="float32"))


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bundle") / "int8.beemodel"
    return write_test_bundle(path=path, built=built_model(quantization="int8", normalize_inside=False))


def manifest_json(path: Path) -> dict:
    with zipfile.ZipFile(path) as archive:
        return json.loads(archive.read(MANIFEST_MEMBER))


def with_manifest(source: Path, target: Path, **changes: object) -> Path:
    data = manifest_json(source)
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return rewrite_bundle(source=source, target=target, replace={MANIFEST_MEMBER: json.dumps(data).encode()})


# -- what is written -----------------------------------------------------------------------------------------


def test_float_bundle_round_trips(float_bundle: Path) -> None:
    built = built_model(quantization="float32")
    with zipfile.ZipFile(float_bundle) as archive:
        assert sorted(archive.namelist()) == sorted([MODEL_MEMBER, MANIFEST_MEMBER, SELFTEST_MEMBER])
    bundle = read_bundle(float_bundle)
    m = bundle.manifest
    assert bundle.model_bytes == built.model_bytes
    assert m.format_version == BUNDLE_FORMAT_VERSION
    assert (m.model_name, m.model_version, m.labels, m.swarm_label) == (
        "test-model",
        "0.0.1",
        LABELS,
        "swarm",
    )
    assert m.feature_config == FeatureConfig()
    # Filled in from the model by write_bundle.
    assert m.input_shape == (1, 52) and m.input_dtype == "float32"
    assert m.output_shape == (1, 2) and m.output_dtype == "float32"
    assert m.quantization == "float32" and m.input_quant is None and m.output_quant is None
    assert len(m.model_sha256) == 64
    assert m.created_at.endswith("+00:00")
    # numpy scalars in the training summary become plain JSON numbers.
    assert manifest_json(float_bundle)["training"]["metrics"]["accuracy"] == 0.5
    assert bundle.selftest.features.shape == (6, 52)
    assert bundle.selftest.expected.shape == (6, 2)
    assert BundleManifest.from_json(m.to_json()) == m


def test_int8_manifest_records_quantisation(int8_bundle: Path) -> None:
    m = read_bundle(int8_bundle).manifest
    assert m.quantization == "int8"
    assert (m.input_dtype, m.output_dtype) == ("int8", "int8")
    assert m.input_quant is not None and m.input_quant.scale > 0
    # Softmax output in int8: TF-Lite fixes it at scale 1/256, zero point -128.
    assert m.output_quant is not None
    assert (m.output_quant.scale, m.output_quant.zero_point) == (1 / 256, -128)
    assert m.feature_mean is not None and len(m.feature_mean) == 52
    data = manifest_json(int8_bundle)
    assert set(data["input_quant"]) == {"scale", "zero_point"}
    assert len(data["feature_std"]) == 52


def test_write_is_atomic_and_keeps_the_old_bundle_on_failure(float_bundle: Path, tmp_path: Path) -> None:
    target = tmp_path / "live.beemodel"
    target.write_bytes(float_bundle.read_bytes())
    built = built_model(quantization="float32")
    bad = selftest_for(built)
    bad = SelfTest(features=bad.features, expected=bad.expected[:, ::-1].copy(), atol=bad.atol)
    with pytest.raises(BundleError, match="self-test failed"):
        write_bundle(
            path=target, manifest=draft_manifest(built=built), model_bytes=built.model_bytes, selftest=bad
        )
    assert target.read_bytes() == float_bundle.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["live.beemodel"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"model_sha256": "0" * 64}, "is not the model's sha256"),
        ({"input_shape": (1, 40)}, "input_shape"),
        ({"output_dtype": "int8"}, "output_dtype"),
        ({"quantization": "int8"}, "quantization"),
        ({"swarm_label": "piping"}, "swarm_label"),
        ({"labels": ("normal", "swarm", "queenless")}, "labels"),
    ],
)
def test_write_refuses_a_manifest_that_contradicts_the_model(
    tmp_path: Path, change: dict, message: str
) -> None:
    built = built_model(quantization="float32")
    manifest = replace(draft_manifest(built=built), **change)
    with pytest.raises(BundleError, match=message):
        write_bundle(
            path=tmp_path / "x.beemodel",
            manifest=manifest,
            model_bytes=built.model_bytes,
            selftest=selftest_for(built),
        )
    assert not list(tmp_path.iterdir())


def test_write_accepts_shapes_with_or_without_batch_dimension(tmp_path: Path) -> None:
    built = built_model(quantization="float32")
    manifest = replace(
        draft_manifest(built=built), input_shape=(52,), output_shape=(1, 2), quantization="float32"
    )
    path = write_bundle(
        path=tmp_path / "x.beemodel",
        manifest=manifest,
        model_bytes=built.model_bytes,
        selftest=selftest_for(built),
    )
    assert read_bundle(path).manifest.input_shape == (1, 52)


def test_write_refuses_selftest_of_the_wrong_shape(tmp_path: Path) -> None:
    built = built_model(quantization="float32")
    good = selftest_for(built)
    bad = SelfTest(features=good.features[:, :40], expected=good.expected, atol=good.atol)
    with pytest.raises(BundleError, match="self-test features have shape"):
        write_bundle(
            path=tmp_path / "x.beemodel",
            manifest=draft_manifest(built=built),
            model_bytes=built.model_bytes,
            selftest=bad,
        )


# -- what is refused on reading ------------------------------------------------------------------------------


def test_refuses_a_file_that_is_not_a_zip(tmp_path: Path) -> None:
    path = tmp_path / "model.beemodel"
    path.write_bytes(b"TFL3" + bytes(200))
    with pytest.raises(BundleError, match="not a zip"):
        read_bundle(path)
    with pytest.raises(BundleError, match="no such bundle file"):
        read_bundle(tmp_path / "missing.beemodel")


@pytest.mark.parametrize("member", [MODEL_MEMBER, MANIFEST_MEMBER, SELFTEST_MEMBER])
def test_refuses_a_missing_member(float_bundle: Path, tmp_path: Path, member: str) -> None:
    broken = rewrite_bundle(source=float_bundle, target=tmp_path / "b.beemodel", drop=(member,))
    with pytest.raises(BundleError, match=f"missing member.*{member}"):
        Classifier.load(broken)


def test_refuses_tampered_model_bytes(float_bundle: Path, tmp_path: Path) -> None:
    model = bytearray(read_bundle(float_bundle).model_bytes)
    model[len(model) // 2] ^= 0x01
    broken = rewrite_bundle(
        source=float_bundle, target=tmp_path / "b.beemodel", replace={MODEL_MEMBER: bytes(model)}
    )
    with pytest.raises(BundleError, match="checksum mismatch"):
        Classifier.load(broken)


def test_refuses_an_unknown_format_version(float_bundle: Path, tmp_path: Path) -> None:
    broken = with_manifest(float_bundle, tmp_path / "b.beemodel", format_version=99)
    with pytest.raises(
        BundleError, match=r"unknown bundle format version 99; this beeaudio knows version\(s\) 1"
    ):
        Classifier.load(broken)


def test_refuses_a_failing_selftest(float_bundle: Path, tmp_path: Path) -> None:
    test = read_bundle(float_bundle).selftest
    wrong = SelfTest(features=test.features, expected=test.expected[:, ::-1].copy(), atol=test.atol)
    buffer = tmp_path / "selftest.npz"
    np.savez(buffer, features=wrong.features, expected=wrong.expected, atol=wrong.atol)
    broken = rewrite_bundle(
        source=float_bundle, target=tmp_path / "b.beemodel", replace={SELFTEST_MEMBER: buffer.read_bytes()}
    )
    with pytest.raises(BundleError, match=r"self-test failed: max \|Δ\| [0-9.e-]+ > atol"):
        Classifier.load(broken)
    # The check can be skipped explicitly (e.g. to inspect a bundle), never silently.
    assert Classifier.load(broken, selftest=False).manifest.model_name == "test-model"


def test_int8_selftest_is_strict_enough_to_catch_a_small_drift(int8_bundle: Path, tmp_path: Path) -> None:
    test = read_bundle(int8_bundle).selftest
    shifted = test.expected + np.array([0.05, -0.05], dtype=np.float32)
    buffer = tmp_path / "selftest.npz"
    np.savez(buffer, features=test.features, expected=shifted, atol=test.atol)
    broken = rewrite_bundle(
        source=int8_bundle, target=tmp_path / "b.beemodel", replace={SELFTEST_MEMBER: buffer.read_bytes()}
    )
    assert test.atol < 0.05
    with pytest.raises(BundleError, match="self-test failed"):
        Classifier.load(broken)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"labels": ...}, r"field\(s\) missing: labels"),
        ({"model_sha256": ..., "swarm_label": ...}, r"field\(s\) missing: swarm_label, model_sha256"),
        ({"format_version": "1"}, "'format_version' missing or not an integer"),
        ({"labels": ["normal"]}, "at least two label names"),
        ({"labels": ["swarm", "swarm"]}, "duplicates"),
        ({"swarm_label": "piping"}, "swarm_label 'piping' is not one of the labels"),
        ({"input_shape": "52"}, "'input_shape' must be a list of positive integers"),
        ({"input_shape": [1, 40]}, "does not take the feature config's windows"),
        ({"output_shape": [1, 3]}, "does not match 2 labels"),
        ({"quantization": "int4"}, "quantization 'int4' unknown"),
        ({"input_quant": {"scale": -1.0, "zero_point": 0}}, "'input_quant': scale must be a positive"),
        ({"training": []}, "'training' must be an object"),
        ({"feature_mean": [0.0] * 52}, "feature_mean and feature_std come together"),
        ({"feature_mean": [0.0] * 3, "feature_std": [1.0] * 3}, "the features have 52"),
        ({"model_sha256": "xyz"}, "model_sha256 must be 64 lowercase hex digits"),
    ],
)
def test_refuses_manifest_fields_missing_or_wrong(
    float_bundle: Path, tmp_path: Path, changes: dict, message: str
) -> None:
    broken = with_manifest(float_bundle, tmp_path / "b.beemodel", **changes)
    with pytest.raises(BundleError, match=message):
        read_bundle(broken)


def test_refuses_a_feature_config_it_cannot_serve(float_bundle: Path, tmp_path: Path) -> None:
    config = FeatureConfig().to_dict()
    newer = with_manifest(float_bundle, tmp_path / "newer.beemodel", feature_config={**config, "pcen": True})
    with pytest.raises(
        BundleError, match=r"feature_config cannot be served.*unknown FeatureConfig keys \['pcen'\]"
    ):
        read_bundle(newer)
    future = with_manifest(
        float_bundle, tmp_path / "future.beemodel", feature_config={**config, "version": 2}
    )
    with pytest.raises(BundleError, match=r"feature_config cannot be served.*version 2"):
        read_bundle(future)
    invalid = with_manifest(
        float_bundle, tmp_path / "invalid.beemodel", feature_config={**config, "fmax": 9000.0}
    )
    with pytest.raises(BundleError, match=r"feature_config cannot be served.*Nyquist"):
        read_bundle(invalid)


def test_refuses_unreadable_manifest_and_selftest(float_bundle: Path, tmp_path: Path) -> None:
    bad_json = rewrite_bundle(
        source=float_bundle, target=tmp_path / "a.beemodel", replace={MANIFEST_MEMBER: b"{not json"}
    )
    with pytest.raises(BundleError, match=r"manifest\.json is not valid JSON"):
        read_bundle(bad_json)
    bad_npz = rewrite_bundle(
        source=float_bundle, target=tmp_path / "b.beemodel", replace={SELFTEST_MEMBER: b"x"}
    )
    with pytest.raises(BundleError, match=r"selftest\.npz unreadable"):
        read_bundle(bad_npz)


def test_refuses_a_model_that_does_not_match_its_manifest(float_bundle: Path, tmp_path: Path) -> None:
    # A consistent manifest (checksum right) that describes another model: int8 where the model is float.
    broken = with_manifest(
        float_bundle,
        tmp_path / "b.beemodel",
        input_dtype="int8",
        output_dtype="int8",
        quantization="int8",
        input_quant={"scale": 0.5, "zero_point": 0},
        output_quant={"scale": 1 / 256, "zero_point": -128},
    )
    with pytest.raises(BundleError, match="the model does not match its manifest"):
        Classifier.load(broken)


def test_refuses_bytes_that_are_not_a_tflite_model(float_bundle: Path, tmp_path: Path) -> None:
    garbage = b"not a flatbuffer" * 64
    built = built_model(quantization="float32")
    manifest = replace(
        draft_manifest(built=built), input_shape=(1, 52), input_dtype="float32", output_shape=(1, 2),
        output_dtype="float32", quantization="float32",
    )  # fmt: skip
    with pytest.raises(BundleError, match="cannot load the model"):
        write_bundle(
            path=tmp_path / "x.beemodel", manifest=manifest, model_bytes=garbage, selftest=selftest_for(built)
        )

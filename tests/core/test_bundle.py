"""The model bundle file: what write_bundle writes, and every bundle read_bundle / Classifier.load refuse."""

from __future__ import annotations

import io
import json
import math
import re
import zipfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from beeaudio.core.bundle import (
    BUNDLE_FORMAT_VERSION,
    MANIFEST_MEMBER,
    MODEL_MEMBER,
    NOVELTY_MEMBER,
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


def with_manifest(source: Path, target: Path, *, redigest: bool = True, **changes: object) -> Path:
    data = manifest_json(source)
    for key, value in changes.items():
        if value is ...:
            del data[key]
        else:
            data[key] = value
    return rewrite_bundle(
        source=source, target=target, replace={MANIFEST_MEMBER: json.dumps(data).encode()}, redigest=redigest
    )


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


# -- the optional novelty detector -------------------------------------------------------------------------
@pytest.fixture(scope="module")
def novelty_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from tests.fixtures.novelty import write_novelty_bundle

    return write_novelty_bundle(tmp_path_factory.mktemp("bundle") / "novelty.beemodel")


def test_a_bundle_carries_its_novelty_detector_with_a_checksum(novelty_bundle: Path) -> None:
    from beeaudio.core.fsio import sha256_hex
    from tests.fixtures.novelty import small_detector

    bundle = read_bundle(novelty_bundle)
    section = manifest_json(novelty_bundle)["novelty"]
    with zipfile.ZipFile(novelty_bundle) as archive:
        assert section["sha256"] == sha256_hex(archive.read(NOVELTY_MEMBER))
    assert section["kind"] == "gaussian-views/1" and section["member"] == NOVELTY_MEMBER
    assert section["views"] == ["features", "shape"] and section["heldout_flagged"] == 0.01
    assert section["fitted_on"]["windows"] == 60
    assert bundle.manifest.novelty is not None and bundle.manifest.novelty.info["heldout_windows"] == 60
    detector = small_detector()
    assert bundle.novelty is not None and bundle.novelty.threshold == pytest.approx(detector.threshold)
    windows = built_model(quantization="float32").features
    np.testing.assert_allclose(bundle.novelty.score(windows), detector.score(windows), rtol=1e-5)
    assert BundleManifest.from_json(bundle.manifest.to_json()) == bundle.manifest


def test_an_older_bundle_without_a_detector_still_loads(float_bundle: Path) -> None:
    bundle = read_bundle(float_bundle)
    assert bundle.novelty is None and bundle.manifest.novelty is None
    assert "novelty" not in manifest_json(float_bundle)  # absent, not null: older manifests unchanged
    assert Classifier.load(float_bundle).novelty is None


def test_unknown_manifest_keys_and_members_do_not_break_reading(novelty_bundle: Path, tmp_path: Path) -> None:
    """What lets older beeaudio (format 1 readers) read bundles with a detector: extra keys and members are
    ignored. Also the other way: a novelty member nothing vouches for (no section) is ignored."""
    data = manifest_json(novelty_bundle)
    data["some_future_section"] = {"x": 1}
    del data["novelty"]
    target = rewrite_bundle(
        source=novelty_bundle,
        target=tmp_path / "future.beemodel",
        replace={MANIFEST_MEMBER: json.dumps(data).encode(), "calibration.npz": b"anything"},
    )
    bundle = read_bundle(target)
    assert bundle.novelty is None and bundle.manifest.model_name == "test-model"


def test_refuses_a_tampered_or_missing_novelty_member(novelty_bundle: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(novelty_bundle) as archive:
        member = archive.read(NOVELTY_MEMBER)
    tampered = rewrite_bundle(
        source=novelty_bundle, target=tmp_path / "t.beemodel", replace={NOVELTY_MEMBER: member + b"\0"}
    )
    with pytest.raises(BundleError, match=r"novelty\.npz checksum mismatch"):
        read_bundle(tampered)
    missing = rewrite_bundle(source=novelty_bundle, target=tmp_path / "m.beemodel", drop=(NOVELTY_MEMBER,))
    with pytest.raises(BundleError, match=r"lacks novelty\.npz"):
        read_bundle(missing)


@pytest.mark.parametrize(
    "change, message",
    [
        ({"threshold": -1.0}, "threshold"),
        ({"threshold": "1.0"}, "threshold"),
        ({"threshold": float("inf")}, "threshold"),
        ({"member": "../model.tflite"}, "member"),
        ({"sha256": "abc"}, "sha256"),
        ({"views": "features"}, "views"),
        ({"views": ["features", "features"]}, "views"),
        ({"heldout_flagged": 1.5}, "heldout_flagged"),
        ({"kind": ...}, "lacks kind"),
    ],
)
def test_refuses_a_malformed_novelty_section(
    novelty_bundle: Path, tmp_path: Path, change: dict, message: str
) -> None:
    section = manifest_json(novelty_bundle)["novelty"]
    for key, value in change.items():
        if value is ...:
            del section[key]
        else:
            section[key] = value
    target = with_manifest(novelty_bundle, tmp_path / "bad.beemodel", novelty=section)
    with pytest.raises(BundleError, match=message):
        read_bundle(target)
    with pytest.raises(BundleError, match="must be an object"):
        read_bundle(with_manifest(novelty_bundle, tmp_path / "bad2.beemodel", novelty=[1, 2]))


def test_refuses_novelty_arrays_that_do_not_fit_the_features(novelty_bundle: Path, tmp_path: Path) -> None:
    import io

    from beeaudio.core.fsio import sha256_hex
    from tests.fixtures.novelty import small_detector

    arrays = small_detector().to_arrays()
    arrays["features__whitener"] = arrays["features__whitener"][:10, :10]
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    data = manifest_json(novelty_bundle)
    data["novelty"]["sha256"] = sha256_hex(buffer.getvalue())
    target = rewrite_bundle(
        source=novelty_bundle,
        target=tmp_path / "shapes.beemodel",
        replace={MANIFEST_MEMBER: json.dumps(data).encode(), NOVELTY_MEMBER: buffer.getvalue()},
    )
    with pytest.raises(BundleError, match=r"not a usable novelty detector: .*whitener has shape"):
        read_bundle(target)


def test_refuses_an_oversized_novelty_member(novelty_bundle: Path, tmp_path: Path) -> None:
    from beeaudio.core.bundle import MAX_NOVELTY_BYTES

    huge = bytes(MAX_NOVELTY_BYTES + 1)
    target = rewrite_bundle(
        source=novelty_bundle, target=tmp_path / "h.beemodel", replace={NOVELTY_MEMBER: huge}
    )
    with pytest.raises(BundleError, match="larger than"):
        read_bundle(target)


def test_a_detector_of_an_unknown_kind_is_left_out_not_fatal(
    novelty_bundle: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    section = manifest_json(novelty_bundle)["novelty"]
    section["kind"] = "knn/9"
    bundle = read_bundle(with_manifest(novelty_bundle, tmp_path / "k.beemodel", novelty=section))
    assert bundle.novelty is None and bundle.manifest.novelty.kind == "knn/9"
    assert "kind 'knn/9' is not one this beeaudio computes" in caplog.text
    section = manifest_json(novelty_bundle)["novelty"]
    section["views"] = ["features", "pitch"]  # a newer view of the same kind
    assert (
        read_bundle(with_manifest(novelty_bundle, tmp_path / "v.beemodel", novelty=section)).novelty is None
    )
    assert "views ['pitch']" in caplog.text


def test_write_refuses_a_detector_for_other_features(tmp_path: Path) -> None:
    from tests.fixtures.novelty import small_detector

    built = built_model(quantization="float32")
    other = replace(small_detector(), config=FeatureConfig(fmin=120.0))  # same widths, other features
    with pytest.raises(BundleError, match="other features or labels"):
        write_bundle(
            path=tmp_path / "x.beemodel",
            manifest=draft_manifest(built=built),
            model_bytes=built.model_bytes,
            selftest=selftest_for(built),
            novelty=other,
        )


# -- every manifest field within what the wire and the device take (issue 14, item 5) ---------------------
def _features(**changes: object) -> dict:
    return {**FeatureConfig().to_dict(), **changes}


#: Front ends whose mel filters are all non-empty: refused only for the bound under test.
HIGH_RATE = {"sample_rate": 192000, "n_fft": 2048, "hop_length": 1024, "fmin": 0.0, "fmax": 96000.0}
FULLBAND = {"sample_rate": 16000, "n_fft": 1024, "hop_length": 512, "n_mels": 40, "fmin": 0.0, "fmax": 8000.0}


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # Every event and heartbeat would carry it, and the wire refuses names over 100 characters.
        ({"model_name": "h" * 5000}, r"model_name must be 1\.\.100 characters"),
        ({"model_version": "v" * 101}, r"model_version must be 1\.\.100 characters"),
        ({"model_name": "hive\x00net"}, "model_name contains a NUL"),
        ({"labels": ["n\udc00rmal", "swarm"]}, r"labels\[0\] contains a lone surrogate"),
        ({"labels": ["n" * 101, "swarm"]}, r"labels\[0\] must be 1\.\.100 characters"),
        (
            {"labels": ["normal", "swarm", *(f"l{i}" for i in range(63))], "output_shape": [1, 65]},
            "at most 64 labels",
        ),
        ({"created_at": "x" * 1000}, "created_at"),
        # No recording is this long: every one would be quarantined.
        ({"feature_config": _features(window_seconds=1e6)}, r"window_seconds 1e\+06 s is longer than"),
        # 224,001 windows out of a 30 s file.
        ({"feature_config": _features(hop_seconds=1e-9)}, r"hop_seconds 1e-09 s is shorter than"),
        ({"feature_config": _features(**HIGH_RATE)}, "sample_rate 192000 is outside"),
        ({"feature_config": _features(n_fft=16384, window_seconds=4.0)}, "n_fft 16384 is outside"),
        (
            {"feature_config": _features(**{**FULLBAND, "window_seconds": 60.0, "hop_length": 64})},
            "14985 FFT frames of 1024 samples",
        ),
    ],
    ids=[
        "name-5000", "version-101", "name-nul", "label-surrogate", "label-101", "65-labels", "created_at",
        "window-1e6", "hop-1e-9", "rate-192k", "n_fft-16384", "frames-per-window",
    ],
)  # fmt: skip
def test_refuses_manifest_values_the_wire_or_the_device_cannot_take(
    float_bundle: Path, tmp_path: Path, changes: dict, message: str
) -> None:
    broken = with_manifest(float_bundle, tmp_path / "b.beemodel", **changes)
    for load in (read_bundle, Classifier.load):  # the bundle itself, and the device's way of loading it
        with pytest.raises(BundleError, match=message):
            load(broken)


def test_write_refuses_names_the_wire_cannot_carry(tmp_path: Path) -> None:
    built = built_model(quantization="float32")
    for change in (
        {"model_name": "h" * 5000},
        {"labels": ("normal", "s\x00warm"), "swarm_label": "s\x00warm"},
    ):
        with pytest.raises(BundleError, match=r"model_name|labels"):
            write_bundle(
                path=tmp_path / "x.beemodel",
                manifest=replace(draft_manifest(built=built), **change),
                model_bytes=built.model_bytes,
                selftest=selftest_for(built),
            )
        assert not list(tmp_path.iterdir())


# -- the content digest over the manifest and every member (issue 14, item 6) ------------------------------
def test_the_content_digest_refuses_an_edited_manifest_or_member(
    float_bundle: Path, novelty_bundle: Path, tmp_path: Path
) -> None:
    data = manifest_json(float_bundle)
    # Swapped labels invert every prediction, and the model's own checksum still matches.
    swapped = with_manifest(
        float_bundle, tmp_path / "swapped.beemodel", redigest=False, labels=["swarm", "normal"]
    )
    with pytest.raises(BundleError, match=r"content checksum mismatch.*altered"):
        Classifier.load(swapped)
    other_rate = with_manifest(
        float_bundle,
        tmp_path / "rate.beemodel",
        redigest=False,
        feature_config={**data["feature_config"], "sample_rate": 16000},
    )
    with pytest.raises(BundleError, match="content checksum mismatch"):
        read_bundle(other_rate)
    test = read_bundle(float_bundle).selftest
    buffer = tmp_path / "selftest.npz"
    np.savez(buffer, features=test.features + 1e-3, expected=test.expected, atol=test.atol)
    other_test = rewrite_bundle(
        source=float_bundle,
        target=tmp_path / "selftest.beemodel",
        replace={SELFTEST_MEMBER: buffer.read_bytes()},
        redigest=False,
    )
    with pytest.raises(BundleError, match="content checksum mismatch"):
        read_bundle(other_test)
    # The novelty member with its own checksum in the manifest updated: the digest still tells.
    from beeaudio.core.fsio import sha256_hex

    with zipfile.ZipFile(novelty_bundle) as archive:
        member = archive.read(NOVELTY_MEMBER) + b"\0"
    novelty = manifest_json(novelty_bundle)
    novelty["novelty"]["sha256"] = sha256_hex(member)
    edited = rewrite_bundle(
        source=novelty_bundle,
        target=tmp_path / "novelty.beemodel",
        replace={NOVELTY_MEMBER: member, MANIFEST_MEMBER: json.dumps(novelty).encode()},
        redigest=False,
    )
    with pytest.raises(BundleError, match="content checksum mismatch"):
        read_bundle(edited)
    # Integrity, not authenticity: whoever recomputes the digest gets their edit through.
    assert read_bundle(with_manifest(float_bundle, tmp_path / "re.beemodel", labels=["swarm", "normal"]))
    from beeaudio.core.bundle import content_digest

    with zipfile.ZipFile(float_bundle) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    assert data["content_sha256"] == content_digest(manifest=data, members=members)
    assert read_bundle(float_bundle).manifest.content_sha256 == data["content_sha256"]


@pytest.mark.parametrize("member", [MANIFEST_MEMBER, MODEL_MEMBER, SELFTEST_MEMBER])
def test_refuses_a_member_that_is_in_the_archive_twice(
    float_bundle: Path, tmp_path: Path, member: str
) -> None:
    """zipfile reads the last of two entries of a name, another unzip tool the first: which is the bundle?"""
    import warnings

    target = tmp_path / "twice.beemodel"
    swapped = {**manifest_json(float_bundle), "labels": ["swarm", "normal"]}
    with zipfile.ZipFile(float_bundle) as src, zipfile.ZipFile(target, "w") as dst, warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # zipfile warns of the duplicate name it writes
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        dst.writestr(member, json.dumps(swapped).encode() if member == MANIFEST_MEMBER else src.read(member))
    with pytest.raises(BundleError, match=f"holds {member} twice"):
        read_bundle(target)


def test_a_bundle_written_before_the_digest_loads_and_info_says_it_has_none(
    float_bundle: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from beeaudio.cli import main

    data = manifest_json(float_bundle)
    data.pop("content_sha256", None)
    older = rewrite_bundle(
        source=float_bundle,
        target=tmp_path / "older.beemodel",
        replace={MANIFEST_MEMBER: json.dumps(data).encode()},
    )
    Classifier.load(older)
    assert main(["info", str(older)]) == 0
    assert "no content digest" in capsys.readouterr().out
    assert main(["info", str(float_bundle)]) == 0
    assert f"content      sha256 {manifest_json(float_bundle)['content_sha256']}" in capsys.readouterr().out


# -- member sizes bounded before anything is read (issue 14, item 7) ---------------------------------------
def _refused_within(path: Path, *, message: str, peak_bytes: int = 8 << 20) -> None:
    """read_bundle refuses ``path`` with ``message``, in little time and without allocating much."""
    import time
    import tracemalloc

    tracemalloc.start()
    started = time.perf_counter()
    try:
        with pytest.raises(BundleError) as refused:
            read_bundle(path)
        elapsed = time.perf_counter() - started
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < peak_bytes, f"reading the refused bundle allocated {peak / 1e6:.1f} MB ({refused.value})"
    assert elapsed < 2.0, f"refusing the bundle took {elapsed:.2f} s"
    assert re.search(message, str(refused.value)), str(refused.value)


@pytest.mark.parametrize(
    ("member", "size"),
    [(MANIFEST_MEMBER, 2 << 20), (MODEL_MEMBER, 65 << 20), (SELFTEST_MEMBER, 17 << 20)],
)
def test_refuses_a_member_larger_than_its_limit_before_reading_it(
    float_bundle: Path, tmp_path: Path, member: str, size: int
) -> None:
    # Zeros (spaces for the manifest) deflate a thousandfold: a small file that inflates to all of it.
    filler = b" " * size if member == MANIFEST_MEMBER else bytes(size)
    target = rewrite_bundle(
        source=float_bundle,
        target=tmp_path / "big.beemodel",
        replace={member: filler},
        compression=zipfile.ZIP_DEFLATED,
    )
    assert target.stat().st_size < size // 100
    _refused_within(target, message=rf"{member} declares {size} bytes, more than the \d+")
    from beeaudio.core.bundle import MEMBER_LIMITS

    assert size > MEMBER_LIMITS[member]


def _selftest_npz(*, features_shape: tuple[int, ...], written: bool, n_expected: int = 2) -> bytes:
    """A selftest.npz whose features.npy header declares ``features_shape`` (float32), followed by that many
    zero bytes (``written``) or by none; deflated, a few hundred KB that np.load inflates to all of it."""
    buffer = io.BytesIO()
    header = {"descr": "<f4", "fortran_order": False, "shape": features_shape}
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as npz:
        with npz.open("features.npy", "w", force_zip64=True) as member:
            np.lib.format.write_array_header_1_0(member, header)
            remaining, chunk = (math.prod(features_shape) * 4 if written else 0), bytes(1 << 20)
            while remaining > 0:
                member.write(chunk[:remaining])
                remaining -= len(chunk)
        for name, array in (
            ("expected", np.full((n_expected, 2), 0.5, np.float32)),
            ("atol", np.asarray(1e-4)),
        ):
            with npz.open(f"{name}.npy", "w") as member:
                np.lib.format.write_array(member, array)
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("features_shape", "written", "n_expected", "message"),
    [
        # 125 MB of windows in a 125 KB member.
        ((600_000, 52), True, 2, r"selftest\.npz member features\.npy declares \d+ bytes, more than"),
        # A header that promises 2 TB and holds nothing.
        ((10**10, 52), False, 2, r"features\.npy: .*\(10000000000, 52\).*more than"),
        # Small enough in bytes, but every window is run through the model at every load.
        ((10_000, 52), True, 10_000, "self-test has 10000 windows, more than 256"),
    ],
    ids=["inflates-to-125MB", "header-promises-2TB", "10000-windows"],
)
def test_refuses_a_selftest_array_too_large_before_materialising_it(
    float_bundle: Path,
    tmp_path: Path,
    features_shape: tuple[int, ...],
    written: bool,
    n_expected: int,
    message: str,
) -> None:
    npz = _selftest_npz(features_shape=features_shape, written=written, n_expected=n_expected)
    assert len(npz) < 1 << 20
    target = rewrite_bundle(
        source=float_bundle, target=tmp_path / "t.beemodel", replace={SELFTEST_MEMBER: npz}
    )
    _refused_within(target, message=message)


def test_refuses_an_archive_of_thousands_of_members(float_bundle: Path, tmp_path: Path) -> None:
    """Each entry of a zip's directory costs a few hundred bytes of memory once parsed: 64 MB of them (the
    collector's upload limit) would take gigabytes before any member is read."""
    target = tmp_path / "many.beemodel"
    with zipfile.ZipFile(float_bundle) as src, zipfile.ZipFile(target, "w") as dst:
        for name in src.namelist():
            dst.writestr(name, src.read(name))
        for i in range(5000):
            dst.writestr(f"x/{i}", b"")
    with pytest.raises(BundleError, match="5003 entries, more than"):
        read_bundle(target)

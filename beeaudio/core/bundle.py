"""The model bundle: one ``.beemodel`` file (a zip) that a user copies to a hive device.

Members:

* ``model.tflite`` — the TF-Lite flatbuffer (builtin ops only, float32 or full-integer int8);
* ``manifest.json`` — the contract between training and the device (see :class:`BundleManifest`);
* ``selftest.npz`` — a few feature windows with the probabilities the model must give for them.

:func:`read_bundle` refuses a bundle that is not a zip, lacks a member, has a format version this code
does not know, fails its checksum, has a malformed manifest or a feature config this code cannot compute —
always with a message that says which. The self-test itself is run by
:meth:`beeaudio.core.inference.Classifier.load`, because it needs an interpreter.

Imports only numpy and the standard library (plus ``beeaudio.core.features``): the device reads bundles too.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core.errors import BeeaudioError
from beeaudio.core.features import FeatureConfig
from beeaudio.core.fsio import sha256_hex

log = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1
KNOWN_FORMAT_VERSIONS: tuple[int, ...] = (1,)
BUNDLE_SUFFIX = ".beemodel"

MODEL_MEMBER = "model.tflite"
MANIFEST_MEMBER = "manifest.json"
SELFTEST_MEMBER = "selftest.npz"
MEMBERS = (MODEL_MEMBER, MANIFEST_MEMBER, SELFTEST_MEMBER)

QUANTIZATIONS = ("float32", "int8")
# A hive model is tens of KB; a member this large is a mistake or a zip bomb, not a model.
MAX_MEMBER_BYTES = 256 * 1024 * 1024


class BundleError(BeeaudioError):
    """A bundle that cannot be written, read or trusted; the message says why."""


@dataclass(frozen=True)
class QuantParams:
    """Affine quantisation of one tensor: ``real = scale * (q - zero_point)``."""

    scale: float
    zero_point: int

    def to_json(self) -> dict[str, Any]:
        return {"scale": float(self.scale), "zero_point": int(self.zero_point)}

    @classmethod
    def from_json(cls, data: Any) -> QuantParams:
        if not isinstance(data, dict) or set(data) != {"scale", "zero_point"}:
            raise ValueError(f"expected {{'scale', 'zero_point'}}, got {data!r}")
        scale, zero_point = data["scale"], data["zero_point"]
        if (
            isinstance(scale, bool)
            or not isinstance(scale, (int, float))
            or not (scale > 0 and math.isfinite(scale))
        ):
            raise ValueError(f"scale must be a positive finite number, got {scale!r}")
        if isinstance(zero_point, bool) or not isinstance(zero_point, int):
            raise ValueError(f"zero_point must be an integer, got {zero_point!r}")
        return cls(scale=float(scale), zero_point=zero_point)


@dataclass(frozen=True)
class BundleManifest:
    """What the device needs to know about the model, serialised as ``manifest.json``.

    Shapes are the TF-Lite tensor shapes with the batch dimension first (``(1, 52)`` for one window of 52
    features). ``write_bundle`` fills the shapes, dtypes, quantisation parameters and checksum from the model
    itself when they are left empty, and refuses values that contradict the model.
    """

    format_version: int
    model_name: str
    model_version: str
    labels: tuple[str, ...]
    swarm_label: str
    feature_config: FeatureConfig
    input_shape: tuple[int, ...]
    input_dtype: str
    output_shape: tuple[int, ...]
    output_dtype: str
    quantization: str
    model_sha256: str
    training: dict[str, Any] = field(default_factory=dict)
    created_at: str = ""
    input_quant: QuantParams | None = None
    output_quant: QuantParams | None = None
    # Optional per-feature standardisation applied by the runtime before quantising the input:
    # ``(x - feature_mean) / feature_std`` along the last feature axis. A full-integer model has one scale for
    # its whole input tensor, and raw MFCC statistics span very different ranges (c0 around -300, delta
    # deviations below 1), so without it the small features vanish in int8.
    feature_mean: tuple[float, ...] | None = None
    feature_std: tuple[float, ...] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": self.format_version,
            "model_name": self.model_name,
            "model_version": self.model_version,
            "labels": list(self.labels),
            "swarm_label": self.swarm_label,
            "feature_config": self.feature_config.to_dict(),
            "input_shape": [int(d) for d in self.input_shape],
            "input_dtype": self.input_dtype,
            "output_shape": [int(d) for d in self.output_shape],
            "output_dtype": self.output_dtype,
            "quantization": self.quantization,
            "input_quant": self.input_quant.to_json() if self.input_quant else None,
            "output_quant": self.output_quant.to_json() if self.output_quant else None,
            "feature_mean": list(self.feature_mean) if self.feature_mean is not None else None,
            "feature_std": list(self.feature_std) if self.feature_std is not None else None,
            "model_sha256": self.model_sha256,
            "training": self.training,
            "created_at": self.created_at,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BundleManifest:
        """Parse and check a manifest; :class:`BundleError` names the field that is missing or wrong."""
        if not isinstance(data, dict):
            raise BundleError(f"manifest must be a JSON object, got {type(data).__name__}")
        version = data.get("format_version")
        if isinstance(version, bool) or not isinstance(version, int):
            raise BundleError(f"manifest field 'format_version' missing or not an integer: {version!r}")
        if version not in KNOWN_FORMAT_VERSIONS:
            raise BundleError(
                f"unknown bundle format version {version}; this beeaudio knows version(s) "
                f"{', '.join(map(str, KNOWN_FORMAT_VERSIONS))} — upgrade beeaudio on this device"
            )
        required = (
            "model_name", "model_version", "labels", "swarm_label", "feature_config", "input_shape",
            "input_dtype", "output_shape", "output_dtype", "quantization", "model_sha256",
        )  # fmt: skip
        missing = [name for name in required if name not in data]
        if missing:
            raise BundleError(f"manifest field(s) missing: {', '.join(missing)}")

        def text(name: str) -> str:
            value = data[name]
            if not isinstance(value, str) or not value:
                raise BundleError(f"manifest field {name!r} must be a non-empty string, got {value!r}")
            return value

        def shape(name: str) -> tuple[int, ...]:
            value = data[name]
            if (
                not isinstance(value, list)
                or not value
                or not all(
                    isinstance(d, int) and not isinstance(d, bool) and (d > 0 or d == -1) for d in value
                )
            ):
                raise BundleError(
                    f"manifest field {name!r} must be a list of positive integers, got {value!r}"
                )
            return tuple(value)

        def quant(name: str) -> QuantParams | None:
            value = data.get(name)
            if value is None:
                return None
            try:
                return QuantParams.from_json(value)
            except ValueError as exc:
                raise BundleError(f"manifest field {name!r}: {exc}") from exc

        def floats(name: str) -> tuple[float, ...] | None:
            value = data.get(name)
            if value is None:
                return None
            if not isinstance(value, list) or not all(
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value
            ):
                raise BundleError(f"manifest field {name!r} must be a list of finite numbers or null")
            return tuple(float(v) for v in value)

        labels = data["labels"]
        if (
            not isinstance(labels, list)
            or len(labels) < 2
            or not all(isinstance(x, str) and x for x in labels)
        ):
            raise BundleError(f"manifest field 'labels' must list at least two label names, got {labels!r}")
        if len(set(labels)) != len(labels):
            raise BundleError(f"manifest field 'labels' has duplicates: {labels!r}")
        try:
            feature_config = FeatureConfig.from_dict(data["feature_config"])
        except (ValueError, TypeError) as exc:
            raise BundleError(f"manifest feature_config cannot be served by this beeaudio: {exc}") from exc
        training = data.get("training", {})
        if not isinstance(training, dict):
            raise BundleError(f"manifest field 'training' must be an object, got {type(training).__name__}")
        created_at = data.get("created_at", "")
        if not isinstance(created_at, str):
            raise BundleError(f"manifest field 'created_at' must be a string, got {created_at!r}")
        manifest = cls(
            format_version=version,
            model_name=text("model_name"),
            model_version=text("model_version"),
            labels=tuple(labels),
            swarm_label=text("swarm_label"),
            feature_config=feature_config,
            input_shape=shape("input_shape"),
            input_dtype=text("input_dtype"),
            output_shape=shape("output_shape"),
            output_dtype=text("output_dtype"),
            quantization=text("quantization"),
            model_sha256=text("model_sha256"),
            training=training,
            created_at=created_at,
            input_quant=quant("input_quant"),
            output_quant=quant("output_quant"),
            feature_mean=floats("feature_mean"),
            feature_std=floats("feature_std"),
        )
        manifest.check()
        return manifest

    def check(self) -> None:
        """Internal consistency (labels vs output, features vs input, quantisation); BundleError if broken."""
        if self.swarm_label not in self.labels:
            raise BundleError(
                f"swarm_label {self.swarm_label!r} is not one of the labels {list(self.labels)}"
            )
        if self.quantization not in QUANTIZATIONS:
            raise BundleError(f"quantization {self.quantization!r} unknown; expected one of {QUANTIZATIONS}")
        if tuple(self.input_shape[1:]) != tuple(self.feature_config.feature_shape):
            raise BundleError(
                f"input_shape {list(self.input_shape)} does not take the feature config's windows "
                f"{list(self.feature_config.feature_shape)} (batch dimension first)"
            )
        if tuple(self.output_shape[1:]) != (len(self.labels),):
            raise BundleError(
                f"output_shape {list(self.output_shape)} does not match {len(self.labels)} labels "
                "(expected [batch, n_labels])"
            )
        for name, dtype, params in (
            ("input", self.input_dtype, self.input_quant),
            ("output", self.output_dtype, self.output_quant),
        ):
            if dtype not in ("float32", "int8", "uint8"):
                raise BundleError(f"{name}_dtype {dtype!r} unsupported (float32, int8 or uint8)")
            if dtype != "float32" and params is None:
                raise BundleError(f"{name} is {dtype} but the manifest has no {name}_quant scale/zero point")
        if self.quantization == "int8" and self.input_dtype == "float32":
            raise BundleError("quantization is int8 but input_dtype is float32: export full-integer models")
        if (self.feature_mean is None) != (self.feature_std is None):
            raise BundleError("feature_mean and feature_std come together: give both or neither")
        if self.feature_mean is not None and self.feature_std is not None:
            width = self.feature_shape[-1]
            if len(self.feature_mean) != width or len(self.feature_std) != width:
                raise BundleError(
                    f"feature_mean/feature_std have {len(self.feature_mean)}/{len(self.feature_std)} values; "
                    f"the features have {width} along the last axis"
                )
            if not all(s > 0 for s in self.feature_std):
                raise BundleError("feature_std values must be positive")
        if len(self.model_sha256) != 64 or any(c not in "0123456789abcdef" for c in self.model_sha256):
            raise BundleError(f"model_sha256 must be 64 lowercase hex digits, got {self.model_sha256!r}")

    @property
    def feature_shape(self) -> tuple[int, ...]:
        return tuple(self.input_shape[1:])


@dataclass(frozen=True)
class SelfTest:
    """Feature windows (float32, as the front end computes them) and the probabilities the model must give."""

    features: np.ndarray
    expected: np.ndarray
    atol: float

    def check_shapes(self, manifest: BundleManifest) -> None:
        features, expected = np.asarray(self.features), np.asarray(self.expected)
        if features.ndim < 2 or features.shape[0] < 1 or features.shape[1:] != manifest.feature_shape:
            raise BundleError(
                f"self-test features have shape {features.shape}; "
                f"expected (n, {', '.join(map(str, manifest.feature_shape))})"
            )
        if expected.shape != (features.shape[0], len(manifest.labels)):
            raise BundleError(
                f"self-test expected probabilities have shape {expected.shape}; "
                f"expected ({features.shape[0]}, {len(manifest.labels)})"
            )
        if not (np.all(np.isfinite(features)) and np.all(np.isfinite(expected))):
            raise BundleError("self-test contains non-finite values")
        if not (self.atol > 0 and math.isfinite(self.atol)):
            raise BundleError(f"self-test atol must be a positive number, got {self.atol!r}")


@dataclass(frozen=True)
class Bundle:
    path: Path
    manifest: BundleManifest
    model_bytes: bytes
    selftest: SelfTest


def default_selftest_atol(*, quantization: str, output_quant: QuantParams | None = None) -> float:
    """How far a runtime may drift from the exporting one and still be the same model.

    Float kernels differ between runtimes only by rounding; int8 kernels (XNNPACK vs the reference ones in
    tflite-runtime 2.14) may differ by a step in an intermediate layer, which can move the output by a few
    output quantisation steps. Anything beyond that is a wrong model, wrong features or a broken runtime.
    """
    if quantization == "float32":
        return 1e-4
    step = output_quant.scale if output_quant else 1.0 / 256.0
    return float(max(4.0 * step, 1e-3))


def read_bundle(path: Path) -> Bundle:
    """Read and verify a bundle: members, format version, manifest fields, feature config, checksum."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path}: not a model bundle (not a zip archive)")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = {info.filename: info for info in archive.infolist()}
            missing = [name for name in MEMBERS if name not in infos]
            if missing:
                raise BundleError(f"{path}: bundle is missing member(s) {', '.join(missing)}")
            too_big = [name for name in MEMBERS if infos[name].file_size > MAX_MEMBER_BYTES]
            if too_big:
                raise BundleError(
                    f"{path}: member(s) {', '.join(too_big)} larger than {MAX_MEMBER_BYTES} bytes"
                )
            data = {name: archive.read(name) for name in MEMBERS}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError) as exc:
        raise BundleError(f"{path}: damaged bundle archive: {exc}") from exc

    try:
        manifest_json = json.loads(data[MANIFEST_MEMBER].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: manifest.json is not valid JSON: {exc}") from exc
    try:
        manifest = BundleManifest.from_json(manifest_json)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc

    digest = sha256_hex(data[MODEL_MEMBER])
    if digest != manifest.model_sha256:
        raise BundleError(
            f"{path}: model.tflite checksum mismatch: manifest says sha256 {manifest.model_sha256}, "
            f"the file has {digest} — the bundle is damaged or was altered"
        )
    try:
        with np.load(io.BytesIO(data[SELFTEST_MEMBER]), allow_pickle=False) as npz:
            selftest = SelfTest(
                features=np.asarray(npz["features"], dtype=np.float32),
                expected=np.asarray(npz["expected"], dtype=np.float32),
                atol=float(npz["atol"]),
            )
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise BundleError(f"{path}: selftest.npz unreadable (needs features, expected, atol): {exc}") from exc
    try:
        selftest.check_shapes(manifest)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    return Bundle(path=path, manifest=manifest, model_bytes=data[MODEL_MEMBER], selftest=selftest)

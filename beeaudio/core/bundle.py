"""The model bundle: one ``.beemodel`` file (a zip) that a user copies to a hive device.

Members:

* ``model.tflite`` — the TF-Lite flatbuffer (builtin ops only, float32 or full-integer int8);
* ``manifest.json`` — the contract between training and the device (see :class:`BundleManifest`);
* ``selftest.npz`` — a few feature windows with the probabilities the model must give for them, within the
  tolerance the manifest's ``selftest`` section gives and derives from the model's quantisation
  (:class:`SelfTestTolerance`; bundles written before it have only the ``atol`` in ``selftest.npz``);
* ``novelty.npz`` (optional) — the arrays of the novelty detector (:mod:`beeaudio.core.novelty`), present
  when the manifest has a ``novelty`` section, which records its sha256, kind, views and threshold.

Optional parts keep format version 1: a reader that does not know a manifest key or a member ignores it
(older beeaudio reads newer bundles, without their detector), and a bundle without a ``novelty`` section
loads with no detector (its events carry ``novelty`` null). A ``novelty`` section that is there must be
well formed and match its member, or the bundle is refused.

The one exception is the optional ``normalization`` section
(:class:`beeaudio.core.baseline.NormalizationSpec`): a model that takes features relative to a hive's
baseline cannot be run on plain features, so an older beeaudio must refuse it rather than ignore the
section. Such bundles are written with format version
:data:`NORMALIZED_FORMAT_VERSION` (2), which older readers refuse with "upgrade beeaudio"; a version-1
manifest with the section, or a section this code cannot compute, is refused here too.

The optional ``content_sha256`` (:func:`content_digest`) covers the manifest itself (its canonical JSON
without that field) and every member, so an edited label, feature config or self-test is refused like a
damaged model. It is integrity, not authenticity: whoever edits a bundle can recompute it. Bundles written
before it have none and still load (``beeaudio info`` says so); older readers ignore the field.

:func:`read_bundle` refuses a bundle that is not a zip, lacks a member or holds one twice, declares a member
larger than its limit (:data:`MEMBER_LIMITS`, checked before it is read, as the arrays inside the
``.npz`` members are), has a format version this code does not know, fails a checksum, has a malformed
manifest, one that asks more of a device than it serves (names and labels beyond what events carry, a
feature config beyond the bounds of :mod:`beeaudio.core.wire`), or a feature config this code cannot
compute — always with a message that says which. The self-test itself is run by
:meth:`beeaudio.core.inference.Classifier.load`, because it needs an interpreter.

Imports only numpy and the standard library (plus ``beeaudio.core.features``): the device reads bundles too.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
import zlib
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import IO, Any

import numpy as np

from beeaudio.core.baseline import BaselineError, NormalizationSpec
from beeaudio.core.errors import BeeaudioError
from beeaudio.core.features import FeatureConfig
from beeaudio.core.fsio import sha256_hex
from beeaudio.core.novelty import KIND as NOVELTY_KIND
from beeaudio.core.novelty import MEMBER as NOVELTY_MEMBER
from beeaudio.core.novelty import VIEWS as NOVELTY_VIEWS
from beeaudio.core.novelty import NoveltyDetector
from beeaudio.core.wire import MAX_LABELS, MAX_NOVELTY, MAX_TIMESTAMP, name_reason

log = logging.getLogger(__name__)

BUNDLE_FORMAT_VERSION = 1
#: The format version of bundles whose features are relative to a hive baseline (older readers refuse it).
NORMALIZED_FORMAT_VERSION = 2
KNOWN_FORMAT_VERSIONS: tuple[int, ...] = (1, NORMALIZED_FORMAT_VERSION)
BUNDLE_SUFFIX = ".beemodel"

MODEL_MEMBER = "model.tflite"
MANIFEST_MEMBER = "manifest.json"
SELFTEST_MEMBER = "selftest.npz"
MEMBERS = (MODEL_MEMBER, MANIFEST_MEMBER, SELFTEST_MEMBER)

QUANTIZATIONS = ("float32", "int8")
# What each member may declare as its uncompressed size, checked before it is read: a member of zeros
# deflates a thousandfold, so without them a 408 KB bundle took 538 MB to read.
#: A trained bundle's manifest is 4 KB (its training summary included).
MAX_MANIFEST_BYTES = 1024 * 1024
#: A hive model is tens of KB; this is the collector's upload limit (64 MB), so what it takes fits.
MAX_MODEL_BYTES = 64 * 1024 * 1024
#: An export writes 8 self-test windows of 52 features (2.5 KB); room for MAX_SELFTEST_WINDOWS windows
#: of a frames model over long windows.
MAX_SELFTEST_BYTES = 16 * 1024 * 1024
# The detector's arrays are a few tens of KB (52 features: a 52 × 52 matrix per view); bounded well above.
MAX_NOVELTY_BYTES = 4 * 1024 * 1024
#: The windows of a self-test: every one runs through the model at every load of the bundle.
MAX_SELFTEST_WINDOWS = 256
#: Entries of a bundle's zip (or of one of its .npz members) and the size of its directory: zipfile parses
#: the whole directory, a few hundred bytes of memory per entry, before any member can be looked at, and a
#: 64 MB upload holds a million empty entries. A bundle has four members, an .npz a few arrays.
MAX_ARCHIVE_ENTRIES = 64
MAX_ARCHIVE_DIRECTORY_BYTES = 64 * 1024
#: The manifest's field with the :func:`content_digest` of the bundle.
CONTENT_DIGEST_FIELD = "content_sha256"
#: The first line of the text the content digest hashes: how it is computed, should that ever change.
CONTENT_DIGEST_SCHEME = "beeaudio.bundle-content/1"
#: The largest uncompressed size each member may declare.
MEMBER_LIMITS: Mapping[str, int] = MappingProxyType(
    {
        MANIFEST_MEMBER: MAX_MANIFEST_BYTES,
        MODEL_MEMBER: MAX_MODEL_BYTES,
        SELFTEST_MEMBER: MAX_SELFTEST_BYTES,
        NOVELTY_MEMBER: MAX_NOVELTY_BYTES,
    }
)
#: The members the content digest covers after the manifest, in this order (novelty.npz when the archive
#: holds it). A member a later format adds is vouched for by a checksum in its manifest section, as
#: novelty.npz is, so the digest covers it through the manifest and older readers compute the same.
DIGEST_MEMBERS = (MODEL_MEMBER, SELFTEST_MEMBER, NOVELTY_MEMBER)
#: Views a novelty section may list (this code computes the ones in beeaudio.core.novelty.VIEWS).
MAX_NOVELTY_VIEWS = 8
#: Self-test tolerance of float32 models: runtimes differ only by float rounding (FMA on ARM or not).
FLOAT_SELFTEST_ATOL = 1e-4
#: int8 self-test tolerance, part 1, in quantisation steps of the logits (the softmax/logistic input). The
#: runtimes' two kernel families requantise the last layer's exact int32 sums with different roundings:
#: XNNPACK (LiteRT's default, the same results on x86 and aarch64) and the builtin kernels (LiteRT without
#: its delegate, tflite-runtime 2.14's int8 path) put a logit one step apart on 41 of 176 windows of the
#: tiny test model, never more; one logit step moves a probability by up to ``gain * logit_scale``.
SELFTEST_LOGIT_STEPS = 1
#: Part 2, in output quantisation steps: each side rounds its probability to the output grid.
SELFTEST_OUTPUT_STEPS = 2
#: The rule of bundles written before the manifest's ``selftest`` section (logits not inspected).
LEGACY_OUTPUT_STEPS = 4


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
class NoveltySpec:
    """The manifest's ``novelty`` section: which detector, its member's checksum, the threshold, and what
    the fit and the export measured (``info``: ``fitted_on``, ``threshold_rule``, ``heldout_flagged``, ...).
    """

    kind: str
    threshold: float
    views: tuple[str, ...]
    sha256: str
    member: str = NOVELTY_MEMBER
    info: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "member": self.member,
            "sha256": self.sha256,
            "threshold": float(self.threshold),
            "views": list(self.views),
            **self.info,
        }

    @classmethod
    def from_json(cls, data: Any) -> NoveltySpec:
        """Parse the section strictly; BundleError names what is wrong."""
        if not isinstance(data, dict):
            raise BundleError(f"manifest field 'novelty' must be an object, got {type(data).__name__}")
        missing = [name for name in ("kind", "member", "sha256", "threshold", "views") if name not in data]
        if missing:
            raise BundleError(f"manifest 'novelty' section lacks {', '.join(missing)}")
        kind, member, digest = data["kind"], data["member"], data["sha256"]
        threshold, views = data["threshold"], data["views"]
        if not isinstance(kind, str) or not kind or len(kind) > 64:
            raise BundleError(f"novelty kind must be a short non-empty string, got {kind!r}")
        if member != NOVELTY_MEMBER:
            raise BundleError(f"novelty member must be {NOVELTY_MEMBER!r}, got {member!r}")
        if not _is_sha256(digest):
            raise BundleError(f"novelty sha256 must be 64 lowercase hex digits, got {digest!r}")
        if (
            isinstance(threshold, bool)
            or not isinstance(threshold, int | float)
            or not (math.isfinite(threshold) and 0.0 < threshold <= MAX_NOVELTY)
        ):
            raise BundleError(f"novelty threshold must be a positive finite number, got {threshold!r}")
        if (
            not isinstance(views, list)
            or not 1 <= len(views) <= MAX_NOVELTY_VIEWS
            or not all(isinstance(v, str) and v and len(v) <= 64 for v in views)
            or len(set(views)) != len(views)
        ):
            raise BundleError(f"novelty views must list 1..{MAX_NOVELTY_VIEWS} distinct names, got {views!r}")
        flagged = data.get("heldout_flagged")
        if flagged is not None and (
            isinstance(flagged, bool) or not isinstance(flagged, int | float) or not 0.0 <= flagged <= 1.0
        ):
            raise BundleError(f"novelty heldout_flagged must be a share in [0, 1] or null, got {flagged!r}")
        info = {k: v for k, v in data.items() if k not in ("kind", "member", "sha256", "threshold", "views")}
        return cls(
            kind=kind, threshold=float(threshold), views=tuple(views), sha256=digest, member=member, info=info
        )


def _is_sha256(value: Any) -> bool:
    return isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value)


#: Largest |Δp| per unit of |Δz| (every logit moved by at most that) of the output activations:
#: softmax Σ_j |∂p_i/∂z_j| = 2 p_i (1 - p_i) <= 1/2; logistic p (1 - p) <= 1/4.
ACTIVATION_GAIN = {"softmax": 0.5, "logistic": 0.25}


@dataclass(frozen=True)
class SelfTestTolerance:
    """The manifest's ``selftest`` section: how far a runtime's self-test outputs may be from the
    exporter's (``atol``, the same as in ``selftest.npz``) and what it was derived from.

    int8 models (:func:`selftest_tolerance`): ``logit_steps * logit_scale * gain + output_steps *
    output_scale``, where ``logit_scale`` is the quantisation step of the output activation's input (the
    logits) and ``gain`` the activation's largest slope (:data:`ACTIVATION_GAIN`), or more when the
    exporter measured more between the kernel families (``measured``). float32 models: 1e-4.
    """

    atol: float
    rule: str
    output_scale: float | None = None
    output_steps: float | None = None
    logit_scale: float | None = None
    logit_steps: float | None = None
    activation: str | None = None
    #: The largest |Δ| the exporter saw between XNNPACK and the builtin kernels, and over how many windows.
    measured: float | None = None
    measured_windows: int | None = None

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"atol": float(self.atol), "rule": self.rule}
        for name in (
            "output_scale", "output_steps", "logit_scale", "logit_steps", "activation", "measured",
            "measured_windows",
        ):  # fmt: skip
            if getattr(self, name) is not None:
                data[name] = getattr(self, name)
        return data

    @classmethod
    def from_json(cls, data: Any) -> SelfTestTolerance:
        """Parse the section strictly; BundleError names what is wrong."""
        if not isinstance(data, dict):
            raise BundleError(f"manifest field 'selftest' must be an object, got {type(data).__name__}")

        def number(name: str, *, required: bool = False) -> float | None:
            value = data.get(name)
            if value is None and not required:
                return None
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not (math.isfinite(value) and (value > 0 or (value == 0 and not required)))
            ):
                raise BundleError(f"manifest selftest {name} must be a positive finite number, got {value!r}")
            return float(value)

        rule, activation = data.get("rule", ""), data.get("activation")
        if not isinstance(rule, str) or len(rule) > 500:
            raise BundleError(f"manifest selftest rule must be a short string, got {rule!r}")
        if activation is not None and not isinstance(activation, str):
            raise BundleError(f"manifest selftest activation must be a string, got {activation!r}")
        return cls(
            atol=number("atol", required=True),  # type: ignore[arg-type]
            rule=rule,
            output_scale=number("output_scale"),
            output_steps=number("output_steps"),
            logit_scale=number("logit_scale"),
            logit_steps=number("logit_steps"),
            activation=activation,
            measured=number("measured"),
            measured_windows=int(windows) if (windows := number("measured_windows")) is not None else None,
        )


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
    # Optional novelty detector (its arrays are the bundle member ``novelty.npz``); None: no detector.
    novelty: NoveltySpec | None = None
    # Optional: the features are relative to the hive's baseline (format version 2); None: plain features.
    normalization: NormalizationSpec | None = None
    # Optional: the self-test tolerance and its derivation; None: a bundle written before it (the atol in
    # selftest.npz alone).
    selftest: SelfTestTolerance | None = None
    # Optional: the content digest read_bundle verified (content_digest); None: a bundle written before it.
    # write_bundle computes it: a value given to it is replaced.
    content_sha256: str | None = None

    def to_json(self) -> dict[str, Any]:
        data = {
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
        if self.novelty is not None:  # absent, not null, without one: manifests of older exports unchanged
            data["novelty"] = self.novelty.to_json()
        if self.normalization is not None:
            data["normalization"] = self.normalization.to_json()
        if self.selftest is not None:
            data["selftest"] = self.selftest.to_json()
        if self.content_sha256 is not None:
            data[CONTENT_DIGEST_FIELD] = self.content_sha256
        return data

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
        normalization = None
        if data.get("normalization") is not None:
            try:
                normalization = NormalizationSpec.from_json(data["normalization"])
            except BaselineError as exc:
                raise BundleError(f"manifest {exc}") from exc
        training = data.get("training", {})
        if not isinstance(training, dict):
            raise BundleError(f"manifest field 'training' must be an object, got {type(training).__name__}")
        created_at = data.get("created_at", "")
        if not isinstance(created_at, str):
            raise BundleError(f"manifest field 'created_at' must be a string, got {created_at!r}")
        digest = data.get(CONTENT_DIGEST_FIELD)
        if digest is not None and not _is_sha256(digest):
            raise BundleError(f"manifest field {CONTENT_DIGEST_FIELD!r} must be 64 lowercase hex digits")
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
            novelty=NoveltySpec.from_json(data["novelty"]) if data.get("novelty") is not None else None,
            normalization=normalization,
            selftest=(
                SelfTestTolerance.from_json(data["selftest"]) if data.get("selftest") is not None else None
            ),
            content_sha256=digest,
        )
        manifest.check()
        return manifest

    def check(self) -> None:
        """Internal consistency (labels vs output, features vs input, quantisation), and names that every
        event can carry (the feature config bounds itself: FeatureConfig); BundleError if broken."""
        # The name, the version and each label go into every event and heartbeat the device sends: one the
        # wire refuses would have every event dead-lettered and every heartbeat refused.
        if len(self.labels) > MAX_LABELS:
            raise BundleError(
                f"manifest field labels lists {len(self.labels)} labels; an event carries at most "
                f"{MAX_LABELS} labels"
            )
        for where, value in (
            ("model_name", self.model_name),
            ("model_version", self.model_version),
            *((f"labels[{i}]", label) for i, label in enumerate(self.labels)),
        ):
            reason = name_reason(value, where=f"manifest field {where}")
            if reason:
                raise BundleError(reason)
        if len(self.created_at) > MAX_TIMESTAMP:
            raise BundleError(
                f"manifest field created_at must be a timestamp of at most {MAX_TIMESTAMP} characters, got "
                f"{len(self.created_at)}"
            )
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
        if not _is_sha256(self.model_sha256):
            raise BundleError(f"model_sha256 must be 64 lowercase hex digits, got {self.model_sha256!r}")
        if self.normalization is not None and self.format_version < NORMALIZED_FORMAT_VERSION:
            raise BundleError(
                f"the features are relative to a hive baseline (normalization {self.normalization.kind}) but "
                f"format_version is {self.format_version}: such bundles are format "
                f"{NORMALIZED_FORMAT_VERSION}, so that an older beeaudio refuses them instead of running "
                "them on plain features"
            )
        if self.normalization is not None and self.normalization.calibration_label not in self.labels:
            raise BundleError(
                f"normalization calibration_label {self.normalization.calibration_label!r} is not one of the "
                f"labels {list(self.labels)}"
            )

        tolerance = self.selftest
        if (
            tolerance is not None
            and tolerance.output_scale is not None
            and not (
                self.output_quant is not None
                and math.isclose(tolerance.output_scale, self.output_quant.scale, rel_tol=1e-6)
            )
        ):
            raise BundleError(
                f"the self-test tolerance was derived for output scale {tolerance.output_scale:g}, but the "
                f"model's output quantisation is {self.output_quant}"
            )

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
        if features.ndim >= 1 and features.shape[0] > MAX_SELFTEST_WINDOWS:
            raise BundleError(
                f"self-test has {features.shape[0]} windows, more than {MAX_SELFTEST_WINDOWS} (each runs "
                "through the model at every load)"
            )
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
    #: The novelty detector, or None (no ``novelty`` section, or a kind this code does not compute).
    novelty: NoveltyDetector | None = None


def selftest_tolerance(
    *,
    quantization: str,
    output_quant: QuantParams | None = None,
    logit_quant: QuantParams | None = None,
    activation: str | None = None,
    measured: float | None = None,
    measured_windows: int | None = None,
) -> SelfTestTolerance:
    """How far a runtime may drift from the exporting one and still be the same model, from its quantisation.

    Integer sums are exact everywhere; runtimes differ where they round. What was measured (x86 and aarch64
    under qemu, LiteRT with and without XNNPACK, tflite-runtime 2.14): XNNPACK gives the same int8 results
    on both architectures; the builtin kernels, which a runtime uses when XNNPACK is off or cannot start,
    requantise the logits one step apart from it on some windows; for equal logits every softmax agreed.
    So an int8 model's tolerance is :data:`SELFTEST_LOGIT_STEPS` logit steps through the activation's slope
    plus :data:`SELFTEST_OUTPUT_STEPS` output steps. It grows with the logit scale: a confident model (logit
    scale 0.16) moves by 0.04 for one logit step, ten output steps, which the former fixed rule of
    :data:`LEGACY_OUTPUT_STEPS` output steps refused. ``measured`` (the largest |Δ| the exporter saw between
    the two kernel families) widens it to ``measured`` plus two output steps when that is more (a deeper
    model whose hidden layers add up to a second logit step). ``logit_quant`` unknown: the former rule.
    Anything beyond is a wrong model, wrong features or a broken runtime.
    """
    if quantization == "float32":
        atol, rule = FLOAT_SELFTEST_ATOL, "float32: 1e-4 (float rounding only)"
        if measured is not None and 2 * measured > atol:
            atol, rule = 2 * measured, f"float32: twice the {measured:.3g} measured between kernels"
        return SelfTestTolerance(atol=atol, rule=rule, measured=measured, measured_windows=measured_windows)
    step = output_quant.scale if output_quant else 1.0 / 256.0
    gain = ACTIVATION_GAIN.get(activation or "")
    if logit_quant is None or gain is None:
        return SelfTestTolerance(
            atol=float(max(LEGACY_OUTPUT_STEPS * step, 1e-3)),
            rule=f"int8: {LEGACY_OUTPUT_STEPS} output steps (output activation and logits not inspected)",
            output_scale=float(step),
            output_steps=float(LEGACY_OUTPUT_STEPS),
        )
    atol = SELFTEST_LOGIT_STEPS * logit_quant.scale * gain + SELFTEST_OUTPUT_STEPS * step
    rule = (
        f"int8: {SELFTEST_LOGIT_STEPS} logit step x {logit_quant.scale:.6g} x {activation} gain {gain:g} "
        f"+ {SELFTEST_OUTPUT_STEPS} output steps x {step:.6g}"
    )
    if measured is not None and measured + SELFTEST_OUTPUT_STEPS * step > atol:
        atol = measured + SELFTEST_OUTPUT_STEPS * step
        rule = f"int8: the {measured:.6g} measured between kernels + {SELFTEST_OUTPUT_STEPS} output steps"
    return SelfTestTolerance(
        atol=float(atol),
        rule=rule,
        output_scale=float(step),
        output_steps=float(SELFTEST_OUTPUT_STEPS),
        logit_scale=float(logit_quant.scale),
        logit_steps=float(SELFTEST_LOGIT_STEPS),
        activation=activation,
        measured=measured,
        measured_windows=measured_windows,
    )


def default_selftest_atol(*, quantization: str, output_quant: QuantParams | None = None) -> float:
    """The tolerance of :func:`selftest_tolerance` without the model's logits: 4 output quantisation steps
    for int8, 1e-4 for float32 (the rule of bundles written before the manifest's ``selftest`` section).
    An exporter that can inspect the model uses ``bundle_writer.selftest_tolerance_for_model``."""
    return selftest_tolerance(quantization=quantization, output_quant=output_quant).atol


def content_digest(*, manifest: Mapping[str, Any], members: Mapping[str, bytes]) -> str:
    """The bundle's content digest: the sha256 of the text of lines ``<name> <sha256 of its bytes>`` for the
    manifest (its canonical JSON: keys sorted, no spaces, ASCII, without :data:`CONTENT_DIGEST_FIELD`), then
    each of :data:`DIGEST_MEMBERS` that ``members`` holds, after a first line :data:`CONTENT_DIGEST_SCHEME`.

    ``manifest`` is the manifest as JSON parses it (not :meth:`BundleManifest.to_json`: keys a newer
    beeaudio wrote are covered too). Integrity only: anyone can recompute it after an edit.
    """
    document = {key: value for key, value in manifest.items() if key != CONTENT_DIGEST_FIELD}
    canonical = json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    lines = [CONTENT_DIGEST_SCHEME, f"{MANIFEST_MEMBER} {sha256_hex(canonical.encode('ascii'))}"]
    lines += [f"{name} {sha256_hex(members[name])}" for name in DIGEST_MEMBERS if name in members]
    return sha256_hex("".join(f"{line}\n" for line in lines).encode("ascii"))


#: What zipfile raises for an archive it cannot read, besides BadZipFile: a member's deflate stream that
#: is damaged (zlib.error), truncated (EOFError), of an unknown method (NotImplementedError) or encrypted
#: (RuntimeError).
_ARCHIVE_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, OSError, EOFError, zlib.error, NotImplementedError,
    RuntimeError,
)  # fmt: skip


def read_bundle(path: Path) -> Bundle:
    """Read and verify a bundle: members (each within its size limit, none twice), format version, manifest
    fields, feature config, checksums, the self-test's arrays (bounded before they are read)."""
    path = Path(path)
    if not path.is_file():
        raise BundleError(f"{path}: no such bundle file")
    if not zipfile.is_zipfile(path):
        raise BundleError(f"{path}: not a model bundle (not a zip archive)")
    try:
        with path.open("rb") as handle:
            _check_directory(handle, where=str(path))
        with zipfile.ZipFile(path) as archive:
            infos = _unique_members(archive, where=str(path))
            missing = [name for name in MEMBERS if name not in infos]
            if missing:
                raise BundleError(f"{path}: bundle is missing member(s) {', '.join(missing)}")
            present = [name for name in MEMBER_LIMITS if name in infos]
            sizes = {name: infos[name].file_size for name in present}
            too_big = [
                f"{name} declares {sizes[name]} bytes, more than the {MEMBER_LIMITS[name]} it may hold"
                for name in present
                if sizes[name] > MEMBER_LIMITS[name]
            ]
            if too_big:
                raise BundleError(
                    f"{path}: {'; '.join(too_big)} (a member larger than that is a mistake or a zip bomb)"
                )
            data = {name: archive.read(name) for name in present}
    except _ARCHIVE_ERRORS as exc:
        raise BundleError(f"{path}: damaged bundle archive: {type(exc).__name__}: {exc}") from exc

    try:
        manifest_json = json.loads(data[MANIFEST_MEMBER].decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise BundleError(f"{path}: manifest.json is not valid JSON: {exc}") from exc
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    _verify_content_digest(path, manifest_json, data)
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
        arrays = _npz_arrays(
            where=f"{path}: {SELFTEST_MEMBER}",
            data=data[SELFTEST_MEMBER],
            max_bytes=MAX_SELFTEST_BYTES,
            keys=("features", "expected", "atol"),
            check=_check_selftest_headers,
        )
        selftest = SelfTest(
            features=np.asarray(arrays["features"], dtype=np.float32),
            expected=np.asarray(arrays["expected"], dtype=np.float32),
            atol=float(arrays["atol"].reshape(())),
        )
    except (ValueError, *_ARCHIVE_ERRORS) as exc:
        raise BundleError(f"{path}: selftest.npz unreadable (needs features, expected, atol): {exc}") from exc
    try:
        selftest.check_shapes(manifest)
    except BundleError as exc:
        raise BundleError(f"{path}: {exc}") from exc
    if manifest.selftest is not None and not math.isclose(
        selftest.atol, manifest.selftest.atol, rel_tol=1e-9
    ):
        raise BundleError(
            f"{path}: selftest.npz has atol {selftest.atol:.6g} but the manifest's selftest section says "
            f"{manifest.selftest.atol:.6g} — the bundle was altered"
        )
    detector = _novelty_detector(path, manifest, data.get(NOVELTY_MEMBER))
    return Bundle(
        path=path, manifest=manifest, model_bytes=data[MODEL_MEMBER], selftest=selftest, novelty=detector
    )


def _verify_content_digest(path: Path, manifest: Any, members: Mapping[str, bytes]) -> None:
    """Refuse a bundle whose manifest or members are not what its content digest says; a manifest without
    one (written before it) passes."""
    declared = manifest.get(CONTENT_DIGEST_FIELD) if isinstance(manifest, dict) else None
    if declared is None:
        return
    if not _is_sha256(declared):
        raise BundleError(f"{path}: manifest field {CONTENT_DIGEST_FIELD!r} must be 64 lowercase hex digits")
    actual = content_digest(manifest=manifest, members=members)
    if actual != declared:
        raise BundleError(
            f"{path}: content checksum mismatch: the manifest's {CONTENT_DIGEST_FIELD} is {declared}, its "
            f"manifest and members give {actual} — the bundle is damaged or was altered"
        )


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """A JSON object's keys, none twice: JSON keeps the last of two, another reader the first."""
    counts = Counter(key for key, _ in pairs)
    twice = sorted(key for key, n in counts.items() if n > 1)
    if twice:
        raise BundleError(f"manifest.json has key(s) {', '.join(map(repr, twice))} twice")
    return dict(pairs)


def _check_directory(handle: IO[bytes], *, where: str) -> None:
    """Refuse an archive whose directory is larger than a bundle's, before zipfile parses it (it keeps every
    entry in memory). Reads the end record as zipfile does (``zipfile._EndRecData``, zip64 included)."""
    end_record = getattr(zipfile, "_EndRecData", None)
    if end_record is None:  # not public API: without it, the member limits still hold
        return
    end = end_record(handle)
    if end is None:
        raise BundleError(f"{where} unreadable: not a zip archive")
    entries, size = end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]
    if entries > MAX_ARCHIVE_ENTRIES:
        raise BundleError(f"{where}: the archive lists {entries} entries, more than {MAX_ARCHIVE_ENTRIES}")
    if size > MAX_ARCHIVE_DIRECTORY_BYTES:
        raise BundleError(
            f"{where}: the archive's directory is {size} bytes, more than {MAX_ARCHIVE_DIRECTORY_BYTES}"
        )


def _unique_members(archive: zipfile.ZipFile, *, where: str) -> dict[str, zipfile.ZipInfo]:
    """The archive's entries by name, refusing a name that is there twice: zipfile reads the last of them,
    another unzip tool the first, so which one is the bundle?"""
    infos = archive.infolist()
    counts = Counter(info.filename for info in infos)
    twice = sorted(name for name, n in counts.items() if n > 1)
    if twice:
        raise BundleError(f"{where}: the archive holds {', '.join(twice)} twice")
    return {info.filename: info for info in infos}


@dataclass(frozen=True)
class _NpyHeader:
    shape: tuple[int, ...]
    dtype: np.dtype


def _npz_arrays(
    *,
    where: str,
    data: bytes,
    max_bytes: int,
    keys: Sequence[str] | None = None,
    check: Callable[[Mapping[str, _NpyHeader]], None] | None = None,
) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` member (``keys``, or all), each one's declared size and header checked
    before it is read: np.load allocates whatever a header declares before it reads a byte (2 TB for a
    header of a few hundred bytes), and a deflated array of zeros inflates a thousandfold. ``check`` sees
    the headers (shape, dtype) first and raises BundleError for what it refuses."""
    buffer = io.BytesIO(data)
    _check_directory(buffer, where=where)
    with zipfile.ZipFile(buffer) as npz:
        infos = _unique_members(npz, where=where)
        available = {name.removesuffix(".npy"): info for name, info in infos.items() if name.endswith(".npy")}
        wanted = list(available) if keys is None else list(keys)
        missing = [key for key in wanted if key not in available]
        if missing:
            raise BundleError(f"{where} lacks array(s) {', '.join(missing)}")
        headers: dict[str, _NpyHeader] = {}
        total = 0
        for key in wanted:
            info = available[key]
            total += info.file_size
            if total > max_bytes:
                raise BundleError(
                    f"{where} member {info.filename} declares {info.file_size} bytes, more than the "
                    f"{max_bytes} the whole member may hold"
                )
            with npz.open(info) as stream:
                header = _npy_header(stream, where=f"{where} member {info.filename}")
            size = math.prod(header.shape) * header.dtype.itemsize
            if size > info.file_size:  # a header that promises more than the member holds
                raise BundleError(
                    f"{where} member {info.filename}: its header declares a {header.dtype} array of shape "
                    f"{header.shape} ({size} bytes), more than the member's {info.file_size} bytes"
                )
            headers[key] = header
        if check is not None:
            check(headers)
        arrays = {}
        for key in wanted:
            with npz.open(available[key]) as stream:
                arrays[key] = np.lib.format.read_array(stream, allow_pickle=False)
    return arrays


def _npy_header(stream: IO[bytes], *, where: str) -> _NpyHeader:
    """The shape and dtype an ``.npy`` stream declares, read from its first bytes only."""
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, _, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version == (2, 0):
            shape, _, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise BundleError(f"{where}: .npy format version {version} is not one a bundle uses")
    except (ValueError, SyntaxError, *_ARCHIVE_ERRORS) as exc:
        raise BundleError(f"{where}: not an .npy array: {exc}") from exc
    if dtype.hasobject or dtype.kind not in "biuf":
        raise BundleError(f"{where}: holds {dtype} values; a bundle's arrays hold numbers")
    return _NpyHeader(shape=tuple(int(d) for d in shape), dtype=dtype)


def _check_selftest_headers(headers: Mapping[str, _NpyHeader]) -> None:
    features, atol = headers["features"], headers["atol"]
    if features.shape and features.shape[0] > MAX_SELFTEST_WINDOWS:
        raise BundleError(
            f"self-test has {features.shape[0]} windows, more than {MAX_SELFTEST_WINDOWS} (each runs through "
            "the model at every load)"
        )
    if math.prod(atol.shape) != 1:
        raise BundleError(f"self-test atol must be one number, got an array of shape {atol.shape}")


def _novelty_detector(path: Path, manifest: BundleManifest, member: bytes | None) -> NoveltyDetector | None:
    """The detector the manifest's ``novelty`` section describes, verified against its member."""
    spec = manifest.novelty
    if spec is None:
        return None  # an older bundle (or a member without a section, which nothing vouches for)
    if member is None:
        raise BundleError(f"{path}: the manifest has a novelty section but the bundle lacks {NOVELTY_MEMBER}")
    digest = sha256_hex(member)
    if digest != spec.sha256:
        raise BundleError(
            f"{path}: {NOVELTY_MEMBER} checksum mismatch: manifest says sha256 {spec.sha256}, the file has "
            f"{digest} — the bundle is damaged or was altered"
        )
    unknown_views = [view for view in spec.views if view not in NOVELTY_VIEWS]
    if spec.kind != NOVELTY_KIND or unknown_views:
        # A newer detector: the model still serves, its windows are just not checked for familiarity.
        what = f"views {unknown_views}" if spec.kind == NOVELTY_KIND else f"kind {spec.kind!r}"
        log.warning(
            "%s: novelty detector with %s is not one this beeaudio computes (%s %s): loaded without it",
            path, what, NOVELTY_KIND, "/".join(NOVELTY_VIEWS),
        )  # fmt: skip
        return None
    try:
        arrays = _npz_arrays(where=f"{path}: {NOVELTY_MEMBER}", data=member, max_bytes=MAX_NOVELTY_BYTES)
        return NoveltyDetector.from_arrays(
            arrays,
            config=manifest.feature_config,
            views=spec.views,
            threshold=spec.threshold,
            n_classes=len(manifest.labels),
        )
    except (ValueError, *_ARCHIVE_ERRORS) as exc:
        raise BundleError(f"{path}: {NOVELTY_MEMBER} is not a usable novelty detector: {exc}") from exc

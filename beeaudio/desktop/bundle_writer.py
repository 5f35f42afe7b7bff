"""Writing model bundles: the desktop side of :mod:`beeaudio.core.bundle`.

A device only reads bundles. Writing one (completing the manifest from the model, making the self-test,
zipping atomically and loading the result back as a device would) happens at export, on the desktop.
"""

from __future__ import annotations

import io
import json
import logging
import math
import sys
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core import inference
from beeaudio.core.bundle import (
    CONTENT_DIGEST_FIELD,
    MANIFEST_MEMBER,
    MEMBER_LIMITS,
    MODEL_MEMBER,
    NOVELTY_MEMBER,
    SELFTEST_MEMBER,
    BundleError,
    BundleManifest,
    NoveltySpec,
    QuantParams,
    SelfTest,
    SelfTestTolerance,
    content_digest,
    selftest_tolerance,
    sha256_hex,
)
from beeaudio.core.fsio import atomic_path, json_default
from beeaudio.core.inference import Classifier, ModelRunner, standardize
from beeaudio.core.novelty import NoveltyDetector

log = logging.getLogger(__name__)


def make_selftest(
    *,
    model_bytes: bytes,
    features: np.ndarray,
    atol: float | None = None,
    runtime: str | None = None,
    feature_mean: Sequence[float] | None = None,
    feature_std: Sequence[float] | None = None,
) -> SelfTest:
    """A bundle self-test: ``features`` (a few raw windows) with the outputs this runtime computes for them.

    Pass the manifest's ``feature_mean``/``feature_std`` if it has them. The default tolerance is derived
    from the model's quantisation (:func:`selftest_tolerance_for_model`).
    """
    runner = ModelRunner(model_bytes=model_bytes, runtime=runtime)
    windows = np.asarray(features, dtype=np.float32)
    expected = runner.run(standardize(features=windows, mean=feature_mean, std=feature_std))
    if atol is None:
        atol = selftest_tolerance_for_model(
            model_bytes=model_bytes,
            runtime=runtime,
            features=windows,
            feature_mean=feature_mean,
            feature_std=feature_std,
        ).atol
    return SelfTest(features=windows, expected=expected, atol=atol)


def selftest_tolerance_for_model(
    *,
    model_bytes: bytes,
    runtime: str | None = None,
    features: np.ndarray | None = None,
    feature_mean: Sequence[float] | None = None,
    feature_std: Sequence[float] | None = None,
) -> SelfTestTolerance:
    """The self-test tolerance of a model (:func:`beeaudio.core.bundle.selftest_tolerance`): from the
    quantisation of its output and of its logits (the input of the SOFTMAX or LOGISTIC op that makes the
    output), and with ``features`` (raw windows; ``feature_mean``/``feature_std`` as in the manifest) from
    what its two kernel families, XNNPACK and the builtin kernels, give for them on this machine."""
    interpreter, _ = inference.make_interpreter(model_bytes=model_bytes, runtime=runtime)
    signature = inference.describe_model(model_bytes=model_bytes, runtime=runtime)
    output = signature["output"]
    quantization = "float32" if signature["input"].dtype == "float32" else "int8"
    activation, logit_quant = None, None
    try:  # the op list is not in the interpreter's public API (the same in LiteRT and tflite-runtime)
        ops = interpreter._get_ops_details()
    except AttributeError:
        ops = []
    producer = next((op for op in ops if output.index in [int(i) for i in op["outputs"]]), None)
    if producer is not None and producer["op_name"] in ("SOFTMAX", "LOGISTIC") and len(producer["inputs"]):
        logits_index = int(producer["inputs"][0])
        detail = next(d for d in interpreter.get_tensor_details() if int(d["index"]) == logits_index)
        scale, zero_point = detail.get("quantization", (0.0, 0))
        if scale:
            activation = str(producer["op_name"]).lower()
            logit_quant = QuantParams(scale=float(scale), zero_point=int(zero_point))
    if quantization == "int8" and logit_quant is None:
        log.warning("the model's output is not an int8 softmax/logistic: its self-test tolerance is 4 steps")
    measured = None
    if features is not None and len(features):
        windows = standardize(features=np.asarray(features, np.float32), mean=feature_mean, std=feature_std)
        measured = _kernel_spread(model_bytes=model_bytes, runtime=runtime, features=windows)
    return selftest_tolerance(
        quantization=quantization,
        output_quant=output.quant,
        logit_quant=logit_quant,
        activation=activation,
        measured=measured,
        measured_windows=len(features) if measured is not None and features is not None else None,
    )


def _kernel_spread(*, model_bytes: bytes, runtime: str | None, features: np.ndarray) -> float | None:
    """The largest |Δ| of the outputs between the runtime's default kernels (XNNPACK) and its builtin ones
    for standardised ``features``; None when the runtime cannot turn its delegate off."""
    _, interpreter_class = inference.resolve_runtime(runtime)
    resolvers = getattr(sys.modules.get(interpreter_class.__module__), "OpResolverType", None)
    builtin = getattr(resolvers, "BUILTIN_WITHOUT_DEFAULT_DELEGATES", None)
    if builtin is None:
        return None
    outputs = []
    for options in ({}, {"experimental_op_resolver_type": builtin}):
        with inference.runtime_stderr_to_log():  # "INFO: Created TensorFlow Lite XNNPACK delegate"
            interpreter = interpreter_class(model_content=model_bytes, num_threads=1, **options)
            interpreter.allocate_tensors()
        spec_in, spec_out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
        tensor_in, tensor_out = inference._tensor_spec(spec_in), inference._tensor_spec(spec_out)
        if tensor_in.shape[0] != 1:
            interpreter.resize_tensor_input(tensor_in.index, [1, *tensor_in.shape[1:]])
            interpreter.allocate_tensors()
        q = inference.quantize(values=features, dtype=tensor_in.dtype, quant=tensor_in.quant)
        got = []
        for i in range(len(q)):
            interpreter.set_tensor(tensor_in.index, q[i : i + 1])
            interpreter.invoke()
            raw = interpreter.get_tensor(tensor_out.index)[0]
            got.append(inference.dequantize(values=raw, quant=tensor_out.quant).ravel())
        outputs.append(np.asarray(got, dtype=np.float64))
    return float(np.max(np.abs(outputs[0] - outputs[1])))


def _tolerance_section(
    *, model_bytes: bytes, selftest: SelfTest, manifest: BundleManifest
) -> SelfTestTolerance:
    """The manifest's ``selftest`` section for ``selftest``: the model's rule when that is what the
    self-test uses (``make_selftest`` without ``atol``), else the exporter's own value and what the rule
    would have given."""
    try:
        derived = selftest_tolerance_for_model(
            model_bytes=model_bytes,
            features=selftest.features,
            feature_mean=manifest.feature_mean,
            feature_std=manifest.feature_std,
        )
    except inference.RuntimeUnavailableError:
        return SelfTestTolerance(
            atol=float(selftest.atol), rule="set by the exporter (no TF-Lite runtime here)"
        )
    if math.isclose(derived.atol, selftest.atol, rel_tol=1e-9):
        return derived
    return SelfTestTolerance(
        atol=float(selftest.atol),
        rule=f"set by the exporter; the model's rule gives {derived.atol:.6g} ({derived.rule})",
    )


def _selftest_bytes(selftest: SelfTest) -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        features=np.asarray(selftest.features, dtype=np.float32),
        expected=np.asarray(selftest.expected, dtype=np.float32),
        atol=np.asarray(selftest.atol, dtype=np.float64),
    )
    return buffer.getvalue()


def novelty_member(
    *, detector: NoveltyDetector, info: dict[str, Any] | None = None
) -> tuple[bytes, NoveltySpec]:
    """The ``novelty.npz`` bytes of a detector and the manifest section that vouches for them (``info``:
    what the fit and the export measured, e.g. ``fitted_on``, ``threshold_rule``, ``heldout_flagged``)."""
    buffer = io.BytesIO()
    np.savez(buffer, **detector.to_arrays())
    data = buffer.getvalue()
    reserved = {"kind", "member", "sha256", "threshold", "views"}
    spec = NoveltySpec(
        kind=detector.kind,
        threshold=float(detector.threshold),
        views=tuple(detector.views),
        sha256=sha256_hex(data),
        info={k: v for k, v in (info or {}).items() if k not in reserved},
    )
    return data, spec


def complete_manifest(*, manifest: BundleManifest, model_bytes: bytes) -> BundleManifest:
    """Fill the checksum, shapes, dtypes and quantisation parameters from the model; refuse contradictions.

    Inspecting the model needs a TF-Lite interpreter; without one only the checksum is filled and checked.
    """
    digest = sha256_hex(model_bytes)
    if manifest.model_sha256 and manifest.model_sha256 != digest:
        raise BundleError(f"manifest model_sha256 {manifest.model_sha256} is not the model's sha256 {digest}")
    manifest = replace(manifest, model_sha256=digest)
    if not manifest.created_at:
        manifest = replace(manifest, created_at=datetime.now(UTC).isoformat(timespec="seconds"))

    try:
        signature = inference.describe_model(model_bytes=model_bytes)
    except inference.RuntimeUnavailableError:
        log.warning(
            "no TF-Lite runtime here: the manifest's shapes and dtypes are not checked against the model"
        )
        return manifest
    updates: dict[str, Any] = {}
    for name in ("input", "output"):
        tensor = signature[name]
        given_shape = tuple(getattr(manifest, f"{name}_shape") or ())
        # Accept the shape with or without the batch dimension; store the model's own.
        if given_shape and given_shape not in (tensor.shape, tensor.shape[1:]):
            raise BundleError(
                f"manifest {name}_shape {list(given_shape)} but the model's is {list(tensor.shape)}"
            )
        given_dtype = getattr(manifest, f"{name}_dtype")
        if given_dtype and given_dtype != tensor.dtype:
            raise BundleError(f"manifest {name}_dtype {given_dtype!r} but the model's is {tensor.dtype!r}")
        given_quant = getattr(manifest, f"{name}_quant")
        if given_quant and tensor.quant and not _same_quant(given_quant, tensor.quant):
            raise BundleError(f"manifest {name}_quant {given_quant} but the model's is {tensor.quant}")
        updates[f"{name}_shape"] = tensor.shape
        updates[f"{name}_dtype"] = tensor.dtype
        updates[f"{name}_quant"] = tensor.quant
    quantization = "float32" if signature["input"].dtype == "float32" else "int8"
    if manifest.quantization and manifest.quantization != quantization:
        raise BundleError(
            f"manifest says quantization {manifest.quantization!r} but the model is {quantization}"
        )
    updates["quantization"] = quantization
    return replace(manifest, **updates)


def _same_quant(a: QuantParams, b: QuantParams) -> bool:
    return a.zero_point == b.zero_point and math.isclose(a.scale, b.scale, rel_tol=1e-6)


def write_bundle(
    *,
    path: Path,
    manifest: BundleManifest,
    model_bytes: bytes,
    selftest: SelfTest,
    verify: bool = True,
    novelty: NoveltyDetector | None = None,
    novelty_info: dict[str, Any] | None = None,
) -> Path:
    """Write ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    The manifest is completed from the model (:func:`complete_manifest`) and checked. With ``novelty`` the
    detector goes in as ``novelty.npz`` and the manifest's ``novelty`` section (``novelty_info`` added to
    it) records its checksum. The manifest's ``content_sha256`` (:func:`beeaudio.core.bundle.content_digest`)
    covers the manifest and every member; each member is held to its size limit (``MEMBER_LIMITS``), as a
    device reading the bundle would. With ``verify`` the bundle is read back and loaded with a TF-Lite
    interpreter, so a bundle that a device would refuse (self-test failing, unreadable model, a detector
    that does not fit the features) fails here, at export, instead.
    """
    path = Path(path)
    if not model_bytes:
        raise BundleError("model bytes are empty")
    extra_members: dict[str, bytes] = {}
    if novelty is not None:
        if novelty.config != manifest.feature_config or novelty.n_classes != len(manifest.labels):
            raise BundleError("the novelty detector was fitted for other features or labels than the model's")
        member, spec = novelty_member(detector=novelty, info=novelty_info)
        extra_members[NOVELTY_MEMBER] = member
        manifest = replace(manifest, novelty=spec)
    manifest = complete_manifest(manifest=manifest, model_bytes=model_bytes)
    # Checked first: the tolerance is measured by running the self-test's windows through the model.
    manifest.check()
    selftest.check_shapes(manifest)
    if manifest.selftest is None:
        tolerance = _tolerance_section(model_bytes=model_bytes, selftest=selftest, manifest=manifest)
        manifest = replace(manifest, selftest=tolerance)
    elif not math.isclose(manifest.selftest.atol, selftest.atol, rel_tol=1e-9):
        raise BundleError(
            f"the manifest's selftest atol {manifest.selftest.atol:.6g} is not the self-test's "
            f"{selftest.atol:.6g}"
        )
    manifest = replace(manifest, content_sha256=None)  # computed below, over what is written
    manifest.check()
    contents = {MODEL_MEMBER: model_bytes, SELFTEST_MEMBER: _selftest_bytes(selftest), **extra_members}
    # The digest is of the manifest as a reader parses it (numpy scalars already plain numbers).
    document = json.loads(json.dumps(manifest.to_json(), default=json_default))
    document[CONTENT_DIGEST_FIELD] = content_digest(manifest=document, members=contents)
    members = {MANIFEST_MEMBER: json.dumps(document, indent=2).encode("utf-8"), **contents}
    too_big = [
        f"{name} is {len(data)} bytes" for name, data in members.items() if len(data) > MEMBER_LIMITS[name]
    ]
    if too_big:
        limits = ", ".join(f"{name} {MEMBER_LIMITS[name]}" for name in members)
        raise BundleError(f"{'; '.join(too_big)}: more than a device reads (bytes: {limits})")
    # 0644: a bundle is not a secret and the device service may run as another user. Durable: an export
    # that returned has its bundle on disk.
    with atomic_path(path, mode=0o644, durable=True, suffix=".tmp") as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as archive:
            for name, data in members.items():
                archive.writestr(name, data)
        if verify:
            Classifier.load(tmp)
    log.info("wrote bundle %s (%s %s, %d bytes of model)", path, manifest.model_name, manifest.quantization,
             len(model_bytes))  # fmt: skip
    return path

"""Writing model bundles: the desktop side of :mod:`beeaudio.core.bundle`.

A device only reads bundles. Writing one (completing the manifest from the model, making the self-test,
zipping atomically and loading the result back as a device would) happens at export, on the desktop.
"""

from __future__ import annotations

import io
import json
import logging
import math
import zipfile
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from beeaudio.core import inference
from beeaudio.core.bundle import (
    MANIFEST_MEMBER,
    MODEL_MEMBER,
    SELFTEST_MEMBER,
    BundleError,
    BundleManifest,
    QuantParams,
    SelfTest,
    default_selftest_atol,
    sha256_hex,
)
from beeaudio.core.fsio import atomic_path, json_default
from beeaudio.core.inference import Classifier, ModelRunner, standardize

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

    Pass the manifest's ``feature_mean``/``feature_std`` if it has them. The default tolerance comes from
    :func:`beeaudio.core.bundle.default_selftest_atol`.
    """
    runner = ModelRunner(model_bytes=model_bytes, runtime=runtime)
    windows = np.asarray(features, dtype=np.float32)
    expected = runner.run(standardize(features=windows, mean=feature_mean, std=feature_std))
    if atol is None:
        quantization = "float32" if runner.input.dtype == "float32" else "int8"
        atol = default_selftest_atol(quantization=quantization, output_quant=runner.output.quant)
    return SelfTest(features=windows, expected=expected, atol=atol)


def _selftest_bytes(selftest: SelfTest) -> bytes:
    buffer = io.BytesIO()
    np.savez(
        buffer,
        features=np.asarray(selftest.features, dtype=np.float32),
        expected=np.asarray(selftest.expected, dtype=np.float32),
        atol=np.asarray(selftest.atol, dtype=np.float64),
    )
    return buffer.getvalue()


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
    *, path: Path, manifest: BundleManifest, model_bytes: bytes, selftest: SelfTest, verify: bool = True
) -> Path:
    """Write ``path`` atomically (temporary file in the same folder, then ``os.replace``).

    The manifest is completed from the model (:func:`complete_manifest`) and checked. With ``verify`` the
    bundle is read back and loaded with a TF-Lite interpreter, so a bundle that a device would refuse
    (self-test failing, unreadable model) fails here, at export, instead.
    """
    path = Path(path)
    if not model_bytes:
        raise BundleError("model bytes are empty")
    manifest = complete_manifest(manifest=manifest, model_bytes=model_bytes)
    manifest.check()
    selftest.check_shapes(manifest)
    manifest_text = json.dumps(manifest.to_json(), indent=2, sort_keys=False, default=json_default)
    members = {
        MANIFEST_MEMBER: manifest_text.encode("utf-8"),
        MODEL_MEMBER: model_bytes,
        SELFTEST_MEMBER: _selftest_bytes(selftest),
    }
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

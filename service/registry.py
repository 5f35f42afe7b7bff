"""Model registry for over-the-air updates: an upload is verified, loaded and self-tested, then kept.

Bundles are kept as files under ``<data_dir>/models/<model_id>.beemodel``; the database holds their
manifest and checksum, and where each is published (:mod:`beeaudio.collector.store.models`). ``sha256``
everywhere in the API is the checksum of the *bundle file* (what a device downloads and can verify); the
manifest's ``model_sha256`` (of model.tflite inside) is returned beside it.

An upload is refused (422, and no file is left behind) when :func:`beeaudio.core.bundle.read_bundle`
refuses it (which holds the model's name, version and labels to the event contract and its feature config
to what a device serves, ``beeaudio.core.wire``), when its manifest holds what the database cannot (a NUL,
a lone surrogate, anywhere in it), or when loading it and running its self-test in a child
process (:func:`beeaudio.core.sandbox.check_bundle_in_child`) crashes, hangs or fails: a bundle that
crashes a TF-Lite runtime here would crash every device it is published to.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from beeaudio.collector.store.errors import Invalid, Unavailable
from beeaudio.collector.store.models import StoredModel, add_model
from beeaudio.core import wire
from beeaudio.core.fsio import file_sha256, fsync_dir

log = logging.getLogger(__name__)

#: What a full data folder answers with: a device or an admin may try again once there is space.
DISK_FULL_RETRY_SECONDS = 60


class RegistryError(Invalid):
    """An upload the registry refuses (empty, not a bundle, a bundle that fails its checks): a 422."""


@dataclass(frozen=True)
class ModelCheck:
    """How uploads are loaded and self-tested in a child process (``enabled`` False: not at all)."""

    enabled: bool = True
    timeout_s: float = 60.0
    memory_limit_mb: int = 1024
    python: str | None = None  # the child's interpreter (None: this one)


def models_dir(data_dir: Path) -> Path:
    path = data_dir / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _screen_manifest(manifest: dict[str, Any]) -> None:
    """The whole manifest goes into the database: refuse what it cannot store (read_bundle has held the
    names and labels, which go into every event, to the event contract already)."""
    reason = wire.unclean_reason(manifest, where="manifest")
    if reason:
        raise RegistryError(f"not a valid model bundle: {reason}")


def _self_test(*, path: Path, check: ModelCheck) -> None:
    """Load the bundle and run its self-test in a child process; a crash or a failure refuses it."""
    from beeaudio.core.bundle import BundleError
    from beeaudio.core.inference import RuntimeUnavailableError
    from beeaudio.core.sandbox import SandboxError, check_bundle_in_child

    try:
        checked = check_bundle_in_child(
            path=path, timeout_s=check.timeout_s, memory_limit_mb=check.memory_limit_mb, python=check.python
        )
    except BundleError as exc:  # BundleCrashError too: the model crashed, hung or ran out of memory
        raise RegistryError(f"the bundle fails on a TF-Lite runtime: {_without_path(exc, path)}") from exc
    except RuntimeUnavailableError as exc:
        raise Unavailable(
            "this collector cannot self-test bundles: no TF-Lite runtime is installed next to it "
            f"({exc}); install ai-edge-litert (pip install 'beeaudio[edge]'), or set "
            "BEEAUDIO_MODEL_CHECK=false to keep bundles without the check"
        ) from exc
    except SandboxError as exc:
        raise Unavailable(f"this collector cannot self-test bundles now: {exc}") from exc
    log.info(
        "bundle %s %s passed its self-test on %s in %.1f s",
        checked.model_name,
        checked.model_version,
        checked.runtime,
        checked.seconds,
    )


def _without_path(exc: Exception, path: Path) -> str:
    # The temporary name means nothing to the user: say what is wrong with their file.
    return str(exc).replace(f"{path}: ", "").replace(str(path), "the upload")


def store_upload(
    *, engine: Engine, data_dir: Path, upload: Path, check: ModelCheck, now_ms: int
) -> dict[str, Any]:
    """Verify the bundle in ``upload`` (a temporary file in :func:`models_dir`, which this moves or the
    caller removes) and keep it; idempotent by content. :class:`RegistryError` (422) for a bundle that
    is refused, :class:`Unavailable` (503) for a full disk or no runtime to check it on."""
    from beeaudio.core.bundle import BundleError, read_bundle

    if upload.stat().st_size == 0:
        raise RegistryError("empty upload: send the .beemodel file")
    try:
        bundle = read_bundle(upload)
    except BundleError as exc:
        raise RegistryError(f"not a valid model bundle: {_without_path(exc, upload)}") from exc
    except Exception as exc:
        # zipfile raises more than BundleError wraps (encrypted members, unknown compression ...):
        # whatever an uploaded file does, it is the file that is wrong, not the server.
        raise RegistryError(f"not a valid model bundle: {type(exc).__name__}: {exc}") from exc
    manifest = bundle.manifest.to_json()
    _screen_manifest(manifest)
    if check.enabled:
        _self_test(path=upload, check=check)
    digest = file_sha256(upload)
    model_id = digest[:16]
    final = upload.parent / f"{model_id}.beemodel"
    created = not final.exists()
    try:
        if created:
            with upload.open("rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(upload, final)
            fsync_dir(final.parent)
        info = add_model(
            engine=engine,
            model_id=model_id,
            model_name=bundle.manifest.model_name,
            model_version=bundle.manifest.model_version,
            manifest=manifest,
            sha256=digest,
            size=final.stat().st_size,
            filename=final.name,
            now_ms=now_ms,
        )
    except OSError as exc:
        if created:
            final.unlink(missing_ok=True)
        raise Unavailable(
            f"the data folder cannot take the bundle now ({exc.strerror}); nothing was kept",
            retry_after=DISK_FULL_RETRY_SECONDS,
        ) from exc
    except BaseException:
        # No record, no file: a bundle the database refused must not linger in the data folder.
        if created:
            final.unlink(missing_ok=True)
        raise
    log.info("model %s %s stored as %s", info["model_name"], info["model_version"], model_id)
    return info


def model_path(*, data_dir: Path, stored: StoredModel) -> Path:
    """Where a recorded model's bundle file is (it may be missing if the data folder was not restored)."""
    return models_dir(data_dir) / stored.filename

"""Model registry for over-the-air updates: an upload is verified with beeaudio.core.bundle and kept.

Bundles are kept as files under ``<data_dir>/models/<model_id>.beemodel``; the database holds their
manifest and checksum, and where each is published (:mod:`beeaudio.collector.store.models`). ``sha256``
everywhere in the API is the checksum of the *bundle file* (what a device downloads and can verify); the
manifest's ``model_sha256`` (of model.tflite inside) is returned beside it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any

from sqlalchemy.engine import Engine

from beeaudio.collector.store.errors import Invalid
from beeaudio.collector.store.models import StoredModel, add_model

log = logging.getLogger(__name__)


class RegistryError(Invalid):
    """An upload the registry refuses (empty, not a bundle, a bundle that fails its checks): a 422."""


def models_dir(data_dir: Path) -> Path:
    path = data_dir / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def store_upload(*, engine: Engine, data_dir: Path, content: bytes, now_ms: int) -> dict[str, Any]:
    """Verify a bundle (members, format version, manifest, checksum) and keep it; idempotent by content."""
    from beeaudio.core.bundle import BundleError, read_bundle

    if not content:
        raise RegistryError("empty upload: send the .beemodel file")
    folder = models_dir(data_dir)
    tmp = folder / f".upload-{uuid.uuid4().hex}.tmp"
    try:
        with tmp.open("wb") as handle:
            handle.write(content)
            handle.flush()
            os.fsync(handle.fileno())
        try:
            bundle = read_bundle(tmp)
        except BundleError as exc:
            # The temporary name means nothing to the user: say what is wrong with their file.
            reason = str(exc).replace(str(tmp) + ": ", "")
            raise RegistryError(f"not a valid model bundle: {reason}") from exc
        except Exception as exc:
            # zipfile raises more than BundleError wraps (encrypted members, unknown compression ...):
            # whatever an uploaded file does, it is the file that is wrong, not the server.
            raise RegistryError(f"not a valid model bundle: {type(exc).__name__}: {exc}") from exc
        digest = hashlib.sha256(content).hexdigest()
        model_id = digest[:16]
        final = folder / f"{model_id}.beemodel"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    manifest = bundle.manifest.to_json()
    info = add_model(
        engine=engine,
        model_id=model_id,
        model_name=bundle.manifest.model_name,
        model_version=bundle.manifest.model_version,
        manifest=manifest,
        sha256=digest,
        size=len(content),
        filename=final.name,
        now_ms=now_ms,
    )
    log.info("model %s %s stored as %s", info["model_name"], info["model_version"], model_id)
    return info


def model_path(*, data_dir: Path, stored: StoredModel) -> Path:
    """Where a recorded model's bundle file is (it may be missing if the data folder was not restored)."""
    return models_dir(data_dir) / stored.filename

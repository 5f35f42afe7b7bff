"""Model registry for over-the-air updates: upload (verified with beeaudio.core.bundle), publish, serve.

Bundles are kept as files under ``<data_dir>/models/<model_id>.beemodel``; the database holds their
manifest and checksum. ``sha256`` everywhere in the API is the checksum of the *bundle file* (what a device
downloads and can verify); the manifest's ``model_sha256`` (of model.tflite inside) is returned beside it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import uuid
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from beeaudio.collector.db import (
    ALL_HIVES,
    devices,
    hives,
    insert_for,
    model_publications,
    models,
    read_transaction,
    write_transaction,
)
from beeaudio.collector.timeutil import iso_ms
from sqlalchemy.engine import Engine

log = logging.getLogger(__name__)


class RegistryError(Exception):
    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail


def models_dir(data_dir: Path) -> Path:
    path = data_dir / "models"
    path.mkdir(parents=True, exist_ok=True)
    return path


def model_json(row: Any) -> dict[str, Any]:
    return {
        "model_id": row.model_id,
        "model_name": row.model_name,
        "model_version": row.model_version,
        "sha256": row.sha256,
        "size": row.size,
        "model_sha256": (row.manifest or {}).get("model_sha256"),
        "uploaded_at": iso_ms(row.uploaded_ms),
    }


def store_upload(*, engine: Engine, data_dir: Path, content: bytes, now_ms: int) -> dict[str, Any]:
    """Verify a bundle (members, format version, manifest, checksum) and keep it; idempotent by content."""
    from beeaudio.core.bundle import BundleError, read_bundle

    if not content:
        raise RegistryError(422, "empty upload: send the .beemodel file")
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
            raise RegistryError(422, f"not a valid model bundle: {reason}") from exc
        except Exception as exc:
            # zipfile raises more than BundleError wraps (encrypted members, unknown compression ...):
            # whatever an uploaded file does, it is the file that is wrong, not the server.
            raise RegistryError(422, f"not a valid model bundle: {type(exc).__name__}: {exc}") from exc
        digest = hashlib.sha256(content).hexdigest()
        model_id = digest[:16]
        final = folder / f"{model_id}.beemodel"
        os.replace(tmp, final)
    finally:
        tmp.unlink(missing_ok=True)
    manifest = bundle.manifest.to_json()
    with write_transaction(engine) as conn:
        insert = insert_for(conn)
        conn.execute(
            insert(models)
            .values(
                model_id=model_id,
                model_name=bundle.manifest.model_name,
                model_version=bundle.manifest.model_version,
                sha256=digest,
                size=len(content),
                filename=final.name,
                manifest=manifest,
                uploaded_ms=now_ms,
            )
            .on_conflict_do_nothing(index_elements=[models.c.model_id])
        )
        row = conn.execute(sa.select(models).where(models.c.model_id == model_id)).one()
    log.info("model %s %s stored as %s", row.model_name, row.model_version, model_id)
    return model_json(row)


def list_models(*, engine: Engine) -> list[dict[str, Any]]:
    with read_transaction(engine) as conn:
        rows = conn.execute(sa.select(models).order_by(models.c.uploaded_ms)).all()
        published = conn.execute(sa.select(model_publications)).all()
    targets: dict[str, list[str]] = {}
    for pub in published:
        targets.setdefault(pub.model_id, []).append(pub.target)
    return [{**model_json(row), "published_to": sorted(targets.get(row.model_id, []))} for row in rows]


def publish(*, engine: Engine, model_id: str, hive_id: str | None, now_ms: int) -> dict[str, Any]:
    """Make ``model_id`` the model of one hive, or of every hive (``hive_id`` None).

    A device gets the most recent publication that applies to it: its hive's or the all-hives one.
    """
    target = hive_id if hive_id is not None else ALL_HIVES
    with write_transaction(engine) as conn:
        if conn.execute(sa.select(models.c.model_id).where(models.c.model_id == model_id)).first() is None:
            raise RegistryError(404, f"model {model_id!r} does not exist")
        if hive_id is not None and (
            conn.execute(sa.select(hives.c.hive_id).where(hives.c.hive_id == hive_id)).first() is None
        ):
            raise RegistryError(404, f"hive {hive_id!r} does not exist")
        insert = insert_for(conn)
        stmt = insert(model_publications).values(target=target, model_id=model_id, published_ms=now_ms)
        conn.execute(
            stmt.on_conflict_do_update(
                index_elements=[model_publications.c.target],
                set_={"model_id": stmt.excluded.model_id, "published_ms": stmt.excluded.published_ms},
            )
        )
    return {"model_id": model_id, "hive_id": hive_id, "published_at": iso_ms(now_ms)}


def model_for_hive(*, engine: Engine, hive_id: str) -> dict[str, Any] | None:
    with read_transaction(engine) as conn:
        row = conn.execute(
            sa.select(models)
            .join(model_publications, model_publications.c.model_id == models.c.model_id)
            .where(model_publications.c.target.in_([hive_id, ALL_HIVES]))
            # Latest publication wins; on a tie the hive's own beats the all-hives one.
            .order_by(model_publications.c.published_ms.desc(), (model_publications.c.target == ALL_HIVES))
            .limit(1)
        ).first()
    return None if row is None else model_json(row)


def device_hive(*, engine: Engine, device_id: str) -> str | None:
    with read_transaction(engine) as conn:
        row = conn.execute(sa.select(devices.c.hive_id).where(devices.c.device_id == device_id)).first()
    return None if row is None else row.hive_id


def model_file(*, engine: Engine, data_dir: Path, model_id: str) -> tuple[Path, dict[str, Any]] | None:
    with read_transaction(engine) as conn:
        row = conn.execute(sa.select(models).where(models.c.model_id == model_id)).first()
    if row is None:
        return None
    return models_dir(data_dir) / row.filename, model_json(row)

"""The model registry's records: uploaded bundles (their manifest and checksum) and where each is
published. The bundle files themselves are :mod:`beeaudio.collector.registry`'s."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from beeaudio.collector.db import (
    ALL_HIVES,
    hives,
    insert_for,
    model_publications,
    models,
    read_transaction,
    write_transaction,
)
from beeaudio.collector.store.errors import NotFound
from beeaudio.collector.timeutil import iso_ms


@dataclass(frozen=True)
class StoredModel:
    """A model's API view and the name of its bundle file in the data folder."""

    info: dict[str, Any]
    filename: str


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


def add_model(
    *,
    engine: Engine,
    model_id: str,
    model_name: str,
    model_version: str,
    manifest: dict[str, Any],
    sha256: str,
    size: int,
    filename: str,
    now_ms: int,
) -> dict[str, Any]:
    """Record a kept bundle; the same bytes again (same ``model_id``) keep the first record."""
    with write_transaction(engine) as conn:
        insert = insert_for(conn)
        conn.execute(
            insert(models)
            .values(
                model_id=model_id,
                model_name=model_name,
                model_version=model_version,
                sha256=sha256,
                size=size,
                filename=filename,
                manifest=manifest,
                uploaded_ms=now_ms,
            )
            .on_conflict_do_nothing(index_elements=[models.c.model_id])
        )
        row = conn.execute(sa.select(models).where(models.c.model_id == model_id)).one()
    return model_json(row)


def list_models(*, engine: Engine) -> list[dict[str, Any]]:
    """Every uploaded model, oldest first, with the targets it is published to."""
    with read_transaction(engine) as conn:
        rows = conn.execute(sa.select(models).order_by(models.c.uploaded_ms)).all()
        published = conn.execute(sa.select(model_publications)).all()
    targets: dict[str, list[str]] = {}
    for pub in published:
        targets.setdefault(pub.model_id, []).append(pub.target)
    return [{**model_json(row), "published_to": sorted(targets.get(row.model_id, []))} for row in rows]


def publish(*, engine: Engine, model_id: str, hive_id: str | None, now_ms: int) -> dict[str, Any]:
    """Make ``model_id`` the model of one hive, or of every hive (``hive_id`` None); :class:`NotFound` for
    an unknown model or hive.

    A device gets the most recent publication that applies to it: its hive's or the all-hives one.
    """
    target = hive_id if hive_id is not None else ALL_HIVES
    with write_transaction(engine) as conn:
        if conn.execute(sa.select(models.c.model_id).where(models.c.model_id == model_id)).first() is None:
            raise NotFound(f"model {model_id!r} does not exist")
        if hive_id is not None and (
            conn.execute(sa.select(hives.c.hive_id).where(hives.c.hive_id == hive_id)).first() is None
        ):
            raise NotFound(f"hive {hive_id!r} does not exist")
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
    """The model the hive's devices should run, or None when nothing is published for it."""
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


def get_model(*, engine: Engine, model_id: str) -> StoredModel:
    """:class:`NotFound` for an unknown model."""
    with read_transaction(engine) as conn:
        row = conn.execute(sa.select(models).where(models.c.model_id == model_id)).first()
    if row is None:
        raise NotFound(f"model {model_id!r} does not exist")
    return StoredModel(info=model_json(row), filename=row.filename)

"""Hives: creation (with their state row) and their state-parameter overrides."""

from __future__ import annotations

import secrets
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from beeaudio.collector.db import hive_state, hives, write_transaction
from beeaudio.collector.state import ParamsError, StateParams
from beeaudio.collector.store.errors import Conflict, Invalid, NotFound
from beeaudio.collector.store.hive_state import finish_recomputes, lock_state, new_state_row, rederive
from beeaudio.collector.store.queries import hive_status
from beeaudio.core import wire


def _checked(*, defaults: StateParams, overrides: dict[str, Any]) -> StateParams:
    try:
        return defaults.with_overrides(overrides)
    except ParamsError as exc:
        raise Invalid(str(exc)) from exc


def create_hive(
    *,
    engine: Engine,
    defaults: StateParams,
    name: str,
    hive_id: str | None,
    overrides: dict[str, Any] | None,
    now_ms: int,
) -> dict[str, Any]:
    """Insert a hive (``hive_id`` generated when None) and its state row; returns its status.

    :class:`Invalid` for overrides that do not validate, :class:`Conflict` for a hive id in use."""
    overrides = dict(overrides or {})
    _checked(defaults=defaults, overrides=overrides)
    # PostgreSQL text cannot hold a NUL: refuse it here (422), for the API and the CLI alike.
    unclean = wire.unclean_reason(name, where="name")
    if unclean:
        raise Invalid(unclean)
    hive_id = hive_id or f"hive-{secrets.token_hex(4)}"
    try:
        with write_transaction(engine) as conn:
            conn.execute(
                sa.insert(hives).values(hive_id=hive_id, name=name, created_ms=now_ms, params=overrides)
            )
            conn.execute(sa.insert(hive_state).values(**new_state_row(hive_id=hive_id, now_ms=now_ms)))
    except IntegrityError as exc:
        raise Conflict(f"hive {hive_id!r} already exists") from exc
    return hive_status(engine=engine, hive_id=hive_id, defaults=defaults, now_ms=now_ms)


def replace_params(
    *,
    engine: Engine,
    defaults: StateParams,
    hive_id: str,
    overrides: dict[str, Any],
    webhook_urls: list[str],
    now_ms: int,
) -> dict[str, Any]:
    """Replace a hive's overrides and re-derive its state history from the rollups; returns its status.

    :class:`Invalid` for overrides that do not validate, :class:`NotFound` for an unknown hive."""
    overrides = dict(overrides)
    params = _checked(defaults=defaults, overrides=overrides)
    with write_transaction(engine) as conn:
        current = lock_state(conn=conn, hive_id=hive_id)
        if current is None:
            raise NotFound(f"hive {hive_id!r} does not exist")
        conn.execute(sa.update(hives).where(hives.c.hive_id == hive_id).values(params=overrides))
        values = rederive(
            conn=conn,
            hive_id=hive_id,
            current=current,
            params=params,
            webhook_urls=webhook_urls,
            now_ms=now_ms,
        )
        conn.execute(sa.update(hive_state).where(hive_state.c.hive_id == hive_id).values(**values))
    # A long history is derived on in transactions of their own (other hives' batches in between).
    finish_recomputes(
        engine=engine, defaults=defaults, webhook_urls=webhook_urls, now_ms=now_ms, hive_id=hive_id
    )
    return hive_status(engine=engine, hive_id=hive_id, defaults=defaults, now_ms=now_ms)

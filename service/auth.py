"""Bearer-token auth: admin, read and per-device tokens.

Device tokens are 256-bit random strings, shown once and stored only as their SHA-256. A slow password
hash (bcrypt, argon2) exists to make guessing *low-entropy* secrets expensive; a 256-bit random token cannot
be guessed either way, so a plain SHA-256 is enough and keeps the per-request check cheap. Every comparison
of a presented secret goes through ``hmac.compare_digest`` (constant time).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa
from beeaudio.collector.context import AppContext, get_context
from beeaudio.collector.db import devices, read_transaction
from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

DEVICE_TOKEN_PREFIX = "bdt_"

Role = Literal["admin", "read", "device"]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <admin, read or device token>")


@dataclass(frozen=True)
class Principal:
    role: Role
    device_id: str | None = None
    hive_id: str | None = None


def new_device_token() -> str:
    return DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def _equal(a: str, b: str) -> bool:
    return bool(b) and hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def authenticate(*, context: AppContext, token: str) -> Principal | None:
    if _equal(token, context.admin_token):
        return Principal(role="admin")
    if _equal(token, context.read_token):
        return Principal(role="read")
    if not token.startswith(DEVICE_TOKEN_PREFIX) or len(token) > 200:
        return None
    digest = token_digest(token)
    with read_transaction(context.engine) as conn:
        row = conn.execute(
            sa.select(devices.c.device_id, devices.c.hive_id, devices.c.token_sha256).where(
                devices.c.token_sha256 == digest, devices.c.revoked_ms.is_(None)
            )
        ).first()
    if row is None or not hmac.compare_digest(row.token_sha256, digest):
        return None
    return Principal(role="device", device_id=row.device_id, hive_id=row.hive_id)


def get_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    context: AppContext = Depends(get_context),
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer" or not credentials.credentials:
        raise HTTPException(401, "missing bearer token", headers={"WWW-Authenticate": "Bearer"})
    principal = authenticate(context=context, token=credentials.credentials)
    if principal is None:
        raise HTTPException(401, "unknown or revoked token", headers={"WWW-Authenticate": "Bearer"})
    return principal


def require_admin(principal: Principal = Depends(get_principal)) -> Principal:
    if principal.role != "admin":
        raise HTTPException(403, "this needs the admin token")
    return principal


def require_reader(principal: Principal = Depends(get_principal)) -> Principal:
    if principal.role not in ("admin", "read"):
        raise HTTPException(403, "this needs the read or the admin token; device tokens only send readings")
    return principal


def require_device(principal: Principal = Depends(get_principal)) -> Principal:
    if principal.role != "device":
        raise HTTPException(403, "this needs a device token")
    return principal


def require_own_device(*, principal: Principal, device_id: str) -> None:
    """A device token acts only for its own device (admin may act for any)."""
    if principal.role == "admin":
        return
    if principal.role != "device" or principal.device_id != device_id:
        raise HTTPException(403, f"this token may not act for device {device_id!r}")

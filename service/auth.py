"""Bearer-token auth: admin, read and per-device tokens.

Device tokens (:mod:`beeaudio.collector.tokens`) are shown once and stored only as their SHA-256. Every
comparison of a presented secret goes through ``hmac.compare_digest`` (constant time).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass
from typing import Literal

from fastapi import Depends, HTTPException, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from beeaudio.collector.context import AppContext, get_context
from beeaudio.collector.store.devices import token_owner
from beeaudio.collector.tokens import DEVICE_TOKEN_PREFIX, MAX_TOKEN_LENGTH, token_digest

Role = Literal["admin", "read", "device"]

_bearer = HTTPBearer(auto_error=False, description="Authorization: Bearer <admin, read or device token>")
#: Where :class:`beeaudio.collector.gate.RequestGate` leaves the principal it authenticated (in the ASGI
#: scope's ``state``), so a request with a body is looked up once, before its body is read.
PRINCIPAL_STATE = "beeaudio.principal"


@dataclass(frozen=True)
class Principal:
    role: Role
    device_id: str | None = None
    hive_id: str | None = None


def _equal(a: str, b: str) -> bool:
    return bool(b) and hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def bearer_token(header: str) -> str:
    """The token of an ``Authorization: Bearer <token>`` header; empty if there is none."""
    scheme, _, token = header.strip().partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def authenticate(*, context: AppContext, token: str) -> Principal | None:
    if _equal(token, context.admin_token):
        return Principal(role="admin")
    if _equal(token, context.read_token):
        return Principal(role="read")
    if not token.startswith(DEVICE_TOKEN_PREFIX) or len(token) > MAX_TOKEN_LENGTH:
        return None
    digest = token_digest(token)
    owner = token_owner(engine=context.engine, token_sha256=digest)
    if owner is None or not hmac.compare_digest(owner.token_sha256, digest):
        return None
    return Principal(role="device", device_id=owner.device_id, hive_id=owner.hive_id)


def get_principal(
    request: Request,
    credentials: HTTPAuthorizationCredentials | None = Depends(_bearer),
    context: AppContext = Depends(get_context),
) -> Principal:
    checked = request.scope.get("state", {}).get(PRINCIPAL_STATE)
    if isinstance(checked, Principal):
        return checked
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

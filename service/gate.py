"""The door of every request with a body: who sends it is checked before a byte of it is read.

A collector faces the internet (through a proxy) and its largest body is a model upload of up to
``MAX_MODEL_BYTES``. Read first and authenticated afterwards, a dozen anonymous uploads cost the server
their size in memory each. So, for ``POST``/``PUT``/``PATCH`` (every one of them needs a token):

1. the bearer token is checked from the headers alone: a body from nobody gets 401, an upload from
   anyone but the admin 403, and the body is never read (the principal is kept in the request's state,
   so the handler's auth does not look the token up twice);
2. a declared ``Content-Length`` over the path's limit is a 413, still unread;
3. the body then streams through to the handler as it arrives, never buffered here: counted (413 as soon
   as it passes the limit, with or without a ``Content-Length``) and timed (408 when the client stops
   sending for ``BODY_READ_TIMEOUT_SECONDS``, so a stalled upload cannot hold a request open).

The handlers read the small JSON bodies whole (FastAPI does, after this), and model uploads stream to a
file (:mod:`beeaudio.collector.uploads`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from fastapi import HTTPException
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sa_exc
from starlette.concurrency import run_in_threadpool
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beeaudio.collector.auth import PRINCIPAL_STATE, authenticate, bearer_token
from beeaudio.collector.context import AppContext
from beeaudio.collector.http_errors import database_unavailable

log = logging.getLogger(__name__)

#: Methods whose requests carry a body; every route of these needs a token.
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})


@dataclass(frozen=True)
class BodyPolicy:
    """What a path's body may be: at most ``limit`` bytes, and from which roles (None: any token)."""

    limit: int
    roles: frozenset[str] | None = None


class RequestGate:
    """ASGI middleware: authenticate before reading, then limit and time the body as it streams."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        context: AppContext,
        policy_for: Callable[[str, str], BodyPolicy],
        read_timeout_s: float,
    ) -> None:
        self.app = app
        self.context = context
        self.policy_for = policy_for
        self.read_timeout_s = read_timeout_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        policy = self.policy_for(scope["method"], scope["path"])
        headers = dict(scope.get("headers") or [])
        token = bearer_token(headers.get(b"authorization", b"").decode("latin-1"))
        if not token:
            await _answer(send, 401, "missing bearer token", {"WWW-Authenticate": "Bearer"})
            return
        try:
            principal = await run_in_threadpool(authenticate, context=self.context, token=token)
        except (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError) as exc:
            await database_unavailable(exc)(scope, _no_receive, send)
            return
        if principal is None:
            await _answer(send, 401, "unknown or revoked token", {"WWW-Authenticate": "Bearer"})
            return
        if policy.roles is not None and principal.role not in policy.roles:
            await _answer(send, 403, f"this needs the {' or '.join(sorted(policy.roles))} token")
            return
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > policy.limit):
            await _answer(send, 413, f"request body larger than {policy.limit} bytes")
            return
        scope.setdefault("state", {})[PRINCIPAL_STATE] = principal
        await self.app(scope, self._metered(receive, limit=policy.limit), send)

    def _metered(self, receive: Receive, *, limit: int) -> Receive:
        size = 0
        complete = False
        timeout = self.read_timeout_s

        async def metered() -> Message:
            nonlocal size, complete
            if complete:  # after the body: e.g. a response waiting for the client to disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout)
            except TimeoutError:
                log.warning("a request body stalled for %g s: answered 408", timeout)
                raise HTTPException(408, f"the request body did not arrive within {timeout:g} s") from None
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise HTTPException(413, f"request body larger than {limit} bytes")
                complete = not message.get("more_body", False)
            else:
                complete = True
            return message

        return metered


async def _answer(send: Send, status: int, detail: str, headers: dict[str, str] | None = None) -> None:
    response = JSONResponse(status_code=status, content={"detail": detail}, headers=headers)
    await response({"type": "http"}, _no_receive, send)


async def _no_receive() -> Message:  # pragma: no cover - a plain JSONResponse never reads
    return {"type": "http.disconnect"}

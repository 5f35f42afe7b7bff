"""Every path and query parameter screened before a handler sees it: a NUL (which PostgreSQL text cannot
hold, so any query comparing with it fails) or a lone surrogate is a 422 that names the parameter, on both
databases alike. Bodies are screened by their models and handlers with the same rule,
``wire.unclean_reason``."""

from __future__ import annotations

from fastapi import HTTPException, Request

from beeaudio.core import wire


async def screen_parameters(request: Request) -> None:
    """An app-wide dependency (the app factory installs it on every route)."""
    for name, value in request.path_params.items():
        reason = wire.unclean_reason(value, where=str(name))
        if reason:
            raise HTTPException(422, reason)
    for name, value in request.query_params.multi_items():
        reason = wire.unclean_reason(value, where=name) or wire.unclean_reason(name, where="query parameter")
        if reason:
            raise HTTPException(422, reason)

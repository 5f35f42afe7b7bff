"""Device tokens: 256-bit random strings with a recognisable prefix, kept only as their SHA-256.

A slow password hash (bcrypt, argon2) exists to make guessing *low-entropy* secrets expensive; a 256-bit
random token cannot be guessed either way, so a plain SHA-256 is enough and keeps the per-request check
to one indexed lookup.
"""

from __future__ import annotations

import hashlib
import secrets

DEVICE_TOKEN_PREFIX = "bdt_"
#: Longer presented tokens are refused before any lookup.
MAX_TOKEN_LENGTH = 200


def new_device_token() -> str:
    return DEVICE_TOKEN_PREFIX + secrets.token_urlsafe(32)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()

"""The store's errors: one base, one subclass per kind of refusal.

The kind decides the HTTP status (:mod:`beeaudio.collector.http_errors`) and the CLI exit code
(``exit_code``, from :mod:`beeaudio.core.errors`); the message says what is wrong and is shown as is.
"""

from __future__ import annotations

from beeaudio.core.errors import EXIT_FAILURE, EXIT_USAGE, BeeaudioError


class StoreError(BeeaudioError):
    """Base of every refusal the store raises on purpose."""

    exit_code = EXIT_FAILURE


class NotFound(StoreError):
    """The hive, device or model named does not exist."""


class Conflict(StoreError):
    """The thing to create exists already."""


class Invalid(StoreError):
    """The values break a rule (contract, parameter range, bundle format)."""

    # From the CLI these are the user's options (e.g. ``add-hive --params``): a usage error.
    exit_code = EXIT_USAGE


class Forbidden(StoreError):
    """The caller's device may not write what it sent (another device's or hive's ids)."""


class TooLarge(StoreError):
    """More than the configured limit in one request."""


class Unavailable(StoreError):
    """The collector cannot do this now (a full disk, a database that refuses writes, no runtime to check
    a bundle with): nothing was stored. ``retry_after`` (seconds) when trying again later can work."""

    def __init__(self, message: str, *, retry_after: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

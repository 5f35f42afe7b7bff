"""The collector's HTTP API as the device needs it: post events and heartbeats, ask for and fetch models.

Deliberately ``urllib.request`` from the standard library and not httpx/requests: the device stays light
(fewer wheels to find for a 32-bit Pi, less memory), and four plain requests need nothing more.
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from typing import Any

from beeaudio.core.errors import BeeaudioError

USER_AGENT = "beeaudio-device/1"


@dataclass(frozen=True)
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body.decode("utf-8")) if self.body else None

    def detail(self) -> str:
        """The collector's ``{"detail": ...}`` or the start of the body."""
        try:
            data = self.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and "detail" in data:
            return str(data["detail"])[:500]
        return self.body[:200].decode("utf-8", "replace")


class TransportError(BeeaudioError):
    """No HTTP answer at all: connection refused, DNS, timeout, reset."""


class CollectorClient:
    def __init__(self, *, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    def url(self, path: str) -> str:
        """Absolute URL of an API path, or of a ``download_url`` the collector gave (maybe absolute)."""
        return urllib.parse.urljoin(self.base_url + "/", path.lstrip("/")) if "://" not in path else path

    def request(
        self,
        method: str,
        path: str,
        *,
        body: Any = None,
        headers: dict[str, str] | None = None,
    ) -> Response:
        """One request; any HTTP status is a :class:`Response`, no answer is a :class:`TransportError`."""
        data = None
        all_headers = {"User-Agent": USER_AGENT, "Accept": "application/json"}
        if self.token:
            all_headers["Authorization"] = f"Bearer {self.token}"
        if body is not None:
            data = json.dumps(body, separators=(",", ":")).encode("utf-8")
            all_headers["Content-Type"] = "application/json"
        all_headers.update(headers or {})
        request = urllib.request.Request(self.url(path), data=data, method=method, headers=all_headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as answer:
                return Response(
                    status=answer.status, headers=dict(answer.headers.items()), body=answer.read()
                )
        except urllib.error.HTTPError as exc:
            # 3xx (e.g. 304) and 4xx/5xx arrive as HTTPError; they are answers, not failures of transport.
            try:
                payload = exc.read()
            except OSError:
                payload = b""
            return Response(status=exc.code, headers=dict(exc.headers.items()) if exc.headers else {},
                            body=payload)  # fmt: skip
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as exc:
            reason = getattr(exc, "reason", exc)
            raise TransportError(f"{method} {self.url(path)}: {reason}") from exc

"""The collector's HTTP API as the device needs it: post events and heartbeats, ask for and fetch models.

Deliberately ``urllib.request`` from the standard library and not httpx/requests: the device stays light
(fewer wheels to find for a 32-bit Pi, less memory), and four plain requests need nothing more.

Redirects are not followed (unless a request asks): the collector's API never redirects, and urllib would
turn a POST answered by a captive portal's 302 into a GET of the portal's page, answered 200. A redirect is
returned as the answer it is, and the uploader retries.
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

    def header(self, name: str) -> str:
        return next((v for k, v in self.headers.items() if k.lower() == name.lower()), "")

    def summary(self) -> str:
        """What the answer is, for a log line: the collector's detail, or the type, size and start of the
        body (an HTML page from a proxy or a portal), and where a redirect points."""
        where = self.header("Location")
        parts = [f"redirect to {where}"] if where else []
        try:
            data = self.json()
        except (ValueError, UnicodeDecodeError):
            data = None
        if isinstance(data, dict) and "detail" in data:
            parts.append(str(data["detail"])[:300])
        else:
            start = " ".join(self.body[:120].decode("utf-8", "replace").split())
            kind = self.header("Content-Type") or "no content type"
            parts.append(f"{kind}, {len(self.body)} bytes" + (f": {start!r}" if start else ""))
        return "; ".join(parts)


class TransportError(BeeaudioError):
    """No HTTP answer at all: connection refused, DNS, timeout, reset."""


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    """A 3xx comes back as an HTTPError (the answer), never as the page it points to."""

    def redirect_request(self, *_args: Any, **_kwargs: Any) -> None:
        return None


class _RedirectsKeepTheToken(urllib.request.HTTPRedirectHandler):
    """Follows redirects, but the device token goes only to the host it was meant for (urllib would hand
    it to wherever a redirect points, e.g. a captive portal)."""

    def redirect_request(
        self, req: urllib.request.Request, fp: Any, code: int, msg: str, headers: Any, newurl: str
    ) -> urllib.request.Request | None:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if (
            new is not None
            and urllib.parse.urlsplit(newurl).netloc != urllib.parse.urlsplit(req.full_url).netloc
        ):
            new.remove_header("Authorization")
        return new


class CollectorClient:
    def __init__(self, *, base_url: str, token: str, timeout_s: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s
        self._direct = urllib.request.build_opener(_NoRedirects)
        self._following = urllib.request.build_opener(_RedirectsKeepTheToken)

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
        follow_redirects: bool = False,
    ) -> Response:
        """One request; any HTTP status is a :class:`Response`, no answer is a :class:`TransportError`.

        ``follow_redirects`` only for downloads whose content is verified anyway (a model bundle's sha256
        is checked against the announced one); everything else sees a 3xx as the answer."""
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
            opener = self._following if follow_redirects else self._direct
            with opener.open(request, timeout=self.timeout_s) as answer:
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

"""Everything the agent sends or fetches, in one background thread: event batches, heartbeats, model updates.

Uploads: the oldest pending events go in one batch (``POST /api/v1/events``); they leave the outbox only
after a 2xx. Failures back off exponentially with jitter (``Backoff``), so a fleet coming back after an
outage does not hit the collector in lockstep; ``Retry-After`` is honoured. Statuses:

* 2xx: acknowledged, deleted from the outbox.
* 400, 409, 413, 422 (the collector refuses the *content*): the batch is split in halves until the refused
  events are alone; those go to the dead-letter table (counted) so one bad event cannot block the queue.
* everything else (401/403 token problems, 404, 408, 429, 5xx) and no answer at all: retried later, since
  dropping events because a token was revoked or a proxy misbehaved would lose readings.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from beeaudio.core.wire import EVENTS_PATH, EventError, batch_body, device_model_path, heartbeat_path
from beeaudio.device.client import CollectorClient, Response, TransportError
from beeaudio.device.modelstore import InstalledModel, ModelStore, ModelStoreError
from beeaudio.device.outbox import Outbox, PendingEvent

log = logging.getLogger(__name__)

CONTENT_REFUSED = frozenset({400, 409, 413, 422})


@dataclass
class Backoff:
    """Exponential backoff with "equal jitter": half the delay fixed, half random."""

    initial_s: float
    max_s: float
    rng: random.Random = field(default_factory=random.Random)
    failures: int = 0

    def next_delay(self) -> float:
        cap = min(self.max_s, self.initial_s * (2 ** min(self.failures, 30)))
        self.failures += 1
        return cap / 2 + self.rng.uniform(0, cap / 2)

    def reset(self) -> None:
        self.failures = 0


@dataclass(frozen=True)
class UploadOutcome:
    kind: str  # "empty" | "sent" | "retry"
    accepted: int = 0
    dead_lettered: int = 0
    error: str = ""
    retry_after_s: float | None = None


class _Retry(Exception):
    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def _retry_after(response: Response) -> float | None:
    value = {k.lower(): v for k, v in response.headers.items()}.get("retry-after")
    try:
        return max(0.0, float(value)) if value is not None else None
    except ValueError:
        return None


class Uploader:
    """Sends the outbox to the collector, one batch per call."""

    def __init__(self, *, outbox: Outbox, client: CollectorClient, device_id: str, batch_size: int) -> None:
        self.outbox = outbox
        self.client = client
        self.device_id = device_id
        self.batch_size = batch_size

    def upload_once(self) -> UploadOutcome:
        pending = self.outbox.pending(limit=self.batch_size)
        if not pending:
            return UploadOutcome(kind="empty")
        counts = {"accepted": 0, "dead": 0}
        try:
            self._send(pending, counts)
        except _Retry as exc:
            return UploadOutcome(
                kind="retry",
                accepted=counts["accepted"],
                dead_lettered=counts["dead"],
                error=str(exc),
                retry_after_s=exc.retry_after_s,
            )
        return UploadOutcome(kind="sent", accepted=counts["accepted"], dead_lettered=counts["dead"])

    def _send(self, events: list[PendingEvent], counts: dict[str, int]) -> None:
        ids = [e.event_id for e in events]
        body = batch_body(device_id=self.device_id, events=[e.body for e in events])
        try:
            response = self.client.request("POST", EVENTS_PATH, body=body)
        except TransportError as exc:
            raise _Retry(str(exc)) from exc
        if 200 <= response.status < 300:
            self.outbox.acknowledge(ids)
            counts["accepted"] += len(ids)
            return
        if response.status in CONTENT_REFUSED:
            if len(events) == 1:
                reason = response.detail()
                log.error("collector refused event %s (%d): %s; moved to the dead-letter table",
                          ids[0], response.status, reason)  # fmt: skip
                self.outbox.dead_letter(events, status=response.status, reason=reason)
                counts["dead"] += 1
                return
            half = len(events) // 2
            self._send(events[:half], counts)
            self._send(events[half:], counts)
            return
        raise _Retry(f"HTTP {response.status}: {response.detail()}", _retry_after(response))


def check_model_update(
    *,
    client: CollectorClient,
    device_id: str,
    store: ModelStore,
    runtime: str | None = None,
    recording_rate: int | None = None,
    refused: set[str] | None = None,
) -> InstalledModel | None:
    """Ask the collector which model this device should run; download, verify and switch if it is new.

    Returns the newly installed model, or None when nothing changed. Raises :class:`ModelStoreError` when
    the offered bundle is refused (the current model stays), :class:`TransportError`/``RuntimeError`` on
    network trouble. ``refused`` remembers bundles already refused so they are not fetched again and again.
    """
    current = store.current()
    headers = {"If-None-Match": f'"{current.sha256}"'} if current else {}
    response = client.request("GET", device_model_path(device_id), headers=headers)
    if response.status in (204, 304):
        return None
    if response.status != 200:
        raise RuntimeError(f"model query answered HTTP {response.status}: {response.detail()}")
    offer = response.json() or {}
    sha = str(offer.get("sha256", "")).strip('"')
    if current is not None and sha in (current.sha256, current.manifest.model_sha256):
        return None
    if refused is not None and sha in refused:
        return None
    url = offer.get("download_url")
    if not url:
        raise RuntimeError(f"model offer without download_url: {offer}")
    download = client.request("GET", str(url), headers={"Accept": "application/octet-stream"})
    if download.status != 200:
        raise RuntimeError(f"model download answered HTTP {download.status}: {download.detail()}")
    try:
        return store.install_bytes(
            data=download.body, expected_sha256=sha or None, runtime=runtime, recording_rate=recording_rate
        )
    except ModelStoreError:
        if refused is not None and sha:
            refused.add(sha)
        raise


class Uplink(threading.Thread):
    """The network thread: uploads, heartbeats and model polls, each on its own schedule."""

    def __init__(
        self,
        *,
        uploader: Uploader,
        heartbeat: Callable[[], dict[str, Any]] | None,
        heartbeat_interval_s: float,
        upload_interval_s: float,
        backoff: Backoff,
        ota: Callable[[], None] | None = None,
        ota_interval_s: float = 0.0,
    ) -> None:
        super().__init__(name="beeaudio-uplink", daemon=True)
        self.uploader = uploader
        self.heartbeat = heartbeat
        self.heartbeat_interval_s = heartbeat_interval_s
        self.upload_interval_s = upload_interval_s
        self.backoff = backoff
        self.ota = ota
        self.ota_interval_s = ota_interval_s
        self._halt = threading.Event()
        self._wake = threading.Event()
        self.last_error = ""
        self.consecutive_failures = 0

    def wake(self) -> None:
        """New events in the outbox: upload now rather than at the next interval (unless backing off)."""
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()

    def send_heartbeat(self) -> bool:
        if self.heartbeat is None:
            return False
        client = self.uploader.client
        try:
            response = client.request("POST", heartbeat_path(self.uploader.device_id), body=self.heartbeat())
        except (TransportError, EventError) as exc:
            log.info("heartbeat not sent: %s", exc)
            return False
        if not 200 <= response.status < 300:
            log.warning("heartbeat refused: HTTP %d %s", response.status, response.detail())
            return False
        return True

    def run(self) -> None:
        now = time.monotonic()
        next_upload, next_heartbeat = now, now
        next_ota = now if self.ota and self.ota_interval_s > 0 else float("inf")
        backing_off = False
        while not self._halt.is_set():
            now = time.monotonic()
            if self._wake.is_set() and not backing_off:
                next_upload = now
            self._wake.clear()
            if now >= next_upload:
                outcome = self.uploader.upload_once()
                if outcome.kind == "retry":
                    self.consecutive_failures += 1
                    self.last_error = outcome.error
                    delay = self.backoff.next_delay()
                    if outcome.retry_after_s is not None:
                        delay = max(delay, min(outcome.retry_after_s, self.backoff.max_s))
                    log.warning("upload failed (%s); next try in %.1f s", outcome.error, delay)
                    next_upload, backing_off = now + delay, True
                else:
                    self.backoff.reset()
                    self.consecutive_failures, backing_off = 0, False
                    # More may be waiting: go on at once after a full batch.
                    next_upload = now if outcome.kind == "sent" else now + self.upload_interval_s
            if now >= next_heartbeat:
                self.send_heartbeat()
                next_heartbeat = now + self.heartbeat_interval_s
            if now >= next_ota and self.ota is not None:
                try:
                    self.ota()
                except Exception as exc:  # a failed update must never stop the uploads
                    log.warning("model update check failed: %s", exc)
                next_ota = now + self.ota_interval_s
            wait = max(0.0, min(next_upload, next_heartbeat, next_ota) - time.monotonic())
            self._wake.wait(timeout=min(wait, 5.0))

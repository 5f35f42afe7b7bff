"""Everything the agent sends or fetches, in one background thread: event batches, heartbeats, model updates.

Uploads: the oldest pending events go in one batch (``POST /api/v1/events``). What each answer means is the
delivery guarantee (device/README.md, "Never losing a reading"):

* **Delivered** only when the answer is the collector's own acknowledgement of *that* batch: a 2xx whose
  body is a JSON object with the same ``batch_id`` and ``accepted + duplicates`` equal to the number of
  events sent. Only then do the events leave the outbox. Any other 2xx (a captive portal's page, a wrong
  server's JSON, other counts) is retried: a device behind a hotel router must not believe it delivered.
* **Dead-lettered** only when the collector itself refuses one event: a 4xx with a JSON ``detail`` that
  names an event of the batch (``events[<i>]: ...`` or ``events.<i>.<field>: ...``, the collector's
  shapes). That event goes to the dead-letter table (``beeaudio device requeue`` brings it back) and the
  rest of the batch is sent again at once.
* **Shrunk**: a 413 (too many events, or a body too large for a proxy) halves the batch; a single event
  answered 413 is retried later.
* **Retried**, with exponential backoff and jitter (``Backoff``), honouring ``Retry-After``: everything
  else. No answer at all, 3xx (redirects are never followed), 401/403/404/408/429, 5xx, an HTML page of
  any status, a refusal of the whole batch that names no event.

Every step of the thread (upload, heartbeat, model poll) survives its own errors: an exception (a full disk
failing the outbox's delete, a bug) is logged, backed off and retried, and reported to the agent's
:class:`beeaudio.device.health.Health`, so ``beeaudio device status`` shows a loop that keeps failing.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from beeaudio.core.wire import EVENTS_PATH, EventError, batch_body, device_model_path, heartbeat_path
from beeaudio.device.client import CollectorClient, Response, TransportError
from beeaudio.device.health import Health
from beeaudio.device.modelstore import InstalledModel, ModelStore, ModelStoreError
from beeaudio.device.outbox import Outbox, PendingEvent

log = logging.getLogger(__name__)

#: Statuses with which the collector refuses one event of a batch (422 contract, 403 another device's or
#: hive's ids, 400/409 for what a future collector may say). Only with a ``detail`` naming the event.
EVENT_REFUSAL_STATUSES = frozenset({400, 403, 409, 422})
TOO_LARGE = 413
#: ``events[3]: ...`` (the collector's own checks) or ``events.3.window_seconds: ...`` (its request
#: validation), optionally after ``body.`` (its NUL/NaN check names ``body.events[3].extra``).
_EVENT_POINTER = re.compile(r"^(?:body\.)?events(?:\[(\d+)\]|\.(\d+))(?=[.:\[ ]|$)")


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


def _json_object(response: Response) -> dict[str, Any] | None:
    """The body as a JSON object, or None (not JSON, not an object, not UTF-8)."""
    try:
        data = response.json()
    except (ValueError, UnicodeDecodeError):
        return None
    return data if isinstance(data, dict) else None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None


def acknowledgement_problem(*, response: Response, batch_id: str, n_events: int) -> str | None:
    """None when ``response`` is the collector's acknowledgement of the batch ``batch_id`` of ``n_events``
    events; else what is wrong with it, for the log."""
    if not 200 <= response.status < 300:
        return f"HTTP {response.status}"
    data = _json_object(response)
    if data is None:
        return f"the body is not a JSON object ({response.summary()})"
    if data.get("batch_id") != batch_id:
        return f"it acknowledges batch {str(data.get('batch_id'))[:80]!r}, not {batch_id!r}"
    accepted, duplicates = _count(data.get("accepted")), _count(data.get("duplicates"))
    if accepted is None or duplicates is None:
        return f"accepted/duplicates are not counts: {data.get('accepted')!r}/{data.get('duplicates')!r}"
    if accepted + duplicates != n_events:
        return f"it counts {accepted} accepted + {duplicates} duplicates for {n_events} events sent"
    return None


def refused_event_index(*, response: Response, n_events: int) -> int | None:
    """The index of the event the collector refuses, when ``response`` is its own well-formed refusal of
    one event of a batch of ``n_events`` (a 4xx with a JSON ``detail`` naming ``events[<i>]``); else None."""
    if response.status not in EVENT_REFUSAL_STATUSES:
        return None
    data = _json_object(response)
    detail = data.get("detail") if data is not None else None
    if not isinstance(detail, str):
        return None
    match = _EVENT_POINTER.match(detail)
    if match is None:
        return None
    index = int(match.group(1) or match.group(2))
    return index if index < n_events else None


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
        # Each round either delivers the batch, sets aside the one event the collector named, or splits.
        while events:
            ids = [e.event_id for e in events]
            body = batch_body(device_id=self.device_id, events=[e.body for e in events])
            try:
                response = self.client.request("POST", EVENTS_PATH, body=body)
            except TransportError as exc:
                raise _Retry(str(exc)) from exc
            if 200 <= response.status < 300:
                problem = acknowledgement_problem(
                    response=response, batch_id=body["batch_id"], n_events=len(events)
                )
                if problem is not None:
                    log.error(
                        "HTTP %d to %s is not the collector's acknowledgement of batch %s (%d events): %s; "
                        "the events stay in the outbox (captive portal, proxy or wrong [collector] url?)",
                        response.status, self.client.url(EVENTS_PATH), body["batch_id"], len(events), problem,
                    )  # fmt: skip
                    raise _Retry(f"HTTP {response.status} is not the collector's acknowledgement: {problem}")
                self.outbox.acknowledge(ids)
                counts["accepted"] += len(ids)
                return
            if response.status == TOO_LARGE and len(events) > 1:
                half = len(events) // 2
                log.info("HTTP 413 for %d events: sending them in halves", len(events))
                self._send(events[:half], counts)
                self._send(events[half:], counts)
                return
            index = refused_event_index(response=response, n_events=len(events))
            if index is None:
                raise _Retry(f"HTTP {response.status}: {response.summary()}", _retry_after(response))
            refused, reason = events[index], response.detail()
            log.error("collector refused event %s (HTTP %d): %s; moved to the dead-letter table "
                      "(`beeaudio device requeue` brings it back)", refused.event_id, response.status,
                      reason)  # fmt: skip
            self.outbox.dead_letter([refused], status=response.status, reason=reason)
            counts["dead"] += 1
            events = events[:index] + events[index + 1 :]


def check_model_update(
    *,
    client: CollectorClient,
    device_id: str,
    store: ModelStore,
    runtime: str | None = None,
    recording_rate: int | None = None,
    num_threads: int = 1,
    refused: set[str] | None = None,
) -> InstalledModel | None:
    """Ask the collector which model this device should run; download, verify and switch if it is new.

    Returns the newly installed model, or None when nothing changed. Raises :class:`ModelStoreError` when
    the offered bundle is refused (the current model stays), :class:`TransportError`/``RuntimeError`` on
    network trouble or an answer that is not the collector's. A bundle refused for its content is not
    fetched again, even after a restart (the store remembers it); ``refused`` also skips, for this run, the
    ones refused for other reasons (e.g. a band this device's recorder does not cover).
    """
    current = store.current()
    headers = {"If-None-Match": f'"{current.sha256}"'} if current else {}
    response = client.request("GET", device_model_path(device_id), headers=headers)
    if response.status in (204, 304):
        return None
    if response.status != 200:
        raise RuntimeError(f"model query answered HTTP {response.status}: {response.summary()}")
    offer = _json_object(response)
    if offer is None:
        raise RuntimeError(
            f"model query answered 200 with something that is not an offer: {response.summary()}"
        )
    sha = str(offer.get("sha256", "")).strip('"')
    if current is not None and sha in (current.sha256, current.manifest.model_sha256):
        return None
    if refused is not None and sha in refused:
        return None
    remembered = store.refusal(sha) if sha else None
    if remembered is not None:
        log.info("the offered bundle %s was refused before, not downloading it: %s", sha[:12], remembered)
        return None
    url = offer.get("download_url")
    if not url:
        raise RuntimeError(f"model offer without download_url: {str(offer)[:300]}")
    # Redirects followed here only: the content is checked against the announced sha256 below.
    download = client.request(
        "GET", str(url), headers={"Accept": "application/octet-stream"}, follow_redirects=True
    )
    if download.status != 200:
        raise RuntimeError(f"model download answered HTTP {download.status}: {download.summary()}")
    try:
        return store.install_bytes(
            data=download.body,
            expected_sha256=sha or None,
            runtime=runtime,
            recording_rate=recording_rate,
            num_threads=num_threads,
        )
    except ModelStoreError:
        if refused is not None and sha:
            refused.add(sha)
        raise


class Uplink(threading.Thread):
    """The network thread: uploads, heartbeats and model polls, each on its own schedule.

    Each step runs guarded: whatever it raises is logged, reported to ``health`` and retried after a
    backoff, so no error of one step stops the others or the thread."""

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
        health: Health | None = None,
    ) -> None:
        super().__init__(name="beeaudio-uplink", daemon=True)
        self.uploader = uploader
        self.heartbeat = heartbeat
        self.heartbeat_interval_s = heartbeat_interval_s
        self.upload_interval_s = upload_interval_s
        self.backoff = backoff
        self.ota = ota
        self.ota_interval_s = ota_interval_s
        self.health = health or Health()
        self._halt = threading.Event()
        self._wake = threading.Event()
        self.last_error = ""
        self.consecutive_failures = 0
        # Heartbeats and model polls back off on their own: a failing one must not delay the uploads.
        self._heartbeat_backoff = Backoff(initial_s=backoff.initial_s, max_s=max(heartbeat_interval_s, 1.0))
        self._ota_backoff = Backoff(initial_s=max(backoff.initial_s, 30.0), max_s=max(ota_interval_s, 30.0))

    def loops(self) -> tuple[str, ...]:
        names = ["upload"]
        if self.heartbeat is not None:
            names.append("heartbeat")
        if self.ota is not None and self.ota_interval_s > 0:
            names.append("ota")
        return tuple(names)

    def wake(self) -> None:
        """New events in the outbox: upload now rather than at the next interval (unless backing off)."""
        self._wake.set()

    def stop(self) -> None:
        self._halt.set()
        self._wake.set()

    def send_heartbeat(self) -> bool:
        """One heartbeat; True when the collector acknowledged it. Never raises."""
        if self.heartbeat is None:
            return False
        client = self.uploader.client
        try:
            response = client.request("POST", heartbeat_path(self.uploader.device_id), body=self.heartbeat())
        except (TransportError, EventError) as exc:
            log.info("heartbeat not sent: %s", exc)
            self.health.failed("heartbeat", str(exc))
            return False
        except Exception as exc:  # e.g. the outbox unreadable on a failing card: report, never die
            log.exception("heartbeat failed")
            self.health.failed("heartbeat", f"{type(exc).__name__}: {exc}")
            return False
        if not 200 <= response.status < 300:
            log.warning("heartbeat refused: HTTP %d %s", response.status, response.summary())
            self.health.failed("heartbeat", f"HTTP {response.status}: {response.summary()}")
            return False
        answer = _json_object(response)
        if answer is None or answer.get("received") is not True:
            log.warning("heartbeat answer is not the collector's: %s", response.summary())
            self.health.failed("heartbeat", f"not the collector's answer: {response.summary()}")
            return False
        self.health.ok("heartbeat")
        return True

    def _upload_step(self) -> tuple[float, bool]:
        """One upload; returns (when to upload next, whether backing off)."""
        try:
            outcome = self.uploader.upload_once()
        except Exception as exc:  # a full disk failing the outbox's delete, a damaged database, a bug
            log.exception("upload step failed")
            outcome = UploadOutcome(kind="retry", error=f"{type(exc).__name__}: {exc}")
        now = time.monotonic()  # from the answer: Retry-After counts from when it was given
        if outcome.kind == "retry":
            self.consecutive_failures += 1
            self.last_error = outcome.error
            self.health.failed("upload", outcome.error)
            delay = self.backoff.next_delay()
            if outcome.retry_after_s is not None:
                delay = max(delay, min(outcome.retry_after_s, self.backoff.max_s))
            log.warning("upload failed (%s); next try in %.1f s", outcome.error, delay)
            return now + delay, True
        self.backoff.reset()
        self.consecutive_failures = 0
        self.health.ok("upload")
        # More may be waiting: go on at once after a full batch.
        return (now if outcome.kind == "sent" else now + self.upload_interval_s), False

    def _ota_step(self, now: float) -> float:
        assert self.ota is not None
        try:
            self.ota()
        except Exception as exc:  # a failed update must never stop the uploads
            log.warning("model update check failed: %s", exc)
            self.health.failed("ota", str(exc))
            return now + self._ota_backoff.next_delay()
        self._ota_backoff.reset()
        self.health.ok("ota")
        return now + self.ota_interval_s

    def run(self) -> None:
        for name in self.loops():
            self.health.started(name)
        try:
            self._run()
        except BaseException as exc:  # a bug in the guards themselves: say so, the agent restarts the thread
            log.exception("the uplink thread stopped")
            for name in self.loops():
                self.health.failed(name, f"thread died: {type(exc).__name__}: {exc}")
            raise
        finally:
            for name in self.loops():
                self.health.stopped(name)

    def _run(self) -> None:
        now = time.monotonic()
        next_upload = now
        next_heartbeat = now if self.heartbeat is not None else float("inf")
        next_ota = now if self.ota and self.ota_interval_s > 0 else float("inf")
        backing_off = False
        while not self._halt.is_set():
            now = time.monotonic()
            if self._wake.is_set() and not backing_off:
                next_upload = now
            self._wake.clear()
            if now >= next_upload:
                next_upload, backing_off = self._upload_step()
            if now >= next_heartbeat:
                if self.send_heartbeat():
                    self._heartbeat_backoff.reset()
                    next_heartbeat = now + self.heartbeat_interval_s
                else:
                    next_heartbeat = now + min(
                        self.heartbeat_interval_s, self._heartbeat_backoff.next_delay()
                    )
            if now >= next_ota and self.ota is not None:
                next_ota = self._ota_step(now)
            wait = max(0.0, min(next_upload, next_heartbeat, next_ota) - time.monotonic())
            self._wake.wait(timeout=min(wait, 5.0))

"""Prometheus metrics of one collector app, for ``GET /metrics`` (``routes_metrics``).

Two kinds, because of replicas:

* what *this process* did — requests by route and status, batches by outcome, events accepted, duplicate
  or expired, batch sizes, ingest and status latency, webhook attempts — are per-process counters and
  histograms. Prometheus scrapes every replica as its own target; ``sum without (instance)`` gives the
  fleet's figures, and a restart resets a process's counters (``rate()`` copes with that);
* what *the database holds* — hives per state, the devices' outbox depth, backlog and dropped readings
  from their latest heartbeats — are gauges read from the database at scrape time, so every replica
  reports the same truth. Aggregate those with ``max`` (never ``sum``, which would count them per replica).

The registry belongs to the app (:attr:`AppContext.metrics`), never to prometheus_client's global default
registry, so several apps in one process (the tests) keep their own figures.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from sqlalchemy.engine import Engine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from beeaudio.collector.db import devices, hive_state, hives, read_transaction
from beeaudio.collector.state import NORMAL, OFFLINE, SWARM, UNKNOWN, StateParams
from beeaudio.core.wire import EVENTS_PATH, HIVES_PATH

log = logging.getLogger(__name__)

#: Seconds; from a quick status read (a few ms) to a batch that waits for a busy database.
LATENCY_BUCKETS = (0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
#: Events per batch, up to the default MAX_BATCH_EVENTS.
BATCH_BUCKETS = (1, 5, 10, 25, 50, 100, 250, 500, 1000)
STATUS_ROUTE = f"{HIVES_PATH}/{{hive_id}}/status"
#: The label of a request no route matched (scans, typos): one series, not one per path.
OTHER_ROUTE = "other"
HIVE_STATES = (NORMAL, SWARM, UNKNOWN, OFFLINE)


@dataclass(frozen=True)
class Metrics:
    """The app's registry and the per-process metrics in it."""

    registry: CollectorRegistry
    requests: Counter
    ingest_batches: Counter
    refused_batches: Counter
    ingest_events: Counter
    batch_events: Histogram
    ingest_seconds: Histogram
    status_seconds: Histogram
    webhook_attempts: Counter
    background_runs: Counter

    def observe_batch(self, *, size: int, accepted: int, duplicates: int, expired: int = 0) -> None:
        """A stored batch: its size and what became of its events (``duplicates`` includes ``expired``)."""
        self.batch_events.observe(size)
        self.ingest_events.labels(outcome="accepted").inc(accepted)
        self.ingest_events.labels(outcome="duplicate").inc(duplicates - expired)
        self.ingest_events.labels(outcome="expired").inc(expired)

    def observe_request(self, *, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method=method, route=route, status=str(status)).inc()
        if method == "POST" and route == EVENTS_PATH:
            self.ingest_seconds.observe(seconds)
            outcome = _batch_outcome(status)
            self.ingest_batches.labels(outcome=outcome).inc()
            if outcome == "refused":
                self.refused_batches.labels(status=str(status)).inc()
        elif method == "GET" and route == STATUS_ROUTE:
            self.status_seconds.observe(seconds)


def _batch_outcome(status: int) -> str:
    """stored (2xx), refused (4xx: the device must change something), unavailable (503: send it again
    later), failed (any other 5xx: a bug)."""
    if status < 300:
        return "stored"
    if status < 500:
        return "refused"
    return "unavailable" if status == 503 else "failed"


def new_metrics(*, engine: Engine, defaults: StateParams, clock_ms: Callable[[], int]) -> Metrics:
    registry = CollectorRegistry(auto_describe=True)
    registry.register(DatabaseGauges(engine=engine, defaults=defaults, clock_ms=clock_ms))
    return Metrics(
        registry=registry,
        requests=Counter(
            "beeaudio_http_requests",
            "HTTP requests answered by this process, by route template and status",
            ["method", "route", "status"],
            registry=registry,
        ),
        ingest_batches=Counter(
            "beeaudio_ingest_batches",
            "POST /events batches by outcome: stored, refused (4xx), unavailable (503), failed (5xx)",
            ["outcome"],
            registry=registry,
        ),
        refused_batches=Counter(
            "beeaudio_ingest_refused_batches",
            "POST /events batches refused with a 4xx (nothing stored), by status",
            ["status"],
            registry=registry,
        ),
        ingest_events=Counter(
            "beeaudio_ingest_events",
            "events of stored batches: accepted (new), duplicate (stored before or twice in the batch), "
            "expired (older than the retention horizon, not stored)",
            ["outcome"],
            registry=registry,
        ),
        batch_events=Histogram(
            "beeaudio_ingest_batch_events",
            "events per stored batch",
            buckets=BATCH_BUCKETS,
            registry=registry,
        ),
        ingest_seconds=Histogram(
            "beeaudio_ingest_duration_seconds",
            "POST /events: from the request to the end of the answer (after the commit)",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        status_seconds=Histogram(
            "beeaudio_status_duration_seconds",
            "GET /hives/{id}/status: from the request to the end of the answer",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        ),
        webhook_attempts=Counter(
            "beeaudio_webhook_attempts",
            "webhook delivery attempts by this process: delivered, retry (will be tried again), failed "
            "(given up)",
            ["outcome"],
            registry=registry,
        ),
        background_runs=Counter(
            "beeaudio_background_job_runs",
            "periodic jobs (sweep, retention) this process ran; between replicas each runs once per interval",
            ["job"],
            registry=registry,
        ),
    )


class DatabaseGauges:
    """Gauges read from the database at each scrape: the same on every replica."""

    def __init__(self, *, engine: Engine, defaults: StateParams, clock_ms: Callable[[], int]) -> None:
        self._engine = engine
        self._defaults = defaults
        self._clock_ms = clock_ms

    def describe(self) -> Iterable[Metric]:
        # Registration asks for the names; answering here keeps it from querying a database that may not
        # be migrated yet.
        return list(self._families())

    def _families(self) -> tuple[GaugeMetricFamily, ...]:
        return (
            GaugeMetricFamily(
                "beeaudio_hives", "hives per current state (offline decided now)", labels=["state"]
            ),
            GaugeMetricFamily("beeaudio_devices", "devices that are not revoked"),
            GaugeMetricFamily("beeaudio_devices_reporting", "devices not revoked with a heartbeat stored"),
            GaugeMetricFamily(
                "beeaudio_device_outbox_events", "sum of outbox_depth over the devices' latest heartbeats"
            ),
            GaugeMetricFamily(
                "beeaudio_device_outbox_events_max",
                "largest outbox_depth among the devices' latest heartbeats",
            ),
            GaugeMetricFamily(
                "beeaudio_device_backlog_files", "sum of backlog_files over the devices' latest heartbeats"
            ),
            GaugeMetricFamily(
                "beeaudio_device_dropped_events",
                "sum of dropped_events (each device's own running count) over the latest heartbeats",
            ),
            GaugeMetricFamily(
                "beeaudio_devices_failing",
                "devices not revoked whose latest heartbeat names a failing or stopped loop (failing_loops)",
            ),
            GaugeMetricFamily("beeaudio_metrics_database_up", "1 if the database gauges could be read"),
        )

    def collect(self) -> Iterable[Metric]:
        families = self._families()
        hives_f, *figure_fs, up_f = families
        try:
            by_state, figures = self._read()
        except Exception:  # a scrape must still answer (with up = 0) when the database does not
            log.exception("metrics: the database gauges could not be read")
            up_f.add_metric([], 0)
            return [up_f]
        for state in HIVE_STATES:
            hives_f.add_metric([state], by_state.get(state, 0))
        for family, value in zip(figure_fs, figures, strict=True):
            family.add_metric([], value or 0)
        up_f.add_metric([], 1)
        return list(families)

    def _read(self) -> tuple[dict[str, int], Sequence[Any]]:
        now_ms = self._clock_ms()
        # The rule of queries.status_json, in SQL so that it costs one grouped scan however many hives:
        # offline when nothing arrived for the hive's offline_after_seconds (its override, else the default).
        after_s = sa.func.coalesce(
            hives.c.params["offline_after_seconds"].as_float(), self._defaults.offline_after_seconds
        )
        state = sa.case(
            (
                sa.and_(
                    hive_state.c.last_seen_ms.is_not(None),
                    now_ms > hive_state.c.last_seen_ms + after_s * 1000,
                ),
                OFFLINE,
            ),
            else_=hive_state.c.state,
        ).label("state")
        heartbeat = devices.c.heartbeat
        # The object as JSON text on both databases (SQLite's json_extract, PostgreSQL's ->>): "{}" when every
        # loop is well, NULL when the heartbeat has none (an agent older than failing_loops).
        failing = heartbeat["failing_loops"].as_string()
        with read_transaction(self._engine) as conn:
            rows = conn.execute(
                sa.select(state, sa.func.count())
                .select_from(hive_state.join(hives, hives.c.hive_id == hive_state.c.hive_id))
                .group_by(state)
            ).all()
            figures = conn.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.count(devices.c.last_heartbeat_ms),
                    sa.func.sum(heartbeat["outbox_depth"].as_integer()),
                    sa.func.max(heartbeat["outbox_depth"].as_integer()),
                    sa.func.sum(heartbeat["backlog_files"].as_integer()),
                    sa.func.sum(heartbeat["dropped_events"].as_integer()),
                    sa.func.sum(sa.case((sa.and_(failing.is_not(None), failing != "{}"), 1), else_=0)),
                ).where(devices.c.revoked_ms.is_(None))
            ).one()
        return {row[0]: int(row[1]) for row in rows}, tuple(figures)


class MetricsMiddleware:
    """Counts and times every HTTP answer (the gate's refusals included: this wraps it), labelled by the
    route template (``/api/v1/hives/{hive_id}/status``), never by the raw path, so the series stay few."""

    def __init__(self, app: ASGIApp, *, metrics: Metrics, routes: Sequence[Any]) -> None:
        self.app = app
        self.metrics = metrics
        # The API's own routes (each with its template and pattern), to label the requests the gate
        # answers before routing ever runs (a 401 or 413 before the body is read).
        self.routes = routes

    def _route(self, scope: Scope) -> str:
        route = scope.get("route")
        path = getattr(route, "path", None)
        if isinstance(path, str) and path:
            return path
        for candidate in self.routes:
            regex: re.Pattern[str] | None = getattr(candidate, "path_regex", None)
            template = getattr(candidate, "path", None)
            if regex is not None and template and regex.match(scope["path"]):
                return template
        return OTHER_ROUTE

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def watched(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watched)
        finally:
            self.metrics.observe_request(
                method=scope["method"],
                route=self._route(scope),
                status=status,
                seconds=time.perf_counter() - started,
            )

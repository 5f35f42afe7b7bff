"""The collector's app factory: ``create_app(settings)`` builds a self-contained FastAPI app.

Everything the handlers need (engine, tokens, parameters, clock) hangs off ``app.state.context``; nothing
is module-level, so tests build as many apps (SQLite, PostgreSQL, fake clocks) as they like.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from fastapi import Depends, FastAPI
from fastapi.staticfiles import StaticFiles

from beeaudio import __version__
from beeaudio.collector import migrate
from beeaudio.collector.context import AppContext
from beeaudio.collector.db import make_engine
from beeaudio.collector.gate import BodyPolicy, RequestGate
from beeaudio.collector.http_errors import install_error_handlers
from beeaudio.collector.leases import SWEEP_JOB, PeriodicJob, process_holder, run_periodic
from beeaudio.collector.metrics import MetricsMiddleware, new_metrics
from beeaudio.collector.mqtt_ingest import start_mqtt
from beeaudio.collector.retention import retention_job
from beeaudio.collector.screen import screen_parameters
from beeaudio.collector.settings import Settings, resolve_admin_token, resolve_read_token
from beeaudio.collector.store.hive_state import finish_recomputes, rederive_stale, sweep_offline
from beeaudio.collector.timeutil import wall_clock_ms
from beeaudio.collector.webhooks import WebhookPolicy, WebhookWorker
from beeaudio.core.wire import API_PREFIX, MODELS_PATH

log = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"


#: Room for a multipart form's boundaries and part headers around an upload of the maximum size.
MULTIPART_OVERHEAD = 64 * 1024
_ADMIN_ONLY = frozenset({"admin"})


def body_policy(*, settings: Settings, method: str, path: str) -> BodyPolicy:
    """How large a request body may be on this path, and whose: uploads are the admin's alone (checked
    before the body is read), heartbeats are small."""
    if method == "POST" and path == MODELS_PATH:
        return BodyPolicy(limit=settings.max_model_bytes + MULTIPART_OVERHEAD, roles=_ADMIN_ONLY)
    if method == "POST" and path.startswith(f"{API_PREFIX}/devices/") and path.endswith("/heartbeat"):
        return BodyPolicy(limit=settings.max_heartbeat_bytes)
    return BodyPolicy(limit=settings.max_body_bytes)


def build_context(
    settings: Settings, *, clock_ms: Callable[[], int] | None = None, offline: bool = False
) -> AppContext:
    """What the handlers share. ``offline`` (CLI chores on the database) needs no admin secret."""
    admin_token = "" if offline else resolve_admin_token(settings)[0]
    read_token = "" if offline else resolve_read_token(settings, admin_token=admin_token)
    defaults = settings.state_defaults()
    engine = make_engine(settings.database_url)
    data_dir = settings.resolved_data_dir()
    data_dir.mkdir(parents=True, exist_ok=True)
    clock = clock_ms or wall_clock_ms
    return AppContext(
        settings=settings,
        engine=engine,
        admin_token=admin_token,
        read_token=read_token,
        defaults=defaults,
        data_dir=data_dir,
        clock_ms=clock,
        metrics=new_metrics(engine=engine, defaults=defaults, clock_ms=clock),
    )


async def _sweep(context: AppContext) -> None:
    """One pass of the offline sweep; run by one collector process per interval (``leases``)."""
    await asyncio.to_thread(
        sweep_offline,
        engine=context.engine,
        defaults=context.defaults,
        webhook_urls=context.webhook_urls,
        now_ms=context.clock_ms(),
    )
    # A re-evaluation of steps that a crash (or a failed background task) left unfinished.
    await asyncio.to_thread(
        finish_recomputes,
        engine=context.engine,
        defaults=context.defaults,
        webhook_urls=context.webhook_urls,
        now_ms=context.clock_ms(),
    )


def _sweep_job(context: AppContext) -> PeriodicJob:
    every = context.settings.sweep_interval_seconds
    return PeriodicJob(
        name=SWEEP_JOB, every_seconds=every, lease_seconds=max(60.0, 4 * every), work=lambda: _sweep(context)
    )


def create_app(
    settings: Settings | None = None,
    *,
    clock_ms: Callable[[], int] | None = None,
    run_migrations: bool = True,
) -> FastAPI:
    """A collector app. Migrates the database to the latest schema unless ``run_migrations`` is False."""
    settings = settings or Settings()
    context = build_context(settings, clock_ms=clock_ms)
    if run_migrations:
        migrate.upgrade(engine=context.engine)
        # After an upgrade that changed how states are derived, every hive's steps are derived again.
        rederive_stale(
            engine=context.engine,
            defaults=context.defaults,
            webhook_urls=context.webhook_urls,
            now_ms=context.clock_ms(),
        )

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        tasks: list[asyncio.Task[None]] = []
        if settings.background_tasks:
            worker = WebhookWorker(
                engine=context.engine,
                policy=WebhookPolicy(
                    timeout_seconds=settings.webhook_timeout_seconds,
                    max_attempts=settings.webhook_max_attempts,
                    backoff_seconds=settings.webhook_backoff_seconds,
                    backoff_max_seconds=settings.webhook_backoff_max_seconds,
                ),
                clock_ms=context.clock_ms,
                metrics=context.metrics,
            )
            tasks.append(asyncio.create_task(worker.run()))
            holder = process_holder()
            retention = retention_job(engine=context.engine, settings=settings, clock_ms=context.clock_ms)
            for job in (_sweep_job(context), *([retention] if retention else [])):
                tasks.append(
                    asyncio.create_task(
                        run_periodic(
                            engine=context.engine,
                            job=job,
                            holder=holder,
                            clock_ms=context.clock_ms,
                            metrics=context.metrics,
                        )
                    )
                )
        # MQTT ingest and Home Assistant (service/mqtt_ingest.py): only with BEEAUDIO_MQTT_URL; paho threads.
        mqtt = await asyncio.to_thread(start_mqtt, context=context)
        _app.state.mqtt = mqtt
        try:
            yield
        finally:
            if mqtt is not None:
                await asyncio.to_thread(mqtt.stop)
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            context.engine.dispose()

    app = FastAPI(
        title="beeaudio collector",
        version=__version__,
        description="Hive devices send classification events; users ask what every hive is doing.",
        lifespan=lifespan,
        dependencies=[Depends(screen_parameters)],
    )
    app.state.context = context
    install_error_handlers(app)

    from beeaudio.collector import routes_admin, routes_ingest, routes_metrics, routes_models, routes_query

    route_modules = (routes_ingest, routes_admin, routes_query, routes_models, routes_metrics)
    for module in route_modules:
        app.include_router(module.router)

    app.add_middleware(
        RequestGate,
        context=context,
        policy_for=lambda method, path: body_policy(settings=settings, method=method, path=path),
        read_timeout_s=settings.body_read_timeout_seconds,
    )
    # Outermost, so the gate's refusals (401, 413 before a body is read) are counted too.
    app.add_middleware(
        MetricsMiddleware, metrics=context.metrics, routes=[r for m in route_modules for r in m.router.routes]
    )
    # The dashboard (another room) lives in service/static; the API routes above take precedence.
    if STATIC_DIR.is_dir() and (STATIC_DIR / "index.html").is_file():
        app.mount("/", StaticFiles(directory=STATIC_DIR, html=True), name="static")
    return app

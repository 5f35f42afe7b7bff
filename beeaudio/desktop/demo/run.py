"""``run_demo``: the six steps of the demo, one after the other, and the result.

Model, apiary audio, collector, registration, device agents, hive states: each step is one call into its
own module; this one orders them, times them and narrates them on the ``beeaudio.desktop.demo`` logger.
"""

from __future__ import annotations

import contextlib
import logging
import secrets
import shutil
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from beeaudio.core.fsio import write_json
from beeaudio.desktop.demo.collector import (
    admin_client,
    choose_port,
    hive_status,
    previous_collector_alive,
    register_hive,
    start_demo_collector,
    stop_demo_collector,
    wait_for_events,
)
from beeaudio.desktop.demo.devices import prepare_device, run_devices, stage_spool
from beeaudio.desktop.demo.errors import DemoError
from beeaudio.desktop.demo.model import ensure_model
from beeaudio.desktop.demo.plan import ApiaryPlan, ModelRecipe, expected_windows, plan_hives, recording_times
from beeaudio.desktop.demo.render import render_apiary
from beeaudio.desktop.demo.report import DemoResult, hive_outcome

log = logging.getLogger(__name__)

STEPS = 6
#: How long the collector may take to hold every event once the agents have exited.
EVENTS_TIMEOUT_S = 60.0


@contextlib.contextmanager
def _step(number: int, title: str, seconds: dict[str, float], key: str) -> Iterator[None]:
    log.info("[%d/%d] %s", number, STEPS, title)
    started = time.perf_counter()
    yield
    seconds[key] = round(time.perf_counter() - started, 2)
    log.info("      done in %.1f s", seconds[key])


def run_demo(
    *,
    out: Path,
    hives: int = 4,
    swarming: int = 1,
    seed: int = 1,
    serve: bool = False,
    port: int | None = None,
    progress: bool = True,
    hours: float = 6.0,
    on_ready: Callable[[DemoResult], None] | None = None,
) -> DemoResult:
    """Run the demo in ``out`` (see the package docstring) and return what the collector reports.

    With ``serve`` the collector keeps running after the report (``on_ready`` is called with the result so
    the caller can print the dashboard URL) until interrupted (Ctrl-C / SIGTERM as KeyboardInterrupt); it
    is always stopped before this function returns. Progress is logged on ``beeaudio.desktop.demo`` at INFO.
    """
    started = time.perf_counter()
    plan = ApiaryPlan(hives=hives, swarming=swarming, seed=seed, hours=hours)
    out = Path(out).resolve()
    cache, run = out / "cache", out / "run"
    pid = previous_collector_alive(run=run)
    if pid is not None:
        raise DemoError(
            f"a collector from an earlier `beeaudio demo --serve` (pid {pid}) is still serving {out}; "
            "stop that demo (Ctrl-C in its terminal) first, or use another --out"
        )
    cache.mkdir(parents=True, exist_ok=True)
    # Everything of one run is recreated: a new run has a new "now", and its collector a fresh database.
    shutil.rmtree(run, ignore_errors=True)
    (run / "logs").mkdir(parents=True)
    seconds: dict[str, float] = {}
    apiary = plan_hives(plan=plan)

    with _step(1, "Training the model (or reusing the cached one)", seconds, "model"):
        model_path, reused = ensure_model(recipe=ModelRecipe(), cache=cache)
        from beeaudio.core.bundle import read_bundle

        manifest = read_bundle(model_path).manifest
        how = "reused from the cache" if reused else "trained now"
        log.info(
            "      %s %s (%s), %s", manifest.model_name, manifest.model_version, manifest.quantization, how
        )

    swarmers = ", ".join(h.name for h in apiary if h.swarms) or "none"
    title = (
        f"Rendering the apiary: {plan.hives} hives, {plan.hours:g} h of {plan.recording_seconds:g}-s "
        f"recordings every {plan.interval_minutes:g} min; swarming: {swarmers}"
    )
    with _step(2, title, seconds, "apiary"):
        audio = render_apiary(plan=plan, hives=apiary, cache=cache, progress=progress)
        now = datetime.now(UTC)
        times = recording_times(plan=plan, now=now)
        for hive in apiary:
            stage_spool(plan=plan, hive=hive, audio=audio, run=run, times=times)

    admin_token, read_token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    write_json(run / "tokens.json", {"admin_token": admin_token, "read_token": read_token}, private=True)
    chosen_port = choose_port(port=port, serve=serve)
    with _step(
        3, f"Starting the collector on 127.0.0.1:{chosen_port} (SQLite in {run})", seconds, "collector"
    ):
        collector = start_demo_collector(
            run=run, port=chosen_port, admin_token=admin_token, read_token=read_token
        )
    try:
        admin = admin_client(url=collector.url, token=admin_token)
        with _step(4, "Registering hives and devices", seconds, "register"):
            jobs = [
                prepare_device(
                    run=run,
                    hive=hive,
                    token=register_hive(client=admin, plan=plan, hive=hive),
                    api_url=collector.url,
                )
                for hive in apiary
            ]

        per_hive = plan.recordings * expected_windows(plan=plan, feature_config=manifest.feature_config)
        title = f"Running {len(jobs)} device agents ({plan.recordings} files, {per_hive} windows per hive)"
        with _step(5, title, seconds, "devices"):
            run_devices(jobs=jobs, model=model_path, progress=progress)
            window = (times[0] - timedelta(hours=1), now + timedelta(hours=1))
            counts = wait_for_events(
                client=admin, hives=apiary, per_hive=per_hive, between=window, timeout=EVENTS_TIMEOUT_S
            )

        with _step(6, "Reading every hive's state", seconds, "status"):
            outcomes = tuple(
                hive_outcome(hive=h, status=hive_status(client=admin, hive=h), events=counts) for h in apiary
            )
        seconds["total"] = round(time.perf_counter() - started, 2)
        result = DemoResult(
            out=out,
            api_url=collector.url,
            dashboard_url=f"{collector.url}/#token={read_token}",
            admin_token=admin_token,
            read_token=read_token,
            model_path=model_path,
            model_version=manifest.model_version,
            model_reused=reused,
            hives=outcomes,
            events_expected=per_hive * len(apiary),
            events_received=sum(counts.values()),
            seconds=seconds,
        )
        write_json(out / "demo-result.json", result.to_json(), private=True)
        if serve:
            if on_ready is not None:
                on_ready(result)
            collector.process.wait()
            if collector.process.returncode != 0:
                log.warning("the collector stopped (exit code %s); its log: %s",
                            collector.process.returncode, collector.log_path)  # fmt: skip
        return result
    finally:
        stop_demo_collector(collector=collector, run=run)

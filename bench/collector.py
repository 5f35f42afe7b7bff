"""Collector benchmark: ingest throughput and status latency, on SQLite and PostgreSQL.

Everything is measured through the HTTP API of a real ``beeaudio collector serve`` (uvicorn, one process)
on loopback, with an httpx client in this process:

1. ingest: batches of 100 events (``POST /api/v1/events``) for ``--hives`` hives, one client sending
   sequentially and ``--clients`` clients at once; events/s.
2. status: ``GET /api/v1/hives/{id}/status`` for random hives, p50/p99, with ``--events`` stored events
   (default 2 million) and with 10× fewer. The history is bulk-loaded straight into the database
   (events, rollups, then the real state code derives each hive's steps and state row), because posting
   2 million events through the API would take longer than it says anything.

3. ``--late DAYS``, alone: a hive with DAYS of one-minute history (bulk-loaded, state derived) gets a
   10-event batch dated two hours before all of it, while a second client sends 10-event batches of
   another hive; the late batch's answer time, the other hive's slowest answer meanwhile, and how long
   until the late hive's state shows the late readings (the rest of the walk runs after the answer).

    python bench/collector.py                      # both databases, 200 hives, 2 000 000 events
    python bench/collector.py --db sqlite --events 200000
    python bench/collector.py --late 60            # issue 14, item 13
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import statistics
import sys
import tempfile
import threading
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import sqlalchemy as sa

from beeaudio.collector.db import scratch_schema
from beeaudio.collector.launch import RunningCollector, start_collector
from beeaudio.core.wire import ClassificationEvent, make_batch

PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_TOKEN = "bench-WgHOEyJNQsYbGt5D7HNzqbU6QVRx1O19"
ADMIN = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
BUCKET = 60


def start_server(*, db_url: str, data_dir: Path, log_path: Path) -> RunningCollector:
    """A real ``beeaudio collector serve`` on a free port; its log goes to ``log_path``."""
    return start_collector(
        log_path=log_path,
        db_url=db_url,
        env={
            "BEEAUDIO_ADMIN_TOKEN": ADMIN_TOKEN,
            "BEEAUDIO_DATA_DIR": str(data_dir),
            "BEEAUDIO_MODE": "production",
        },
        extra_args=["--log-level", "warning"],
    )


def make_db(kind: str, workdir: Path) -> tuple[str, Callable[[], None]]:
    """A fresh database URL and a clean-up function."""
    if kind == "sqlite":
        path = workdir / f"bench-{uuid.uuid4().hex[:6]}.db"
        return f"sqlite:///{path}", lambda: None
    stack = contextlib.ExitStack()
    url = stack.enter_context(scratch_schema(base_url=PG_BASE, prefix="bench"))
    return url, stack.close


def register(client: httpx.Client, *, hives: int) -> list[dict[str, str]]:
    devices = []
    for i in range(hives):
        hive_id = f"hive-{i:04d}"
        client.post(
            "/api/v1/hives", json={"name": hive_id, "hive_id": hive_id}, headers=ADMIN
        ).raise_for_status()
        response = client.post(
            f"/api/v1/hives/{hive_id}/devices", json={"device_id": f"dev-{i:04d}"}, headers=ADMIN
        )
        response.raise_for_status()
        devices.append(response.json())
    return devices


def live_batch(device: dict[str, str], *, start: datetime, seq: int, rng: random.Random) -> dict:
    events = []
    for k in range(100):
        swarm = round(rng.random(), 4)
        at = start + timedelta(seconds=10 * (seq * 100 + k))
        events.append(
            ClassificationEvent(
                event_id=f"{device['device_id']}-{seq}-{k}",
                hive_id=device["hive_id"],
                device_id=device["device_id"],
                model_name="bench",
                model_version="1",
                window_start=at,
                window_seconds=2.0,
                probabilities={"normal": round(1 - swarm, 4), "swarm": swarm},
                label="swarm" if swarm >= 0.5 else "normal",
                swarm_score=swarm,
                level_dbfs=-30.0,
                source_format="wav",
            )
        )
    return make_batch(device_id=device["device_id"], events=events, batch_id=f"{device['device_id']}-{seq}")


def bench_ingest(*, url: str, devices: list[dict[str, str]], batches: int, clients: int) -> dict[str, float]:
    rng = random.Random(1)
    start = datetime.now(UTC) - timedelta(days=2)
    counters = defaultdict(int)
    prepared = []
    for n in range(batches * (1 + clients)):
        device = devices[n % len(devices)]
        counters[device["device_id"]] += 1
        prepared.append((device, live_batch(device, start=start, seq=counters[device["device_id"]], rng=rng)))

    def send(items: list) -> None:
        with httpx.Client(base_url=url, timeout=60) as client:
            for device, body in items:
                response = client.post(
                    "/api/v1/events", json=body, headers={"Authorization": f"Bearer {device['token']}"}
                )
                response.raise_for_status()
                assert response.json()["accepted"] == 100

    sequential = prepared[:batches]
    t0 = time.perf_counter()
    send(sequential)
    one = batches * 100 / (time.perf_counter() - t0)
    rest = prepared[batches:]
    shards = [rest[i::clients] for i in range(clients)]
    threads = [threading.Thread(target=send, args=(shard,)) for shard in shards]
    t0 = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    many = len(rest) * 100 / (time.perf_counter() - t0)
    return {"sequential": one, "concurrent": many}


def bulk_load(*, db_url: str, hives: int, events: int) -> float:
    """Insert ``events`` historic events spread over the hives, their rollups, then derive the state."""
    from beeaudio.collector.db import events as events_table
    from beeaudio.collector.db import hive_state, make_engine, rollup_labels, rollups, write_transaction
    from beeaudio.collector.state import StateParams
    from beeaudio.collector.store.hive_state import rebuild

    t0 = time.perf_counter()
    engine = make_engine(db_url)
    per_hive = events // hives
    end = int(datetime.now(UTC).timestamp()) - 3600
    start = end - per_hive * 10
    rng = random.Random(7)
    columns = [
        "hive_id",
        "device_id",
        "event_id",
        "model_name",
        "model_version",
        "window_start_ms",
        "window_seconds",
        "label",
        "swarm_score",
        "level_dbfs",
        "source_format",
        "probabilities",
        "received_ms",
    ]
    now_ms = int(time.time() * 1000)
    raw = engine.raw_connection()
    try:
        cursor = raw.cursor()
        for h in range(hives):
            hive_id, device_id = f"hive-{h:04d}", f"dev-{h:04d}"
            totals: dict[int, list[float]] = defaultdict(lambda: [0, 0.0, 0.0])
            labels: dict[tuple[int, str], list[float]] = defaultdict(lambda: [0, 0.0])
            rows = []
            # Mostly normal with a swarm episode, so the derived states are not all the same.
            episode = rng.randrange(per_hive)
            for k in range(per_hive):
                t = start + 10 * k
                swarm = round(
                    min(max(rng.gauss(0.85 if episode <= k < episode + 400 else 0.15, 0.1), 0), 1), 4
                )
                label = "swarm" if swarm >= 0.5 else "normal"
                rows.append(
                    (
                        hive_id,
                        device_id,
                        f"h{h}-{k}",
                        "bench",
                        "1",
                        t * 1000,
                        2.0,
                        label,
                        swarm,
                        -30.0,
                        "wav",
                        json.dumps({"normal": round(1 - swarm, 4), "swarm": swarm}),
                        now_ms,
                    )
                )
                bucket = t - t % BUCKET
                total = totals[bucket]
                total[0] += 1
                total[1] += swarm
                total[2] += -30.0
                for name, p in (("normal", 1 - swarm), ("swarm", swarm)):
                    entry = labels[(bucket, name)]
                    entry[0] += name == label
                    entry[1] += p
            if db_url.startswith("postgresql"):
                with cursor.copy(f"COPY events ({', '.join(columns)}) FROM STDIN") as copy:
                    for row in rows:
                        copy.write_row(row)
            else:
                # The engine's SQLite connections run in autocommit mode (the engine issues BEGIN itself):
                # without an explicit transaction every row would be its own fsynced commit.
                marks = ", ".join("?" for _ in columns)
                cursor.execute("BEGIN")
                cursor.executemany(f"INSERT INTO events ({', '.join(columns)}) VALUES ({marks})", rows)
                cursor.execute("COMMIT")
            with write_transaction(engine) as conn:
                conn.execute(
                    sa.insert(rollups),
                    [
                        {
                            "hive_id": hive_id,
                            "device_id": device_id,
                            "bucket_start": b,
                            "n": int(n),
                            "swarm_sum": s,
                            "level_sum": lv,
                        }
                        for b, (n, s, lv) in totals.items()
                    ],
                )
                conn.execute(
                    sa.insert(rollup_labels),
                    [
                        {
                            "hive_id": hive_id,
                            "device_id": device_id,
                            "bucket_start": b,
                            "label": name,
                            "n_top": int(n),
                            "prob_sum": p,
                        }
                        for (b, name), (n, p) in labels.items()
                    ],
                )
            raw.commit()
        raw.commit()
    finally:
        raw.close()
    # The state code itself walks every hive's history once (as a late backlog upload would).
    defaults = StateParams()
    for h in range(hives):
        hive_id = f"hive-{h:04d}"
        rebuild(engine=engine, hive_id=hive_id, defaults=defaults, webhook_urls=[], now_ms=now_ms)
        with write_transaction(engine) as conn:
            # What ingest would have recorded about arrival: the loader bypassed it.
            conn.execute(
                sa.update(hive_state)
                .where(hive_state.c.hive_id == hive_id)
                .values(last_seen_ms=now_ms, last_event_ms=(end - 10) * 1000, model_version="1")
            )
    with engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(events_table)).scalar_one()
    engine.dispose()
    assert stored >= per_hive * hives
    return time.perf_counter() - t0


def bench_status(*, url: str, hives: int, requests: int) -> dict[str, float]:
    rng = random.Random(3)
    times = []
    with httpx.Client(base_url=url, timeout=30) as client:
        for _ in range(50):  # warm-up
            client.get(f"/api/v1/hives/hive-{rng.randrange(hives):04d}/status", headers=ADMIN)
        for _ in range(requests):
            hive_id = f"hive-{rng.randrange(hives):04d}"
            t0 = time.perf_counter()
            response = client.get(f"/api/v1/hives/{hive_id}/status", headers=ADMIN)
            times.append((time.perf_counter() - t0) * 1000)
            response.raise_for_status()
        t0 = time.perf_counter()
        listing = client.get("/api/v1/hives", headers=ADMIN)
        list_ms = (time.perf_counter() - t0) * 1000
        listing.raise_for_status()
    times.sort()
    return {
        "p50": statistics.median(times),
        "p99": times[int(len(times) * 0.99) - 1],
        "list_all_ms": list_ms,
    }


def small_batch(device: dict[str, str], *, start: datetime, swarm: float, tag: str) -> dict:
    events = [
        ClassificationEvent(
            event_id=f"{device['device_id']}-{tag}-{k}",
            hive_id=device["hive_id"],
            device_id=device["device_id"],
            model_name="bench",
            model_version="1",
            window_start=start + timedelta(seconds=6 * k),
            window_seconds=2.0,
            probabilities={"normal": round(1 - swarm, 4), "swarm": swarm},
            label="swarm" if swarm >= 0.5 else "normal",
            swarm_score=swarm,
            level_dbfs=-30.0,
            source_format="wav",
        )
        for k in range(10)
    ]
    return make_batch(device_id=device["device_id"], events=events, batch_id=f"{device['device_id']}-{tag}")


def load_minutes(*, db_url: str, hive_id: str, device_id: str, end: datetime, days: int) -> int:
    """DAYS of one-minute rollups (10 calm evidence windows each) for one hive, its steps derived by the
    real state code; returns the first bucket."""
    from beeaudio.collector.db import make_engine, rollup_labels, rollups
    from beeaudio.collector.state import StateParams
    from beeaudio.collector.store.hive_state import rebuild

    last = int(end.timestamp()) // BUCKET * BUCKET
    first = last - days * 1440 * BUCKET
    engine = make_engine(db_url)
    base = {"hive_id": hive_id, "device_id": device_id}
    buckets = range(first, last, BUCKET)
    with engine.begin() as conn:
        conn.execute(
            sa.insert(rollups),
            [{**base, "bucket_start": b, "n": 10, "swarm_sum": 1.0, "level_sum": -300.0} for b in buckets],
        )
        conn.execute(
            sa.insert(rollup_labels),
            [{**base, "bucket_start": b, "label": "normal", "n_top": 10, "prob_sum": 9.0} for b in buckets],
        )
    rebuild(engine=engine, hive_id=hive_id, defaults=StateParams(), webhook_urls=[], now_ms=0)
    engine.dispose()
    return first


def bench_late(*, kind: str, days: int, workdir: Path) -> None:
    db_url, drop = make_db(kind, workdir)
    data_dir, log_path = workdir / f"data-{kind}", workdir / f"collector-late-{kind}.log"
    server = start_server(db_url=db_url, data_dir=data_dir, log_path=log_path)
    try:
        with httpx.Client(base_url=server.url, timeout=120) as client:
            old, other = register(client, hives=2)
        server.stop()
        now = datetime.now(UTC).replace(microsecond=0)
        t0 = time.perf_counter()
        first = load_minutes(
            db_url=db_url, hive_id=old["hive_id"], device_id=old["device_id"], end=now, days=days
        )
        print(f"{days} days of one-minute history loaded and derived in {time.perf_counter() - t0:.0f} s")
        server = start_server(db_url=db_url, data_dir=data_dir, log_path=log_path)
        late_start = datetime.fromtimestamp(first, UTC) - timedelta(hours=2)
        late = small_batch(old, start=late_start, swarm=0.1, tag="late")
        with httpx.Client(base_url=server.url, timeout=120) as client:
            since = client.get(f"/api/v1/hives/{old['hive_id']}/status", headers=ADMIN).json()["since"]
        other_times: list[float] = []
        done = threading.Event()

        def other_hive() -> None:
            with httpx.Client(base_url=server.url, timeout=120) as client:
                seq = 0
                while not done.is_set() or seq < 5:
                    body = small_batch(other, start=now - timedelta(seconds=60), swarm=0.1, tag=f"o{seq}")
                    t = time.perf_counter()
                    client.post(
                        "/api/v1/events", json=body, headers={"Authorization": f"Bearer {other['token']}"}
                    ).raise_for_status()
                    other_times.append(time.perf_counter() - t)
                    seq += 1

        thread = threading.Thread(target=other_hive)
        thread.start()
        time.sleep(0.5)
        with httpx.Client(base_url=server.url, timeout=120) as client:
            t = time.perf_counter()
            client.post(
                "/api/v1/events", json=late, headers={"Authorization": f"Bearer {old['token']}"}
            ).raise_for_status()
            answered = time.perf_counter() - t
            while (
                client.get(f"/api/v1/hives/{old['hive_id']}/status", headers=ADMIN).json()["since"] == since
            ):
                time.sleep(0.05)
            settled = time.perf_counter() - t
        done.set()
        thread.join()
        print(
            f"late batch before {days} days: answered in {answered:.3f} s, "
            f"state settled after {settled:.2f} s; "
            f"the other hive's batches meanwhile: slowest {max(other_times):.3f} s, "
            f"median {statistics.median(other_times):.3f} s ({len(other_times)} batches)",
            flush=True,
        )
    finally:
        server.stop()
        drop()


def run(kind: str, args: argparse.Namespace, workdir: Path) -> None:
    print(f"\n== {kind} ==", flush=True)
    db_url, drop = make_db(kind, workdir)
    data_dir, log_path = workdir / f"data-{kind}", workdir / f"collector-{kind}.log"
    server = start_server(db_url=db_url, data_dir=data_dir, log_path=log_path)
    try:
        with httpx.Client(base_url=server.url, timeout=30) as client:
            devices = register(client, hives=args.hives)
        rates = bench_ingest(url=server.url, devices=devices, batches=args.batches, clients=args.clients)
        print(
            f"ingest, batches of 100: {rates['sequential']:,.0f} events/s (1 client), "
            f"{rates['concurrent']:,.0f} events/s ({args.clients} clients)",
            flush=True,
        )
    finally:
        server.stop()
        drop()
    for total in (args.events, args.events // 10):
        db_url, drop = make_db(kind, workdir)
        try:
            server = start_server(db_url=db_url, data_dir=data_dir, log_path=log_path)
            with httpx.Client(base_url=server.url, timeout=30) as client:
                register(client, hives=args.hives)
            server.stop()
            seconds = bulk_load(db_url=db_url, hives=args.hives, events=total)
            server = start_server(db_url=db_url, data_dir=data_dir, log_path=log_path)
            lat = bench_status(url=server.url, hives=args.hives, requests=args.requests)
            print(
                f"status with {total:,} events in {args.hives} hives (loaded in {seconds:.0f} s): "
                f"p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms; GET /hives (all {args.hives}) "
                f"{lat['list_all_ms']:.1f} ms",
                flush=True,
            )
        finally:
            server.stop()
            drop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--db", choices=["sqlite", "postgresql", "both"], default="both")
    parser.add_argument("--hives", type=int, default=200)
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--batches", type=int, default=200, help="batches of 100 per ingest measurement")
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=2000, help="status requests per measurement")
    parser.add_argument(
        "--late",
        type=int,
        default=0,
        metavar="DAYS",
        help="only the late-batch measurement, on DAYS of history",
    )
    args = parser.parse_args()
    print(
        f"collector bench: {os.cpu_count()} CPUs, Python {sys.version.split()[0]}, "
        "real uvicorn on 127.0.0.1, httpx client in this process"
    )
    kinds = ["sqlite", "postgresql"] if args.db == "both" else [args.db]
    with tempfile.TemporaryDirectory(prefix="beeaudio-bench-") as tmp:
        for kind in kinds:
            if args.late:
                print(f"\n== {kind} ==", flush=True)
                bench_late(kind=kind, days=args.late, workdir=Path(tmp))
            else:
                run(kind, args, Path(tmp))
    return 0


if __name__ == "__main__":
    sys.exit(main())

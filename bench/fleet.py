"""Fleet simulator: N devices sending batches over HTTP and over MQTT to 1, 2 and 3 collector replicas on one
PostgreSQL, for a bounded time each.

For each transport and replica count: a fresh PostgreSQL schema with N hives and N devices (bulk-inserted,
each device with its own token), R ``beeaudio collector serve`` processes on it (started one after the
other; with MQTT each subscribes to the broker with the shared subscription), then for ``--seconds``:

* senders post batches of ``--batch`` events (default 100) for the devices in turn, as fast as the
  collectors acknowledge them: HTTP by ``--http-clients`` threads (keep-alive, replicas round-robin), MQTT
  by ``--mqtt-connections`` paho connections with ``--inflight`` unacknowledged batches each, every batch
  published on its device's topic with that device's token and acknowledged on its ack topic;
* a prober asks ``GET /api/v1/hives/{id}/status`` of random hives, ``--status-rate`` per second.

Printed per run: sustained events/s (acknowledged events over the measured time), ingest latency p50/p99
(send to acknowledgement), status p99 under that load, lost events (acknowledged but not in the database)
and duplicated events (rows beyond one per event id; the database's unique key makes that 0 unless it is
broken), and events/s per CPU core: over the CPU time the collectors, PostgreSQL and the broker used in the
measured time (from /proc; PostgreSQL's is every postgres process of the machine, other users' included),
and over the machine's cores. The load generator runs on the same machine and takes CPU too (printed).
The CPU is sampled every 0.1 s, process by process, so a PostgreSQL backend that starts and exits
meanwhile (a connection pool's overflow) is counted for what it used while it was seen.

    python bench/fleet.py                                  # 10 000 devices, http and mqtt, 1-3 replicas
    python bench/fleet.py --devices 200 --seconds 10 --replicas 1 --transport mqtt
    python bench/fleet.py --rate 3000                      # offered load: latencies below saturation
    python bench/fleet.py --json fleet.json                # also write the figures as JSON

Needs PostgreSQL on 127.0.0.1:5432 (database ``test``) and, for MQTT, ``mosquitto`` (started here on a
free loopback port with its own configuration; never the system broker). Not part of the test suite.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa

from beeaudio.collector.db import scratch_schema
from beeaudio.collector.launch import RunningCollector, free_port, start_collector
from beeaudio.core import mqtt_wire
from beeaudio.core.wire import BATCH_SCHEMA, EVENT_SCHEMA, EVENTS_PATH, hive_path

log = logging.getLogger("bench.fleet")

PG_BASE = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
ADMIN_TOKEN = "fleet-Q8mZr2VbKx7LcT4nWp9sYd3HfJ6gA1uE"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Device:
    device_id: str
    hive_id: str
    token: str


@dataclass
class Tally:
    """What the senders saw; shared by their threads behind ``lock``."""

    latencies_ms: list[float] = field(default_factory=list)
    acked_ids: set[str] = field(default_factory=set)
    acked_events: int = 0
    errors: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, *, latency_ms: float, ids: list[str]) -> None:
        with self.lock:
            self.latencies_ms.append(latency_ms)
            self.acked_ids.update(ids)
            self.acked_events += len(ids)


@dataclass
class Result:
    transport: str
    replicas: int
    devices: int
    offered_events_per_s: float  # 0: as fast as acknowledged
    seconds: float
    events_per_s: float
    ingest_p50_ms: float
    ingest_p99_ms: float
    status_p99_ms: float
    status_requests: int
    lost: int
    duplicated: int
    #: Every table and index of the run's schema (events, rollups, steps, states ...) per stored event.
    db_bytes_per_event: int
    #: The raw events alone (the table or its partitions, with indexes) per event.
    event_bytes_per_event: int
    events_per_rollup_row: float
    errors: int
    server_cpu_cores: float  # the three below
    collector_cpu_cores: float
    postgres_cpu_cores: float  # every postgres process of the machine
    broker_cpu_cores: float
    #: PostgreSQL backends that started in the measured time (connections opened: a pool's overflow)
    postgres_backends_started: int
    generator_cpu_cores: float
    events_per_s_per_server_core: float
    events_per_s_per_machine_core: float


# -- the fleet --------------------------------------------------------------------------------------------
def make_schema() -> tuple[str, Callable[[], None]]:
    stack = contextlib.ExitStack()
    url = stack.enter_context(scratch_schema(base_url=PG_BASE, prefix="fleet"))
    return url, stack.close


def register_fleet(*, db_url: str, n: int) -> list[Device]:
    """N hives with one device each, straight into the migrated database (the API would take minutes)."""
    from beeaudio.collector import db
    from beeaudio.collector.store.hive_state import new_state_row
    from beeaudio.collector.tokens import new_device_token, token_digest

    now_ms = int(time.time() * 1000)
    fleet = [
        Device(device_id=f"dev-{i:05d}", hive_id=f"hive-{i:05d}", token=new_device_token()) for i in range(n)
    ]
    engine = sa.create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(
                sa.insert(db.hives),
                [
                    {"hive_id": d.hive_id, "name": d.hive_id, "created_ms": now_ms, "params": {}}
                    for d in fleet
                ],
            )
            conn.execute(
                sa.insert(db.hive_state), [new_state_row(hive_id=d.hive_id, now_ms=now_ms) for d in fleet]
            )
            conn.execute(
                sa.insert(db.devices),
                [
                    {
                        "device_id": d.device_id,
                        "hive_id": d.hive_id,
                        "token_sha256": token_digest(d.token),
                        "created_ms": now_ms,
                    }
                    for d in fleet
                ],
            )
    finally:
        engine.dispose()
    return fleet


class Pacer:
    """Offered load: at most ``batches_per_s`` batches a second over all senders (0 = as fast as the
    collectors acknowledge). A sender that falls behind does not catch up in a burst."""

    def __init__(self, *, batches_per_s: float) -> None:
        self.interval = 1.0 / batches_per_s if batches_per_s > 0 else 0.0
        self._next = time.perf_counter()
        self._lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self._lock:
            now = time.perf_counter()
            slot = max(self._next, now)
            self._next = slot + self.interval
        time.sleep(max(0.0, slot - now))


class Batches:
    """Batches of ``size`` events for the devices in turn, each device's windows 10 s apart (a hive's
    backlog: every batch spans ``size`` × 10 s of its device's time)."""

    def __init__(self, *, fleet: list[Device], size: int, tag: str, pacer: Pacer | None = None) -> None:
        self.fleet, self.size, self.tag = fleet, size, tag
        self.pacer = pacer or Pacer(batches_per_s=0)
        self.start_s = time.time() - 20 * 86400
        self._turn = itertools.count()
        self._lock = threading.Lock()
        self._seq: dict[str, int] = {}

    def next(self) -> tuple[Device, dict[str, Any]]:
        self.pacer.wait()
        with self._lock:
            device = self.fleet[next(self._turn) % len(self.fleet)]
            seq = self._seq.get(device.device_id, 0)
            self._seq[device.device_id] = seq + 1
        rng = random.Random(hash((device.device_id, seq)))
        first = self.start_s + seq * self.size * 10
        events = []
        for k in range(self.size):
            swarm = round(rng.random() * 0.5, 4)
            at = datetime.fromtimestamp(first + 10 * k, tz=UTC)
            events.append(
                {
                    "schema": EVENT_SCHEMA,
                    "event_id": f"{self.tag}-{device.device_id}-{seq}-{k}",
                    "hive_id": device.hive_id,
                    "device_id": device.device_id,
                    "model_name": "fleet",
                    "model_version": "1",
                    "window_start": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
                    "window_seconds": 2.0,
                    "probabilities": {"normal": round(1 - swarm, 4), "swarm": swarm},
                    "label": "normal",
                    "swarm_score": swarm,
                    "level_dbfs": -30.0,
                    "source_format": "wav",
                    "quality": "ok",
                    "novelty": None,
                    "novelty_threshold": None,
                }
            )
        batch_id = f"{self.tag}-{device.device_id}-{seq}"
        return device, {
            "schema": BATCH_SCHEMA,
            "batch_id": batch_id,
            "device_id": device.device_id,
            "events": events,
        }


# -- CPU accounting (/proc) ------------------------------------------------------------------------------
def _cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime + stime


def _pids_named(name: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "comm").read_text().strip() == name:
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def server_cpu(*, collectors: list[int], broker: int | None) -> dict[str, dict[int, float]]:
    """CPU seconds so far of each collector process, of the broker and of each postgres process."""
    return {
        "collectors": {p: _cpu_seconds(p) for p in collectors},
        "broker": {broker: _cpu_seconds(broker)} if broker else {},
        "postgres": {p: _cpu_seconds(p) for p in _pids_named("postgres")},
    }


class CpuSampler(threading.Thread):
    """Samples :func:`server_cpu` every ``every_s`` between :meth:`start` and :meth:`finish`, so that a
    process that comes and goes meanwhile (a PostgreSQL backend of a pool's overflow connection) still
    counts with what it used while it was seen; one that was there before counts from its first sample."""

    def __init__(self, *, collectors: list[int], broker: int | None, every_s: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.collectors, self.broker, self.every_s = collectors, broker, every_s
        self.first: dict[str, dict[int, float]] = server_cpu(collectors=collectors, broker=broker)
        self.last: dict[str, dict[int, float]] = {name: dict(pids) for name, pids in self.first.items()}
        self.new_postgres_pids: set[int] = set()
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(self.every_s):
            self._sample()

    def _sample(self) -> None:
        for name, pids in server_cpu(collectors=self.collectors, broker=self.broker).items():
            for pid, seconds in pids.items():
                if pid not in self.first[name]:
                    self.first[name][pid] = 0.0  # started meanwhile: all its time is the run's
                    if name == "postgres":
                        self.new_postgres_pids.add(pid)
                if seconds:
                    self.last[name][pid] = seconds

    def finish(self) -> dict[str, float]:
        """CPU seconds used, by part (collectors, broker, postgres)."""
        self._halt.set()
        self.join(timeout=5)
        self._sample()
        return {
            name: sum(max(0.0, seconds - self.first[name].get(pid, 0.0)) for pid, seconds in pids.items())
            for name, pids in self.last.items()
        }


# -- senders ------------------------------------------------------------------------------------------------
def http_sender(
    *, urls: list[str], batches: Batches, tally: Tally, until: threading.Event, index: int
) -> None:
    clients = [httpx.Client(base_url=url, timeout=60) for url in urls]
    try:
        for turn in itertools.count(index):
            if until.is_set():
                return
            device, body = batches.next()
            client = clients[turn % len(clients)]
            t0 = time.perf_counter()
            try:
                answer = client.post(
                    EVENTS_PATH, json=body, headers={"Authorization": f"Bearer {device.token}"}
                )
            except httpx.HTTPError:
                with tally.lock:
                    tally.errors += 1
                continue
            data = answer.json() if answer.status_code == 200 else {}
            if data.get("batch_id") == body["batch_id"] and data["accepted"] + data["duplicates"] == len(
                body["events"]
            ):
                tally.ok(
                    latency_ms=(time.perf_counter() - t0) * 1000, ids=[e["event_id"] for e in body["events"]]
                )
            else:
                with tally.lock:
                    tally.errors += 1
    finally:
        for client in clients:
            client.close()


class MqttSender:
    """One paho connection publishing batches for its share of the devices, ``inflight`` at a time,
    subscribed to those devices' ack topics."""

    def __init__(
        self,
        *,
        broker_port: int,
        devices: list[Device],
        batches: Batches,
        tally: Tally,
        inflight: int,
        name: str,
    ) -> None:
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.batches = Batches(fleet=devices, size=batches.size, tag=batches.tag, pacer=batches.pacer)
        self.tally = tally
        self.slots = threading.Semaphore(inflight)
        self.pending: dict[str, tuple[float, list[str]]] = {}
        self.lock = threading.Lock()
        self.ready = threading.Event()
        self.devices = devices
        self.client = mqtt.Client(
            callback_api_version=CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", broker_port, keepalive=60)
        self.client.loop_start()
        topics = [(mqtt_wire.ack_topic(d.device_id), 1) for d in devices]
        for start in range(0, len(topics), 500):
            self.client.subscribe(topics[start : start + 500])
        time.sleep(0.5)  # the SUBACKs (acks of batches sent before them would be missed, then re-sent)

    def _on_message(self, _client: Any, _userdata: Any, message: Any) -> None:
        ack = mqtt_wire.parse_ack(message.payload)
        if ack is None:
            return
        with self.lock:
            sent = self.pending.pop(ack.request_id, None)
        if sent is None:
            return
        t0, ids = sent
        body = ack.body
        if ack.status == 200 and body.get("accepted", 0) + body.get("duplicates", 0) == len(ids):
            self.tally.ok(latency_ms=(time.perf_counter() - t0) * 1000, ids=ids)
        else:
            with self.tally.lock:
                self.tally.errors += 1
        self.slots.release()

    def run(self, until: threading.Event) -> None:
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        while not until.is_set():
            if not self.slots.acquire(timeout=0.5):
                continue
            device, body = self.batches.next()
            properties = Properties(PacketTypes.PUBLISH)
            properties.CorrelationData = body["batch_id"].encode()
            properties.UserProperty = [(mqtt_wire.AUTHORIZATION_PROPERTY, f"Bearer {device.token}")]
            payload = json.dumps(body, separators=(",", ":")).encode()
            with self.lock:
                self.pending[body["batch_id"]] = (
                    time.perf_counter(),
                    [e["event_id"] for e in body["events"]],
                )
            self.client.publish(
                mqtt_wire.batch_topic(device.device_id), payload, qos=1, properties=properties
            )

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


def status_prober(
    *, urls: list[str], fleet: list[Device], rate: float, until: threading.Event, out: list[float]
) -> None:
    rng = random.Random(7)
    clients = [httpx.Client(base_url=url, timeout=30) for url in urls]
    headers = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    try:
        for turn in itertools.count():
            if until.is_set():
                return
            t0 = time.perf_counter()
            answer = clients[turn % len(clients)].get(
                hive_path(rng.choice(fleet).hive_id, "status"), headers=headers
            )
            if answer.status_code == 200:
                out.append((time.perf_counter() - t0) * 1000)
            time.sleep(max(0.0, 1.0 / rate - (time.perf_counter() - t0)))
    finally:
        for client in clients:
            client.close()


# -- one run ------------------------------------------------------------------------------------------------
@dataclass
class Broker:
    process: subprocess.Popen[bytes]
    port: int

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def start_broker(folder: Path) -> Broker:
    """A Mosquitto of the bench's own on a free loopback port (anonymous: the collector checks every
    publish's token anyway; the ACL is the tests' business)."""
    binary = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    port = free_port()
    config = folder / "mosquitto.conf"
    config.write_text(
        f"user root\nlistener {port} 127.0.0.1\nallow_anonymous true\nmax_inflight_messages 1000\n"
        "max_queued_messages 1000000\nlog_dest none\n"
    )
    process = subprocess.Popen(
        [binary, "-c", str(config)], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT
    )
    time.sleep(0.5)
    if process.poll() is not None:
        raise SystemExit("mosquitto did not start")
    return Broker(process=process, port=port)


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def run_once(*, transport: str, replicas: int, args: argparse.Namespace, workdir: Path) -> Result:
    db_url, drop = make_schema()
    collectors: list[RunningCollector] = []
    broker = start_broker(workdir) if transport == "mqtt" else None
    try:
        env = {
            "BEEAUDIO_ADMIN_TOKEN": ADMIN_TOKEN,
            "BEEAUDIO_DATA_DIR": str(workdir / "data"),
            "BEEAUDIO_HOMEASSISTANT": "false",
        }
        if broker is not None:
            env["BEEAUDIO_MQTT_URL"] = f"mqtt://127.0.0.1:{broker.port}"
            env["BEEAUDIO_MQTT_WORKERS"] = str(args.mqtt_workers)
        for i in range(replicas):  # one after the other: the first migrates the new schema
            collectors.append(
                start_collector(
                    log_path=workdir / f"collector-{transport}-{replicas}-{i}.log",
                    db_url=db_url,
                    env=env,
                    extra_args=["--log-level", "warning"],
                )
            )
            if i == 0:
                fleet = register_fleet(db_url=db_url, n=args.devices)
        urls = [c.url for c in collectors]
        pacer = Pacer(batches_per_s=args.rate / args.batch)
        batches = Batches(fleet=fleet, size=args.batch, tag=f"{transport}{replicas}", pacer=pacer)
        tally, status_ms = Tally(), []
        until = threading.Event()
        threads: list[threading.Thread] = []
        senders: list[MqttSender] = []
        if transport == "http":
            for i in range(args.http_clients):
                threads.append(
                    threading.Thread(
                        target=http_sender,
                        kwargs={"urls": urls, "batches": batches, "tally": tally, "until": until, "index": i},
                    )
                )
        else:
            assert broker is not None
            shares = [fleet[i :: args.mqtt_connections] for i in range(args.mqtt_connections)]
            for i, share in enumerate(shares):
                sender = MqttSender(
                    broker_port=broker.port,
                    devices=share,
                    batches=batches,
                    tally=tally,
                    inflight=args.inflight,
                    name=f"fleet-{uuid.uuid4().hex[:6]}-{i}",
                )
                senders.append(sender)
                threads.append(threading.Thread(target=sender.run, args=(until,)))
        threads.append(
            threading.Thread(
                target=status_prober,
                kwargs={
                    "urls": urls,
                    "fleet": fleet,
                    "rate": args.status_rate,
                    "until": until,
                    "out": status_ms,
                },
            )
        )
        cpu_of = {
            "collectors": [c.process.pid for c in collectors],
            "broker": broker.process.pid if broker else None,
        }
        for thread in threads:
            thread.start()
        time.sleep(args.warmup)  # connections, caches, first plans
        with tally.lock:
            events0, latencies0 = tally.acked_events, len(tally.latencies_ms)
        status0 = len(status_ms)
        sampler, gen0, t0 = CpuSampler(**cpu_of), time.process_time(), time.perf_counter()
        sampler.start()
        time.sleep(args.seconds)
        with tally.lock:
            events1 = tally.acked_events
            latencies = tally.latencies_ms[latencies0:]
        used, gen1, t1 = sampler.finish(), time.process_time(), time.perf_counter()
        statuses = status_ms[status0:]
        until.set()
        for thread in threads:
            thread.join(timeout=120)
        time.sleep(2.0)  # acks still on their way
        for sender in senders:
            sender.close()
        elapsed = t1 - t0
        rate = (events1 - events0) / elapsed
        engine = sa.create_engine(db_url)
        with engine.connect() as conn:
            rows = conn.execute(sa.text("SELECT COUNT(*) FROM events")).scalar_one()
            distinct = conn.execute(
                sa.text("SELECT COUNT(DISTINCT (device_id, event_id)) FROM events")
            ).scalar_one()
            stored = set(conn.execute(sa.text("SELECT event_id FROM events")).scalars())
            sizes = {
                table: int(bytes_)
                for table, bytes_ in conn.execute(
                    sa.text(
                        "SELECT c.relname, pg_total_relation_size(c.oid) FROM pg_class c "
                        "JOIN pg_namespace n ON n.oid = c.relnamespace "
                        "WHERE n.nspname = current_schema() AND c.relkind = 'r'"
                    )
                )
            }
            rollup_rows = conn.execute(sa.text("SELECT COUNT(*) FROM rollups")).scalar_one()
        db_bytes = sum(sizes.values())
        # The raw events' table (its weekly partitions, where it is partitioned) with its indexes.
        event_bytes = sum(b for t, b in sizes.items() if t == "events" or t.startswith("events_"))
        engine.dispose()
        cores = {name: seconds / elapsed for name, seconds in used.items()}
        server_cores = sum(cores.values())
        return Result(
            transport=transport,
            replicas=replicas,
            devices=args.devices,
            offered_events_per_s=args.rate,
            seconds=round(elapsed, 1),
            events_per_s=round(rate),
            ingest_p50_ms=round(percentile(latencies, 0.50), 1),
            ingest_p99_ms=round(percentile(latencies, 0.99), 1),
            status_p99_ms=round(percentile(statuses, 0.99), 1),
            status_requests=len(statuses),
            lost=len(tally.acked_ids - stored),
            duplicated=int(rows - distinct),
            db_bytes_per_event=int(db_bytes // rows) if rows else 0,
            event_bytes_per_event=int(event_bytes // rows) if rows else 0,
            events_per_rollup_row=round(rows / rollup_rows, 2) if rollup_rows else 0.0,
            errors=tally.errors,
            server_cpu_cores=round(server_cores, 2),
            collector_cpu_cores=round(cores["collectors"], 2),
            postgres_cpu_cores=round(cores["postgres"], 2),
            broker_cpu_cores=round(cores["broker"], 2),
            postgres_backends_started=len(sampler.new_postgres_pids),
            generator_cpu_cores=round((gen1 - gen0) / elapsed, 2),
            events_per_s_per_server_core=round(rate / server_cores) if server_cores > 0 else 0,
            events_per_s_per_machine_core=round(rate / (os.cpu_count() or 1)),
        )
    finally:
        for collector in collectors:
            collector.stop()
        if broker is not None:
            broker.stop()
        drop()


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--devices", type=int, default=10_000, help="simulated devices (one hive each)")
    parser.add_argument("--seconds", type=float, default=30.0, help="measured time per run")
    parser.add_argument("--warmup", type=float, default=3.0, help="seconds of load before measuring")
    parser.add_argument("--transport", choices=["http", "mqtt", "both"], default="both")
    parser.add_argument("--replicas", default="1,2,3", help="replica counts, comma-separated")
    parser.add_argument("--batch", type=int, default=100, help="events per batch")
    parser.add_argument(
        "--rate",
        type=float,
        default=0.0,
        help="offered events/s over all senders (0: as fast as acknowledged)",
    )
    parser.add_argument("--http-clients", type=int, default=8, help="concurrent HTTP senders")
    parser.add_argument("--mqtt-connections", type=int, default=4, help="MQTT connections of the senders")
    parser.add_argument("--inflight", type=int, default=4, help="unacknowledged batches per MQTT connection")
    parser.add_argument("--mqtt-workers", type=int, default=4, help="BEEAUDIO_MQTT_WORKERS of each replica")
    parser.add_argument("--status-rate", type=float, default=20.0, help="status requests per second")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    transports = ["http", "mqtt"] if args.transport == "both" else [args.transport]
    counts = [int(r) for r in args.replicas.split(",")]
    results = []
    with tempfile.TemporaryDirectory(prefix="beeaudio-fleet-") as tmp:
        for transport in transports:
            for replicas in counts:
                result = run_once(transport=transport, replicas=replicas, args=args, workdir=Path(tmp))
                results.append(result)
                log.info("%s", json.dumps(asdict(result)))
    header = (
        "transport",
        "replicas",
        "events/s",
        "ingest p50 ms",
        "ingest p99 ms",
        "status p99 ms",
        "lost",
        "duplicated",
        "errors",
        "server cores (collectors + PG + broker)",
        "generator cores",
        "ev/s per server core",
        "ev/s per machine core",
        "DB bytes/event",
    )
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    for r in results:
        row = (
            r.transport,
            r.replicas,
            r.events_per_s,
            r.ingest_p50_ms,
            r.ingest_p99_ms,
            r.status_p99_ms,
            r.lost,
            r.duplicated,
            r.errors,
            f"{r.server_cpu_cores} ({r.collector_cpu_cores} + {r.postgres_cpu_cores} + {r.broker_cpu_cores})",
            r.generator_cpu_cores,
            r.events_per_s_per_server_core,
            r.events_per_s_per_machine_core,
            r.db_bytes_per_event,
        )
        print("| " + " | ".join(str(v) for v in row) + " |")
    offered = f"offered {args.rate:g} events/s" if args.rate else "as fast as acknowledged"
    print(
        f"{args.devices} devices, batches of {args.batch}, {offered}, {args.seconds:g} s measured per run, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f}"
    )
    if args.json:
        args.json.write_text(json.dumps([asdict(r) for r in results], indent=2))
    return 0 if all(r.lost == 0 and r.duplicated == 0 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())

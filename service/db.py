"""Tables and engine of the collector.

Times are stored as integers (epoch milliseconds; rollup buckets as epoch seconds) so that bucket arithmetic
is the same plain integer SQL on SQLite and PostgreSQL. Every table that holds readings (events, rollups,
heartbeats) carries both the hive id and the device id. Rollups count every window and, separately, the
*evidence* windows (a usable signal the model knows) and those without signal, with a poor signal or
unfamiliar to the model (see ``beeaudio.collector.state.window_kind``). The schema itself is created by
the Alembic migrations in ``service/migrations``; these ``Table`` objects describe it for queries, and a
test holds the two to each other.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

log = logging.getLogger(__name__)

metadata = sa.MetaData()

#: Integer primary keys that autoincrement on both databases (SQLite only does it for INTEGER).
BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
ZERO = sa.text("0")


def _same_as(column: str) -> Any:
    """A default that copies another column of the inserted row: a rollup written without the evidence
    split (a bulk load of v1 readings, e.g. bench/collector.py) counts every window as evidence, as v1
    events do. The collector's own ingest always gives both."""

    def default(context: Any) -> Any:
        return context.get_current_parameters()[column]

    return default


hives = sa.Table(
    "hives",
    metadata,
    sa.Column("hive_id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("params", sa.JSON, nullable=False),
)

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("hive_id", sa.String(64), sa.ForeignKey("hives.hive_id"), nullable=False, index=True),
    sa.Column("token_sha256", sa.String(64), nullable=True, unique=True),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("revoked_ms", sa.BigInteger, nullable=True),
    sa.Column("last_seen_ms", sa.BigInteger, nullable=True),
    sa.Column("last_heartbeat_ms", sa.BigInteger, nullable=True),
    sa.Column("heartbeat", sa.JSON, nullable=True),
)

events = sa.Table(
    "events",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("hive_id", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("event_id", sa.String(64), nullable=False),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(100), nullable=False),
    sa.Column("window_start_ms", sa.BigInteger, nullable=False),
    sa.Column("window_seconds", sa.Float, nullable=False),
    sa.Column("label", sa.String(100), nullable=False),
    sa.Column("swarm_score", sa.Float, nullable=False),
    sa.Column("level_dbfs", sa.Float, nullable=False),
    sa.Column("source_format", sa.String(32), nullable=False),
    sa.Column("probabilities", sa.JSON, nullable=False),
    sa.Column("extra", sa.JSON, nullable=True),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    # beeaudio.event/2: the signal check and the novelty score; NULL on v1 events (never checked).
    sa.Column("quality", sa.String(16), nullable=True),
    sa.Column("novelty", sa.Float, nullable=True),
    sa.Column("novelty_threshold", sa.Float, nullable=True),
    # Unique per device: a device can only ever collide with its own ids, never suppress another's. The
    # key holds window_start_ms because PostgreSQL partitions the table by it (a unique constraint of a
    # partitioned table must hold the partition key); duplicates stay exact by (device_id, event_id), as
    # the ingest looks the batch's ids up under the hive's lock before inserting (store.ingest).
    sa.UniqueConstraint("device_id", "event_id", "window_start_ms", name="uq_events_device_event_window"),
    sa.Index("ix_events_hive_time", "hive_id", "window_start_ms", "id"),
)

rollups = sa.Table(
    "rollups",
    metadata,
    sa.Column("hive_id", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("bucket_start", sa.BigInteger, primary_key=True),
    sa.Column("n", sa.Integer, nullable=False),
    sa.Column("swarm_sum", sa.Float, nullable=False),
    sa.Column("level_sum", sa.Float, nullable=False),
    # The windows that count towards the state, and those that do not, by why (n is their total).
    sa.Column("n_evidence", sa.Integer, nullable=False, default=_same_as("n"), server_default=ZERO),
    sa.Column(
        "evidence_swarm_sum", sa.Float, nullable=False, default=_same_as("swarm_sum"), server_default=ZERO
    ),
    sa.Column("n_no_signal", sa.Integer, nullable=False, default=0, server_default=ZERO),
    sa.Column("n_poor_signal", sa.Integer, nullable=False, default=0, server_default=ZERO),
    sa.Column("n_unfamiliar", sa.Integer, nullable=False, default=0, server_default=ZERO),
    sa.Index("ix_rollups_hive_bucket", "hive_id", "bucket_start"),
)

rollup_labels = sa.Table(
    "rollup_labels",
    metadata,
    sa.Column("hive_id", sa.String(64), primary_key=True),
    sa.Column("device_id", sa.String(64), primary_key=True),
    sa.Column("bucket_start", sa.BigInteger, primary_key=True),
    sa.Column("label", sa.String(100), primary_key=True),
    sa.Column("n_top", sa.Integer, nullable=False),
    sa.Column("prob_sum", sa.Float, nullable=False),
    # How many evidence windows this label won (the status's label counts cover evidence only).
    sa.Column("n_top_evidence", sa.Integer, nullable=False, default=_same_as("n_top"), server_default=ZERO),
    sa.Index("ix_rollup_labels_hive_bucket", "hive_id", "bucket_start"),
)

hive_steps = sa.Table(
    "hive_steps",
    metadata,
    sa.Column("hive_id", sa.String(64), primary_key=True),
    sa.Column("bucket_start", sa.BigInteger, primary_key=True),
    sa.Column("n_window", sa.Integer, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("pending", sa.Integer, nullable=False),
    sa.Column("since_ms", sa.BigInteger, nullable=True),
    sa.Column("pending_since_ms", sa.BigInteger, nullable=True),
)

hive_state = sa.Table(
    "hive_state",
    metadata,
    sa.Column("hive_id", sa.String(64), sa.ForeignKey("hives.hive_id"), primary_key=True),
    sa.Column("state", sa.String(16), nullable=False),
    sa.Column("since_ms", sa.BigInteger, nullable=True),
    sa.Column("confidence", sa.Float, nullable=False),
    sa.Column("score", sa.Float, nullable=True),
    sa.Column("n_window", sa.Integer, nullable=False),
    sa.Column("counts", sa.JSON, nullable=False),
    sa.Column("last_bucket", sa.BigInteger, nullable=True),
    sa.Column("last_seen_ms", sa.BigInteger, nullable=True),
    sa.Column("last_event_ms", sa.BigInteger, nullable=True),
    sa.Column("model_version", sa.String(100), nullable=True),
    sa.Column("offline_alerted", sa.Boolean, nullable=False),
    sa.Column("updated_ms", sa.BigInteger, nullable=False),
    # Why the state is unknown, and the last step's window by kind (n_window counts its evidence).
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("window_seconds", sa.Float, nullable=True),
    sa.Column("n_readings", sa.Integer, nullable=False, server_default=ZERO),
    sa.Column("n_no_signal", sa.Integer, nullable=False, server_default=ZERO),
    sa.Column("n_poor_signal", sa.Integer, nullable=False, server_default=ZERO),
    sa.Column("n_unfamiliar", sa.Integer, nullable=False, server_default=ZERO),
    sa.Column("silent_alerted", sa.Boolean, nullable=False, server_default=sa.false()),
    # The rules the stored steps were derived with; older rows are re-derived (store.hive_state).
    sa.Column("rules_version", sa.Integer, nullable=False, server_default=sa.text("1")),
    # An unfinished re-evaluation of the steps (store.hive_state.Walk): where it goes on, and the bucket
    # before which it may not stop. NULL when the steps all follow from their predecessors.
    sa.Column("recompute_from", sa.BigInteger, nullable=True),
    sa.Column("recompute_until", sa.BigInteger, nullable=True),
)

heartbeats = sa.Table(
    "heartbeats",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("hive_id", sa.String(64), nullable=False),
    sa.Column("device_id", sa.String(64), nullable=False),
    sa.Column("received_ms", sa.BigInteger, nullable=False),
    sa.Column("payload", sa.JSON, nullable=False),
    sa.Index("ix_heartbeats_device_time", "device_id", "received_ms"),
)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("alert_id", sa.String(32), primary_key=True),
    sa.Column("hive_id", sa.String(64), nullable=False),
    sa.Column("kind", sa.String(32), nullable=False),
    sa.Column("at_ms", sa.BigInteger, nullable=False),
    sa.Column("created_ms", sa.BigInteger, nullable=False),
    sa.Column("details", sa.JSON, nullable=False),
    sa.Index("ix_alerts_hive_at", "hive_id", "at_ms"),
    sa.Index("ix_alerts_at", "at_ms"),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", BigId, primary_key=True, autoincrement=True),
    sa.Column("alert_id", sa.String(32), nullable=False),
    sa.Column("url", sa.Text, nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("delivered_ms", sa.BigInteger, nullable=True),
    sa.Index("ix_webhook_due", "status", "next_attempt_ms"),
)

models = sa.Table(
    "models",
    metadata,
    sa.Column("model_id", sa.String(64), primary_key=True),
    sa.Column("model_name", sa.String(200), nullable=False),
    sa.Column("model_version", sa.String(100), nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False, unique=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("filename", sa.String(200), nullable=False),
    sa.Column("manifest", sa.JSON, nullable=False),
    sa.Column("uploaded_ms", sa.BigInteger, nullable=False),
)

model_publications = sa.Table(
    "model_publications",
    metadata,
    # A hive id, or "*" for every hive.
    sa.Column("target", sa.String(64), primary_key=True),
    sa.Column("model_id", sa.String(64), sa.ForeignKey("models.model_id"), nullable=False),
    sa.Column("published_ms", sa.BigInteger, nullable=False),
)

background_jobs = sa.Table(
    "background_jobs",
    metadata,
    # One row per periodic job (offline sweep, retention): which process holds it, until when, and when it
    # last started, so that several collector processes run each job once per interval between them
    # (beeaudio.collector.leases).
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("holder", sa.String(200), nullable=True),
    sa.Column("lease_until_ms", sa.BigInteger, nullable=False, server_default=ZERO),
    sa.Column("last_started_ms", sa.BigInteger, nullable=True),
    sa.Column("last_finished_ms", sa.BigInteger, nullable=True),
    sa.Column("runs", sa.BigInteger, nullable=False, server_default=ZERO),
)

ALL_HIVES = "*"


def make_engine(url: str, **kwargs: Any) -> Engine:
    """An engine whose committed transactions are durable.

    SQLite: WAL journal, ``synchronous=FULL`` (a commit is fsynced before it returns, so a 2xx survives a
    power cut), foreign keys on, a busy timeout, and write transactions opened with ``BEGIN IMMEDIATE`` so
    two writers queue instead of failing with "database is locked" half-way through.
    """
    parsed = sa.make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return sa.create_engine(url, pool_pre_ping=True, **kwargs)
    engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30}, **kwargs)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event below decide how a transaction starts.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        if parsed.database and parsed.database != ":memory:":
            cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        immediate = conn.get_execution_options().get("sqlite_immediate", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return engine


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that will write: committed (durably) on exit, rolled back on error."""
    with engine.execution_options(sqlite_immediate=True).begin() as conn:
        yield conn


@contextmanager
def read_transaction(engine: Engine) -> Iterator[Connection]:
    with engine.begin() as conn:
        yield conn


def lock_clause(conn: Connection) -> bool:
    """Whether ``SELECT ... FOR UPDATE`` means anything here (SQLite serialises writers instead)."""
    return conn.dialect.name != "sqlite"


def insert_for(conn: Connection) -> Any:
    """The dialect's ``insert`` (with ``on_conflict_do_nothing``/``on_conflict_do_update``)."""
    if conn.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    elif conn.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    else:  # pragma: no cover - only the two supported databases
        raise RuntimeError(f"unsupported database {conn.dialect.name!r}: use SQLite or PostgreSQL")
    return insert


def schema_url(*, base_url: str, schema: str) -> str:
    """``base_url`` (a PostgreSQL URL without a query) with ``schema`` as its search path."""
    return f"{base_url}?options=-csearch_path%3D{schema}"


@contextmanager
def scratch_schema(*, base_url: str, prefix: str) -> Iterator[str]:
    """A new, empty schema on the PostgreSQL server of ``base_url``, dropped with everything in it on
    exit; yields its URL. For tests and benchmarks, which must not see each other's rows."""
    import uuid

    schema = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(base_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE SCHEMA "{schema}"')  # generated here, not user input
        yield schema_url(base_url=base_url, schema=schema)
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        admin.dispose()

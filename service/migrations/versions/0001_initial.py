"""Initial collector schema: hives, devices, events, rollups, hive state, alerts, webhooks, models.

Revision ID: 0001
Revises:
Create Date: 2026-11-27

Written out by hand (not imported from beeaudio.collector.db) so that this revision stays what it was
when later
revisions change the tables.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

BigId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "hives",
        sa.Column("hive_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
    )
    op.create_table(
        "devices",
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("hive_id", sa.String(64), sa.ForeignKey("hives.hive_id"), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=True, unique=True),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("revoked_ms", sa.BigInteger, nullable=True),
        sa.Column("last_seen_ms", sa.BigInteger, nullable=True),
        sa.Column("last_heartbeat_ms", sa.BigInteger, nullable=True),
        sa.Column("heartbeat", sa.JSON, nullable=True),
    )
    op.create_index("ix_devices_hive_id", "devices", ["hive_id"])
    op.create_table(
        "events",
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
        sa.UniqueConstraint("device_id", "event_id", name="uq_events_device_event"),
    )
    op.create_index("ix_events_hive_time", "events", ["hive_id", "window_start_ms", "id"])
    op.create_table(
        "rollups",
        sa.Column("hive_id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        sa.Column("n", sa.Integer, nullable=False),
        sa.Column("swarm_sum", sa.Float, nullable=False),
        sa.Column("level_sum", sa.Float, nullable=False),
    )
    op.create_index("ix_rollups_hive_bucket", "rollups", ["hive_id", "bucket_start"])
    op.create_table(
        "rollup_labels",
        sa.Column("hive_id", sa.String(64), primary_key=True),
        sa.Column("device_id", sa.String(64), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        sa.Column("label", sa.String(100), primary_key=True),
        sa.Column("n_top", sa.Integer, nullable=False),
        sa.Column("prob_sum", sa.Float, nullable=False),
    )
    op.create_index("ix_rollup_labels_hive_bucket", "rollup_labels", ["hive_id", "bucket_start"])
    op.create_table(
        "hive_steps",
        sa.Column("hive_id", sa.String(64), primary_key=True),
        sa.Column("bucket_start", sa.BigInteger, primary_key=True),
        sa.Column("n_window", sa.Integer, nullable=False),
        sa.Column("score", sa.Float, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("pending", sa.Integer, nullable=False),
        sa.Column("since_ms", sa.BigInteger, nullable=True),
        sa.Column("pending_since_ms", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "hive_state",
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
    )
    op.create_table(
        "heartbeats",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("hive_id", sa.String(64), nullable=False),
        sa.Column("device_id", sa.String(64), nullable=False),
        sa.Column("received_ms", sa.BigInteger, nullable=False),
        sa.Column("payload", sa.JSON, nullable=False),
    )
    op.create_index("ix_heartbeats_device_time", "heartbeats", ["device_id", "received_ms"])
    op.create_table(
        "alerts",
        sa.Column("alert_id", sa.String(32), primary_key=True),
        sa.Column("hive_id", sa.String(64), nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("at_ms", sa.BigInteger, nullable=False),
        sa.Column("created_ms", sa.BigInteger, nullable=False),
        sa.Column("details", sa.JSON, nullable=False),
    )
    op.create_index("ix_alerts_hive_at", "alerts", ["hive_id", "at_ms"])
    op.create_index("ix_alerts_at", "alerts", ["at_ms"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", BigId, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.String(32), nullable=False),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_ms", sa.BigInteger, nullable=False),
        sa.Column("last_error", sa.Text, nullable=True),
        sa.Column("delivered_ms", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_webhook_due", "webhook_deliveries", ["status", "next_attempt_ms"])
    op.create_table(
        "models",
        sa.Column("model_id", sa.String(64), primary_key=True),
        sa.Column("model_name", sa.String(200), nullable=False),
        sa.Column("model_version", sa.String(100), nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False, unique=True),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("filename", sa.String(200), nullable=False),
        sa.Column("manifest", sa.JSON, nullable=False),
        sa.Column("uploaded_ms", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "model_publications",
        sa.Column("target", sa.String(64), primary_key=True),
        sa.Column("model_id", sa.String(64), sa.ForeignKey("models.model_id"), nullable=False),
        sa.Column("published_ms", sa.BigInteger, nullable=False),
    )


def downgrade() -> None:
    for table in (
        "model_publications",
        "models",
        "webhook_deliveries",
        "alerts",
        "heartbeats",
        "hive_state",
        "hive_steps",
        "rollup_labels",
        "rollups",
        "events",
        "devices",
        "hives",
    ):
        op.drop_table(table)

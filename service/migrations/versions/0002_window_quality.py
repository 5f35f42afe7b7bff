"""Window quality and familiarity: events keep what the device said, rollups count evidence separately.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-02

``beeaudio.event/2`` carries a signal-quality flag and a novelty score. Events get the three fields
(NULL on the events stored before: v1, never checked); rollups and rollup labels get the evidence split,
filled so that every window stored before counts as evidence (as v1 events do); the hive-state row gets
the reason it is unknown, its window by kind, the microphone-silent flag and ``rules_version`` = 1, which
makes the collector re-derive the steps of every hive with the new rules (evidence windows, look-back)
once, from the rollups (``beeaudio.collector.store.hive_state.rederive_stale``).

Only columns are added (ALTER TABLE ... ADD COLUMN on both databases, nullable or with a default), so
the upgrade keeps every row and does not copy tables. Written out by hand, like 0001.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

ZERO = sa.text("0")

_ROLLUP_COUNTS = ("n_no_signal", "n_poor_signal", "n_unfamiliar")
_STATE_COUNTS = ("n_readings", "n_no_signal", "n_poor_signal", "n_unfamiliar")


def upgrade() -> None:
    op.add_column("events", sa.Column("quality", sa.String(16), nullable=True))
    op.add_column("events", sa.Column("novelty", sa.Float, nullable=True))
    op.add_column("events", sa.Column("novelty_threshold", sa.Float, nullable=True))

    op.add_column("rollups", sa.Column("n_evidence", sa.Integer, nullable=False, server_default=ZERO))
    op.add_column("rollups", sa.Column("evidence_swarm_sum", sa.Float, nullable=False, server_default=ZERO))
    for name in _ROLLUP_COUNTS:
        op.add_column("rollups", sa.Column(name, sa.Integer, nullable=False, server_default=ZERO))
    rollups = sa.table(
        "rollups",
        sa.column("n", sa.Integer),
        sa.column("swarm_sum", sa.Float),
        sa.column("n_evidence", sa.Integer),
        sa.column("evidence_swarm_sum", sa.Float),
    )
    # Every window stored so far was a v1 reading: evidence.
    op.execute(sa.update(rollups).values(n_evidence=rollups.c.n, evidence_swarm_sum=rollups.c.swarm_sum))

    op.add_column(
        "rollup_labels", sa.Column("n_top_evidence", sa.Integer, nullable=False, server_default=ZERO)
    )
    labels = sa.table(
        "rollup_labels", sa.column("n_top", sa.Integer), sa.column("n_top_evidence", sa.Integer)
    )
    op.execute(sa.update(labels).values(n_top_evidence=labels.c.n_top))

    op.add_column("hive_state", sa.Column("reason", sa.String(32), nullable=True))
    op.add_column("hive_state", sa.Column("window_seconds", sa.Float, nullable=True))
    for name in _STATE_COUNTS:
        op.add_column("hive_state", sa.Column(name, sa.Integer, nullable=False, server_default=ZERO))
    op.add_column(
        "hive_state", sa.Column("silent_alerted", sa.Boolean, nullable=False, server_default=sa.false())
    )
    op.add_column(
        "hive_state", sa.Column("rules_version", sa.Integer, nullable=False, server_default=sa.text("1"))
    )
    state = sa.table("hive_state", sa.column("n_window", sa.Integer), sa.column("n_readings", sa.Integer))
    op.execute(sa.update(state).values(n_readings=state.c.n_window))


def downgrade() -> None:
    drops = {
        "hive_state": ("reason", "window_seconds", *_STATE_COUNTS, "silent_alerted", "rules_version"),
        "rollup_labels": ("n_top_evidence",),
        "rollups": ("n_evidence", "evidence_swarm_sum", *_ROLLUP_COUNTS),
        "events": ("quality", "novelty", "novelty_threshold"),
    }
    for table, columns in drops.items():
        # SQLite before 3.35 cannot drop a column: batch mode copies the table there.
        with op.batch_alter_table(table) as batch:
            for column in columns:
                batch.drop_column(column)

"""Bounded re-evaluation of the hive steps: the state row records a walk that is not finished yet.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-09

A late batch dated before a long history used to re-evaluate every step after it in its own transaction
(60 days of one-minute steps: seconds, with SQLite's write lock held throughout). The walk now stops after
``store.hive_state.STEP_BUDGET`` steps and goes on in transactions of its own; ``recompute_from`` is where
it goes on and ``recompute_until`` the bucket before which it may not stop. Both are NULL on every row
(no walk is unfinished before this revision), so the upgrade adds two nullable columns and keeps all data.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

_COLUMNS = ("recompute_from", "recompute_until")


def upgrade() -> None:
    for name in _COLUMNS:
        op.add_column("hive_state", sa.Column(name, sa.BigInteger, nullable=True))


def downgrade() -> None:
    # SQLite before 3.35 cannot drop a column: batch mode copies the table there.
    with op.batch_alter_table("hive_state") as batch:
        for name in _COLUMNS:
            batch.drop_column(name)

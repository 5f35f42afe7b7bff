"""Each hive's signal level now: the mean ``level_dbfs`` of the readings in its latest rollup bucket (what
Home Assistant shows as the hive's signal level)."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from beeaudio.collector.db import hive_state, read_transaction, rollups


def latest_levels(*, engine: Engine) -> dict[str, float]:
    """``{hive_id: mean level in dBFS}`` over every device of the hive in its latest bucket; hives without
    readings are left out. One grouped read over one bucket per hive (the rollups' primary key)."""
    query = (
        sa.select(rollups.c.hive_id, sa.func.sum(rollups.c.level_sum), sa.func.sum(rollups.c.n))
        .join(
            hive_state,
            sa.and_(
                hive_state.c.hive_id == rollups.c.hive_id, rollups.c.bucket_start == hive_state.c.last_bucket
            ),
        )
        .group_by(rollups.c.hive_id)
    )
    with read_transaction(engine) as conn:
        rows = conn.execute(query).all()
    return {hive_id: float(total) / n for hive_id, total, n in rows if n}

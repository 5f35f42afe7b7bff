"""Time helpers: the collector stores epoch milliseconds and speaks ISO 8601 UTC with a ``Z``."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


def to_ms(moment: datetime) -> int:
    # Integer arithmetic: float timestamps would turn .001 into .000 now and then.
    return (moment - EPOCH) // timedelta(milliseconds=1)


def iso_ms(ms: int | None) -> str | None:
    if ms is None:
        return None
    moment = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")

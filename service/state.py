"""The hive-state machine: a pure function from per-bucket rollups to a steady state.

Per-window results flicker; the hive state does not. The state is evaluated once per rollup bucket that
holds data (a *step*), in event time:

* ``score`` = mean swarm_score of all events in the buckets of the last ``smoothing_seconds`` (the step's
  own bucket included), ``n`` = how many events that is;
* ``n < min_events`` -> ``unknown`` (not enough data to say anything);
* from ``unknown``: ``normal`` at once if ``score < enter_swarm``; ``swarm`` only after ``confirm_buckets``
  consecutive steps with ``score >= enter_swarm`` (the hive stays ``unknown`` meanwhile);
* from ``normal``: to ``swarm`` after ``confirm_buckets`` consecutive steps with ``score >= enter_swarm``
  (entering ``swarm`` needs the same confirmation from any state);
* from ``swarm``: to ``normal`` after ``confirm_buckets`` consecutive steps with ``score <= exit_swarm``.

``enter_swarm > exit_swarm`` is the hysteresis band: a score between them changes nothing. ``since`` is the
start of the bucket where the run of steps that caused the change began. ``offline`` is not part of this
machine: it is decided at query time from when the hive's last reading *arrived* (see
beeaudio.collector.store.queries).
Because each step is a function of the rollups only, the state does not depend on the order in which
events arrived; beeaudio.collector.store.hive_state re-evaluates the steps a late event affects.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from beeaudio.core.errors import EXIT_USAGE, BeeaudioError

log = logging.getLogger(__name__)

UNKNOWN, NORMAL, SWARM, OFFLINE = "unknown", "normal", "swarm", "offline"
MAX_SMOOTHING_SECONDS = 7 * 86400
MAX_OFFLINE_SECONDS = 366 * 86400


class ParamsError(BeeaudioError, ValueError):
    """Hive-state parameters that are unknown or out of range; the message names the parameter."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class StateParams:
    """Named, defaulted parameters of the hive state; every one can be overridden per hive."""

    smoothing_seconds: float = 300.0
    enter_swarm: float = 0.6
    exit_swarm: float = 0.4
    confirm_buckets: int = 2
    min_events: int = 10
    offline_after_seconds: float = 900.0

    def check(self) -> None:
        # Upper bounds keep every derived time inside 64-bit milliseconds and the walks bounded.
        if not 0 < self.smoothing_seconds <= MAX_SMOOTHING_SECONDS:
            raise ParamsError(f"smoothing_seconds must be in (0, {MAX_SMOOTHING_SECONDS}]")
        if not 0.0 <= self.exit_swarm < self.enter_swarm <= 1.0:
            raise ParamsError(
                f"need 0 <= exit_swarm < enter_swarm <= 1 (hysteresis), got exit_swarm={self.exit_swarm} "
                f"enter_swarm={self.enter_swarm}"
            )
        if not 1 <= self.confirm_buckets <= 1000:
            raise ParamsError("confirm_buckets must be in 1..1000")
        if not 1 <= self.min_events <= 1_000_000:
            raise ParamsError("min_events must be in 1..1000000")
        if not 0 < self.offline_after_seconds <= MAX_OFFLINE_SECONDS:
            raise ParamsError(f"offline_after_seconds must be in (0, {MAX_OFFLINE_SECONDS}]")

    def with_overrides(self, overrides: dict[str, Any] | None) -> StateParams:
        """These defaults with a hive's stored overrides applied; :class:`ParamsError` on unknown keys."""
        if not overrides:
            return self
        known = {f.name: f.type for f in fields(self)}
        unknown = sorted(set(overrides) - set(known))
        if unknown:
            raise ParamsError(f"unknown state parameter(s) {unknown}; known: {sorted(known)}")
        values: dict[str, Any] = {}
        for name, value in overrides.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise ParamsError(f"state parameter {name!r} must be a number, got {value!r}")
            if known[name] == "int":
                if float(value) != int(value):
                    raise ParamsError(f"state parameter {name!r} must be a whole number, got {value!r}")
                value = int(value)
            else:
                value = float(value)
            values[name] = value
        params = replace(self, **values)
        params.check()
        return params

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def hive_params(*, defaults: StateParams, overrides: dict[str, Any] | None) -> StateParams:
    """A hive's parameters; overrides that no longer validate fall back to the defaults (logged).

    Stored overrides were checked when they were set; a later change of the defaults (or of the rules)
    can make them invalid, and one hive's stale overrides must not stop ingest or reads."""
    try:
        return defaults.with_overrides(overrides)
    except ParamsError as exc:
        log.error("ignoring a hive's stored state parameters: %s", exc)
        return defaults


@dataclass(frozen=True)
class Step:
    """The machine's state after one bucket. ``pending`` counts consecutive steps beyond the threshold."""

    bucket_start: int
    n_window: int
    score: float | None
    state: str
    pending: int
    since_ms: int | None
    pending_since_ms: int | None


INITIAL = Step(
    bucket_start=-1, n_window=0, score=None, state=UNKNOWN, pending=0, since_ms=None, pending_since_ms=None
)


def next_step(
    *, previous: Step, bucket_start: int, n_window: int, swarm_sum: float, params: StateParams
) -> Step:
    """Advance the machine by one bucket whose smoothing window holds ``n_window`` events."""
    at_ms = bucket_start * 1000
    score = swarm_sum / n_window if n_window else None
    base = Step(
        bucket_start=bucket_start,
        n_window=n_window,
        score=score,
        state=previous.state,
        pending=0,
        since_ms=previous.since_ms,
        pending_since_ms=None,
    )
    if score is None or n_window < params.min_events:
        if previous.state == UNKNOWN:
            return base
        return replace(base, state=UNKNOWN, since_ms=at_ms)
    if previous.state == UNKNOWN and score < params.enter_swarm:
        # Nothing to confirm: normal is the state a hive is in unless the score says otherwise.
        return replace(base, state=NORMAL, since_ms=at_ms)
    if previous.state in (UNKNOWN, NORMAL):
        # The first decision gets no shortcut: a flicker right after a gap (or at the start of a backlog,
        # or of a file uploaded out of order) must not become a swarm. Until confirmed it stays unknown.
        beyond, target = score >= params.enter_swarm, SWARM
    else:
        beyond, target = score <= params.exit_swarm, NORMAL
    if not beyond:
        return base
    pending = previous.pending + 1
    pending_since = previous.pending_since_ms if previous.pending else at_ms
    if pending >= params.confirm_buckets:
        return replace(base, state=target, since_ms=pending_since)
    return replace(base, pending=pending, pending_since_ms=pending_since)


def confidence(*, state: str, score: float | None) -> float:
    """How sure the state is: the smoothed score for ``swarm``, its complement for ``normal``, 0 for
    ``unknown``."""
    if state == SWARM and score is not None:
        return round(score, 4)
    if state == NORMAL and score is not None:
        return round(1.0 - score, 4)
    return 0.0

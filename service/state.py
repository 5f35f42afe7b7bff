"""The hive-state machine: a pure function from per-bucket rollups to a steady state.

Per-window results flicker; the hive state does not. The state is evaluated once per rollup bucket that
holds data (a *step*), in event time, over the step's *window*:

* every analysis window a device sends is one of four kinds (:func:`window_kind`): **evidence** (a usable
  signal the model knows), **no_signal** (a dead or unplugged microphone), **poor_signal** (clipped,
  dropping samples, a large DC offset) or **unfamiliar** (a usable signal beyond the bundle's novelty
  threshold). Only evidence counts towards ``normal`` or ``swarm``; v1 events (no quality, no novelty)
  are evidence, as they always were;
* the window is the buckets of the last ``smoothing_seconds`` (the step's own bucket included). When they
  hold fewer than ``min_events`` evidence windows (a duty-cycled recorder: 10 s every 5 min), the window
  reaches further back, bucket by bucket, until it does, but never beyond ``max_lookback_seconds``;
* ``score`` = mean swarm_score of the window's evidence windows, ``n`` = how many there are;
* ``unknown``, with the reason (:data:`REASONS`), when the window is mostly without signal
  (``no_signal``: at least ``silent_min_events`` readings, a share of at least ``no_signal_fraction``),
  mostly unfamiliar (``unfamiliar``: a share of at least ``unfamiliar_fraction`` of the windows with a
  usable signal, at least ``min_events`` of them), or holds fewer than ``min_events`` evidence windows
  (``too_few_readings``);
* from ``unknown``: ``normal`` at once if ``score < enter_swarm``; ``swarm`` only after ``confirm_buckets``
  consecutive steps with ``score >= enter_swarm`` (the hive stays ``unknown``, reason ``confirming``);
* from ``normal``: to ``swarm`` after ``confirm_buckets`` consecutive steps with ``score >= enter_swarm``
  (entering ``swarm`` needs the same confirmation from any state);
* from ``swarm``: to ``normal`` after ``confirm_buckets`` consecutive steps with ``score <= exit_swarm``.

``enter_swarm > exit_swarm`` is the hysteresis band: a score between them changes nothing. ``since`` is the
start of the bucket where the run of steps that caused the change began. ``offline`` is not part of this
machine: it is decided at query time from when the hive's last reading *arrived* (see
beeaudio.collector.store.queries).
Because each step is a function of the rollups only, the state does not depend on the order in which
events arrived; beeaudio.collector.store.hive_state re-evaluates the steps a late event affects (as far as
a window can reach: ``max(smoothing_seconds, max_lookback_seconds)``).
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from beeaudio.core import wire
from beeaudio.core.errors import EXIT_USAGE, BeeaudioError

log = logging.getLogger(__name__)

UNKNOWN, NORMAL, SWARM, OFFLINE = "unknown", "normal", "swarm", "offline"
MAX_SMOOTHING_SECONDS = 7 * 86400
MAX_OFFLINE_SECONDS = 366 * 86400

#: Why a hive is ``unknown`` (the status says it, in a code and in words: beeaudio.collector.reasons).
NO_READINGS = "no_readings"  # nothing received yet
TOO_FEW_READINGS = "too_few_readings"  # fewer than min_events evidence windows within the look-back
NO_SIGNAL = "no_signal"  # the window is mostly without signal: a dead or unplugged microphone
UNFAMILIAR = "unfamiliar"  # the model has not heard audio like this hive's
CONFIRMING = "confirming"  # the score says swarm; waiting for confirm_buckets steps in a row
REASONS = (NO_READINGS, TOO_FEW_READINGS, NO_SIGNAL, UNFAMILIAR, CONFIRMING)

#: The kinds of analysis window; every window is exactly one, checked in this order.
KIND_NO_SIGNAL = "no_signal"
KIND_POOR_SIGNAL = "poor_signal"  # clipped, dropout, dc_offset: a signal, but not one to judge by
KIND_UNFAMILIAR = "unfamiliar"
KIND_EVIDENCE = "evidence"
_POOR_QUALITIES = frozenset(q for q in wire.QUALITY_PROBLEMS if q != wire.QUALITY_NO_SIGNAL)


def window_kind(*, quality: str | None, unfamiliar: bool) -> str:
    """The kind of one analysis window: its quality flag first (a silent window is silent whatever the
    novelty score says), then familiarity. ``quality`` None is a v1 event, which was never checked."""
    if quality == wire.QUALITY_NO_SIGNAL:
        return KIND_NO_SIGNAL
    if quality in _POOR_QUALITIES:
        return KIND_POOR_SIGNAL
    if unfamiliar:
        return KIND_UNFAMILIAR
    return KIND_EVIDENCE


class ParamsError(BeeaudioError, ValueError):
    """Hive-state parameters that are unknown or out of range; the message names the parameter."""

    exit_code = EXIT_USAGE


@dataclass(frozen=True)
class StateParams:
    """Named, defaulted parameters of the hive state; every one can be overridden per hive.

    * ``smoothing_seconds`` (300): length of the smoothing window (event time).
    * ``enter_swarm`` (0.6) / ``exit_swarm`` (0.4): the hysteresis thresholds of the smoothed score.
    * ``confirm_buckets`` (2): consecutive steps beyond a threshold before the state changes.
    * ``min_events`` (10): evidence windows a window must hold to decide anything.
    * ``offline_after_seconds`` (900): silence (arrival time) after which a hive is ``offline``.
    * ``max_lookback_seconds`` (3600): how far back a window may reach to hold ``min_events`` evidence
      windows. One hour serves a recorder that records 10 s every 30 min; a window never reaches less far
      than ``smoothing_seconds``.
    * ``no_signal_fraction`` (0.5): share of windows without signal at or above which the hive is
      ``unknown`` (``no_signal``) and ``microphone_silent`` is raised.
    * ``silent_min_events`` (10): readings a window must hold before it can be called silent (so that one
      stray silent window at start-up raises nothing).
    * ``unfamiliar_fraction`` (0.5): share of unfamiliar windows, among those with a usable signal, at or
      above which the hive is ``unknown`` (``unfamiliar``).
    """

    smoothing_seconds: float = 300.0
    enter_swarm: float = 0.6
    exit_swarm: float = 0.4
    confirm_buckets: int = 2
    min_events: int = 10
    offline_after_seconds: float = 900.0
    max_lookback_seconds: float = 3600.0
    no_signal_fraction: float = 0.5
    silent_min_events: int = 10
    unfamiliar_fraction: float = 0.5

    @property
    def reach_seconds(self) -> float:
        """How far back any step's window can reach: a late event changes the steps this far after it."""
        return max(self.smoothing_seconds, self.max_lookback_seconds)

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
        if not 0 < self.max_lookback_seconds <= MAX_SMOOTHING_SECONDS:
            raise ParamsError(f"max_lookback_seconds must be in (0, {MAX_SMOOTHING_SECONDS}]")
        for name in ("no_signal_fraction", "unfamiliar_fraction"):
            if not 0.0 < getattr(self, name) <= 1.0:
                raise ParamsError(f"{name} must be in (0, 1]")
        if not 1 <= self.silent_min_events <= 1_000_000:
            raise ParamsError("silent_min_events must be in 1..1000000")

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
class Window:
    """The readings one step looks at, by kind (every analysis window is exactly one kind).

    ``seconds`` is how far back the window reached: ``smoothing_seconds``, or longer when it had to reach
    further for ``min_events`` evidence windows (then at most ``max(smoothing, max_lookback)``)."""

    seconds: float
    #: The oldest bucket the window holds (None when it is not tied to stored buckets, e.g. in tests).
    first_bucket: int | None = None
    evidence: int = 0
    evidence_swarm_sum: float = 0.0
    no_signal: int = 0
    poor_signal: int = 0
    unfamiliar: int = 0

    @property
    def readings(self) -> int:
        return self.evidence + self.no_signal + self.poor_signal + self.unfamiliar

    @property
    def with_signal(self) -> int:
        """Windows with a usable signal: the model's verdict on them is evidence unless unfamiliar."""
        return self.evidence + self.unfamiliar


@dataclass(frozen=True)
class Step:
    """The machine's state after one bucket. ``pending`` counts consecutive steps beyond the threshold.

    ``reason`` (why the state is unknown) and ``window`` describe the step; they are not needed to carry
    the machine forward, which depends on the state fields only."""

    bucket_start: int
    n_window: int
    score: float | None
    state: str
    pending: int
    since_ms: int | None
    pending_since_ms: int | None
    reason: str | None = None
    window: Window | None = None


INITIAL = Step(
    bucket_start=-1,
    n_window=0,
    score=None,
    state=UNKNOWN,
    pending=0,
    since_ms=None,
    pending_since_ms=None,
    reason=NO_READINGS,
)


def unusable_reason(*, window: Window, params: StateParams) -> str | None:
    """Why this window cannot decide the state (``no_signal``, ``unfamiliar``, ``too_few_readings``), or
    None. Silence is checked first: a dead microphone must never look like a calm colony."""
    readings = window.readings
    if readings >= params.silent_min_events and window.no_signal / readings >= params.no_signal_fraction:
        return NO_SIGNAL
    with_signal = window.with_signal
    if with_signal >= params.min_events and window.unfamiliar / with_signal >= params.unfamiliar_fraction:
        return UNFAMILIAR
    if window.evidence < params.min_events:
        return TOO_FEW_READINGS
    return None


def next_step(*, previous: Step, bucket_start: int, window: Window, params: StateParams) -> Step:
    """Advance the machine by one bucket whose window holds ``window``."""
    step = _advance(previous=previous, bucket_start=bucket_start, window=window, params=params)
    if step.state == UNKNOWN and step.reason is None:
        # Enough evidence, and a score at or above enter_swarm that is not confirmed yet.
        return replace(step, reason=CONFIRMING)
    return step


def _advance(*, previous: Step, bucket_start: int, window: Window, params: StateParams) -> Step:
    at_ms = bucket_start * 1000
    score = window.evidence_swarm_sum / window.evidence if window.evidence else None
    base = Step(
        bucket_start=bucket_start,
        n_window=window.evidence,
        score=score,
        state=previous.state,
        pending=0,
        since_ms=previous.since_ms,
        pending_since_ms=None,
        window=window,
    )
    reason = unusable_reason(window=window, params=params)
    if reason is not None or score is None:
        # No score either: a mean over too few readings, or over readings the state must not rest on, is
        # no basis for a swarm score (the status, the dashboard and Home Assistant would show it).
        reason = reason or TOO_FEW_READINGS
        if previous.state == UNKNOWN:
            return replace(base, score=None, reason=reason)
        return replace(base, score=None, state=UNKNOWN, since_ms=at_ms, reason=reason)
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

"""Why a hive is ``unknown``, in words a beekeeper can act on.

The state machine (:mod:`beeaudio.collector.state`) gives the reason as a code; the status query turns it
into a sentence with the numbers of the hive's window, so that a hive never shows ``unknown`` without
saying why (a dead microphone, audio the model has never heard, a recorder that sends too little, ...).
"""

from __future__ import annotations

from beeaudio.collector.state import (
    CONFIRMING,
    NO_READINGS,
    NO_SIGNAL,
    TOO_FEW_READINGS,
    UNFAMILIAR,
    StateParams,
    Window,
)

#: Where a beekeeper learns to train a model on their own hives.
TRAINING_DOCS = "README.md, 'Your own hives'"


def duration_text(seconds: float) -> str:
    """``90 s``, ``5 min``, ``2 h``, ``1 h 30 min``: a look-back as people say it."""
    seconds = round(seconds)
    if seconds < 120:
        return f"{seconds} s"
    minutes = round(seconds / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, rest = divmod(minutes, 60)
    return f"{hours} h" + (f" {rest} min" if rest else "")


def _not_counted(window: Window) -> str:
    parts = []
    if window.no_signal:
        parts.append(f"{window.no_signal} without signal")
    if window.poor_signal:
        parts.append(f"{window.poor_signal} clipped, dropping out or offset")
    if window.unfamiliar:
        parts.append(f"{window.unfamiliar} unfamiliar to the model")
    return ", ".join(parts)


def reason_text(
    *, reason: str | None, window: Window | None, params: StateParams, score: float | None = None
) -> str | None:
    """The sentence for ``reason`` (None for None); ``window`` holds the counts it quotes."""
    if reason is None:
        return None
    if reason == NO_READINGS or window is None or window.readings == 0:
        return "no readings received yet"
    span = duration_text(window.seconds)
    if reason == NO_SIGNAL:
        return (
            f"microphone silent: {window.no_signal} of the last {window.readings} readings had no signal "
            "(check the microphone, its cable and the recorder)"
        )
    if reason == UNFAMILIAR:
        return (
            f"the model has not heard audio like this hive's: {window.unfamiliar} of the last "
            f"{window.with_signal} readings with signal were unfamiliar to it; train on your hives, see "
            f"{TRAINING_DOCS}"
        )
    if reason == TOO_FEW_READINGS:
        excluded = _not_counted(window)
        if not excluded:
            return f"{window.evidence} readings in the last {span}, {params.min_events} needed"
        return (
            f"{window.evidence} usable readings in the last {span}, {params.min_events} needed "
            f"(not counted: {excluded})"
        )
    if reason == CONFIRMING:
        shown = f"{score:.0%}" if score is not None else "high"
        return (
            f"the smoothed swarm score ({shown}) is at or above enter_swarm ({params.enter_swarm:.0%}); "
            f"a swarm is confirmed after {params.confirm_buckets} such steps in a row"
        )
    return reason

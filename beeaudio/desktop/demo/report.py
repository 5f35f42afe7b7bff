"""What the demo reports: each hive as the collector sees it next to how it was generated, the run's
result (saved as ``demo-result.json``) and the status table ``beeaudio demo`` prints."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from beeaudio.desktop.demo.plan import DemoHive


@dataclass(frozen=True)
class HiveOutcome:
    """One hive as the collector reports it at the end of the run, next to what the demo generated."""

    hive_id: str
    name: str
    expected_state: str
    state: str
    swarm_score: float | None
    confidence: float | None
    last_seen: str | None
    model_version: str | None
    events: int
    since: str | None = None
    #: Why the collector cannot tell (set whenever the state is unknown).
    reason_text: str | None = None

    @property
    def ok(self) -> bool:
        return self.state == self.expected_state


@dataclass(frozen=True)
class DemoResult:
    out: Path
    api_url: str
    dashboard_url: str
    admin_token: str
    read_token: str
    model_path: Path
    model_version: str
    model_reused: bool
    hives: tuple[HiveOutcome, ...]
    events_expected: int
    events_received: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.events_received == self.events_expected and all(h.ok for h in self.hives)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["out"] = str(self.out)
        data["model_path"] = str(self.model_path)
        data["ok"] = self.ok
        return data


def hive_outcome(*, hive: DemoHive, status: Mapping[str, Any], events: Mapping[str, int]) -> HiveOutcome:
    """A hive's outcome from the collector's status answer and the run's event counts."""
    return HiveOutcome(
        hive_id=hive.hive_id,
        name=hive.name,
        expected_state=hive.expected_state,
        state=str(status.get("state")),
        swarm_score=status.get("swarm_score"),
        confidence=status.get("confidence"),
        last_seen=status.get("last_seen"),
        model_version=status.get("model_version"),
        events=events[hive.hive_id],
        since=status.get("since"),
        reason_text=status.get("reason_text"),
    )


def format_status_table(result: DemoResult) -> str:
    """The hive status table the CLI prints: what a beekeeper needs, in their words."""
    rows = [("hive", "state", "since", "swarm score", "last heard")]
    for h in result.hives:
        score = f"{h.swarm_score:.2f}" if isinstance(h.swarm_score, int | float) else "-"
        rows.append(
            (
                f"{h.name} ({h.hive_id})",
                h.state.upper() if h.state == "swarm" else h.state,
                _since(h.since),
                score,
                _short_time(h.last_seen),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


#: What a swarm state means and what to do, for the terminal and the dashboard alike.
SWARM_ADVICE = (
    "sounds like a colony preparing to swarm or swarming: look at the hive soon. A prime swarm usually "
    "leaves between late morning and early afternoon; capped queen cells are the sign to look for."
)


def format_notes(result: DemoResult) -> str:
    """What the table means: swarming hives and what to do, hives the collector cannot judge and why, and
    whether every synthetic hive shows the state it was generated with."""
    notes = []
    for h in result.hives:
        if h.state == "swarm":
            notes.append(f"{h.name} {SWARM_ADVICE}")
        elif h.state == "unknown":
            notes.append(f"{h.name}: cannot tell yet — {h.reason_text or 'too few readings'}")
    differ = [h for h in result.hives if not h.ok]
    if differ:
        notes.append(
            "These synthetic hives do not show the state they were generated with: "
            + ", ".join(f"{h.name} (generated {h.expected_state}, shows {h.state})" for h in differ)
        )
    else:
        notes.append(f"All {len(result.hives)} synthetic hives show the state they were generated with.")
    return "\n".join(notes)


def _since(value: str | None) -> str:
    if not value:
        return "-"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    minutes = max(0, int((datetime.now(UTC) - moment).total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    ago = f"{hours} h {minutes} min" if hours else f"{minutes} min"
    return f"{moment.astimezone().strftime('%H:%M')} ({ago})"


def _short_time(value: str | None) -> str:
    if not value:
        return "never"
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return value
    age = datetime.now(UTC) - moment
    return f"{moment.astimezone().strftime('%H:%M:%S')} ({max(0, int(age.total_seconds()))} s ago)"

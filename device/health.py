"""How the agent's loops are doing, for ``beeaudio device status``: a small status file in the state folder.

Each loop (the analysis loop, uploads, heartbeats, model polls, the recorder supervisor) reports its
successes and failures to one :class:`Health` per agent. A :class:`StatusWriter` thread writes a snapshot
every few seconds to ``<state_dir>/agent-status.json`` (temporary file + ``os.replace``: a reader sees the
old snapshot or the new one), with the agent's pid and the time of writing, and checks that the threads
behind the loops are alive. ``status`` reads it with :func:`read_status`: a snapshot older than a few write
intervals, or whose pid is gone, means the agent is not running (or stuck, or cannot write: disk full).

Failing to write the file never stops anything: it is a report, not state.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from beeaudio.core.fsio import write_text_atomic
from beeaudio.core.wire import MAX_LOOP_TROUBLE, MAX_LOOPS

log = logging.getLogger(__name__)

STATUS_FILE = "agent-status.json"
STATUS_SCHEMA = "beeaudio.agent-status/1"
#: Seconds between two snapshots; a snapshot older than STALE_AFTER_WRITES of them is stale.
WRITE_INTERVAL_S = 5.0
STALE_AFTER_WRITES = 4


@dataclass(frozen=True)
class LoopState:
    """One loop as ``status`` shows it."""

    name: str
    running: bool = False
    last_ok_at: float | None = None
    last_error_at: float | None = None
    last_error: str = ""
    failures: int = 0  # in a row, since the last success

    @property
    def failing(self) -> bool:
        return self.failures > 0


@dataclass
class Health:
    """Thread-safe registry of the loops' states (one per agent; no module-level state)."""

    clock: Callable[[], float] = time.time
    _loops: dict[str, LoopState] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _update(self, name: str, **changes: Any) -> None:
        with self._lock:
            self._loops[name] = replace(self._loops.get(name, LoopState(name=name)), **changes)

    def started(self, name: str) -> None:
        self._update(name, running=True)

    def stopped(self, name: str) -> None:
        self._update(name, running=False)

    def ok(self, name: str) -> None:
        self._update(name, running=True, last_ok_at=self.clock(), failures=0)

    def failed(self, name: str, error: str) -> None:
        with self._lock:
            state = self._loops.get(name, LoopState(name=name, running=True))
            self._loops[name] = replace(
                state, last_error_at=self.clock(), last_error=error[:500], failures=state.failures + 1
            )

    def snapshot(
        self, *, alive: dict[str, bool] | None = None, stopping: bool = False
    ) -> dict[str, LoopState]:
        """Every loop's state; ``alive`` (loop -> its thread runs) overrides ``running``, because a dead
        thread cannot report that it died."""
        with self._lock:
            loops = dict(self._loops)
        for name, running in (alive or {}).items():
            loops[name] = replace(loops.get(name, LoopState(name=name)), running=running and not stopping)
        return loops

    def troubles(self, *, alive: dict[str, bool] | None = None) -> dict[str, str]:
        """The loops that are failing or not running, each with why (at most wire.MAX_LOOP_TROUBLE
        characters): what a heartbeat tells the collector, so that a fleet sees a device whose uploads
        stopped."""
        found = {}
        for name, state in sorted(self.snapshot(alive=alive).items()):
            if not state.running:
                found[name] = f"not running{': ' + state.last_error if state.last_error else ''}"
            elif state.failing:
                found[name] = f"{state.failures} failures in a row: {state.last_error}"
        # Within the wire's bounds: a heartbeat beyond them would be refused whole.
        return {name: why[:MAX_LOOP_TROUBLE] for name, why in list(found.items())[:MAX_LOOPS]}


class StatusWriter(threading.Thread):
    """Writes the snapshot every ``interval_s``; ``alive`` maps a loop to a check that its thread runs."""

    def __init__(
        self,
        *,
        health: Health,
        path: Path,
        alive: Callable[[], dict[str, bool]] | None = None,
        interval_s: float = WRITE_INTERVAL_S,
    ) -> None:
        super().__init__(name="beeaudio-status", daemon=True)
        self.health = health
        self.path = Path(path)
        self.alive = alive
        self.interval_s = interval_s
        self.started_at = time.time()
        self._halt = threading.Event()
        self._last_problem = ""

    def stop(self) -> None:
        self._halt.set()

    def write(self, *, stopping: bool = False) -> bool:
        """One snapshot; False (logged once per kind of problem) when it cannot be written."""
        try:
            alive = self.alive() if self.alive is not None else {}
            loops = self.health.snapshot(alive=alive, stopping=stopping)
            payload = {
                "schema": STATUS_SCHEMA,
                "pid": os.getpid(),
                "started_at": self.started_at,
                "written_at": time.time(),
                "interval_s": self.interval_s,
                "stopped": stopping,
                "loops": {name: asdict(state) for name, state in sorted(loops.items())},
            }
            write_text_atomic(self.path, json.dumps(payload, indent=1) + "\n")
        except Exception as exc:  # a full disk: the file goes stale and `status` says so
            problem = f"{type(exc).__name__}: {exc}"
            if problem != self._last_problem:
                log.warning("cannot write the status file %s: %s", self.path, problem)
                self._last_problem = problem
            return False
        self._last_problem = ""
        return True

    def run(self) -> None:
        while not self._halt.is_set():
            self.write()
            self._halt.wait(self.interval_s)


@dataclass(frozen=True)
class AgentStatus:
    """What ``status`` knows about the running agent."""

    running: bool
    summary: str  # one line: "running (pid 123, ...)" or "agent not running (...)"
    loops: tuple[LoopState, ...] = ()
    pid: int | None = None
    written_at: float | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "running": self.running,
            "summary": self.summary,
            "pid": self.pid,
            "written_at": self.written_at,
            "loops": {loop.name: asdict(loop) for loop in self.loops},
        }


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process (the agent runs as its own user): it exists
        return True
    except OSError:
        return False
    return True


def _age(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def read_status(*, path: Path, now: float | None = None) -> AgentStatus:
    """The agent's status from its status file; ``running`` is False when there is none, when it is stale
    or when its process is gone."""
    now = time.time() if now is None else now
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return AgentStatus(running=False, summary=f"agent not running (no status file {path})")
    except (OSError, ValueError) as exc:
        return AgentStatus(running=False, summary=f"agent status unreadable ({path}: {exc})")
    if not isinstance(data, dict) or data.get("schema") != STATUS_SCHEMA:
        return AgentStatus(running=False, summary=f"agent status unreadable ({path}: unknown format)")
    loops = tuple(
        LoopState(**{k: v for k, v in state.items() if k in LoopState.__dataclass_fields__})
        for state in (data.get("loops") or {}).values()
        if isinstance(state, dict) and "name" in state
    )
    pid = data.get("pid") if isinstance(data.get("pid"), int) else None
    written = data.get("written_at") if isinstance(data.get("written_at"), int | float) else None
    interval = data.get("interval_s") if isinstance(data.get("interval_s"), int | float) else WRITE_INTERVAL_S
    age = now - written if written is not None else float("inf")
    if data.get("stopped"):
        summary = f"agent not running (stopped {_age(age)} ago)"
        return AgentStatus(running=False, summary=summary, loops=_halted(loops), pid=pid, written_at=written)
    if pid is None or not _pid_alive(pid):
        summary = f"agent not running (pid {pid} is gone; last status {_age(age)} ago)"
        return AgentStatus(running=False, summary=summary, loops=_halted(loops), pid=pid, written_at=written)
    if age > STALE_AFTER_WRITES * interval + 5:
        summary = (
            f"agent not running or stuck (pid {pid} exists, but its status is {_age(age)} old: "
            "it cannot write the state folder, disk full?)"
        )
        return AgentStatus(running=False, summary=summary, loops=_halted(loops), pid=pid, written_at=written)
    failing = [loop.name for loop in loops if not loop.running or loop.failing]
    summary = f"running (pid {pid})" + (f"; not running or failing: {', '.join(failing)}" if failing else "")
    return AgentStatus(running=True, summary=summary, loops=loops, pid=pid, written_at=written)


def _halted(loops: tuple[LoopState, ...]) -> tuple[LoopState, ...]:
    """Nothing runs when the agent does not, whatever its last snapshot said."""
    return tuple(replace(loop, running=False) for loop in loops)

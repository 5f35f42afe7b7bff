"""The outbox: a SQLite file where every event is committed before anything is uploaded.

WAL journal with ``synchronous=FULL``: a committed transaction survives a power cut. One transaction holds
a recording's events *and* the mark that the recording is done, so after a crash a file is either fully
recorded here or not at all (and then simply analysed again; event ids are deterministic, so a window
analysed twice is still one event).

Bounded: above ``max_events`` the oldest pending events are dropped in the same transaction that added the
new ones, and the count is kept (``dropped_events``, reported in every heartbeat). Events the collector
refuses for their content (a 4xx other than auth/timeouts/rate limits) go to a dead-letter table, also
counted, instead of being retried forever.

A connection is shared by the agent's threads behind a lock (Python's sqlite3 objects are not thread-safe).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from beeaudio.core.wire import ClassificationEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    body TEXT NOT NULL,
    created_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letters (
    event_id TEXT PRIMARY KEY,
    body TEXT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS files (
    source_id TEXT PRIMARY KEY,
    path TEXT NOT NULL,
    status TEXT NOT NULL,
    n_events INTEGER NOT NULL,
    at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS counters (
    name TEXT PRIMARY KEY,
    value REAL NOT NULL
);
"""

COUNTERS = ("dropped_events", "dead_lettered", "requeued_events", "uploaded_events", "last_upload_at",
            "files_done", "files_quarantined")  # fmt: skip


@dataclass(frozen=True)
class PendingEvent:
    seq: int
    event_id: str
    body: dict[str, Any]


@dataclass(frozen=True)
class OutboxStatus:
    depth: int
    dropped_events: int
    dead_lettered: int  # ever moved to the dead-letter table
    uploaded_events: int
    last_upload_at: float | None
    files_done: int
    files_quarantined: int
    dead_letters: int = 0  # in the dead-letter table now
    requeued_events: int = 0  # ever put back by requeue


@dataclass(frozen=True)
class RequeueResult:
    requeued: int  # back in the queue
    already_pending: int  # dead letters whose event was in the queue again anyway (analysed again)
    dropped: int  # oldest pending events dropped to keep the bound


class Outbox:
    """Durable queue of events plus the journal of finished recordings."""

    def __init__(self, *, path: Path, max_events: int, read_only: bool = False) -> None:
        """``read_only``: for ``status`` and other lookers, which must work while the agent writes and
        when the disk is full (setting WAL mode or creating tables would write)."""
        if max_events < 1:
            raise ValueError("max_events must be at least 1")
        self.path = Path(path)
        self.max_events = max_events
        self._lock = threading.Lock()
        if read_only:
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            self._db = sqlite3.connect(
                uri, uri=True, timeout=30.0, isolation_level=None, check_same_thread=False
            )
            self._db.execute("PRAGMA busy_timeout=30000")
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are explicit (BEGIN IMMEDIATE ... COMMIT) below.
        self._db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.execute("PRAGMA busy_timeout=30000")
        with self._lock:
            self._db.executescript(_SCHEMA)

    # -- plumbing ----------------------------------------------------------------------------------------
    def _transaction(self) -> _Transaction:
        return _Transaction(self._db)

    def _bump(self, name: str, value: float, *, absolute: bool = False) -> None:
        if absolute:
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = excluded.value",
                (name, value),
            )
        else:
            self._db.execute(
                "INSERT INTO counters(name, value) VALUES (?, ?) "
                "ON CONFLICT(name) DO UPDATE SET value = value + excluded.value",
                (name, value),
            )

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def __enter__(self) -> Outbox:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    # -- writing -------------------------------------------------------------------------------------------
    def commit_file(
        self, *, source_id: str, path: str, events: Sequence[ClassificationEvent], status: str = "done"
    ) -> int:
        """Add a recording's events and mark it done, in one transaction. Returns the events dropped to
        keep the bound (0 normally)."""
        now = time.time()
        rows = [(e.event_id, json.dumps(e.to_json(), separators=(",", ":")), now) for e in events]
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO events(event_id, body, created_at) VALUES (?, ?, ?)", rows
            )
            self._db.execute(
                "INSERT OR REPLACE INTO files(source_id, path, status, n_events, at) VALUES (?, ?, ?, ?, ?)",
                (source_id, path, status, len(rows), now),
            )
            self._bump("files_done" if status == "done" else "files_quarantined", 1)
            return self._enforce_bound()

    def add_events(self, events: Sequence[ClassificationEvent]) -> int:
        """Add events outside a recording (tests, tools). Returns the number dropped to keep the bound."""
        now = time.time()
        rows = [(e.event_id, json.dumps(e.to_json(), separators=(",", ":")), now) for e in events]
        with self._lock, self._transaction():
            self._db.executemany(
                "INSERT OR IGNORE INTO events(event_id, body, created_at) VALUES (?, ?, ?)", rows
            )
            return self._enforce_bound()

    def _enforce_bound(self) -> int:
        (depth,) = self._db.execute("SELECT COUNT(*) FROM events").fetchone()
        excess = depth - self.max_events
        if excess <= 0:
            return 0
        # Oldest first: the newest readings say most about the hive now.
        self._db.execute(
            "DELETE FROM events WHERE seq IN (SELECT seq FROM events ORDER BY seq LIMIT ?)", (excess,)
        )
        self._bump("dropped_events", excess)
        return excess

    def mark_file(self, *, source_id: str, path: str, status: str) -> None:
        """Journal a recording without events (e.g. quarantined)."""
        self.commit_file(source_id=source_id, path=path, events=(), status=status)

    def file_status(self, source_id: str) -> str | None:
        with self._lock:
            row = self._db.execute("SELECT status FROM files WHERE source_id = ?", (source_id,)).fetchone()
        return None if row is None else str(row[0])

    def prune_files(self, *, older_than_s: float) -> int:
        """Forget journal entries of recordings finished long ago (their files are gone by then)."""
        with self._lock, self._transaction():
            cursor = self._db.execute("DELETE FROM files WHERE at < ?", (time.time() - older_than_s,))
            return cursor.rowcount

    # -- uploading -----------------------------------------------------------------------------------------
    def pending(self, *, limit: int) -> list[PendingEvent]:
        with self._lock:
            rows = self._db.execute(
                "SELECT seq, event_id, body FROM events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [PendingEvent(seq=int(s), event_id=str(i), body=json.loads(b)) for s, i, b in rows]

    def acknowledge(self, event_ids: Sequence[str]) -> None:
        """The collector has the events (2xx): remove them."""
        with self._lock, self._transaction():
            self._db.executemany("DELETE FROM events WHERE event_id = ?", [(i,) for i in event_ids])
            self._bump("uploaded_events", len(event_ids))
            self._bump("last_upload_at", time.time(), absolute=True)

    def dead_letter(self, events: Sequence[PendingEvent], *, status: int, reason: str) -> None:
        """Move events the collector refused for their content out of the queue, keeping them for a look."""
        now = time.time()
        with self._lock, self._transaction():
            for event in events:
                self._db.execute(
                    "INSERT OR REPLACE INTO dead_letters(event_id, body, status, reason, at) "
                    "VALUES (?, ?, ?, ?, ?)",
                    (event.event_id, json.dumps(event.body), status, reason[:2000], now),
                )
                self._db.execute("DELETE FROM events WHERE event_id = ?", (event.event_id,))
            self._bump("dead_lettered", len(events))

    def dead_letters(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self._db.execute(
                "SELECT event_id, status, reason, at FROM dead_letters ORDER BY at"
            ).fetchall()
        return [{"event_id": i, "status": s, "reason": r, "at": a} for i, s, r, a in rows]

    def requeue(
        self,
        *,
        older_than_s: float | None = None,
        reason_contains: str | None = None,
        status: int | None = None,
        event_ids: Sequence[str] | None = None,
    ) -> RequeueResult:
        """Put dead letters back at the end of the queue, all of them or those matching every filter given:
        dead-lettered at least ``older_than_s`` ago, whose reason contains ``reason_contains`` (any case),
        refused with ``status``, or among ``event_ids``. The bound applies (oldest pending dropped,
        counted)."""
        where, params = ["1 = 1"], []
        if older_than_s is not None:
            where.append("at <= ?")
            params.append(time.time() - older_than_s)
        if reason_contains:
            where.append("instr(lower(reason), lower(?)) > 0")
            params.append(reason_contains)
        if status is not None:
            where.append("status = ?")
            params.append(status)
        now = time.time()
        with self._lock, self._transaction():
            rows = self._db.execute(
                f"SELECT event_id, body FROM dead_letters WHERE {' AND '.join(where)} ORDER BY at",
                params,
            ).fetchall()  # the WHERE clause is built from fixed fragments; values are parameters
            if event_ids is not None:
                wanted = set(event_ids)
                rows = [row for row in rows if row[0] in wanted]
            requeued = already = 0
            for event_id, body in rows:
                cursor = self._db.execute(
                    "INSERT OR IGNORE INTO events(event_id, body, created_at) VALUES (?, ?, ?)",
                    (event_id, body, now),
                )
                requeued += cursor.rowcount
                already += 1 - cursor.rowcount
                self._db.execute("DELETE FROM dead_letters WHERE event_id = ?", (event_id,))
            self._bump("requeued_events", requeued)
            dropped = self._enforce_bound()
        return RequeueResult(requeued=requeued, already_pending=already, dropped=dropped)

    def dead_letter_summary(self) -> list[dict[str, Any]]:
        """The dead letters grouped by status and reason (events refused for the same cause read alike
        but for the event's index and times: grouped by the text after the ``events[i]:`` prefix)."""
        with self._lock:
            rows = self._db.execute("SELECT status, reason, at FROM dead_letters").fetchall()
        groups: dict[tuple[int, str], dict[str, Any]] = {}
        for status, reason, at in rows:
            cause = (
                reason.split(":", 1)[1].strip() if reason.startswith("events") and ":" in reason else reason
            )
            group = groups.setdefault((status, cause[:120]), {"status": status, "reason": cause[:120],
                                                               "count": 0, "oldest": at})  # fmt: skip
            group["count"] += 1
            group["oldest"] = min(group["oldest"], at)
        return sorted(groups.values(), key=lambda g: -g["count"])

    # -- reading -------------------------------------------------------------------------------------------
    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])

    def status(self) -> OutboxStatus:
        with self._lock:
            depth = int(self._db.execute("SELECT COUNT(*) FROM events").fetchone()[0])
            letters = int(self._db.execute("SELECT COUNT(*) FROM dead_letters").fetchone()[0])
            counters = dict(self._db.execute("SELECT name, value FROM counters").fetchall())
        last = counters.get("last_upload_at")
        return OutboxStatus(
            depth=depth,
            dropped_events=int(counters.get("dropped_events", 0)),
            dead_lettered=int(counters.get("dead_lettered", 0)),
            uploaded_events=int(counters.get("uploaded_events", 0)),
            last_upload_at=float(last) if last is not None else None,
            files_done=int(counters.get("files_done", 0)),
            files_quarantined=int(counters.get("files_quarantined", 0)),
            dead_letters=letters,
            requeued_events=int(counters.get("requeued_events", 0)),
        )


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (or ``ROLLBACK`` on any exception).

    A COMMIT that fails (SQLITE_FULL, SQLITE_IOERR) leaves the transaction open; without the ROLLBACK
    below every later ``BEGIN`` would fail ("cannot start a transaction within a transaction") and the
    outbox would stay dead after the disk has room again. SQLite may also have rolled back on its own
    already, so the ROLLBACK is only issued while a transaction is open, and its own failure is not
    allowed to hide the original error."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def __enter__(self) -> None:
        self._db.execute("BEGIN IMMEDIATE")

    def __exit__(self, exc_type: object, *_rest: object) -> None:
        if exc_type is None:
            try:
                self._db.execute("COMMIT")
            except sqlite3.Error:
                self._rollback()
                raise
        else:
            self._rollback()

    def _rollback(self) -> None:
        if self._db.in_transaction:
            with contextlib.suppress(sqlite3.Error):
                self._db.execute("ROLLBACK")

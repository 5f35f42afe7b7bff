"""The device outbox and uploader: durability, the size bound, retries, dead letters, a dead network."""

from __future__ import annotations

import random
import sqlite3

import pytest

from beeaudio.collector.launch import free_port
from beeaudio.device.client import CollectorClient
from beeaudio.device.outbox import Outbox
from beeaudio.device.uplink import Backoff, Uplink, Uploader
from tests.fixtures.device import FakeCollector, fake_collector, make_events, wait_for


def test_commit_is_durable_and_journals_the_file(tmp_path):
    path = tmp_path / "outbox.sqlite"
    events = make_events(5)
    with Outbox(path=path, max_events=100) as outbox:
        assert outbox.commit_file(source_id="rec-1", path="/spool/rec-1.wav", events=events) == 0
        assert outbox.file_status("rec-1") == "done"
        assert outbox._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL: survives a power cut
        # The same recording committed again (a crash before its file was deleted): no duplicates.
        outbox.commit_file(source_id="rec-1", path="/spool/rec-1.wav", events=events)
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    with Outbox(path=path, max_events=100) as reopened:
        pending = reopened.pending(limit=100)
        assert [p.event_id for p in pending] == [e.event_id for e in events]
        assert pending[0].body == events[0].to_json()
        assert reopened.file_status("rec-1") == "done"
        assert reopened.file_status("rec-2") is None


def test_bound_drops_oldest_and_counts_them(tmp_path):
    with Outbox(path=tmp_path / "o.sqlite", max_events=5) as outbox:
        first, second = make_events(4), make_events(4, offset=4)
        assert outbox.commit_file(source_id="a", path="a", events=first) == 0
        assert outbox.commit_file(source_id="b", path="b", events=second) == 3
        kept = [p.event_id for p in outbox.pending(limit=10)]
        assert kept == [e.event_id for e in (first + second)[3:]]  # the three oldest went
        status = outbox.status()
        assert (status.depth, status.dropped_events) == (5, 3)
    with Outbox(path=tmp_path / "o.sqlite", max_events=5) as reopened:
        assert reopened.status().dropped_events == 3  # the count survives a restart


def test_backoff_grows_with_jitter_and_caps():
    backoff = Backoff(initial_s=1.0, max_s=8.0, rng=random.Random(1))
    delays = [backoff.next_delay() for _ in range(6)]
    caps = [1, 2, 4, 8, 8, 8]
    for delay, cap in zip(delays, caps, strict=True):
        assert cap / 2 <= delay <= cap
    assert len(set(delays)) == len(delays)  # jittered, not lockstep
    backoff.reset()
    assert backoff.next_delay() <= 1.0


def _uploader(outbox: Outbox, url: str, batch_size: int = 100) -> Uploader:
    client = CollectorClient(base_url=url, token="t0ken", timeout_s=5)
    return Uploader(outbox=outbox, client=client, device_id="dev-1", batch_size=batch_size)


def test_retries_500s_with_backoff_then_delivers_once(tmp_path):
    with (
        Outbox(path=tmp_path / "o.sqlite", max_events=100) as outbox,
        fake_collector(FakeCollector(statuses=[500, 503, 500])) as collector,
    ):
        events = make_events(7)
        outbox.add_events(events)
        uplink = Uplink(
            uploader=_uploader(outbox, collector.url, batch_size=4),
            heartbeat=None,
            heartbeat_interval_s=60,
            upload_interval_s=0.05,
            backoff=Backoff(initial_s=0.05, max_s=0.2, rng=random.Random(0)),
        )
        uplink.start()
        try:
            assert wait_for(lambda: outbox.depth() == 0, timeout=15)
        finally:
            uplink.stop()
            uplink.join(timeout=5)
        posts = collector.events_posts()
        assert len(posts) == 3 + 2  # three failures, then two batches of 4 + 3
        assert posts[0]["batch_id"] == posts[1]["batch_id"]  # a retried batch keeps its id
        assert sorted(collector.accepted) == sorted(e.event_id for e in events)
        assert all(p["schema"] == "beeaudio.batch/1" and p["device_id"] == "dev-1" for p in posts)
        headers = [h for m, path, h, _ in collector.requests if path == "/api/v1/events"]
        assert all(h.get("Authorization") == "Bearer t0ken" for h in headers)
        assert outbox.status().uploaded_events == 7
        assert outbox.status().last_upload_at is not None


def test_dead_network_keeps_everything(tmp_path):
    port = free_port()  # nothing listens there: connection refused
    with Outbox(path=tmp_path / "o.sqlite", max_events=100) as outbox:
        outbox.add_events(make_events(3))
        outcome = _uploader(outbox, f"http://127.0.0.1:{port}").upload_once()
        assert outcome.kind == "retry"
        assert "127.0.0.1" in outcome.error
        assert outbox.depth() == 3


def test_content_refusal_dead_letters_only_the_bad_event(tmp_path):
    events = make_events(8)
    poison = events[5].event_id

    with (
        Outbox(path=tmp_path / "o.sqlite", max_events=100) as outbox,
        fake_collector(FakeCollector(refuse_event=lambda e: e["event_id"] == poison)) as collector,
    ):
        outbox.add_events(events)
        outcome = _uploader(outbox, collector.url).upload_once()
        assert (outcome.kind, outcome.accepted, outcome.dead_lettered) == ("sent", 7, 1)
        assert outbox.depth() == 0
        assert [d["event_id"] for d in outbox.dead_letters()] == [poison]
        assert outbox.dead_letters()[0]["status"] == 422
        assert outbox.dead_letters()[0]["reason"].startswith("events[5]: ")  # the collector's own words
        assert outbox.status().dead_lettered == 1
        assert set(collector.accepted) == {e.event_id for e in events} - {poison}


@pytest.mark.parametrize("status", [401, 403, 408, 429, 500])
def test_auth_and_transient_errors_are_retried_not_dropped(tmp_path, status):
    with (
        Outbox(path=tmp_path / "o.sqlite", max_events=100) as outbox,
        fake_collector(FakeCollector(statuses=[status])) as collector,
    ):
        outbox.add_events(make_events(2))
        uploader = _uploader(outbox, collector.url)
        first = uploader.upload_once()
        assert first.kind == "retry" and str(status) in first.error
        assert outbox.depth() == 2 and outbox.dead_letters() == []
        assert uploader.upload_once().kind == "sent"
        assert outbox.depth() == 0


@pytest.mark.slow  # waits on the wall clock (restarts, back-off, a hang cut short)
def test_retry_after_is_honoured(tmp_path):
    with (
        Outbox(path=tmp_path / "o.sqlite", max_events=100) as outbox,
        fake_collector(FakeCollector(statuses=[429], retry_after="1")) as collector,
    ):
        outbox.add_events(make_events(1))
        uplink = Uplink(
            uploader=_uploader(outbox, collector.url),
            heartbeat=None,
            heartbeat_interval_s=60,
            upload_interval_s=0.05,
            backoff=Backoff(initial_s=0.01, max_s=5.0),
        )
        uplink.start()
        try:
            assert wait_for(lambda: outbox.depth() == 0, timeout=10)
        finally:
            uplink.stop()
            uplink.join(timeout=5)
        first, second = collector.post_times
        assert second - first >= 0.95  # the backoff alone would have retried after ~10 ms

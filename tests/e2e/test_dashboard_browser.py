"""The dashboard in a real browser: Debian's Chromium (headless) driven by Playwright, on a real collector.

The collector serves the database the demo filled (``tests.fixtures.demo.shared_demo``: three hives, one of
them swarming), exactly as ``beeaudio demo --serve`` would. The test reads the page as a beekeeper would
(every hive, the swarming one marked, a timeline per hive, the alert), checks that it updates without a
reload and keeps its token, and saves a screenshot (``BEEAUDIO_SCREENSHOT_DIR`` to keep it).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from beeaudio.collector.launch import start_collector
from beeaudio.core.wire import HIVES_PATH
from beeaudio.device.client import CollectorClient
from tests.conftest import chromium_path, require
from tests.fixtures.demo import DEMO_TIMEOUT_S, shared_demo

CHROMIUM = chromium_path()
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
STATE_TEXT = {"swarm": "Swarming", "normal": "Normal", "offline": "Offline", "unknown": "Unknown"}


@dataclass(frozen=True)
class Served:
    url: str
    admin_token: str
    read_token: str
    result: dict[str, Any]


def _admin_post(served: Served, path: str, body: dict[str, Any]) -> dict[str, Any]:
    response = CollectorClient(base_url=served.url, token=served.admin_token).request("POST", path, body=body)
    assert 200 <= response.status < 300, response.detail()
    return response.json()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    """A collector (uvicorn on loopback) over the demo's SQLite database, with the demo's tokens."""
    require(
        CHROMIUM is not None and CHROMIUM.is_file(),
        "Chromium is not installed (apt-get install chromium, or set BEEAUDIO_CHROMIUM)",
    )
    out = shared_demo(tmp_path_factory)
    run = out / "run"
    tokens = json.loads((run / "tokens.json").read_text())
    result = json.loads((out / "demo-result.json").read_text())
    env = {"BEEAUDIO_ADMIN_TOKEN": tokens["admin_token"], "BEEAUDIO_READ_TOKEN": tokens["read_token"]}
    with start_collector(
        log_path=tmp_path_factory.mktemp("dashboard-collector") / "collector.log",
        db_url=f"sqlite:///{run / 'collector.db'}",
        env=env,
        extra_args=["--local"],
    ) as collector:
        yield Served(
            url=collector.url,
            admin_token=tokens["admin_token"],
            read_token=tokens["read_token"],
            result=result,
        )


def _save_screenshot(page: Any, *, tmp_path: Path, name: str) -> Path:
    path = tmp_path / name
    page.screenshot(path=str(path), full_page=True)
    keep = os.environ.get("BEEAUDIO_SCREENSHOT_DIR")
    if keep:
        Path(keep).mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, Path(keep) / name)
    return path


@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 120)
def test_dashboard_shows_every_hive_and_marks_the_swarm(served: Served, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    hives = served.result["hives"]
    swarming = [h for h in hives if h["expected_state"] == "swarm"]
    assert swarming, "the demo must have generated a swarming hive"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            problems: list[str] = []
            page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
            page.on("console", lambda m: problems.append(f"console: {m.text}") if m.type == "error" else None)

            page.goto(f"{served.url}/#token={served.read_token}")
            page.wait_for_selector(".hive .timeline", timeout=20_000)

            # Every hive, with the state the collector derived (which the demo checked against the apiary).
            expect(page.locator(".hive")).to_have_count(len(hives))
            for hive in hives:
                card = page.locator(f'.hive[data-hive-id="{hive["hive_id"]}"]')
                expect(card).to_have_attribute("data-state", hive["expected_state"])
                expect(card.locator(".badge")).to_have_text(STATE_TEXT[hive["expected_state"]])
                expect(card.locator("h3")).to_have_text(hive["name"])
                expect(card).to_contain_text(hive["model_version"])
                # A timeline with the swarm score drawn from the collector's history.
                expect(card.locator(".timeline .score-line").first).to_be_attached()
            # The swarming hive is listed first, its badge and score stand out, its alert is listed.
            first = page.locator(".hive").first
            expect(first).to_have_attribute("data-state", "swarm")
            expect(page.locator("#summary")).to_contain_text(f"{len(swarming)} swarming")
            swarm_alerts = page.locator(".alert-swarm_started")
            expect(swarm_alerts.first).to_contain_text(swarming[0]["name"])
            color = first.locator(".badge").evaluate("node => getComputedStyle(node).backgroundColor")
            red, green, blue = (int(c) for c in color[color.index("(") + 1 : color.index(")")].split(",")[:3])
            assert red > 150 and red > 2 * green and red > 2 * blue, f"swarm badge is not red: {color}"
            # The swarm period is shaded on the swarming hive's timeline, and only there.
            expect(first.locator(".timeline .band-swarm").first).to_be_attached()
            for hive in hives:
                if hive["expected_state"] == "normal":
                    card = page.locator(f'.hive[data-hive-id="{hive["hive_id"]}"]')
                    expect(card.locator(".timeline .band-swarm")).to_have_count(0)

            # The token left the address bar and is kept for the next visit.
            assert page.evaluate("location.hash") == ""
            assert page.evaluate("localStorage.getItem('beeaudio.token')") == served.read_token
            screenshot = _save_screenshot(page, tmp_path=tmp_path, name="dashboard.png")
            assert screenshot.stat().st_size > 20_000

            # Updates without a reload: a hive registered now appears at the next poll.
            _admin_post(served, HIVES_PATH, {"name": "Late hive", "hive_id": "late-hive"})
            late = page.locator('.hive[data-hive-id="late-hive"]')
            expect(late).to_be_visible(timeout=15_000)
            expect(late.locator(".badge")).to_have_text("Unknown")

            # Next visit without the fragment: the stored token still works.
            page.goto(f"{served.url}/")
            expect(page.locator(".hive")).to_have_count(len(hives) + 1, timeout=20_000)

            # On a phone: one column, nothing wider than the screen.
            phone = browser.new_page(viewport={"width": 390, "height": 844}, is_mobile=True)
            phone.goto(f"{served.url}/#token={served.read_token}")
            phone.wait_for_selector(".hive .timeline", timeout=20_000)
            assert phone.evaluate("document.documentElement.scrollWidth") <= 390
            _save_screenshot(phone, tmp_path=tmp_path, name="dashboard-phone.png")
            assert not problems, problems
        finally:
            browser.close()


@pytest.mark.slow
def test_dashboard_asks_for_a_token_when_it_has_none_or_a_wrong_one(served: Served) -> None:
    from playwright.sync_api import expect, sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page()
            page.goto(f"{served.url}/#token=not-a-token")
            expect(page.locator("#login")).to_be_visible(timeout=15_000)
            expect(page.locator("#login-message")).to_contain_text("refused")
            expect(page.locator(".hive")).to_have_count(0)
            assert page.evaluate("localStorage.getItem('beeaudio.token')") is None

            page.fill("#token-input", served.read_token)
            page.click("#login-form button[type=submit]")
            page.wait_for_selector(".hive", timeout=20_000)
            assert page.evaluate("localStorage.getItem('beeaudio.token')") == served.read_token
        finally:
            browser.close()

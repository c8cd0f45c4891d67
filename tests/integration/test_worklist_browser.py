"""The worklist page in a real headless Chromium: ordering, acknowledgement, screenshot.

Needs the Playwright Python package and a system Chromium (Debian: apt-get install chromium);
browsers are never downloaded. Skipped when either is missing, failed when CI is set.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from dicomnode.telemetry import Telemetry
from dicomnode.worklist.store import WorklistStore
from dicomnode.worklist.web import WebServer, create_app
from tests.support.require import require
from tests.unit.worklist.helpers import heatmap_png, tiny_png, triage_entry

REPO = Path(__file__).resolve().parents[2]
CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser")
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
TOKEN = "browser-test-token"
CRITICAL_UID = "1.2.826.0.1.3680043.10.1.1"
ROUTINE_UID = "1.2.826.0.1.3680043.10.1.2"
MISSING_SLICE = "a slice may be missing between 10.0 and 20.0 mm along the series"


@pytest.fixture(autouse=True)
def _dcmtk() -> None:
    """This test starts no DICOM peer: it overrides the integration folder's dcmtk requirement."""


def _chromium() -> str:
    found = next((p for p in CHROMIUM_CANDIDATES if Path(p).is_file()), None)
    require(found is not None, "no system Chromium (apt-get install chromium)")
    assert found is not None
    return found


@dataclass
class Served:
    server: WebServer
    store: WorklistStore

    @property
    def url(self) -> str:
        return self.server.url


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    _chromium()
    _playwright()
    store = WorklistStore(tmp_path / "index.sqlite3")
    now = time.time()
    # The routine study has waited longer: the critical one must still come first.
    store.record_result(triage_entry(ROUTINE_UID, "routine", 8.2, arrived_at=now - 1500,
                                     accession_number="ACC-ROUTINE", thumbnail=tiny_png((90, 90, 90), 32),
                                     warnings=(MISSING_SLICE,)))
    store.record_result(triage_entry(CRITICAL_UID, "critical", 91.4, arrived_at=now - 420,
                                     accession_number="ACC-CRITICAL", thumbnail=heatmap_png(32)))
    app = create_app(store, token=TOKEN, viewer_url="http://pacs.example/viewer?StudyInstanceUID={study_uid}",
                     health=lambda: {"dicom_listener": True}, metrics=Telemetry())
    web = WebServer(app, "127.0.0.1", 0)
    web.start()
    yield Served(web, store)
    web.stop()
    store.close()


def _playwright() -> Any:
    try:
        import playwright.sync_api
    except ImportError:
        require(False, "the playwright Python package is not installed (pip install playwright)")
    return playwright.sync_api


def _api(server: Served, path: str) -> Any:
    request = urllib.request.Request(f"{server.url}{path}", headers={"Authorization": f"Bearer {TOKEN}"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.load(response)


def test_worklist_page_orders_and_acknowledges(served: Served) -> None:
    executable = _chromium()
    expect = _playwright().expect
    server = served
    with _playwright().sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        context = browser.new_context(viewport={"width": 1280, "height": 560}, color_scheme="dark",
                                      base_url=server.url)
        try:
            page = context.new_page()
            page.goto(f"/?token={TOKEN}")  # sets the cookie and redirects to /
            assert page.url.rstrip("/") == server.url
            rows = page.locator("#worklist tbody tr")
            expect(rows).to_have_count(2)
            assert rows.nth(0).get_attribute("data-study-uid") == CRITICAL_UID
            assert rows.nth(1).get_attribute("data-study-uid") == ROUTINE_UID
            expect(rows.nth(0).locator(".badge")).to_have_text("Critical")
            expect(rows.nth(0)).to_contain_text("ACC-CRITICAL")
            expect(rows.nth(1).locator(".warning-text")).to_have_text(f"⚠ {MISSING_SLICE}")
            expect(rows.nth(0).locator(".warning-text")).to_have_count(0)
            expect(rows.nth(0).get_by_role("link", name="Open study ACC-CRITICAL in PACS")).to_have_attribute(
                "href", f"http://pacs.example/viewer?StudyInstanceUID={CRITICAL_UID}")
            thumb = rows.nth(0).locator("img.thumb")
            expect(thumb).to_be_visible()
            page.wait_for_function("img => img.complete && img.naturalWidth === 32",
                                   arg=thumb.element_handle())

            page.get_by_label("Reading as").fill("Dr Night")
            rows.nth(0).get_by_role("button", name="Acknowledge study ACC-CRITICAL").click()
            expect(rows.nth(0)).to_contain_text("Acknowledged by Dr Night")
            expect(rows.nth(0).get_by_role("button")).to_have_count(0)

            artifacts = REPO / "test-artifacts"
            artifacts.mkdir(exist_ok=True)
            shot = artifacts / "worklist.png"
            page.screenshot(path=str(shot), full_page=True)
            assert shot.stat().st_size > 1000
            if os.environ.get("DICOMNODE_UPDATE_DOCS"):  # refresh the README's screenshot on request
                shutil.copyfile(shot, REPO / "docs" / "worklist.png")

            # The page filters on the server: hiding acknowledged studies leaves the routine one.
            page.get_by_label("Hide acknowledged").check()
            expect(rows).to_have_count(1)
            assert rows.nth(0).get_attribute("data-study-uid") == ROUTINE_UID
        finally:
            context.close()
            browser.close()

    item = _api(server, f"/api/studies/{CRITICAL_UID}")
    assert item["acknowledged"] is True and item["acknowledged_by"] == "Dr Night"
    assert _api(server, f"/api/studies/{ROUTINE_UID}")["acknowledged"] is False


def test_page_refreshes_itself(served: Served) -> None:
    """A study that arrives after the page loaded appears without a reload."""
    executable = _chromium()
    expect = _playwright().expect
    server = served
    with _playwright().sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(base_url=server.url)
            page.goto(f"/?token={TOKEN}")
            rows = page.locator("#worklist tbody tr")
            expect(rows).to_have_count(2)
            served.store.record_failure("1.2.826.0.1.3680043.10.1.3", "engine crashed",
                                             accession_number="ACC-FAILED")
            expect(rows).to_have_count(3, timeout=15_000)  # the page polls every 5 s
            expect(rows.nth(1)).to_contain_text("Failed")
            expect(rows.nth(1)).to_contain_text("engine crashed")
        finally:
            browser.close()


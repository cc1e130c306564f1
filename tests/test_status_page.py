"""The status page in a real headless browser (Debian's chromium, driven by Playwright):
simulated devices appear online with their firmware version and heap, one disconnects and
goes offline, all without a reload. The screenshot goes to REALM_SCREENSHOT when set
(`make screenshot` writes docs/status.png, which the README shows)."""
import os
import re
import shutil

import pytest
from playwright.sync_api import sync_playwright

from shared import RELEASE
from tests.fw_helpers import Fleet, online, start_realm, unix_build  # noqa: F401 (a fixture)

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Chromium as root, headless, talking to nothing but the realm on loopback.
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@pytest.fixture
def browser(tmp_path):
    if not os.path.exists(CHROMIUM):
        pytest.fail("chromium is missing: `make system-deps` installs it (apt-get install "
                    "chromium)")
    with sync_playwright() as p:
        context = p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path=CHROMIUM, headless=True, args=FLAGS,
            viewport={"width": 1280, "height": 560})
        try:
            yield context
        finally:
            context.close()


def row(page, device):
    return page.locator('tr[data-id="%s"]' % device.id)


def test_page_shows_devices_come_online_and_go_offline_live(tmp_path, unix_build, browser):
    realm = start_realm(tmp_path, "--name", "workshop")
    fleet = Fleet(tmp_path, realm)
    try:
        realm.add_device("porch")  # registered, never connected
        page = browser.new_page()
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("console", lambda m: m.type == "error" and errors.append(m.text))
        page.goto("http://127.0.0.1:%d/" % realm.http_port)
        page.wait_for_selector("#feed.live")
        page.evaluate("window.notReloaded = true")
        assert page.title() == "workshop: realm status"

        kitchen = fleet.add("kitchen")
        garage = fleet.add("garage")
        for device in (kitchen, garage):
            online(device)
            page.wait_for_selector('tr[data-id="%s"].online' % device.id, timeout=15000)
            page.wait_for_function(
                "id => document.querySelector('tr[data-id=\"' + id + '\"] td.fw')"
                ".textContent !== ''", arg=device.id, timeout=15000)
            cells = row(page, device)
            assert cells.locator("td.fw").inner_text() == RELEASE
            assert re.fullmatch(r"\d+(\.\d)? KiB|\d+ B", cells.locator("td.heap").inner_text())
            assert cells.locator(".name").inner_text() == device.name
        assert page.locator("#online").inner_text() == "2 of 3"

        kitchen.kill()  # the link drops: the realm ends the session
        page.wait_for_selector('tr[data-id="%s"].offline' % kitchen.id, timeout=15000)
        assert row(page, kitchen).locator("td.fw").inner_text() == RELEASE, "last report kept"
        assert page.locator("#online").inner_text() == "1 of 3"
        assert page.evaluate("window.notReloaded") is True, "updated live, not reloaded"
        assert errors == []
        shot = os.environ.get("REALM_SCREENSHOT") or str(tmp_path / "status.png")
        page.screenshot(path=shot, full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: rows become cards
        assert page.locator("thead").is_hidden()
        assert row(page, garage).locator("td.fw").is_visible()
        page.screenshot(path=str(tmp_path / "status-phone.png"), full_page=True)
    finally:
        fleet.stop()
        realm.stop()
    realm.assert_clean_log()

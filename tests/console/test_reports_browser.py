"""The reports page, the agents page and the public status page in Debian's chromium (Playwright) over a console on a
real SQLite store: a customer account sees only its customer (another customer's component or report is a 404), the
public page shows no reason and needs no sign-in. Screenshots stay in the test's temporary directory."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from console.health import LocalHealth, SinkHealth, TaskHealth
from slawatch.model import Heartbeat, StateChange
from slawatch.testing import need_binary
from tests.console.site import PASSWORD, ref, site, write

pytestmark = [pytest.mark.timeout(120), pytest.mark.peer("chromium")]

NOW = (int(time.time()) // 60) * 60_000
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
REASON = "SIP 503 Service Unavailable from pbx-1"


@pytest.fixture
async def chromium() -> AsyncIterator[object]:
    binary = need_binary("chromium", "chromium")
    from playwright.async_api import async_playwright  # only when chromium is there: the test skips before

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()


async def test_customer_reports_and_the_public_status_page_in_a_browser(tmp_path: Path, chromium: object) -> None:
    async with site(tmp_path, NOW, console="{public: [acme]}") as s:
        loaded = s.loaded
        await write(loaded, [
            StateChange(ref(loaded, "pbx-1"), "a1", NOW - 86_400_000, True, ""),
            StateChange(ref(loaded, "pbx-1"), "a1", NOW - 1_800_000, False, REASON),
            StateChange(ref(loaded, "san-1"), "a1", NOW - 86_400_000, True, ""),
            StateChange(ref(loaded, "lb-9"), "a1", NOW - 86_400_000, True, ""),
            *(Heartbeat("a1", t, 60.0) for t in range(NOW - 86_400_000, NOW, 60_000)),
        ])
        root = tmp_path / "archive"
        for month in ("2026-09", "2026-10"):
            (root / month).mkdir(parents=True)
            for customer in ("acme", "globex"):
                for fmt in ("html", "csv", "json"):
                    (root / month / f"{customer}.{fmt}").write_text(
                        f"<!doctype html><title>{customer}</title><h1>{customer} {month}</h1>" if fmt == "html"
                        else f"{customer},{month}\n")
        loaded.config.report.archive = root
        await s.refresh()
        s.console.local_health = lambda: LocalHealth(
            "a1", ("store influxdb: writes failing for 2m00s: HTTP 500 Internal Server Error",), 7200.0, 4, 4321,
            180_224, 0, (SinkHealth("influxdb", 420, 120.0, "HTTP 500 Internal Server Error"),
                         SinkHealth("sqlite", 0, 0.0, "")),
            (TaskHealth("drain-influxdb", 0, "", False), TaskHealth("heartbeat", 0, "", False)))
        await s.add_user("acme-user", "customer", ("acme",))
        await s.add_user("ops", "operator")
        base = str(s.client.make_url("")).rstrip("/")

        context = await chromium.new_context(viewport={"width": 1280, "height": 800})  # type: ignore[attr-defined]
        page = await context.new_page()
        await page.goto(base + "/login")
        await page.fill("input[name=name]", "acme-user")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_selector('tr[data-name="pbx-1"]')
        assert await page.locator('tr[data-name="lb-9"]').count() == 0
        assert await page.locator('nav a[href="/agents"]').count() == 0
        answer = await page.goto(base + "/components/lb-9")
        assert answer is not None and answer.status == 404

        await page.goto(base + "/reports")
        await page.wait_for_selector("h1:has-text('Reports')")
        text = await page.text_content("main") or ""
        assert "globex" not in text and "acme" in text
        await page.screenshot(path=str(tmp_path / "reports.png"), full_page=True)
        answer = await page.goto(base + "/reports/2026-10/globex.html")
        assert answer is not None and answer.status == 404
        answer = await page.goto(base + "/reports/2026-10/acme.html")
        assert answer is not None and answer.status == 200
        assert await page.text_content("h1") == "acme 2026-10"
        answer = await page.goto(base + "/reports/to-date/acme.html")
        assert answer is not None and answer.status == 200
        assert "pbx-1" in (await page.text_content("body") or "")
        await page.screenshot(path=str(tmp_path / "month-to-date.png"), full_page=True)
        await context.close()

        # The public page: no sign-in, no reason.
        public = await chromium.new_context(viewport={"width": 1000, "height": 600})  # type: ignore[attr-defined]
        page = await public.new_page()
        answer = await page.goto(base + "/status/acme")
        assert answer is not None and answer.status == 200
        body = await page.text_content("body") or ""
        assert "pbx-1" in body and "DOWN" in body and "503" not in body and "a1" not in body
        await page.screenshot(path=str(tmp_path / "status.png"), full_page=True)
        answer = await page.goto(base + "/status/globex")
        assert answer is not None and answer.status == 404

        # The operator's agents page.
        page = await public.new_page()
        await page.goto(base + "/login")
        await page.fill("input[name=name]", "ops")
        await page.fill("input[name=password]", PASSWORD)
        await page.click("button[type=submit]")
        await page.wait_for_selector('tr[data-name="lb-9"]')
        await page.goto(base + "/agents")
        await page.wait_for_selector('tr[data-agent="a1"]')
        await page.screenshot(path=str(tmp_path / "agents.png"), full_page=True)
        await page.goto(base + "/reports")
        await page.screenshot(path=str(tmp_path / "reports-operator.png"), full_page=True)
        await public.close()

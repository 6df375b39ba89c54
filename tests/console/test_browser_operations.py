"""The incidents and maintenance pages in the real `slawatch agent`, driven by Debian's chromium: a TCP service goes
down, the desk raises an incident, an operator opens it, sees its deadline counting down, acknowledges it with a
comment (the page says by whom, and the acknowledgement mail reaches a local SMTP server); the maintenance form says
the notice verdict before saving. Screenshots stay in the test's temporary directory."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller

from slawatch.cli import main
from slawatch.testing import free_port
from slawatch.testing.agentproc import AgentProcess, TcpTarget, write_config
from tests.console import browser
from tests.console.site import PASSWORD
from tests.reporter.smtpd import Handler

pytestmark = [pytest.mark.timeout(150), pytest.mark.peer("chromium")]


@pytest.fixture
def smtpd() -> Iterator[tuple[int, Handler]]:
    port, handler = free_port(), Handler()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield port, handler
    finally:
        controller.stop()


@pytest.fixture
def target() -> Iterator[TcpTarget]:
    t = TcpTarget()
    t.up()
    yield t
    t.down()


@pytest.fixture
def agent(tmp_path: Path, target: TcpTarget, smtpd: tuple[int, Handler]) -> Iterator[tuple[AgentProcess, str, Path]]:
    port = free_port()
    cfg = write_config(tmp_path, target.port, interval=0.3, listen=f"127.0.0.1:{port}")
    cfg.write_text(cfg.read_text() + f"""console: {{refresh_s: 0.5, figures_s: 5, latency_span_s: 60}}
notify: {{noc: [noc@provider.example], smtp: {{host: 127.0.0.1, port: {smtpd[0]}}}}}
""")
    proc = AgentProcess(cfg)
    try:
        proc.wait_for("serving /metrics, /healthz and the console")
        yield proc, f"http://127.0.0.1:{port}", cfg
    finally:
        proc.stop()


@pytest.fixture
async def chromium() -> AsyncIterator[object]:
    async with browser.chromium() as b:
        yield b


async def test_an_operator_acknowledges_an_incident_in_the_browser(
        tmp_path: Path, target: TcpTarget, agent: tuple[AgentProcess, str, Path], chromium: object,
        smtpd: tuple[int, Handler]) -> None:
    proc, base, cfg = agent
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    assert await asyncio.to_thread(main, ["user", "add", "ann", "--role", "operator", "--config", str(cfg),
                                          "--password-file", str(pw_file)]) == 0
    context = await chromium.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page = await context.new_page()
    await page.goto(base + "/incidents")
    await page.fill("input[name=name]", "ann")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector("h1:has-text('Incidents')")

    target.down()
    line = await asyncio.to_thread(proc.wait_for, r"INC-\d{4}-\d{6} opened: san-1 DOWN", 30)
    id = re.search(r"INC-\d{4}-\d{6}", line).group(0)  # type: ignore[union-attr]
    await page.reload()
    row = page.locator(f'tr[data-id="{id}"]')
    await row.wait_for(timeout=10_000)
    assert "refused" in (await row.text_content() or "").lower()
    # Raised seconds ago with the bundled contract's 2 h target (gold): due in 1h 59m.
    assert re.search(r"due in 1h 59m|due in 2h", await row.locator(".countdown").text_content() or "")
    await page.screenshot(path=str(tmp_path / "incidents.png"), full_page=True)

    await row.locator(f'a[href="/incidents/{id}"]').click()
    await page.wait_for_selector(f"h1:has-text('{id}')")
    countdown = page.locator(".clock .countdown")
    first = await countdown.text_content()
    assert first is not None and first.startswith("due in ")
    deadline_ms = int(await countdown.get_attribute("data-deadline-ms") or 0)
    assert 0 < deadline_ms - time.time() * 1000 <= 2 * 3600 * 1000
    await page.screenshot(path=str(tmp_path / "incident-open.png"), full_page=True)
    # The page's script ticks the countdown on (here past a deadline moved to five seconds ago).
    await page.evaluate("document.querySelector('.clock .countdown').dataset.deadlineMs = String(Date.now() - 5000)")
    await page.wait_for_selector(".clock .countdown.late", timeout=5_000)
    assert (await countdown.text_content() or "").startswith("overdue by ")

    await page.fill("form[action$='/ack'] textarea[name=comment]", "engineer on the way")
    clicked = time.monotonic()
    await page.click("form[action$='/ack'] button[type=submit]")
    await page.wait_for_selector(".flash-note.ok")
    note = await page.text_content(".flash-note.ok")
    assert note is not None and f"{id} (san-1) acknowledged by ann" in note and "1 notification queued" in note
    acked = await page.text_content("dd.acked")
    assert acked is not None and "by ann" in acked and "engineer on the way" in acked
    assert await page.locator("form[action$='/ack']").count() == 0
    events = await page.text_content("table.events")
    assert events is not None and "acknowledged" in events and "ann" in events
    await page.screenshot(path=str(tmp_path / "incident-acknowledged.png"), full_page=True)

    # The running agent's sender, woken by the action, delivers the acknowledgement at once (not at its next look
    # at the outbox, 5 s later); the page shows it sent.
    handler = smtpd[1]
    while not any("acknowledged" in m.message["Subject"].lower() for m in handler.received):
        assert time.monotonic() - clicked < 2.5, [m.message["Subject"] for m in handler.received]
        await asyncio.sleep(0.05)
    await page.reload()
    await page.wait_for_selector("table.notes tr.note-sent td:has-text('ack')", timeout=10_000)

    # The maintenance form says the notice verdict as it is filled in, before anything is saved.
    await page.goto(base + "/maintenance/new")
    await page.select_option("select[name=scope]", "component")
    await page.fill("input[name=value]", "san-1")
    start = time.time() + 80 * 3600 + 120
    await page.fill("input[name=start]", time.strftime("%Y-%m-%dT%H:%M", time.gmtime(start)))
    await page.fill("input[name=end]", time.strftime("%Y-%m-%dT%H:%M", time.gmtime(start + 2 * 3600)))
    await page.fill("input[name=reason]", "controller firmware")
    await page.wait_for_selector("#mw-preview.ok", timeout=10_000)
    verdict = await page.text_content("#mw-verdict")
    assert verdict is not None and re.search(r"announced 80h( \d+m)? ahead: excluded from downtime", verdict)
    assert await page.is_visible("#mw-save")
    await page.screenshot(path=str(tmp_path / "maintenance-form.png"), full_page=True)
    soon = time.strftime("%Y-%m-%dT%H:%M", time.gmtime(time.time() + 10 * 3600 + 120))
    await page.fill("input[name=start]", soon)  # only 10 h from now: late notice
    await page.wait_for_selector("#mw-preview.late", timeout=10_000)
    verdict = await page.text_content("#mw-verdict")
    assert verdict is not None
    assert re.search(r"late: 10h( \d+m)? of the required 72h notice, counts as downtime", verdict), verdict
    await page.fill("input[name=start]", time.strftime("%Y-%m-%dT%H:%M", time.gmtime(start)))
    await page.wait_for_selector("#mw-preview.ok", timeout=10_000)
    await page.click("#mw-save")
    await page.wait_for_selector(".flash-note.ok")
    assert "excluded from downtime" in (await page.text_content(".flash-note.ok") or "")
    await page.screenshot(path=str(tmp_path / "maintenance-list.png"), full_page=True)
    await context.close()

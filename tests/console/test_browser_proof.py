"""The console's proof in Debian's chromium, end to end: the real `slawatch agent` watches SIPp (SIP OPTIONS) for acme
and a TCP service for globex; an operator signs in, SIPp stops and the fault appears on the open overview without a
reload, the incident is listed with its deadline; a form posted from another origin without the token is refused;
the operator acknowledges with a comment (the page and the mail at aiosmtpd say by whom); the reports page's month
to date for acme shows the response time `slawatch report` gives; a globex account gets 404 for acme's pages; five
wrong passwords lock the login. The screenshots are kept under the test's temporary directory and, when
SLAWATCH_ARTIFACTS names a folder, copied there."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from aiohttp import web

from reporter.render import human_ms
from slawatch.cli import main
from slawatch.config.loader import bundled_contract
from slawatch.testing import free_port
from slawatch.testing.agentproc import AgentProcess, TcpTarget, rows
from slawatch.testing.sipp import Sipp, options_peer
from slawatch.testing.smtp import SmtpServer
from tests.console import browser
from tests.console.site import PASSWORD

pytestmark = [pytest.mark.timeout(120), pytest.mark.peer("chromium", "sipp")]

INCIDENT = re.compile(r"INC-\d{4}-\d{6}")


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Sipp]:
    peer = options_peer(tmp_path).start()
    yield peer
    peer.stop()


@pytest.fixture
def globex_service() -> Iterator[TcpTarget]:
    t = TcpTarget()
    t.up()
    yield t
    t.down()


@pytest.fixture
def agent(tmp_path: Path, sipp: Sipp, globex_service: TcpTarget,
          smtp: SmtpServer) -> Iterator[tuple[AgentProcess, str, Path]]:
    port = free_port()
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: proof-agent, listen: "127.0.0.1:{port}", heartbeat_s: 1}}
storage: {{sqlite: {{path: {tmp_path / 'store.db'}}}, spool: {{path: {tmp_path / 'spool'}}}}}
contract: {bundled_contract()}
defaults: {{interval_s: 0.5, timeout_s: 0.4, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold}}, {{name: globex, tier: silver}}]
components:
  - name: sip-core
    class: sip
    customer: acme
    probes: [{{kind: sip, target: "sip:127.0.0.1:{sipp.port}"}}]
  - name: globex-lb
    class: load_balancer
    customer: globex
    probes: [{{kind: tcp, target: "127.0.0.1:{globex_service.port}"}}]
console: {{refresh_s: 0.5, figures_s: 5, latency_span_s: 60}}
notify: {{noc: [noc@provider.example], smtp: {{host: 127.0.0.1, port: {smtp.port}, from: desk@provider.example}}}}
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


async def user_add(cfg: Path, pw_file: Path, name: str, *role: str) -> None:
    code = await asyncio.to_thread(main, ["user", "add", name, *role, "--config", str(cfg),
                                          "--password-file", str(pw_file)])
    assert code == 0, f"`slawatch user add {name}` exited {code}"


async def sign_in(page: object, base: str, name: str, password: str) -> None:
    await page.goto(base + "/login")  # type: ignore[attr-defined]
    await page.fill("input[name=name]", name)  # type: ignore[attr-defined]
    await page.fill("input[name=password]", password)  # type: ignore[attr-defined]
    await page.click("button[type=submit]")  # type: ignore[attr-defined]


async def cross_site(console_url: str) -> web.AppRunner:
    """A page on another origin (another loopback port) that posts a form to the console by itself, no token."""
    async def page(_request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=f"""<!doctype html><form id=f method=post
action="{console_url}"><input name=comment value=x></form><script>document.getElementById('f').submit()</script>""")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    return runner


def keep(shots: list[Path]) -> None:
    """The screenshots into the CI artifact folder, when SLAWATCH_ARTIFACTS names one."""
    folder = os.environ.get("SLAWATCH_ARTIFACTS")
    if not folder:
        return
    target = Path(folder) / "console-proof"
    target.mkdir(parents=True, exist_ok=True)
    for shot in shots:
        shutil.copy2(shot, target / shot.name)


async def test_the_console_end_to_end_in_chromium(
        tmp_path: Path, sipp: Sipp, agent: tuple[AgentProcess, str, Path], chromium: object,
        smtp: SmtpServer) -> None:
    proc, base, cfg = agent
    db = tmp_path / "store.db"
    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    await user_add(cfg, pw_file, "olga", "--role", "operator")
    await user_add(cfg, pw_file, "gus", "--role", "customer", "--customer", "globex")
    shots: list[Path] = []

    # 1. An operator signs in and sees both customers' components up.
    context = await chromium.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page = await context.new_page()
    await sign_in(page, base, "olga", PASSWORD)
    await page.wait_for_selector('tr[data-name="sip-core"][data-state="up"]', timeout=20_000)
    await page.wait_for_selector('tr[data-name="globex-lb"][data-state="up"]', timeout=5_000)
    await page.evaluate("window.__notReloaded = true")

    # 2. SIPp stops: the row turns DOWN on the open page, by its own polling.
    sipp.stop()
    await page.wait_for_selector('tr[data-name="sip-core"][data-state="down"]', timeout=20_000)
    assert await page.evaluate("window.__notReloaded === true"), "the overview was reloaded, not updated in place"
    row = await page.text_content('tr[data-name="sip-core"]')
    assert row is not None and "DOWN" in row, row
    await page.wait_for_selector('tr[data-name="sip-core"] svg.spark', timeout=10_000)
    shots.append(tmp_path / "overview-down.png")
    await page.screenshot(path=str(shots[-1]), full_page=True)

    line = await asyncio.to_thread(proc.wait_for, r"INC-\d{4}-\d{6} opened: sip-core DOWN", 20)
    id = INCIDENT.search(line).group(0)  # type: ignore[union-attr]
    await page.goto(base + "/incidents")
    listed = page.locator(f'tr[data-id="{id}"]')
    await listed.wait_for(timeout=10_000)
    # Raised seconds ago with the bundled contract's 2 h response target for gold.
    due = await listed.locator(".countdown").text_content() or ""
    assert re.search(r"due in (1h 59m|2h)", due), f"no countdown to the deadline in the incidents list: {due!r}"

    # 6. A form posted from another origin without the token is refused, and nothing is recorded.
    evil_port = free_port()
    runner = await cross_site(f"{base}/incidents/{id}/ack")
    await web.TCPSite(runner, "127.0.0.1", evil_port).start()
    try:
        evil = await context.new_page()
        async with evil.expect_response(lambda r: r.url.endswith(f"/incidents/{id}/ack"), timeout=10_000) as answer:
            await evil.goto(f"http://127.0.0.1:{evil_port}/")
        assert (await answer.value).status == 403
        await evil.close()
    finally:
        await runner.cleanup()
    assert rows(db, "SELECT state, acknowledged_ms FROM slawatch_incident WHERE id = ?", (id,)) == [("open", None)]
    events = rows(db, "SELECT action, actor FROM slawatch_incident_event WHERE incident = ?", (id,))
    assert any(e[0] == "opened" for e in events) and not any(e[0] == "acknowledged" for e in events), events

    # 3. The operator acknowledges with a comment: the page says by whom, the mail reaches aiosmtpd.
    await page.goto(f"{base}/incidents/{id}")
    await page.fill("form[action$='/ack'] textarea[name=comment]", "engineer on the way")
    await page.click("form[action$='/ack'] button[type=submit]")
    await page.wait_for_selector(".flash-note.ok", timeout=10_000)
    acked = await page.text_content("dd.acked") or ""
    assert "by olga" in acked and "engineer on the way" in acked, acked
    assert "acknowledged by olga" in (await page.text_content(".flash-note.ok") or "")
    shots.append(tmp_path / "incident-acknowledged.png")
    await page.screenshot(path=str(shots[-1]), full_page=True)

    deadline = time.monotonic() + 10
    while not (mails := [m for m in smtp.received if "ACKNOWLEDGED" in m.subject]):
        assert time.monotonic() < deadline, f"no acknowledgement mail; got {[m.subject for m in smtp.received]}"
        await asyncio.sleep(0.05)
    mail = mails[0]
    assert mail.rcpt_tos == ("noc@provider.example",)
    assert id in mail.subject and "sip-core" in mail.subject, mail.subject
    assert "olga" in mail.text and "engineer on the way" in mail.text, mail.text

    # 4. The month's report shows the response time: the reports page's month to date for acme, built on demand, and
    # the same figure as `slawatch report` gives.
    raised_ms, acked_ms = rows(db, "SELECT raised_ms, acknowledged_ms FROM slawatch_incident WHERE id = ?", (id,))[0]
    assert isinstance(raised_ms, int) and isinstance(acked_ms, int)
    month = datetime.fromtimestamp(raised_ms / 1000, UTC).strftime("%Y-%m")
    out = tmp_path / "month.json"
    code = await asyncio.to_thread(main, ["report", "--config", str(cfg), "--month", month, "--format", "json",
                                          "--customer", "acme", "--out", str(out)])
    assert code == 0
    reported = {i["id"]: i for i in json.loads(out.read_text())["incidents"]}
    assert id in reported, f"{id} not in the month's report: {list(reported)}"
    assert reported[id]["acknowledged_by"] == "olga" and reported[id]["met"] is True
    response_s = reported[id]["response_s"]
    assert response_s == pytest.approx((acked_ms - raised_ms) / 1000, abs=0.01)
    await page.goto(base + "/reports")
    await page.click('tr[data-customer="acme"] td.files a:text-is("report")')
    await page.wait_for_url(f"{base}/reports/to-date/acme.html", timeout=10_000)
    line = page.locator("tr", has_text=id)
    await line.wait_for(timeout=30_000)
    cells = [c.strip() for c in await line.locator("td").all_text_contents()]
    assert human_ms(round(response_s * 1000)) in cells and "sip-core" in cells, cells
    assert any("olga" in c for c in cells) and any(c.startswith("met") for c in cells), cells
    shots.append(tmp_path / "report-to-date.png")
    await page.screenshot(path=str(shots[-1]), full_page=True)

    # The maintenance form, as it says the notice verdict before saving.
    await page.goto(base + "/maintenance/new")
    await page.select_option("select[name=scope]", "component")
    await page.fill("input[name=value]", "sip-core")
    start = time.time() + 80 * 3600 + 120
    await page.fill("input[name=start]", time.strftime("%Y-%m-%dT%H:%M", time.gmtime(start)))
    await page.fill("input[name=end]", time.strftime("%Y-%m-%dT%H:%M", time.gmtime(start + 2 * 3600)))
    await page.fill("input[name=reason]", "SBC software upgrade")
    await page.wait_for_selector("#mw-preview.ok", timeout=10_000)
    shots.append(tmp_path / "maintenance-form.png")
    await page.screenshot(path=str(shots[-1]), full_page=True)
    await context.close()

    # 5. A globex account sees globex only: acme's component and incident give 404.
    context = await chromium.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page = await context.new_page()
    await sign_in(page, base, "gus", PASSWORD)
    await page.wait_for_selector('tr[data-name="globex-lb"]', timeout=10_000)
    assert await page.locator('tr[data-name="sip-core"]').count() == 0
    for url in (f"{base}/components/sip-core", f"{base}/incidents/{id}"):
        answer = await page.goto(url)
        assert answer is not None and answer.status == 404, f"{url}: {answer and answer.status}"
    await page.goto(base + "/incidents")
    assert id not in (await page.content())
    await context.close()

    # 7. Five wrong passwords lock the login; the right one is refused while it lasts.
    context = await chromium.new_context()  # type: ignore[attr-defined]
    page = await context.new_page()
    for n in range(5):
        await sign_in(page, base, "olga", f"wrong {n}")
        await page.wait_for_selector("p.error", timeout=10_000)
    error = await page.text_content("p.error") or ""
    assert "locked for 15m" in error, error
    await sign_in(page, base, "olga", PASSWORD)
    await page.wait_for_selector("p.error", timeout=10_000)
    assert "/login" in page.url
    error = await page.text_content("p.error") or ""
    assert "Too many wrong passwords: signing in is locked" in error, error
    await context.close()

    keep(shots)

"""The console in the real `slawatch agent`, driven by Debian's chromium through Playwright: without a user it refuses
(and /metrics, /healthz still answer); an operator signs in, sees the overview, and a component going down appears
without a reload; a form posted from another page without the token is refused. Screenshots stay in the test's
temporary directory."""

from __future__ import annotations

import asyncio
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from aiohttp import web

from slawatch.cli import main
from slawatch.testing import free_port
from slawatch.testing.agentproc import AgentProcess, TcpTarget, write_config
from tests.console import browser
from tests.console.site import PASSWORD

pytestmark = [pytest.mark.timeout(120), pytest.mark.peer("chromium")]


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=10) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.fixture
def target() -> Iterator[TcpTarget]:
    t = TcpTarget()
    t.up()
    yield t
    t.down()


@pytest.fixture
def agent(tmp_path: Path, target: TcpTarget) -> Iterator[tuple[AgentProcess, str, Path]]:
    port = free_port()
    cfg = write_config(tmp_path, target.port, interval=0.3, listen=f"127.0.0.1:{port}")
    closed = free_port()  # nothing listens there: refused from the start
    cfg.write_text(cfg.read_text() + f"""  - name: lb-2
    class: load_balancer
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{closed}"}}]
  - name: core-9
    class: network
    tier: gold
    probes: [{{kind: tcp, target: "127.0.0.1:{target.port}"}}]
console: {{refresh_s: 0.5, figures_s: 5, latency_span_s: 60}}
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


async def evil_site(console: str) -> web.AppRunner:
    """Another page (another port: another origin, the same site) that posts a form to the console by itself."""
    async def page(_request: web.Request) -> web.Response:
        return web.Response(content_type="text/html", text=f"""<!doctype html><form id=f method=post
action="{console}/logout"><input name=x value=1></form><script>document.getElementById('f').submit()</script>""")

    app = web.Application()
    app.router.add_get("/", page)
    runner = web.AppRunner(app)
    await runner.setup()
    return runner


async def test_operator_signs_in_and_sees_a_fault_appear_without_a_reload(
        tmp_path: Path, target: TcpTarget, agent: tuple[AgentProcess, str, Path], chromium: object) -> None:
    _, base, cfg = agent
    # No user yet: the console refuses and says how to add one; the agent's own endpoints answer as before.
    status, text = await asyncio.to_thread(get, base + "/")
    assert status == 503 and f"slawatch user add NAME --role admin --config {cfg}" in text
    assert (await asyncio.to_thread(get, base + "/metrics"))[0] == 200
    assert (await asyncio.to_thread(get, base + "/healthz"))[0] == 200

    pw_file = tmp_path / "pw"
    pw_file.write_text(PASSWORD + "\n")
    assert await asyncio.to_thread(main, ["user", "add", "ops", "--role", "operator", "--config", str(cfg),
                                          "--password-file", str(pw_file)]) == 0

    context = await chromium.new_context(viewport={"width": 1400, "height": 900})  # type: ignore[attr-defined]
    page = await context.new_page()
    await page.goto(base + "/")
    assert "/login" in page.url
    await page.screenshot(path=str(tmp_path / "login.png"))
    await page.fill("input[name=name]", "ops")
    await page.fill("input[name=password]", PASSWORD)
    await page.click("button[type=submit]")
    await page.wait_for_selector('tr[data-name="san-1"][data-state="up"]', timeout=20_000)
    await page.wait_for_selector("svg.spark", timeout=20_000)  # the latency sparkline, once figures are in
    await page.screenshot(path=str(tmp_path / "overview-up.png"), full_page=True)
    await page.evaluate("window.__notReloaded = true")

    target.down()
    await page.wait_for_selector('tr[data-name="san-1"][data-state="down"]', timeout=20_000)
    # core-9 probes the same target but on its own phase: it may be confirmed down one poll later.
    await page.wait_for_selector('tr[data-name="core-9"][data-state="down"]', timeout=20_000)
    assert await page.evaluate("window.__notReloaded === true")
    assert await page.text_content('[data-count="down"]') == "3"  # san-1, core-9 (same target), lb-2
    row = await page.text_content('tr[data-name="san-1"]')
    assert row is not None and "DOWN" in row and "refused" in row.lower()
    await page.screenshot(path=str(tmp_path / "overview-down.png"), full_page=True)

    # Filtering as you type, without a round trip.
    await page.fill("input[type=search]", "no-such-component")
    assert await page.is_hidden('tr[data-name="san-1"]')
    await page.fill("input[type=search]", "san")
    assert await page.is_visible('tr[data-name="san-1"]')

    # The component page.
    await page.click('a[href="/components/san-1"]')
    await page.wait_for_selector("h1:has-text('san-1')")
    await page.screenshot(path=str(tmp_path / "component.png"), full_page=True)

    # A form posted from another page, without the token: refused, still signed in.
    evil_port = free_port()
    runner = await evil_site(base)
    site = web.TCPSite(runner, "127.0.0.1", evil_port)
    await site.start()
    try:
        evil = await context.new_page()
        async with evil.expect_response(lambda r: r.url.endswith("/logout")) as answer:
            await evil.goto(f"http://127.0.0.1:{evil_port}/")
        assert (await answer.value).status == 403
    finally:
        await runner.cleanup()
    await page.goto(base + "/")
    assert page.url.rstrip("/") == base
    await context.close()

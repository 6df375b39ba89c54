"""The agents page inside the real `slawatch agent`: the composition root hands the console what /healthz knows of
this process (its agent, health, the store it writes and the spool), and the store shows the agent's heartbeat."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from aiohttp import ClientSession, CookieJar

from slawatch.cli import main
from slawatch.testing import free_port
from slawatch.testing.agentproc import AgentProcess, TcpTarget, write_config
from tests.console.site import PASSWORD

pytestmark = pytest.mark.timeout(90)

CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def test_the_agents_page_shows_this_process_and_its_heartbeat(tmp_path: Path) -> None:
    target = TcpTarget()
    target.up()
    port = free_port()
    cfg = write_config(tmp_path, target.port, interval=0.3, listen=f"127.0.0.1:{port}")
    cfg.write_text(cfg.read_text() + "console: {refresh_s: 0.5}\n")
    proc = AgentProcess(cfg)
    try:
        proc.wait_for("serving /metrics, /healthz and the console")
        pw = tmp_path / "pw"
        pw.write_text(PASSWORD + "\n")
        assert await asyncio.to_thread(main, ["user", "add", "ops", "--role", "operator", "--config", str(cfg),
                                              "--password-file", str(pw)]) == 0
        base = f"http://127.0.0.1:{port}"
        async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
            token = CSRF.search(await (await http.get(base + "/login")).text())
            assert token is not None
            signed = await http.post(base + "/login", data={"name": "ops", "password": PASSWORD,
                                                            "csrf": token.group(1)}, allow_redirects=False)
            assert signed.status == 303
            text = ""
            for _ in range(40):  # the first heartbeat and states reach the store within a second or two
                text = await (await http.get(base + "/agents")).text()
                if 'data-agent="test-agent"' in text and "FRESH" in text:
                    break
                await asyncio.sleep(0.25)
            assert 'data-agent="test-agent"' in text and "(this process)" in text and "FRESH" in text
            assert "This process: agent test-agent" in text and "HEALTHY" in text
            assert "<td>sqlite</td>" in text and "components," in text
    finally:
        proc.stop()
        target.down()

"""`slawatch server` refuses a config without a `server` section; with one, `slawatch agent` only probes (no desk,
no console, no monthly job), and the server answers /healthz and /metrics with its role."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import aiohttp
import pytest

from slawatch.testing.agentproc import ROOT, AgentProcess
from slawatch.testing.serverproc import ServerProcess, write_config

pytestmark = [pytest.mark.timeout(60)]


def slawatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slawatch.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_usage_errors_exit_2_with_the_reason(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 9)
    bare = tmp_path / "agent-only.yaml"
    bare.write_text("\n".join(line for line in cfg.read_text().splitlines() if not line.startswith("server:")))
    runs = [("server", "--config", str(bare)), ("server", "--config", str(cfg), "--id", "a b"),
            ("server", "--config", str(cfg), "--listen", "127.0.0.1:0")]
    with ThreadPoolExecutor(len(runs)) as pool:  # three start-ups at once: the command's imports dominate
        no_section, bad_id, bad_listen = pool.map(lambda args: slawatch(*args), runs)
    assert no_section.returncode == 2 and "no `server` section" in no_section.stderr
    assert bad_id.returncode == 2 and "--id 'a b'" in bad_id.stderr
    assert bad_listen.returncode == 2 and "--listen 127.0.0.1:0" in bad_listen.stderr


async def get(url: str) -> tuple[int, str]:
    async with aiohttp.ClientSession() as http, http.get(url) as resp:
        return resp.status, await resp.text()


async def test_an_agent_with_a_server_section_only_probes_and_the_server_says_its_role(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, 9)
    agent = AgentProcess(cfg, log_format="json")
    server = ServerProcess(cfg, "srv-a")
    try:
        line = await asyncio.to_thread(agent.wait_for, "serving /metrics", 30)
        assert "status page" in json.loads(line)["msg"]
        listen = next(ln for ln in cfg.read_text().splitlines() if ln.startswith("agent:")).split('"')[1]
        status, page = await get(f"http://{listen}/")
        assert status == 200 and "agent a1" in page  # the bare status page, not the console
        _, metrics = await get(f"http://{listen}/metrics")
        assert "slawatch_incidents_active" not in metrics
        assert not agent.log.count("incident desk") and not agent.log.count("monthly report")

        await asyncio.to_thread(server.wait_for, r"^server srv-a leads", 30)
        status, body = await get(f"{server.url}/healthz")
        health = json.loads(body)
        assert (status, health["status"], health["server"], health["leader"]) == (200, "ok", "srv-a", True)
        _, metrics = await get(f"{server.url}/metrics")
        assert 'slawatch_server_leader{server="srv-a"} 1.0' in metrics
        assert "slawatch_incidents_active" in metrics  # the desk's metrics, on the leader
    finally:
        agent.stop()
        assert server.stop() == 0

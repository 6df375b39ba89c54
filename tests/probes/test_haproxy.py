"""The haproxy probe against a real HAProxy with three aiohttp backends, stopped one by one."""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.probes import haproxy
from slawatch.config.probes import HaproxyProbe
from slawatch.model import Outcome, Result
from slawatch.testing import free_port, need_binary
from slawatch.testing.servers import closed_port, web_peer

pytestmark = pytest.mark.timeout(15)

CONFIG = """\
global
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats

frontend stats_private
    bind 127.0.0.1:{private}
    stats enable
    stats uri /stats
    stats auth ops:s3cret

frontend www
    bind 127.0.0.1:{frontend}
    default_backend web

backend web
    option httpchk GET /health
    default-server check inter 200ms fall 1 rise 1
{servers}
"""


@dataclass
class Lb:
    stats: int
    private: int
    backends: list[contextlib.AsyncExitStack]
    log: Path

    def url(self, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.stats}/stats"


def backend_app(name: str) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text=f"{name} ok")

    app = web.Application()
    app.router.add_get("/health", health)
    return app


@pytest.fixture
async def lb(tmp_path: Path) -> AsyncIterator[Lb]:
    binary = need_binary("haproxy", "haproxy")
    stacks: list[contextlib.AsyncExitStack] = []
    ports = []
    for i in range(1, 4):
        stack = contextlib.AsyncExitStack()
        ports.append(await stack.enter_async_context(web_peer(backend_app(f"web{i}"))))
        stacks.append(stack)
    servers = "\n".join(f"    server web{i} 127.0.0.1:{p}" for i, p in enumerate(ports, 1))
    config = tmp_path / "haproxy.cfg"
    stats, private = free_port(), free_port()
    config.write_text(CONFIG.format(stats=stats, private=private, frontend=free_port(), servers=servers))
    log = tmp_path / "haproxy.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([binary, "-f", str(config), "-db"], stdout=out, stderr=subprocess.STDOUT)
    try:
        yield Lb(stats, private, stacks, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        for stack in stacks:
            await stack.aclose()


def settings(url: str, **kw: Any) -> HaproxyProbe:
    return HaproxyProbe(kind="haproxy", target=url, backend=kw.pop("backend", "web"), timeout_s=1.0, **kw)


async def until(lb: Lb, want: Result, **kw: Any) -> Result:
    """Probe until HAProxy's checks notice (bounded), then return the last result."""
    deadline = time.monotonic() + 5
    result = await haproxy.probe(settings(lb.url(), **kw))
    while result.outcome is not want.outcome or result.reason != want.reason:
        if time.monotonic() > deadline:
            pytest.fail(f"still {result} after 5s, wanted {want}\nhaproxy log:\n{lb.log.read_text()}")
        await asyncio.sleep(0.1)
        result = await haproxy.probe(settings(lb.url(), **kw))
    return result


@pytest.mark.peer("haproxy")
async def test_pool_goes_up_degraded_down(lb: Lb) -> None:
    up = await until(lb, Result(Outcome.UP), min_up=2)
    assert up.latency_s is not None and up.latency_s < 1
    await lb.backends[2].aclose()
    await until(lb, Result(Outcome.DEGRADED, "2 of 3 members UP (web3 DOWN)"), min_up=2)
    await lb.backends[1].aclose()
    await until(lb, Result(Outcome.BAD_RESPONSE, "1 of 3 members UP, need 2 (web2 DOWN, web3 DOWN)"), min_up=2)
    await lb.backends[0].aclose()
    await until(lb, Result(Outcome.BAD_RESPONSE, "0 of 3 members UP, need 2 (web1 DOWN, web2 DOWN, web3 DOWN)"),
                min_up=2)


@pytest.mark.peer("haproxy")
async def test_unknown_backend_lists_the_known_ones(lb: Lb) -> None:
    await until(lb, Result(Outcome.BAD_RESPONSE, "backend 'api' not in stats (backends: web)"), backend="api")


@pytest.mark.peer("haproxy")
async def test_stats_auth(lb: Lb) -> None:
    await until(lb, Result(Outcome.UP))  # HAProxy is ready
    r = await haproxy.probe(settings(lb.url(lb.private)))
    assert r == Result(Outcome.BAD_RESPONSE, "HTTP 401 Unauthorized (the stats page needs username/password)")
    r = await haproxy.probe(settings(lb.url(lb.private), username="ops", password="wrong"))
    assert r == Result(Outcome.BAD_RESPONSE, "HTTP 401 Unauthorized (check username/password)")
    r = await haproxy.probe(settings(lb.url(lb.private), username="ops", password="s3cret"))
    assert r.outcome is Outcome.UP, r


async def test_stats_page_not_listening_is_refused() -> None:
    r = await haproxy.probe(settings(f"http://127.0.0.1:{closed_port()}/stats"))
    assert r == Result(Outcome.REFUSED, "connection refused")

"""The haproxy probe against a real HAProxy with three aiohttp backends, stopped one by one."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from agent.probes import haproxy
from slawatch.config.probes import HaproxyProbe
from slawatch.model import Outcome, Result
from slawatch.testing.haproxy import Haproxy, start_haproxy
from slawatch.testing.servers import closed_port

pytestmark = pytest.mark.timeout(15)

@pytest.fixture
async def lb(tmp_path: Path) -> AsyncIterator[Haproxy]:
    server = await start_haproxy(tmp_path)
    try:
        yield server
    finally:
        await server.stop()


def settings(url: str, **kw: Any) -> HaproxyProbe:
    return HaproxyProbe(kind="haproxy", target=url, backend=kw.pop("backend", "web"), timeout_s=1.0, **kw)


async def until(lb: Haproxy, want: Result, **kw: Any) -> Result:
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
async def test_pool_goes_up_degraded_down(lb: Haproxy) -> None:
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
async def test_unknown_backend_lists_the_known_ones(lb: Haproxy) -> None:
    await until(lb, Result(Outcome.BAD_RESPONSE, "backend 'api' not in stats (backends: web)"), backend="api")


@pytest.mark.peer("haproxy")
async def test_stats_auth(lb: Haproxy) -> None:
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

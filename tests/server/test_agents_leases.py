"""The console's agents page shows the agents' leases from the shared store (PostgreSQL): live and stale by the
store's clock, with each agent's zone, assignment and share; a store it cannot read is said, not hidden."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from console.pages.agents import MEMBERS, lease_rows
from slawatch.config.settings import PostgresSettings
from slawatch.model import AgentLease
from slawatch.store.postgres import PostgresMemberStore
from tests.console.site import site


def lease(agent: str, seen_ms: int, *, heartbeat_s: float = 10.0, zone: str = "") -> AgentLease:
    return AgentLease(agent, seen_ms, seen_ms - 60_000, heartbeat_s, zone, "auto", 2, 40, f"{agent}.example", "1.0")


@pytest.mark.parametrize(("age_ms", "heartbeat_s", "live"), [
    (0, 10.0, True), (6_667, 10.0, True), (6_668, 10.0, False), (1_400, 2.0, False), (-500, 2.0, True),
    (500, 0.3, True), (501, 0.3, False),
])
def test_a_lease_is_live_by_the_agents_own_rule(age_ms: int, heartbeat_s: float, live: bool) -> None:
    # Two thirds of its heartbeat period (at least 0.5 s): the rule the agents share the work by.
    [row] = lease_rows(100_000, [lease("a1", 100_000 - age_ms, heartbeat_s=heartbeat_s)])
    assert (row.age_ms, row.live) == (age_ms, live)


def test_live_leases_come_first_then_by_name() -> None:
    rows = lease_rows(100_000, [lease("b", 99_000), lease("a", 10_000), lease("c", 99_500)])
    assert [(r.lease.agent, r.live) for r in rows] == [("b", True), ("c", True), ("a", False)]


@pytest.mark.peer("postgresql")
@pytest.mark.timeout(60)
async def test_the_agents_page_shows_the_leases_in_postgresql(tmp_path: Path, pg_dsn: str) -> None:
    members = PostgresMemberStore(PostgresSettings(dsn=pg_dsn, timeout_s=5.0))
    now = time.time_ns() // 1_000_000
    try:
        await members.renew(lease("edge-1", now, zone="fra"))
        await members.renew(lease("edge-2", now))
        await members.leave("edge-2")
        await members.renew(lease("edge-3", now, heartbeat_s=0.5))
        async with site(tmp_path, now) as s:
            await s.add_user("admin", "admin")
            await s.login("admin")
            s.console.extra[MEMBERS] = members
            page = await (await s.client.get("/agents")).text()
            assert 'data-lease="edge-1"' in page and "fra" in page
            assert 'data-lease="edge-2"' not in page  # left cleanly
            assert page.index('data-lease="edge-1"') < page.index('data-lease="edge-3"')  # live ones first, by name

            await members.close()  # the store gone: the page says so
            s.console.extra[MEMBERS] = PostgresMemberStore(
                PostgresSettings(dsn="postgresql://slawatch@127.0.0.1:9/none", timeout_s=1.0))
            page = await (await s.client.get("/agents")).text()
            assert "The leases could not be read" in page
            await s.console.extra[MEMBERS].close()
    finally:
        await members.close()

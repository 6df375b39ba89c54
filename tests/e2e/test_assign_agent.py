"""The agent's share in process: the static zone rule, releases on reload and at start, and an unreachable member
store that leaves the share as it was (real SQLite files, a loopback TCP target)."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from prometheus_client import generate_latest

from agent.daemon import Agent
from slawatch.cli.agent import build_agent
from slawatch.config.loader import bundled_contract, load
from slawatch.model import StateChange
from slawatch.testing.servers import line_peer

DB = "store.db"


@pytest.fixture
async def port() -> AsyncIterator[int]:
    async with line_peer() as p:
        yield p


def write(tmp: Path, port: int, components: dict[str, str | None], *, agent: str, records: str = "") -> Path:
    cfg = tmp / "agent.yaml"
    comps = "".join(f"""
  - name: {name}
    class: san
    customer: acme{f'''
    zone: {zone}''' if zone else ''}
    probes: [{{kind: tcp, target: "127.0.0.1:{port}"}}]""" for name, zone in components.items())
    cfg.write_text(f"""
agent: {{id: t1, heartbeat_s: 1, {agent}}}
storage: {{sqlite: {{path: {DB}}}, spool: {{path: spool}}{f', records: {records}' if records else ''}}}
contract: {bundled_contract()}
defaults: {{interval_s: 0.3, timeout_s: 0.2, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
console: {{enabled: false}}
desk: {{enabled: false}}
components:{comps}
""")
    return cfg


def states(db: Path) -> list[tuple[str, int, object]]:
    with sqlite3.connect(db) as conn:
        return conn.execute("SELECT component, up, released FROM slawatch_state ORDER BY ts_ms").fetchall()


async def until(check: object, timeout: float = 15.0) -> None:
    assert callable(check)
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)


async def run_until_up(agent: Agent, names: set[str]) -> tuple[asyncio.Event, asyncio.Task[None]]:
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await until(lambda: all(agent.states[n].up for n in names if n in agent.states) and set(agent.states) == names)
    return stop, task


async def test_static_zone_rule_and_releases(tmp_path: Path, port: int) -> None:
    comps = {"eu-1": "eu", "any-1": None, "us-1": "us", "any-2": None}
    cfg = write(tmp_path, port, comps, agent="zone: eu")
    changes: list[StateChange] = []
    agent = build_agent(load(cfg), on_change=changes.append)
    # static with a zone: its zone's components and those without one
    assert set(agent.states) == {"eu-1", "any-1", "any-2"}
    stop, task = await run_until_up(agent, {"eu-1", "any-1", "any-2"})

    # a reload without any-2: released at once, on disk and to on_change
    cfg.write_text(cfg.read_text().replace("any-2", "gone-2").replace(
        "  - name: gone-2", "  - name: gone-2\n    zone: us", 1))
    assert await agent.reload()
    assert set(agent.states) == {"eu-1", "any-1"}
    await until(lambda: any(c.released for c in changes))
    released = [c for c in changes if c.released]
    assert [(c.ref.component, c.up, c.reason) for c in released] == [("any-2", True, "removed from the config")]
    stop.set()
    await asyncio.wait_for(task, 15)
    assert ("any-2", 1, 1) in states(tmp_path / DB)

    # at the next start the agent is in zone us: the checkpoint's eu-1 is released, any-1 watched on
    cfg.write_text(cfg.read_text().replace("zone: eu}", "zone: us}"))
    agent = build_agent(load(cfg))
    stop, task = await run_until_up(agent, {"us-1", "any-1", "gone-2"})
    await until(lambda: ("eu-1", 1, 1) in states(tmp_path / DB))
    text = generate_latest(agent.metrics.registry).decode()
    assert 'slawatch_handovers_total{direction="released"} 1.0' in text
    assert "slawatch_agent_components 3.0" in text
    stop.set()
    await asyncio.wait_for(task, 15)
    assert [s for s in states(tmp_path / DB) if s[2]] == [("any-2", 1, 1), ("eu-1", 1, 1)]


async def test_auto_keeps_its_share_while_the_member_store_is_away(tmp_path: Path, port: int,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    comps: dict[str, str | None] = {"c1": None, "c2": None, "c3": None}
    cfg = write(tmp_path, port, comps, agent="assign: auto, replicas: 1")
    agent = build_agent(load(cfg))
    stop, task = await run_until_up(agent, {"c1", "c2", "c3"})  # alone: everything
    stop.set()
    await asyncio.wait_for(task, 15)
    # the leases cannot be read any more (a file where the records' directory should be)
    (tmp_path / "blocked").write_text("x")
    cfg = write(tmp_path, port, comps, agent="assign: auto, replicas: 1", records=str(tmp_path / "blocked" / "r.db"))
    caplog.set_level(logging.INFO, logger="agent")
    agent = build_agent(load(cfg))
    stop, task = await run_until_up(agent, {"c1", "c2", "c3"})  # the share it had, from its checkpoint
    await until(lambda: agent.membership is not None and agent.membership.errors >= 4)
    assert set(agent.states) == {"c1", "c2", "c3"}
    assert sum("keeping the current share" in r.getMessage() for r in caplog.records) == 1  # logged once
    text = generate_latest(agent.metrics.registry).decode()
    assert "slawatch_member_store_errors_total" in text
    stop.set()
    await asyncio.wait_for(task, 15)
    assert not [s for s in states(tmp_path / DB) if s[2]]  # nothing released
    # taken (back) into its share at start, each component wrote its first confirmed state again: a stored view
    # that may have been released meanwhile is never left standing by a restored state
    assert sorted(s[0] for s in states(tmp_path / DB)) == ["c1", "c1", "c2", "c2", "c3", "c3"]

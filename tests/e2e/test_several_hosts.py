"""Several monitoring hosts, one truth, with real processes on loopback: three `slawatch agent`s (assign auto, two
replicas) and two `slawatch server`s sharing one PostgreSQL.

A component that is down raises one incident, told once. An agent SIGKILLed: its components are probed by the
others within one heartbeat period, and the report over the whole run shows no unmonitored time for any component.
The leading server SIGKILLed while the incident is open and unacknowledged: the other sends its escalation, once.
Everything stopped and started again: nothing is raised or sent twice."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from slawatch.config.loader import bundled_contract
from slawatch.testing import free_port
from slawatch.testing.agentproc import ROOT, AgentProcess, TcpTarget
from slawatch.testing.serverproc import ServerProcess
from slawatch.testing.webhook import Webhook, start_webhook

pytestmark = [pytest.mark.timeout(180), pytest.mark.peer("postgresql")]

HEARTBEAT_S = 2.0
INTERVAL_S = 0.5
AGENTS = ("mon-a", "mon-b", "mon-c")
SERVERS = ("srv-a", "srv-b")
UP = [f"lb-{i}" for i in range(6)]
DEAD = "sip-1"
SLACK_S = 1.0
"""Scheduling slack on top of the heartbeat period (two shared cores, five processes and PostgreSQL)."""


def write_config(tmp: Path, dsn: str, target: int, closed: int, hook: int) -> Path:
    comps = "".join(f"""
  - name: {name}
    class: load_balancer
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{target}"}}]""" for name in UP)
    cfg = tmp / "slawatch.yaml"
    cfg.write_text(f"""
agent: {{id: unused, heartbeat_s: {HEARTBEAT_S}, assign: auto, replicas: 2}}
server: {{listen: "127.0.0.1:{free_port()}", leader_check_s: 0.5}}
storage:
  postgres: {{dsn: "{dsn}"}}
  spool: {{path: {tmp / "spool"}}}
contract: {bundled_contract()}
defaults: {{interval_s: {INTERVAL_S}, timeout_s: 0.4, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
desk: {{tick_s: 0.2}}
notify:
  noc: ["json://127.0.0.1:{hook}/hook"]
  escalation: {{every: 8s, max: 1, at_target_pct: []}}
  retry_first: 1s
  retry_max: 2s
  timeout_s: 3
components:{comps}
  - name: {DEAD}
    class: sip
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{closed}"}}]
""")
    return cfg


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    receiver = await start_webhook()
    yield receiver
    await receiver.stop()


@pytest.fixture
def tcp_target() -> Iterator[TcpTarget]:
    target = TcpTarget()
    target.up()
    yield target
    target.down()


class Fleet:
    """The agents and servers of one test, each killed at the end whatever happened."""

    def __init__(self, cfg: Path) -> None:
        self.cfg = cfg
        self.agents: dict[str, AgentProcess] = {}
        self.servers: dict[str, ServerProcess] = {}

    def agent(self, name: str) -> AgentProcess:
        self.agents[name] = AgentProcess(self.cfg, log_format="json", args=[
            "--id", name, "--listen", f"127.0.0.1:{free_port()}", "--spool", str(self.cfg.parent / f"spool-{name}")])
        return self.agents[name]

    def server(self, name: str) -> ServerProcess:
        self.servers[name] = ServerProcess(self.cfg, name)
        return self.servers[name]

    def kill_all(self) -> None:
        for proc in [*self.agents.values(), *self.servers.values()]:
            if proc.proc.poll() is None:
                proc.kill()


@pytest.fixture
def fleet(tmp_path: Path, pg_dsn: str, tcp_target: TcpTarget, hook: Webhook) -> Iterator[Fleet]:
    f = Fleet(write_config(tmp_path, pg_dsn, tcp_target.port, free_port(), hook.port))
    yield f
    f.kill_all()


async def until(check: Callable[[], Any], what: str, timeout: float = 30.0, logs: Fleet | None = None) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := await check() if asyncio.iscoroutinefunction(check) else check()):
        if time.monotonic() >= deadline:
            tails = "" if logs is None else "\n".join(
                f"--- {p.id if isinstance(p, ServerProcess) else name}:\n" + "\n".join(p.lines[-15:])
                for name, p in [*logs.agents.items(), *logs.servers.items()])
            raise AssertionError(f"timed out waiting for {what}\n{tails}")
        await asyncio.sleep(0.05)
    return value


def sent(hook: Webhook) -> Counter[tuple[str, str]]:
    data = [r.json().get("data", {}) for r in hook.received]
    return Counter((d.get("incident", ""), d.get("kind", "")) for d in data)


async def probers(dsn: str, since_ms: int) -> dict[str, set[str]]:
    """Per component, the agents that stored a probe run of it since `since_ms`."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT DISTINCT component, agent FROM slawatch_probe WHERE ts_ms >= $1", since_ms)
    finally:
        await conn.close()
    out: dict[str, set[str]] = {c: set() for c in [*UP, DEAD]}
    for r in rows:
        out.setdefault(r["component"], set()).add(r["agent"])
    return out


async def first_runs(dsn: str, since_ms: int) -> dict[str, dict[str, int]]:
    """Per component and agent, when its first probe run since `since_ms` ran (not when it was stored: an agent
    writes its store about once a second)."""
    conn = await asyncpg.connect(dsn)
    try:
        rows = await conn.fetch("SELECT component, agent, min(ts_ms) AS first FROM slawatch_probe WHERE ts_ms >= $1 "
                                "GROUP BY component, agent", since_ms)
    finally:
        await conn.close()
    out: dict[str, dict[str, int]] = {}
    for r in rows:
        out.setdefault(r["component"], {})[r["agent"]] = r["first"]
    return out


async def count(dsn: str, sql: str) -> int:
    conn = await asyncpg.connect(dsn)
    try:
        return int(await conn.fetchval(sql))
    finally:
        await conn.close()


def leader(fleet: Fleet) -> ServerProcess | None:
    """The server whose latest leadership line says it leads."""
    for s in fleet.servers.values():
        if s.proc.poll() is None and s.has(rf"server {s.id} leads") and not s.has(rf"server {s.id} no longer leads"):
            return s
    return None


def report(cfg: Path, start_ms: int, end_ms: int) -> dict[str, Any]:
    iso = [datetime.fromtimestamp(t / 1000, UTC).isoformat(timespec="milliseconds") for t in (start_ms, end_ms)]
    proc = subprocess.run([sys.executable, "-m", "slawatch.cli", "report", "--config", str(cfg), "--from", iso[0],
                           "--to", iso[1], "--format", "json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr[-2000:]
    data: dict[str, Any] = json.loads(proc.stdout)
    return data


def components_of(data: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in data["components"]}


async def test_three_agents_two_servers_one_postgres(fleet: Fleet, hook: Webhook, pg_dsn: str) -> None:
    for name in SERVERS:
        fleet.server(name)
    for name in AGENTS:
        fleet.agent(name)

    # Every component watched by two agents; the dead one raises one incident, told once.
    await until(lambda: leader(fleet), "a leading server", timeout=60, logs=fleet)

    async def two_each() -> bool:
        seen = await probers(pg_dsn, time.time_ns() // 1_000_000 - 1000)
        return all(len(agents) >= 2 for agents in seen.values())

    await until(two_each, "two agents probing every component")
    ready_ms = time.time_ns() // 1_000_000
    opened = await until(lambda: [k for k in sent(hook) if k[1] == "open"], "the open notification")
    incident = opened[0][0]

    async def marked() -> bool:  # a delivery in flight when its sender dies is sent again (docs/deploy.md)
        return await count(pg_dsn, f"SELECT count(*) FROM slawatch_notification WHERE incident = '{incident}' "
                                   "AND kind = 'open' AND state = 'sent'") == 1

    await until(marked, "the open notification marked sent in the outbox")

    # SIGKILL the leading server while the incident is open and unacknowledged: the other escalates, once.
    first = leader(fleet)
    assert first is not None
    assert sent(hook)[(incident, "escalation")] == 0, "escalated before the leader was killed: lengthen `every`"
    first.kill()
    await until(lambda: leader(fleet), "the other server leading", timeout=10)
    await until(lambda: sent(hook)[(incident, "escalation")], "the escalation", timeout=30)

    # SIGKILL an agent: each of its components is probed by two live agents again within one heartbeat period.
    # (Runs of the last 3 s: an agent writes its store about once a second, agent.daemon.DRAIN_GATHER_S.)
    before = await probers(pg_dsn, time.time_ns() // 1_000_000 - 3000)
    victim = "mon-a"
    had = sorted(c for c, agents in before.items() if victim in agents)
    assert had, "the victim watched nothing"
    fleet.agents[victim].kill()
    killed_ms = time.time_ns() // 1_000_000

    async def covered_again() -> dict[str, dict[str, int]] | None:
        runs = await first_runs(pg_dsn, killed_ms)
        others = {c: {a: ts for a, ts in runs.get(c, {}).items() if a != victim} for c in had}
        return others if all(len(agents) >= 2 for agents in others.values()) else None

    others = await until(covered_again, "its components probed by two other agents", timeout=HEARTBEAT_S + 10)
    # When the second of its live agents first ran it, for the last component taken over.
    handover_s = (max(sorted(agents.values())[1] for agents in others.values()) - killed_ms) / 1000
    assert handover_s <= HEARTBEAT_S + SLACK_S, f"hand-over took {handover_s:.2f}s"

    # The report over the whole run after all watched: no unmonitored time, the dead component down throughout.
    end_ms = time.time_ns() // 1_000_000 - 1000
    figures = components_of(report(fleet.cfg, ready_ms, end_ms))
    assert set(figures) == {*UP, DEAD}
    for name, c in figures.items():
        assert c["unmonitored_s"] == 0 and c["unmonitored"] == [], (name, c["unmonitored"])
    assert all(figures[name]["downtime_s"] == 0 for name in UP)
    assert figures[DEAD]["downtime_s"] >= (end_ms - ready_ms) / 1000 - 1

    # Everything stopped, then started again: nothing raised or sent twice.
    told = sent(hook)
    fleet.kill_all()
    for name in SERVERS:
        fleet.server(name)
    for name in AGENTS:
        fleet.agent(name)
    await until(lambda: leader(fleet), "a leading server after the restart", timeout=60, logs=fleet)
    await until(two_each, "two agents probing every component after the restart")
    await asyncio.sleep(2 * HEARTBEAT_S)  # several desk passes and looks at the outbox
    assert sent(hook) == told
    assert told == Counter({(incident, "open"): 1, (incident, "escalation"): 1})
    assert await count(pg_dsn, f"SELECT count(*) FROM slawatch_incident WHERE component = '{DEAD}'") == 1
    print(f"agent killed -> its components probed by two others in {handover_s:.2f}s "
          f"(heartbeat {HEARTBEAT_S:g}s); victim watched {len(had)} of {len(UP) + 1}")

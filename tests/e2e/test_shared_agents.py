"""Agents that share the work (`assign: auto`): real agent processes on one SQLite records file, a loopback TCP
target. A SIGKILLed agent's components are probed by the others within one heartbeat period and, with 2 replicas,
the report shows no unmonitored time; a new agent takes its share without a restart of the others."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.assign import owners
from reporter.availability import AgentViews, Availability, Policy, availability
from slawatch.config.loader import bundled_contract
from slawatch.config.settings import SqliteSettings
from slawatch.model import Interval
from slawatch.store.sqlite import SqliteSource
from slawatch.testing import free_port
from slawatch.testing.agentproc import ROOT, AgentProcess, TcpTarget, poll, store_rows

Spawn = Callable[..., AgentProcess]

HEARTBEAT_S = 2.0
INTERVAL_S = 0.5
COMPONENTS = [f"lb-{i}" for i in range(8)]


def write_config(tmp: Path, port: int, replicas: int) -> Path:
    cfg = tmp / "agents.yaml"
    comps = "".join(f"""
  - name: {name}
    class: load_balancer
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{port}"}}]""" for name in COMPONENTS)
    cfg.write_text(f"""
agent: {{id: unused, heartbeat_s: {HEARTBEAT_S}, assign: auto, replicas: {replicas}}}
storage: {{sqlite: {{path: {tmp / 'store.db'}}}}}
contract: {bundled_contract()}
defaults: {{interval_s: {INTERVAL_S}, timeout_s: 0.4, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
console: {{enabled: false}}
desk: {{enabled: false}}
components:{comps}
""")
    return cfg


def start(spawn: Spawn, cfg: Path, agent: str) -> AgentProcess:
    return spawn(cfg, args=["--id", agent, "--listen", f"127.0.0.1:{free_port()}",
                            "--spool", str(cfg.parent / f"spool-{agent}")])


def watchers(db: Path, since_ms: int) -> dict[str, set[str]]:
    """Per component, the agents with a probe run stored since `since_ms`."""
    out: dict[str, set[str]] = {c: set() for c in COMPONENTS}
    for component, agent in store_rows(db, f"SELECT DISTINCT component, agent FROM slawatch_probe "
                                           f"WHERE ts_ms >= {since_ms}"):
        out[str(component)].add(str(agent))
    return out


def holders(db: Path) -> dict[str, set[str]]:
    """Per component, the agents whose latest stored change of it is not a release."""
    latest = store_rows(db, "SELECT component, agent, released FROM slawatch_state s WHERE ts_ms = (SELECT max(ts_ms) "
                            "FROM slawatch_state t WHERE t.component = s.component AND t.agent = s.agent)")
    out: dict[str, set[str]] = {c: set() for c in COMPONENTS}
    for component, agent, released in latest:
        if not released:
            out[str(component)].add(str(agent))
    return out


def settled(db: Path, agents: list[str], replicas: int) -> bool:
    expected = {c: set(owners(c, agents, replicas)) for c in COMPONENTS}
    now = int(time.time() * 1000)
    held = {c: h & set(agents) for c, h in holders(db).items()}  # a SIGKILLed agent never released its own
    return held == expected and watchers(db, now - 1500) == expected


def report(db: Path, span: Interval) -> dict[str, Availability]:
    async def read() -> dict[str, Availability]:
        source = SqliteSource(SqliteSettings(path=db))
        try:
            views = AgentViews(await source.changes(span.start_ms, span.end_ms),
                               await source.heartbeats(span.start_ms, span.end_ms))
        finally:
            await source.close()
        return {c: availability(span, views.views(c), [], Policy(), 99.0) for c in COMPONENTS}
    return asyncio.run(read())


def first_runs_after(db: Path, t_ms: int, by: set[str], of: set[str]) -> dict[str, int]:
    """Per component of `of`, the first probe run by a new owner (in `by`) after `t_ms`."""
    out: dict[str, int] = {}
    for component, agent, ts in store_rows(db, f"SELECT component, agent, min(ts_ms) FROM slawatch_probe "
                                               f"WHERE ts_ms > {t_ms} GROUP BY component, agent"):
        if str(component) in of and str(agent) in by:
            out[str(component)] = min(out.get(str(component), 1 << 62), int(str(ts)))
    return out


@pytest.mark.timeout(90)
def test_three_agents_share_kill_one_join_one(tmp_path: Path, tcp_target: TcpTarget, spawn: Spawn) -> None:
    cfg = write_config(tmp_path, tcp_target.port, replicas=2)
    db = tmp_path / "store.db"
    names = ["a1", "a2", "a3"]
    procs = {a: start(spawn, cfg, a) for a in names}
    poll(lambda: settled(db, names, 2), timeout=40, what="three agents sharing the components")
    t_settled = int(time.time() * 1000)
    lost = {c for c in COMPONENTS if "a3" in owners(c, names, 2)}
    # who takes each of a3's components: the survivor that did not have it
    takers = {c: set(owners(c, ["a1", "a2"], 2)) - set(owners(c, names, 2)) for c in lost}

    procs["a3"].kill()
    t_kill = int(time.time() * 1000)
    poll(lambda: len(first_runs_after(db, t_kill, {"a1", "a2"}, lost)) == len(lost)
         and all(takers[c] <= watchers(db, t_kill)[c] for c in lost), timeout=15, what="a3's components taken over")
    first = _first_by(db, t_kill)
    firsts = {c: min(first[(c, agent)] for agent in takers[c]) for c in lost}
    delays = sorted((ts - t_kill) / 1000 for ts in firsts.values())
    print(f"\nreplicas 2: a3's {len(lost)} components probed by their new owner {delays} s after the SIGKILL "
          f"(heartbeat {HEARTBEAT_S} s)")
    assert max(delays) <= HEARTBEAT_S + 0.5  # 2/3 of a period to go stale, a quarter to be read, the probe at once

    # A new agent takes its share; a1 and a2 keep running (the same processes) and hand over what goes to a4.
    t_join = int(time.time() * 1000)
    procs["a4"] = start(spawn, cfg, "a4")
    now_names = ["a1", "a2", "a4"]
    poll(lambda: settled(db, now_names, 2), timeout=25, what="a4 taking its share")
    assert procs["a1"].proc.poll() is None and procs["a2"].proc.poll() is None
    assert "share:" in procs["a4"].log
    # what a1/a2 gave to a4 was released by them after a4 had stored its own change of it
    released = store_rows(db, f"SELECT component, agent, ts_ms FROM slawatch_state WHERE released = 1 "
                              f"AND ts_ms > {t_join}")
    assert {str(c) for c, _, _ in released} == {c for c in COMPONENTS if "a4" in owners(c, now_names, 2)}
    first_a4 = {str(c): int(str(ts)) for c, ts in store_rows(
        db, "SELECT component, min(ts_ms) FROM slawatch_state WHERE agent = 'a4' GROUP BY component")}
    for component, agent, ts in released:
        if agent in ("a1", "a2"):
            assert first_a4[str(component)] <= int(str(ts)), (component, agent)

    t_end = int(time.time() * 1000) - 1000
    results = report(db, Interval(t_settled, t_end))
    for c, a in results.items():
        assert a.unmonitored_ms == 0, (c, a.unmonitored)
        assert a.up_ms == t_end - t_settled
    for a in ("a1", "a2", "a4"):
        assert procs[a].stop() == 0
    assert store_rows(db, "SELECT agent FROM slawatch_agent") == [("a3",)]  # a clean stop removes the lease

    # `slawatch agents`: a3's stale lease is a WARNING (exit 1)
    out = subprocess.run([sys.executable, "-m", "slawatch.cli", "agents", "-c", str(cfg), "--format", "json"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1, out.stderr
    doc = json.loads(out.stdout)
    assert [(r["agent"], r["live"], r["assign"], r["replicas"]) for r in doc["agents"]] == [("a3", False, "auto", 2)]


def _first_by(db: Path, t_ms: int) -> dict[tuple[str, str], int]:
    return {(str(c), str(a)): int(str(ts)) for c, a, ts in store_rows(
        db, f"SELECT component, agent, min(ts_ms) FROM slawatch_probe WHERE ts_ms > {t_ms} GROUP BY component, agent")}


@pytest.mark.timeout(60)
def test_one_replica_gap_is_bounded_by_the_detection_time(tmp_path: Path, tcp_target: TcpTarget,
                                                         spawn: Spawn) -> None:
    cfg = write_config(tmp_path, tcp_target.port, replicas=1)
    db = tmp_path / "store.db"
    names = ["b1", "b2"]
    procs = {a: start(spawn, cfg, a) for a in names}
    poll(lambda: settled(db, names, 1), timeout=40, what="two agents sharing the components")
    t_settled = int(time.time() * 1000)
    lost = {c for c in COMPONENTS if owners(c, names, 1) == ("b2",)}
    assert lost
    procs["b2"].kill()
    t_kill = int(time.time() * 1000)
    poll(lambda: all("b1" in w for c, w in watchers(db, t_kill).items() if c in lost), timeout=15,
         what="b2's components taken over")
    time.sleep(HEARTBEAT_S)  # b1's first changes and heartbeats stored
    t_end = int(time.time() * 1000)
    results = report(db, Interval(t_settled, t_end))
    gaps = {c: results[c].unmonitored_ms / 1000 for c in lost}
    print(f"\nreplicas 1: unmonitored after SIGKILL of b2: {sorted(gaps.values())} s (heartbeat {HEARTBEAT_S} s)")
    # b2's last heartbeat vouches for one period; b1 sees b2 stale within 2/3 + 1/4 of a period and probes at once
    assert all(g <= HEARTBEAT_S for g in gaps.values())
    assert all(results[c].unmonitored_ms == 0 for c in COMPONENTS if c not in lost)
    assert procs["b1"].stop() == 0

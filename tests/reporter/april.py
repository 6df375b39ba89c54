"""April 2026 for the reporter tests: contract, config, an in-memory Source, stored history, a full report."""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

from reporter.periods import month_period
from reporter.report import Report, build_month_report
from slawatch.cli import report as report_cli
from slawatch.config.loader import Loaded, load
from slawatch.model import (
    AgentHeartbeats,
    ComponentRef,
    Heartbeat,
    Heartbeats,
    MaintenanceWindow,
    StateChange,
)
from slawatch.store.sqlite import SqliteSink

S = 1000
M = 60 * S
H = 60 * M
D = 24 * H
APRIL = month_period(2026, 4, "UTC")  # 30 days: the 720 h basis exactly

CONTRACT = """\
name: test-sla
version: "7"
tiers: [base, silver, gold, platinum]
classes:
  network: {base: 99, silver: 99.99, gold: 99.99, platinum: 99.99}
  sip:     {base: 99, silver: 99,    gold: 99,    platinum: 99}
  vlan:    {base: 99, silver: 99,    gold: 99.8,  platinum: 99.8}
basis: 720h
maintenance_notice: 72h
unmonitored: up
quorum: majority
decimals: 3
"""

CONFIG = """\
agent: {{id: mon-test}}
storage: {{sqlite: {{path: store.db}}, spool: {{path: spool}}}}
contract: contract.yaml
customers:
  - {{name: acme, tier: gold, report_to: [noc@acme.example, cto@acme.example]}}
  - name: globex
    tier: gold
    report_to: [ops@globex.example]
    policy: {{unmonitored: down, decimals: 2}}
components:
  - {{name: core-router, class: network, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}
  - {{name: sip-core, class: sip, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}
  - {{name: edge-router, class: network, customer: globex, probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}
  - {{name: lab-vlan, class: vlan, tier: base, probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}
report:
  timezone: UTC
  smtp: {{host: 127.0.0.1, port: {smtp_port}, from: slawatch@provider.example}}
{archive}"""


def write_config(tmp_path: Path, smtp_port: int = 2525, archive: str | None = None) -> Path:
    (tmp_path / "contract.yaml").write_text(CONTRACT, encoding="utf-8")
    path = tmp_path / "slawatch.yaml"
    extra = f"  archive: {archive}\n" if archive else ""
    path.write_text(CONFIG.format(smtp_port=smtp_port, archive=extra), encoding="utf-8")
    return path


def loaded_config(tmp_path: Path, **kwargs: object) -> Loaded:
    return load(write_config(tmp_path, **kwargs))  # type: ignore[arg-type]


def beats(start_ms: int, end_ms: int, every_ms: int = M, gaps: Sequence[tuple[int, int]] = ()) -> list[int]:
    """Heartbeats from 3 minutes before start to end, none inside the gaps."""
    return [t for t in range(start_ms - 3 * every_ms, end_ms, every_ms)
            if not any(a <= t < b for a, b in gaps)]


REFS = {
    "core-router": ComponentRef("core-router", "network", "gold", "acme"),
    "sip-core": ComponentRef("sip-core", "sip", "gold", "acme"),
    "edge-router": ComponentRef("edge-router", "network", "gold", "globex"),
    "lab-vlan": ComponentRef("lab-vlan", "vlan", "base", ""),
}
"""The tags the agent stores with each component of CONFIG."""


class FakeSource:
    """An in-memory Source with the semantics of the stores, returning the slawatch.model types."""

    def __init__(self, changes: Sequence[StateChange] = (), heartbeats: Heartbeats | None = None,
                 windows: Sequence[MaintenanceWindow] = ()) -> None:
        self._changes = list(changes)
        self._heartbeats = heartbeats or {}
        self._windows = list(windows)
        self.sent: dict[tuple[str, str], tuple[int, str]] = {}
        self.reads = 0
        self.closed = False

    async def changes(self, start_ms: int, end_ms: int, components: Sequence[str] | None = None) -> list[StateChange]:
        self.reads += 1
        wanted = [c for c in self._changes if components is None or c.ref.component in components]
        inside = [c for c in wanted if start_ms <= c.ts_ms < end_ms]
        last: dict[tuple[str, str], StateChange] = {}
        for c in sorted(wanted, key=lambda c: c.ts_ms):
            if c.ts_ms < start_ms:
                last[(c.ref.component, c.agent)] = c
        return [*last.values(), *inside]

    async def heartbeats(self, start_ms: int, end_ms: int) -> Heartbeats:
        out = {}
        for agent, hb in self._heartbeats.items():
            margin = round(3 * hb.period_s * 1000)
            out[agent] = AgentHeartbeats(agent, [t for t in hb.instants_ms if start_ms - margin <= t < end_ms],
                                         hb.period_s)
        return out

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[MaintenanceWindow]:
        return [w for w in self._windows if (end_ms is None or w.start_ms < end_ms)
                and (start_ms is None or w.end_ms > start_ms)]

    async def add_window(self, window: MaintenanceWindow) -> None:
        self._windows.append(window)

    async def remove_window(self, id: str) -> bool:
        before = len(self._windows)
        self._windows = [w for w in self._windows if w.id != id]
        return len(self._windows) < before

    async def report_sent(self, period_key: str, customer: str) -> bool:
        return (period_key, customer) in self.sent

    async def record_report_sent(self, period_key: str, customer: str, sent_ms: int, sha256: str) -> None:
        self.sent[(period_key, customer)] = (sent_ms, sha256)

    async def close(self) -> None:
        self.closed = True


def change(component: str, ts_ms: int, up: bool, reason: str = "", agent: str = "mon-1") -> StateChange:
    return StateChange(REFS[component], agent, ts_ms, up, reason)


def outage(component: str, start_ms: int, length_ms: int, reason: str = "timeout", agent: str = "mon-1",
           ) -> list[StateChange]:
    return [change(component, start_ms, False, reason, agent), change(component, start_ms + length_ms, True, "", agent)]


def up_since(component: str, ts_ms: int, agent: str = "mon-1") -> StateChange:
    return change(component, ts_ms, True, "", agent)


def april_source(core_outage_ms: int = 5 * M, gap: tuple[int, int] | None = None,
                 windows: Sequence[MaintenanceWindow] = ()) -> FakeSource:
    """April 2026: core-router down `core_outage_ms` on the 10th, sip-core and edge-router always up,
    lab-vlan never seen; agent mon-1 beats every minute (except in `gap`)."""
    t0 = APRIL.start_ms
    changes = [up_since("core-router", t0 - 5 * D), up_since("sip-core", t0 - 5 * D),
               up_since("edge-router", t0 - 5 * D),
               *outage("core-router", t0 + 9 * D + 12 * H, core_outage_ms, reason="ICMP 100 % loss")]
    hb = beats(t0 - D, APRIL.end_ms + D, gaps=[gap] if gap else [])
    return FakeSource(changes, {"mon-1": AgentHeartbeats("mon-1", hb, 60.0)}, windows)


async def fill_sqlite_store(loaded: Loaded) -> None:
    """What the agent would have written in April: core-router down 5 minutes, mon-1 beating every minute."""
    assert loaded.config.storage.sqlite is not None
    sink = SqliteSink(loaded.config.storage.sqlite)
    core = ComponentRef("core-router", "network", "gold", "acme")
    sip = ComponentRef("sip-core", "sip", "gold", "acme")
    t0 = APRIL.start_ms
    down = t0 + 9 * D + 12 * H
    try:
        await sink.write([StateChange(core, "mon-1", t0 - D, True, ""), StateChange(sip, "mon-1", t0 - D, True, ""),
                          StateChange(core, "mon-1", down, False, "ICMP 100 % loss"),
                          StateChange(core, "mon-1", down + 5 * M, True, ""),
                          *(Heartbeat("mon-1", t, 60.0) for t in beats(t0 - D, APRIL.end_ms + D))])
    finally:
        await sink.close()


async def fixed_report(tmp_path: Path) -> Report:
    """April 2026 with a bit of everything: a breach under a late-notice window, excused maintenance,
    an hour without monitoring, a policy override, a component never seen, text that needs escaping, a degraded
    spell."""
    t0 = APRIL.start_ms
    late = MaintenanceWindow("w-late", "customer", "acme", t0 + 9 * D + 12 * H, t0 + 9 * D + 13 * H,
                             t0 + 9 * D + 11 * H, "emergency fix", t0 + 9 * D + 11 * H)
    timely = MaintenanceWindow("w-timely", "component", "sip-core", t0 + 14 * D + 2 * H, t0 + 14 * D + 4 * H,
                               t0 + 7 * D, "SBC upgrade", t0 + 7 * D)
    source = april_source(gap=(t0 + 20 * D, t0 + 20 * D + H), windows=[late, timely])
    source._changes += [
        change("sip-core", t0 + 14 * D + 2 * H + 10 * M, False, "SIP 503 <Service Unavailable> & co"),
        change("sip-core", t0 + 14 * D + 2 * H + 40 * M, True, ""),
        # 45 minutes degraded: up for the contract, shown apart.
        StateChange(REFS["sip-core"], "mon-1", t0 + 4 * D + 3 * H, True, "pool short of members: 1 of 3 up", True),
        change("sip-core", t0 + 4 * D + 3 * H + 45 * M, True, ""),
        change("edge-router", t0 + 27 * D + 23 * H + 59 * M, False, "timeout"),
        change("edge-router", t0 + 27 * D + 23 * H + 59 * M + 1_234, True, ""),
    ]
    return await build_month_report(loaded_config(tmp_path), source, 2026, 4)


NOW_MS = 1_777_615_200_000  # 2026-05-01T06:00:00Z, when the April reports go out


def run_cli(argv: list[str]) -> int:
    """`slawatch report ARGV` in this process: its exit status."""
    parser = argparse.ArgumentParser(prog="slawatch")
    report_cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))

"""Building a Report from config + contract + a Source: the figures come from the engine, per customer policy."""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from reporter.periods import Period, month_period
from reporter.report import ReportError, build_month_report, build_report, iso_ms, policy_for
from slawatch.cli import report as cli
from slawatch.config.loader import Loaded, load
from slawatch.model import AgentHeartbeats, ComponentRef, Heartbeats, StateChange
from slawatch.model import MaintenanceWindow as StoredWindow

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


REFS = {ref.component: ref for ref in (
    ComponentRef("core-router", "network", "gold", "acme"), ComponentRef("sip-core", "sip", "gold", "acme"),
    ComponentRef("edge-router", "network", "gold", "globex"), ComponentRef("lab-vlan", "vlan", "base", ""))}
"""The components of CONFIG as the agent stores them."""


def StoredChange(component: str, agent: str, ts_ms: int, up: bool, reason: str) -> StateChange:
    """A change of one of CONFIG's components, with its tags as stored."""
    return StateChange(REFS[component], agent, ts_ms, up, reason)


def beats(start_ms: int, end_ms: int, every_ms: int = M, gaps: Sequence[tuple[int, int]] = ()) -> list[int]:
    """Heartbeats from 3 minutes before start to end, none inside the gaps."""
    return [t for t in range(start_ms - 3 * every_ms, end_ms, every_ms)
            if not any(a <= t < b for a, b in gaps)]


class FakeSource:
    """An in-memory Source with the semantics of slawatch.store's stores."""

    def __init__(self, changes: Sequence[StateChange] = (),
                 heartbeats: dict[str, tuple[list[int], float]] | None = None,
                 windows: Sequence[StoredWindow] = ()) -> None:
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
        for agent, (ts, period_s) in self._heartbeats.items():
            margin = round(3 * period_s * 1000)
            out[agent] = AgentHeartbeats(agent, [t for t in ts if start_ms - margin <= t < end_ms], period_s)
        return out

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[StoredWindow]:
        return [w for w in self._windows if (end_ms is None or w.start_ms < end_ms)
                and (start_ms is None or w.end_ms > start_ms)]

    async def add_window(self, window: StoredWindow) -> None:
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


def outage(component: str, start_ms: int, length_ms: int, reason: str = "timeout", agent: str = "mon-1",
           ) -> list[StateChange]:
    return [StoredChange(component, agent, start_ms, False, reason),
            StoredChange(component, agent, start_ms + length_ms, True, "")]


def up_since(component: str, ts_ms: int, agent: str = "mon-1") -> StateChange:
    return StoredChange(component, agent, ts_ms, True, "")


def april_source(core_outage_ms: int = 5 * M, gap: tuple[int, int] | None = None,
                 windows: Sequence[StoredWindow] = ()) -> FakeSource:
    """April 2026: core-router down `core_outage_ms` on the 10th, sip-core and edge-router always up,
    lab-vlan never seen; agent mon-1 beats every minute (except in `gap`)."""
    t0 = APRIL.start_ms
    changes = [up_since("core-router", t0 - 5 * D), up_since("sip-core", t0 - 5 * D),
               up_since("edge-router", t0 - 5 * D),
               *outage("core-router", t0 + 9 * D + 12 * H, core_outage_ms, reason="ICMP 100 % loss")]
    hb = beats(t0 - D, APRIL.end_ms + D, gaps=[gap] if gap else [])
    return FakeSource(changes, {"mon-1": (hb, 60.0)}, windows)


def by_name(report: object) -> dict[str, object]:
    return {c.name: c for c in report.components}  # type: ignore[attr-defined]


# ---------------------------------------------------------------- figures flow from the engine


async def test_five_minute_outage_on_gold_network_is_a_breach(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    report = await build_month_report(loaded, april_source(5 * M), 2026, 4)
    core = by_name(report)["core-router"]
    assert (core.klass, core.tier, core.customer, core.target_pct) == ("network", "gold", "acme", 99.99)
    r = core.result
    assert r.availability_pct == 99.988
    assert r.met is False
    assert r.downtime_ms == 300_000
    assert r.basis_ms == 720 * H
    assert [(o.start_ms, o.end_ms, o.reason, o.agents) for o in r.outages] == [
        (APRIL.start_ms + 9 * D + 12 * H, APRIL.start_ms + 9 * D + 12 * H + 5 * M, "ICMP 100 % loss", ("mon-1",))]
    assert r.error_budget_s == pytest.approx(259.2 - 300)
    assert report.label == "2026-04" and report.month == (2026, 4)
    assert report.period == APRIL


async def test_432_minutes_on_gold_network_just_meets_the_target(tmp_path: Path) -> None:
    report = await build_month_report(loaded_config(tmp_path), april_source(259_200), 2026, 4)
    r = by_name(report)["core-router"].result
    assert (r.availability_pct, r.met) == (99.99, True)
    assert r.error_budget_s == 0


async def test_every_configured_component_with_its_target(tmp_path: Path) -> None:
    report = await build_month_report(loaded_config(tmp_path), april_source(), 2026, 4)
    assert [(c.name, c.klass, c.tier, c.customer, c.target_pct) for c in report.components] == [
        ("core-router", "network", "gold", "acme", 99.99),
        ("sip-core", "sip", "gold", "acme", 99.0),
        ("edge-router", "network", "gold", "globex", 99.99),
        ("lab-vlan", "vlan", "base", None, 99.0),
    ]
    assert by_name(report)["sip-core"].result.availability_pct == 100.0
    assert [c.name for c in report.customers] == ["acme", "globex"]
    assert report.contract_name == "test-sla" and report.contract_version == "7"


async def test_no_data_at_all_gives_no_availability(tmp_path: Path) -> None:
    report = await build_month_report(loaded_config(tmp_path), april_source(), 2026, 4)
    lab = by_name(report)["lab-vlan"]
    assert lab.result.availability_pct is None
    assert lab.result.ratio is None
    assert lab.result.met is None
    assert lab.result.unmonitored_ms == APRIL.duration_ms


async def test_an_empty_store_gives_null_everywhere(tmp_path: Path) -> None:
    report = await build_month_report(loaded_config(tmp_path), FakeSource(), 2026, 4)
    assert {c.name: c.result.availability_pct for c in report.components} == dict.fromkeys(
        ["core-router", "sip-core", "edge-router", "lab-vlan"])


async def test_customer_policy_overrides_the_contract(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    gap = (APRIL.start_ms + 20 * D, APRIL.start_ms + 20 * D + H)  # the agent was down one hour
    report = await build_month_report(loaded, april_source(gap=gap), 2026, 4)
    acme = by_name(report)["core-router"]
    globex = by_name(report)["edge-router"]
    assert acme.policy.unmonitored == "up" and acme.policy.decimals == 3
    assert globex.policy.unmonitored == "down" and globex.policy.decimals == 2
    unmonitored = H  # the last beat before the gap vouches for the minute up to it
    assert acme.result.unmonitored_ms == globex.result.unmonitored_ms == unmonitored
    assert acme.result.downtime_ms == 5 * M  # unmonitored is not downtime for acme
    assert globex.result.downtime_ms == unmonitored  # ... and is for globex
    assert globex.result.availability_pct == 99.86  # 1 - 3600/2592000 = 99.8611 %, floored to 2 decimals
    assert report.customer("globex").policy.unmonitored == "down"  # type: ignore[union-attr]
    assert report.policy.unmonitored == "up"  # the contract's own


def test_policy_for_a_custom_range_counts_on_the_real_length(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    acme = loaded.config.customer("acme")
    assert policy_for(loaded.contract, acme).basis == "720h"
    assert policy_for(loaded.contract, acme, custom_range=True).basis == "period"
    assert policy_for(loaded.contract, None).maintenance_notice_s == 72 * 3600


async def test_custom_range_uses_the_period_length_as_basis(tmp_path: Path) -> None:
    week = Period(APRIL.start_ms + 7 * D, APRIL.start_ms + 14 * D)
    report = await build_report(loaded_config(tmp_path), april_source(), week)
    r = by_name(report)["core-router"].result
    assert r.basis_ms == 7 * D
    assert r.downtime_ms == 5 * M
    assert r.availability_pct == 99.950  # 1 - 300/604800 = 99.9504 %
    assert report.month is None
    assert report.label == f"{iso_ms(week.start_ms)}/{iso_ms(week.end_ms)}"


async def test_timely_maintenance_is_cut_out_and_late_notice_is_not(tmp_path: Path) -> None:
    start = APRIL.start_ms + 9 * D + 12 * H
    timely = StoredWindow("w-timely", "class", "network", start, start + H, start - 4 * D, "firmware", start - 4 * D)
    report = await build_month_report(loaded_config(tmp_path), april_source(windows=[timely]), 2026, 4)
    core = by_name(report)["core-router"].result
    assert (core.downtime_ms, core.maintenance_ms, core.availability_pct, core.met) == (0, 5 * M, 100.0, True)
    assert core.outages[0].window_ids == ("w-timely",)

    late = StoredWindow("w-late", "customer", "acme", start, start + H, start - H, "emergency", start - H)
    report = await build_month_report(loaded_config(tmp_path), april_source(windows=[late]), 2026, 4)
    core = by_name(report)["core-router"].result
    assert (core.downtime_ms, core.maintenance_ms, core.met) == (5 * M, 0, False)
    assert core.outages[0].late_notice is True
    # A window for another customer's components does not touch acme's.
    assert by_name(report)["edge-router"].result.maintenance_ms == 0


async def test_component_and_customer_filters(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    report = await build_month_report(loaded, april_source(), 2026, 4, components=["core-router", "lab-vlan"])
    assert [c.name for c in report.components] == ["core-router", "lab-vlan"]
    assert [c.name for c in report.customers] == ["acme"]
    report = await build_month_report(loaded, april_source(), 2026, 4, customer="acme")
    assert [c.name for c in report.components] == ["core-router", "sip-core"]
    with pytest.raises(ReportError, match=r"unknown component.*nope"):
        await build_month_report(loaded, april_source(), 2026, 4, components=["nope"])
    with pytest.raises(ReportError, match="unknown customer 'initech'"):
        await build_month_report(loaded, april_source(), 2026, 4, customer="initech")


async def test_inputs_hash_is_stable_and_follows_every_input(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    first = await build_month_report(loaded, april_source(), 2026, 4)
    again = await build_month_report(loaded, april_source(), 2026, 4)
    assert first.inputs_sha256 == again.inputs_sha256
    assert len(first.inputs_sha256) == 64
    longer = await build_month_report(loaded, april_source(6 * M), 2026, 4)
    gap = await build_month_report(loaded, april_source(gap=(APRIL.start_ms + H, APRIL.start_ms + 2 * H)), 2026, 4)
    win = StoredWindow("w", "component", "core-router", APRIL.start_ms, APRIL.start_ms + H, 0, "", 0)
    windowed = await build_month_report(loaded, april_source(windows=[win]), 2026, 4)
    may = await build_month_report(loaded, april_source(), 2026, 5)
    hashes = {r.inputs_sha256 for r in (first, longer, gap, windowed, may)}
    assert len(hashes) == 5


async def test_progress_is_reported_per_component(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    await build_month_report(loaded_config(tmp_path), april_source(), 2026, 4,
                             progress=lambda done, total: calls.append((done, total)))
    assert calls == [(1, 4), (2, 4), (3, 4), (4, 4)]


# ---------------------------------------------------------------- the command line


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slawatch")
    sub = parser.add_subparsers(dest="command")
    cli.register(sub)
    args = parser.parse_args(argv)
    return int(args.func(args))


@pytest.mark.parametrize("start, end", [
    ("2026-04-10T00:00:00Z", "2026-04-10T00:00:00Z"),
    ("2026-04-11", "2026-04-10"),
])
def test_from_not_before_to_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], start: str, end: str) -> None:
    path = write_config(tmp_path)
    assert run_cli(["report", "--config", str(path), "--from", start, "--to", end]) == 2
    assert "--from must be before --to" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["--month", "2026-13"], "invalid month '2026-13'"),
    (["--from", "2026-04-01"], "--from needs --to"),
    (["--month", "2026-04", "--to", "2026-05-01"], "--to goes with --from"),
    (["--from", "yesterday", "--to", "2026-05-01"], "invalid --from 'yesterday'"),
    (["--month", "2026-04", "--customer", "initech"], "unknown customer 'initech'"),
    (["--month", "2026-04", "--component", "nope"], "unknown component(s): nope"),
])
def test_bad_arguments_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str],
                              message: str) -> None:
    path = write_config(tmp_path)
    assert run_cli(["report", "--config", str(path), *argv]) == 2
    assert message in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("components: 3\n", encoding="utf-8")
    assert run_cli(["report", "--config", str(path), "--month", "2026-04"]) == 2
    assert "components" in capsys.readouterr().err


def test_cli_missing_store_exits_1_with_the_reason(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    assert run_cli(["report", "--config", str(path), "--month", "2026-04"]) == 1
    assert "store.db does not exist" in capsys.readouterr().err


async def fill_sqlite_store(loaded: Loaded) -> None:
    """What the agent would have written in April: core-router down 5 minutes, mon-1 beating every minute."""
    from slawatch.model import ComponentRef, Heartbeat, StateChange
    from slawatch.store.sqlite import SqliteSink

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


def test_cli_json_from_a_real_sqlite_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    path = write_config(tmp_path)
    asyncio.run(fill_sqlite_store(load(path)))
    out = tmp_path / "report.json"
    argv = ["report", "--config", str(path), "--month", "2026-04", "--format", "json", "--out", str(out)]
    assert run_cli(argv) == 0
    first = out.read_bytes()
    doc = json.loads(first)
    assert doc["period"] == {"from": "2026-04-01T00:00:00.000Z", "to": "2026-05-01T00:00:00.000Z",
                             "basis_s": 2592000.0, "length_s": 2592000.0, "label": "2026-04", "timezone": "UTC",
                             "kind": "month"}
    figures = {c["name"]: (c["availability_pct"], c["met"], c["downtime_s"]) for c in doc["components"]}
    assert figures == {"core-router": (99.988, False, 300.0), "sip-core": (100.0, True, 0.0),
                       # globex counts unmonitored time as down: no data is all downtime, still no percentage.
                       "edge-router": (None, None, 2592000.0), "lab-vlan": (None, None, 0.0)}
    assert doc["components"][0]["outages"][0]["start"] == "2026-04-10T12:00:00.000Z"
    assert capsys.readouterr().out == ""
    assert run_cli(argv) == 0
    assert out.read_bytes() == first  # the same store gives the same bytes


def test_cli_custom_range_text(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    import asyncio

    path = write_config(tmp_path)
    asyncio.run(fill_sqlite_store(load(path)))
    assert run_cli(["report", "--config", str(path), "--from", "2026-04-08", "--to", "2026-04-15T00:00:00+00:00",
                    "--component", "core-router"]) == 0
    out = capsys.readouterr().out
    assert "SLA availability report 2026-04-08T00:00:00.000Z/2026-04-15T00:00:00.000Z" in out
    assert "basis period" in out
    assert "99.950 %" in out  # 300 s of 7 days
    assert "2026-04-10T12:00:00.000Z" in out
    assert "sip-core" not in out

"""Building a Report from config + contract + a Source: the figures come from the engine, per customer policy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from reporter.periods import iso_ms
from reporter.report import ReportError, build_month_report, build_report, policy_for
from slawatch.config.loader import load
from slawatch.model import AgentHeartbeats, ComponentRef, Interval, MaintenanceWindow, StateChange
from tests.reporter.april import (
    APRIL,
    D,
    FakeSource,
    H,
    M,
    april_source,
    beats,
    fill_sqlite_store,
    loaded_config,
    run_cli,
    write_config,
)


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
    assert r.error_budget_ms == 259_200 - 300_000
    assert report.label == "2026-04" and report.month == (2026, 4)
    assert report.period == APRIL


async def test_432_minutes_on_gold_network_just_meets_the_target(tmp_path: Path) -> None:
    report = await build_month_report(loaded_config(tmp_path), april_source(259_200), 2026, 4)
    r = by_name(report)["core-router"].result
    assert (r.availability_pct, r.met) == (99.99, True)
    assert r.error_budget_ms == 0


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
    assert policy_for(loaded.contract, None).maintenance_notice_ms == 72 * H


async def test_custom_range_uses_the_period_length_as_basis(tmp_path: Path) -> None:
    week = Interval(APRIL.start_ms + 7 * D, APRIL.start_ms + 14 * D)
    report = await build_report(loaded_config(tmp_path), april_source(), week)
    r = by_name(report)["core-router"].result
    assert r.basis_ms == 7 * D
    assert r.downtime_ms == 5 * M
    assert r.availability_pct == 99.950  # 1 - 300/604800 = 99.9504 %
    assert report.month is None
    assert report.label == f"{iso_ms(week.start_ms)}/{iso_ms(week.end_ms)}"


async def test_timely_maintenance_is_cut_out_and_late_notice_is_not(tmp_path: Path) -> None:
    start = APRIL.start_ms + 9 * D + 12 * H
    timely = MaintenanceWindow("w-timely", "class", "network", start, start + H, start - 4 * D, "firmware",
                               start - 4 * D)
    report = await build_month_report(loaded_config(tmp_path), april_source(windows=[timely]), 2026, 4)
    core = by_name(report)["core-router"].result
    assert (core.downtime_ms, core.maintenance_ms, core.availability_pct, core.met) == (0, 5 * M, 100.0, True)
    assert core.outages[0].window_ids == ("w-timely",)

    late = MaintenanceWindow("w-late", "customer", "acme", start, start + H, start - H, "emergency", start - H)
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
    win = MaintenanceWindow("w", "component", "core-router", APRIL.start_ms, APRIL.start_ms + H, 0, "", 0)
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


# ---------------------------------------------------------------- class and tier as stored


def tier_changed_source(first: str, second: str) -> FakeSource:
    """lab-vlan (configured as base) stored as `first` until mid-April, then as `second`: 30 min down in the first
    half, 60 min in the second, one agent watching throughout."""
    t0, mid = APRIL.start_ms, APRIL.start_ms + 15 * D
    before, after = (ComponentRef("lab-vlan", "vlan", tier, "") for tier in (first, second))
    changes = [StateChange(before, "mon-1", t0 - 5 * D, True, ""),
               StateChange(before, "mon-1", t0 + 3 * D, False, "vlan 12 down"),
               StateChange(before, "mon-1", t0 + 3 * D + 30 * M, True, ""),
               # The agent reloads its config with the new tier and stores the state again under it.
               StateChange(after, "mon-1", mid, True, ""),
               StateChange(after, "mon-1", mid + 5 * D, False, "vlan 12 down"),
               StateChange(after, "mon-1", mid + 5 * D + H, True, "")]
    hb = AgentHeartbeats("mon-1", beats(t0 - D, APRIL.end_ms + D), 60.0)
    return FakeSource(changes, {"mon-1": hb})


async def test_a_tier_changed_mid_month_takes_the_target_in_force_at_the_end_and_counts_all_downtime(
        tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    report = await build_month_report(loaded, tier_changed_source("silver", "gold"), 2026, 4,
                                      components=["lab-vlan"])
    lab = by_name(report)["lab-vlan"]
    # gold vlan is 99.8 %; the configured base (and the first half's silver) would be 99 %, met.
    assert (lab.klass, lab.tier, lab.target_pct) == ("vlan", "gold", 99.8)
    assert lab.result.downtime_ms == 90 * M  # both halves
    assert (lab.result.availability_pct, lab.result.met) == (99.791, False)  # 1 - 5400/2592000
    assert [o.duration_ms for o in lab.result.outages] == [30 * M, H]
    # The other way round: silver at the end of the month, so silver's 99 %, met with the same downtime.
    back = by_name(await build_month_report(loaded, tier_changed_source("gold", "silver"), 2026, 4,
                                            components=["lab-vlan"]))["lab-vlan"]
    assert (back.tier, back.target_pct, back.result.downtime_ms, back.result.met) == ("silver", 99.0, 90 * M, True)
    # A report of the first half only ends while silver was in force.
    half = await build_report(loaded, tier_changed_source("silver", "gold"),
                              Interval(APRIL.start_ms, APRIL.start_ms + 15 * D), components=["lab-vlan"])
    assert (by_name(half)["lab-vlan"].tier, by_name(half)["lab-vlan"].result.downtime_ms) == ("silver", 30 * M)


async def test_a_stored_tier_the_contract_does_not_know_falls_back_to_the_configured_one(tmp_path: Path) -> None:
    report = await build_month_report(loaded_config(tmp_path), tier_changed_source("silver", "bronze"), 2026, 4,
                                      components=["lab-vlan"])
    lab = by_name(report)["lab-vlan"]
    assert (lab.tier, lab.target_pct, lab.result.downtime_ms) == ("base", 99.0, 90 * M)


async def test_a_component_without_stored_changes_has_its_configured_tier(tmp_path: Path) -> None:
    report = await build_month_report(loaded_config(tmp_path), FakeSource(), 2026, 4, components=["lab-vlan"])
    assert (report.components[0].klass, report.components[0].tier) == ("vlan", "base")


def test_cli_email_with_a_missing_store_says_so_once_and_exits_1(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path)
    assert run_cli(["report", "--config", str(path), "--month", "2026-04", "--email"]) == 1
    err = capsys.readouterr().err
    assert err.count("store.db does not exist") == 1 and "sent " not in err

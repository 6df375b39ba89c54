"""Tests of the availability engine: the contract's numbers as tables, its invariants as properties."""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reporter.availability import (
    AgentView,
    AgentViews,
    Availability,
    Outage,
    OutagePart,
    Policy,
    availability,
    coverage_from_heartbeats,
)
from reporter.periods import month_period
from slawatch.model import AgentHeartbeats, ComponentRef, Interval, MaintenanceWindow, StateChange

S = 1000
M = 60 * S
H = 60 * M
D = 24 * H
PARIS = "Europe/Paris"
APRIL = month_period(2026, 4, "UTC")  # 30 days: exactly the 720 h basis
MAY = month_period(2026, 5, "UTC")  # 31 days
NOTICE = 72 * H
REF = ComponentRef("sip-core", "sip", "gold", "acme")


def change(ts_ms: int, up: bool, reason: str = "", agent: str = "a") -> StateChange:
    """A state change of the one component these tests watch."""
    return StateChange(REF, agent, ts_ms, up, reason)


def mw(start: int, end: int, announced: int, reason: str = "", wid: str = "") -> MaintenanceWindow:
    return MaintenanceWindow(wid, "component", REF.component, start, end, announced, reason)


def watched(agent: str, changes: Sequence[StateChange], period: Interval = APRIL) -> AgentView:
    """An agent covering the whole period (and well beyond), with the given changes."""
    return AgentView(agent, changes, [Interval(period.start_ms - 40 * D, period.end_ms + 40 * D)])


def one_outage(start: int, end: int, reason: str = "SIP 503", period: Interval = APRIL) -> AgentView:
    return watched(
        "a", [change(period.start_ms - D, True, "ok"), change(start, False, reason), change(end, True, "ok")]
    )


def run(
    agents: Sequence[AgentView],
    windows: Sequence[MaintenanceWindow] = (),
    policy: Policy | None = None,
    target: float = 99.99,
    period: Interval = APRIL,
) -> Availability:
    return availability(period, agents, windows, policy or Policy(), target)


def window(start: int, end: int, notice: int = NOTICE, wid: str = "w1") -> MaintenanceWindow:
    return mw(start, end, start - notice, "planned upgrade", wid)


T0 = APRIL.start_ms + 10 * D  # an ordinary instant mid-month


# --- the contract's numbers -------------------------------------------------------------------------


def test_432_minutes_on_720h_is_exactly_9999_and_meets_9999() -> None:
    a = run([one_outage(T0, T0 + 259_200)])  # 4.32 min
    assert a.down_ms / 1000 == 259.2
    assert a.downtime_ms / 1000 == 259.2
    assert a.availability_pct == 99.99
    assert a.met is True
    assert a.error_budget_ms / 1000 == 0.0
    assert a.basis_ms / 1000 == 2_592_000.0


def test_5_minutes_is_99988_and_breaches_9999() -> None:
    a = run([one_outage(T0, T0 + 5 * M)])
    assert a.availability_pct == 99.988
    assert a.met is False
    assert a.error_budget_ms / 1000 == pytest.approx(-40.8)


def test_864_minutes_meets_998_exactly() -> None:
    a = run([one_outage(T0, T0 + 86 * M + 24 * S)], target=99.8)
    assert a.availability_pct == 99.8
    assert a.met is True
    assert a.error_budget_ms / 1000 == 0.0
    b = run([one_outage(T0, T0 + 86 * M + 24 * S + 1)], target=99.8)  # one more millisecond
    assert b.met is False
    assert b.availability_pct == 99.799


def test_met_is_decided_exactly_not_in_binary_floating_point() -> None:
    # 285.12 s on 720 h is exactly 99.989 %; in floats 0.99989 * 100 == 99.98899999999999.
    a = run([one_outage(T0, T0 + 285_120)], target=99.989)
    assert a.availability_pct == 99.989
    assert a.met is True
    assert a.error_budget_ms / 1000 == 0.0


def test_percentage_is_floored_never_rounded_up() -> None:
    a = run([one_outage(T0, T0 + 270_086)])  # 99.98958... %
    assert a.availability_pct == 99.989
    assert a.met is False
    two = run([one_outage(T0, T0 + 270_086)], policy=Policy(decimals=2))
    assert two.availability_pct == 99.98
    zero = run([one_outage(T0, T0 + 270_086)], policy=Policy(decimals=0))
    assert zero.availability_pct == 99.0


def test_720h_basis_ignores_month_length_and_period_basis_uses_it() -> None:
    may_t0 = MAY.start_ms + 10 * D
    a = run([one_outage(may_t0, may_t0 + 259_200, period=MAY)], period=MAY)
    assert a.availability_pct == 99.99
    assert a.up_ms / 1000 == 31 * 86400 - 259.2
    b = run([one_outage(may_t0, may_t0 + 259_200, period=MAY)], policy=Policy(basis="period"), period=MAY)
    assert b.basis_ms / 1000 == 744 * 3600
    assert b.availability_pct == 99.990  # 99.99032...
    assert b.ratio == pytest.approx(1 - 259.2 / (744 * 3600))


def test_downtime_above_the_basis_gives_zero_never_negative() -> None:
    # Down all of May: 744 h of downtime on a 720 h basis.
    a = run([watched("a", [change(MAY.start_ms - D, False, "power")], MAY)], period=MAY)
    assert a.down_ms / 1000 == 744 * 3600
    assert a.availability_pct == 0.0
    assert a.ratio == 0.0
    assert a.met is False
    assert a.error_budget_ms / 1000 == pytest.approx(259.2 - 744 * 3600)


def test_always_up_is_100() -> None:
    a = run([watched("a", [change(APRIL.start_ms - 5 * D, True, "ok")])])
    assert (a.availability_pct, a.ratio, a.met, a.outages) == (100.0, 1.0, True, ())
    assert a.up_ms / 1000 == 720 * 3600
    assert a.error_budget_ms / 1000 == pytest.approx(259.2)


def test_no_data_gives_none() -> None:
    a = run([])
    assert (a.ratio, a.availability_pct, a.met) == (None, None, None)
    assert a.unmonitored_ms / 1000 == 720 * 3600
    assert a.unmonitored == (Interval(APRIL.start_ms, APRIL.end_ms),)
    silent = run([AgentView("a", [change(T0, False, "x")], [])])  # never covered
    assert silent.ratio is None and silent.down_ms / 1000 == 0


# --- outages, periods and maintenance -----------------------------------------------------------------


def test_outage_across_month_boundary_is_split() -> None:
    march, april = month_period(2026, 3, PARIS), month_period(2026, 4, PARIS)
    boundary = april.start_ms
    view = AgentView(
        "a",
        [
            change(boundary - 40 * D, True, "ok"),
            change(boundary - H, False, "link down"),
            change(boundary + 2 * H, True, "ok"),
        ],
        [Interval(boundary - 60 * D, boundary + 60 * D)],
    )
    in_march = run([view], period=march)
    in_april = run([view], period=april)
    assert in_march.outages == (
        Outage(boundary - H, boundary, H, 0, "link down", ("a",), False, (),
               (OutagePart(boundary - H, boundary, "counted"),)),
    )
    assert in_april.outages == (
        Outage(boundary, boundary + 2 * H, 2 * H, 0, "link down", ("a",), False, (),
               (OutagePart(boundary, boundary + 2 * H, "counted"),)),
    )
    assert in_march.up_ms / 1000 == 743 * 3600 - 3600
    assert in_april.down_ms / 1000 == 7200


def test_state_before_the_period_carries_in() -> None:
    view = watched(
        "a",
        [
            change(APRIL.start_ms - 3 * H, False, "upsOutputSource=battery(5)"),
            change(APRIL.start_ms + 30 * M, True, "ok"),
        ],
    )
    a = run([view])
    assert a.down_ms / 1000 == 1800
    assert a.unmonitored_ms / 1000 == 0
    assert [(o.start_ms, o.end_ms, o.reason) for o in a.outages] == [
        (APRIL.start_ms, APRIL.start_ms + 30 * M, "upsOutputSource=battery(5)")
    ]


def test_outage_entirely_inside_a_timely_window() -> None:
    a = run([one_outage(T0 + H, T0 + 2 * H)], [window(T0, T0 + 3 * H)])
    assert (a.down_ms / 1000, a.maintenance_ms / 1000, a.up_ms / 1000) == (0.0, 3600.0, 720 * 3600 - 3600.0)
    assert a.availability_pct == 100.0
    (o,) = a.outages
    assert (o.duration_ms / 1000, o.counted_ms / 1000, o.maintenance_ms / 1000, o.late_notice, o.window_ids) == (
        3600.0,
        0.0,
        3600.0,
        False,
        ("w1",),
    )


def test_outage_partly_inside_a_window_and_up_time_in_window_stays_up() -> None:
    a = run([one_outage(T0, T0 + 2 * H)], [window(T0 + H, T0 + 3 * H)])
    assert (a.down_ms / 1000, a.maintenance_ms / 1000) == (3600.0, 3600.0)
    assert a.up_ms / 1000 == 720 * 3600 - 7200
    (o,) = a.outages
    assert (o.duration_ms / 1000, o.counted_ms / 1000, o.maintenance_ms / 1000) == (7200.0, 3600.0, 3600.0)


def test_overlapping_windows_do_not_double_count() -> None:
    windows = [window(T0, T0 + 2 * H, wid="w1"), window(T0 + H, T0 + 3 * H, wid="w2")]
    a = run([one_outage(T0, T0 + 3 * H)], windows)
    assert (a.down_ms / 1000, a.maintenance_ms / 1000) == (0.0, 3 * 3600.0)
    assert a.outages[0].window_ids == ("w1", "w2")
    assert a.availability_pct == 100.0


def test_late_notice_window_stays_downtime_and_is_flagged() -> None:
    late = window(T0, T0 + 2 * H, notice=NOTICE - 1)  # announced one millisecond too late
    a = run([one_outage(T0, T0 + H)], [late])
    assert (a.down_ms / 1000, a.maintenance_ms / 1000) == (3600.0, 0.0)
    assert a.outages[0].late_notice is True
    assert a.outages[0].window_ids == ("w1",)
    on_time = run([one_outage(T0, T0 + H)], [window(T0, T0 + 2 * H, notice=NOTICE)])
    assert (on_time.down_ms, on_time.maintenance_ms, on_time.outages[0].late_notice) == (0, H, False)


def test_late_window_inside_a_timely_window_is_excused() -> None:
    windows = [window(T0, T0 + 4 * H, wid="timely"), window(T0 + H, T0 + 2 * H, notice=H, wid="late")]
    a = run([one_outage(T0 + H, T0 + 2 * H)], windows)
    assert (a.down_ms / 1000, a.maintenance_ms / 1000, a.outages[0].late_notice) == (0.0, 3600.0, False)


def test_notice_rule_follows_the_policy() -> None:
    w = window(T0, T0 + 2 * H, notice=24 * H)
    assert run([one_outage(T0, T0 + H)], [w]).down_ms / 1000 == 3600
    assert run([one_outage(T0, T0 + H)], [w], Policy(maintenance_notice_ms=24 * H)).down_ms / 1000 == 0


def test_flapping_gives_one_outage_per_flap() -> None:
    changes = [change(APRIL.start_ms - D, True, "ok")]
    for i in range(10):
        changes += [change(T0 + i * 10 * M, False, f"flap {i}"), change(T0 + i * 10 * M + 90 * S, True, "ok")]
    a = run([watched("a", changes)])
    assert len(a.outages) == 10
    assert a.down_ms / 1000 == 900.0
    assert [o.reason for o in a.outages] == [f"flap {i}" for i in range(10)]
    assert a.availability_pct == 99.965  # 1 - 900/2592000 = 99.96527...


def test_repeated_down_changes_keep_the_first_reason() -> None:
    view = watched(
        "a",
        [
            change(T0 - D, True, "ok"),
            change(T0, False, "timeout"),
            change(T0 + M, False, "refused"),
            change(T0 + 2 * M, True, "ok"),
        ],
    )
    (o,) = run([view]).outages
    assert (o.start_ms, o.end_ms, o.reason) == (T0, T0 + 2 * M, "timeout")


def test_simultaneous_changes_down_wins() -> None:
    view = watched(
        "a",
        [
            change(T0 - D, True, "ok"),
            change(T0, True, "ok"),
            change(T0, False, "refused"),
            change(T0 + M, True, "ok"),
        ],
    )
    assert run([view]).down_ms / 1000 == 60


# --- unmonitored time -----------------------------------------------------------------------------------


def test_component_added_mid_period_is_unmonitored_before_its_first_change() -> None:
    mid = APRIL.start_ms + 15 * D
    view = watched(
        "a",
        [
            change(mid, True, "first probe ok"),
            change(mid + D, False, "down"),
            change(mid + D + 72 * M, True, "ok"),
        ],
    )
    up = run([view])
    assert (up.unmonitored_ms / 1000, up.down_ms / 1000, up.downtime_ms / 1000) == (15 * 86400.0, 72 * 60.0, 72 * 60.0)
    assert up.unmonitored == (Interval(APRIL.start_ms, mid),)
    assert up.availability_pct == 99.833  # 720 h basis: 72 min down = 99.8333...

    down = run([view], policy=Policy(unmonitored="down"))
    assert down.downtime_ms / 1000 == 15 * 86400.0 + 72 * 60.0
    assert down.down_ms / 1000 == 72 * 60.0
    assert down.availability_pct == 49.833

    excluded = run([view], policy=Policy(unmonitored="exclude", basis="period"))
    assert excluded.basis_ms / 1000 == 15 * 86400.0
    assert excluded.availability_pct == 99.666  # 72 min on 360 h = 99.6666...
    excluded_720 = run([view], policy=Policy(unmonitored="exclude"))
    assert excluded_720.basis_ms / 1000 == 360 * 3600.0


def test_agent_gap_is_unmonitored_and_splits_the_outage() -> None:
    view = AgentView(
        "a",
        [
            change(APRIL.start_ms - D, True, "ok"),
            change(T0, False, "timeout"),
            change(T0 + 3 * H, True, "ok"),
        ],
        [Interval(APRIL.start_ms - D, T0 + H), Interval(T0 + 2 * H, APRIL.end_ms + D)],
    )
    a = run([view])
    assert (a.down_ms / 1000, a.unmonitored_ms / 1000) == (7200.0, 3600.0)
    assert a.unmonitored == (Interval(T0 + H, T0 + 2 * H),)
    assert [(o.start_ms, o.end_ms, o.reason) for o in a.outages] == [
        (T0, T0 + H, "timeout"),
        (T0 + 2 * H, T0 + 3 * H, "timeout"),
    ]


def test_unmonitored_down_is_excused_inside_a_timely_window() -> None:
    view = AgentView(
        "a",
        [change(APRIL.start_ms - D, True, "ok")],
        [Interval(APRIL.start_ms, T0), Interval(T0 + 2 * H, APRIL.end_ms)],
    )
    a = run([view], [window(T0, T0 + H)], Policy(unmonitored="down"))
    assert (a.unmonitored_ms, a.downtime_ms, a.maintenance_ms, a.down_ms) == (7200 * S, 3600 * S, 0, 0)


def test_overlapping_and_nested_coverage_intervals_merge() -> None:
    cover = [Interval(APRIL.start_ms, T0 + D), Interval(T0, T0 + H), Interval(T0 + D - H, APRIL.end_ms)]
    a = run([AgentView("a", [change(APRIL.start_ms - D, True, "ok")], cover)])
    assert (a.unmonitored_ms / 1000, a.up_ms / 1000) == (0.0, 720 * 3600.0)


def test_another_agent_fills_a_gap() -> None:
    a_view = AgentView("a", [change(APRIL.start_ms - D, True, "ok")], [Interval(APRIL.start_ms, T0)])
    b_view = AgentView("b", [change(APRIL.start_ms - D, True, "ok")], [Interval(T0 - H, APRIL.end_ms)])
    a = run([a_view, b_view])
    assert (a.unmonitored_ms / 1000, a.up_ms / 1000) == (0.0, 720 * 3600.0)


# --- several agents -------------------------------------------------------------------------------------


def test_two_agents_disagreeing_quorum_1_vs_majority() -> None:
    a_view = watched(
        "a",
        [
            change(APRIL.start_ms - D, True, "ok"),
            change(T0, False, "unreachable"),
            change(T0 + H, True, "ok"),
        ],
    )
    b_view = watched("b", [change(APRIL.start_ms - D, True, "ok")])
    majority = run([a_view, b_view])  # majority of 2 is 2
    assert (majority.down_ms / 1000, majority.outages) == (0.0, ())
    one = run([a_view, b_view], policy=Policy(quorum=1))
    assert one.down_ms / 1000 == 3600
    assert one.outages[0].agents == ("a",)
    assert one.outages[0].reason == "unreachable"


def test_three_agents_two_down_is_down_under_majority() -> None:
    ok = [change(APRIL.start_ms - D, True, "ok")]
    views = [
        watched("c", [*ok, change(T0 + 10 * M, False, "SIP 503"), change(T0 + H, True, "ok")]),
        watched("a", [*ok, change(T0, False, "SIP timeout"), change(T0 + 2 * H, True, "ok")]),
        watched("b", ok),
    ]
    a = run(views)
    assert a.down_ms / 1000 == 50 * 60
    (o,) = a.outages
    assert (o.start_ms, o.end_ms, o.agents) == (T0 + 10 * M, T0 + H, ("a", "c"))
    assert o.reason == "SIP timeout"  # the earliest change among the agents that saw it down
    assert run(views, policy=Policy(quorum=3)).down_ms / 1000 == 0
    assert run(views, policy=Policy(quorum=1)).down_ms / 1000 == 2 * 3600


def test_majority_counts_only_agents_with_data() -> None:
    # b stops reporting: a alone has data, and its "down" is then the majority of one.
    a_view = watched(
        "a",
        [
            change(APRIL.start_ms - D, True, "ok"),
            change(T0, False, "refused"),
            change(T0 + 2 * H, True, "ok"),
        ],
    )
    b_view = AgentView("b", [change(APRIL.start_ms - D, True, "ok")], [Interval(APRIL.start_ms, T0 + H)])
    a = run([a_view, b_view])
    assert a.down_ms / 1000 == 3600
    assert a.outages[0].start_ms == T0 + H


def test_outage_reason_is_the_first_change_of_the_down_run_that_opened_it() -> None:
    ok = change(APRIL.start_ms - D, True, "ok")
    views = [
        watched(
            "a",
            [ok, change(T0, False, "timeout"), change(T0 + M, False, "refused"), change(T0 + H, True, "ok")],
        ),
        watched("b", [ok, change(T0 + 2 * M, False, "SIP 503"), change(T0 + H, True, "ok")]),
    ]
    (o,) = run(views).outages  # majority of 2: down from b's change on
    assert (o.start_ms, o.reason, o.agents) == (T0 + 2 * M, "timeout", ("a", "b"))


def test_agents_joining_an_outage_are_listed() -> None:
    ok = change(APRIL.start_ms - D, True, "ok")
    views = [
        watched("a", [ok, change(T0, False, "timeout"), change(T0 + 2 * H, True, "ok")]),
        watched("b", [ok, change(T0 + H, False, "refused"), change(T0 + 3 * H, True, "ok")]),
    ]
    (o,) = run(views, policy=Policy(quorum=1)).outages
    assert (o.start_ms, o.end_ms, o.reason, o.agents) == (T0, T0 + 3 * H, "timeout", ("a", "b"))


def test_quorum_above_agents_with_data_requires_all_of_them() -> None:
    a_view = watched(
        "a",
        [
            change(APRIL.start_ms - D, True, "ok"),
            change(T0, False, "refused"),
            change(T0 + 2 * H, True, "ok"),
        ],
    )
    b_view = AgentView("b", [change(APRIL.start_ms - D, True, "ok")], [Interval(APRIL.start_ms, T0 + H)])
    assert run([a_view, b_view], policy=Policy(quorum=2)).down_ms / 1000 == 3600
    assert run([a_view], policy=Policy(quorum=3)).down_ms / 1000 == 7200


# --- heartbeats and validation ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("beats_s", "expected_s"),
    [
        ([], []),
        ([0], [(0, 60)]),
        ([0, 60, 120, 400, 460], [(0, 180), (400, 520)]),
        ([0, 179], [(0, 239)]),  # less than 3 periods apart: one interval
        ([0, 180], [(0, 60), (180, 240)]),  # 3 periods apart: a gap
        ([120, 0, 60, 60], [(0, 180)]),  # unsorted, duplicated
    ],
)
def test_coverage_from_heartbeats(beats_s: list[int], expected_s: list[tuple[int, int]]) -> None:
    got = coverage_from_heartbeats([b * S for b in beats_s], 60)
    assert got == [Interval(s * S, e * S) for s, e in expected_s]


def test_coverage_gap_factor_and_bad_period() -> None:
    assert coverage_from_heartbeats([0, 150 * S], 60, max_gap_factor=2) == [
        Interval(0, 60 * S),
        Interval(150 * S, 210 * S),
    ]
    with pytest.raises(ValueError, match="must be positive"):
        coverage_from_heartbeats([0], 0)


def test_invalid_inputs_are_rejected() -> None:
    with pytest.raises(ValueError, match="quorum"):
        Policy(quorum=0)
    with pytest.raises(ValueError, match="target"):
        run([], target=101)
    with pytest.raises(ValueError, match="ends before"):
        Interval(5, 4)
    with pytest.raises(ValueError, match="ends before"):
        mw(5, 4, 0)



def test_agent_views_groups_changes_and_derives_coverage() -> None:
    sip2 = ComponentRef("sip-2", "sip", "gold", "acme")
    changes = [change(1000, False, "x", "mon-a"), change(500, True, "", "mon-b"), change(0, True, "", "mon-a"),
               StateChange(sip2, "mon-a", 0, True, "")]
    heartbeats = {"mon-a": AgentHeartbeats("mon-a", [0, 60_000, 120_000, 600_000], 60.0),
                  "mon-c": AgentHeartbeats("mon-c", [0], 60.0)}
    index = AgentViews(changes, heartbeats)
    views = index.views("sip-core")
    assert [v.agent for v in views] == ["mon-a", "mon-b"]
    assert views[0].changes == (change(0, True, "", "mon-a"), change(1000, False, "x", "mon-a"))
    assert views[0].coverage == (Interval(0, 180_000), Interval(600_000, 660_000))
    assert views[1].changes == (change(500, True, "", "mon-b"),)
    assert views[1].coverage == ()  # no heartbeats: never counted as watching
    assert index.views("nope") == []
    assert [v.agent for v in index.views("sip-2")] == ["mon-a"]
    assert index.components() == ["sip-2", "sip-core"]


def test_latest_ref_is_the_one_stored_with_the_last_change() -> None:
    silver, gold = ComponentRef("sip-core", "sip", "silver", "acme"), REF
    changes = [StateChange(gold, "mon-b", 2 * H, True, ""), StateChange(silver, "mon-a", 0, True, ""),
               StateChange(silver, "mon-a", H, False, "timeout")]
    index = AgentViews(changes, {})
    assert index.latest_ref("sip-core") == gold
    assert AgentViews(changes[1:], {}).latest_ref("sip-core") == silver
    # At one instant, the agent whose name sorts last: the same answer whatever order the store returned.
    tie = [StateChange(silver, "mon-b", 3 * H, True, ""), StateChange(gold, "mon-a", 3 * H, True, "")]
    assert AgentViews(tie, {}).latest_ref("sip-core") == AgentViews(tie[::-1], {}).latest_ref("sip-core") == silver
    assert index.latest_ref("nope") is None


def test_changes_are_sorted_once_by_the_view() -> None:
    shuffled = [change(T0 + M, True, "ok"), change(T0, False, "refused"), change(T0, True, "ok"),
                change(APRIL.start_ms - D, True, "ok")]
    view = watched("a", shuffled)
    assert [c.ts_ms for c in view.changes] == [APRIL.start_ms - D, T0, T0, T0 + M]
    assert view.changes[1].up is True and view.changes[2].up is False  # down sorts last at one instant, and wins
    assert run([view]).down_ms == M


def test_error_budget_is_whole_milliseconds_rounded_down() -> None:
    # A 99.99 % target on a 1 000 001 ms period allows 100.0001 ms: 100 of them are budget.
    period = Interval(T0, T0 + 1_000_001)
    up = watched("a", [change(T0 - D, True, "ok")], period)
    a = run([up], policy=Policy(basis="period"), period=period)
    assert a.error_budget_ms == 100 and isinstance(a.error_budget_ms, int)
    # 99.8 % of 720 h allows exactly 5184 s; 1 ms of downtime past it is -1 ms, not -0.000999 s.
    b = run([one_outage(T0, T0 + 5_184_001)], target=99.8)
    assert b.error_budget_ms == -1


# --- properties -----------------------------------------------------------------------------------------

BASE = APRIL.start_ms
SPAN = 10 * D
instants = st.integers(min_value=BASE - D, max_value=BASE + SPAN + D)


@st.composite
def spans(draw: st.DrawFn) -> Interval:
    a, b = draw(instants), draw(instants)
    return Interval(min(a, b), max(a, b))


changes = st.builds(change, instants, st.booleans(), st.sampled_from(["timeout", "refused", "ok", "503"]))
views = st.builds(
    AgentView,
    st.sampled_from(["a", "b", "c", "d"]),
    st.lists(changes, max_size=8),
    st.lists(spans(), max_size=3),
)


@st.composite
def maintenance(draw: st.DrawFn) -> MaintenanceWindow:
    span = draw(spans())
    notice = draw(st.sampled_from([0, H, NOTICE, NOTICE + 1, 10 * D]))
    return mw(
        span.start_ms, span.end_ms, span.start_ms - notice, "planned", draw(st.sampled_from("xyz"))
    )


policies = st.builds(
    Policy,
    st.sampled_from(["720h", "period"]),
    st.sampled_from(["up", "down", "exclude"]),
    st.sampled_from([NOTICE, H]),
    st.one_of(st.none(), st.integers(min_value=1, max_value=4)),
    st.integers(min_value=0, max_value=5),
)
periods = st.builds(
    lambda a, length: Interval(a, a + length),
    st.integers(min_value=BASE, max_value=BASE + SPAN),
    st.integers(min_value=0, max_value=SPAN),
)
targets = st.sampled_from([99.0, 99.8, 99.99, 100.0, 0.0])
inputs = st.tuples(
    periods, st.lists(views, max_size=4), st.lists(maintenance(), max_size=3), policies, targets
)

Inputs = tuple[Interval, list[AgentView], list[MaintenanceWindow], Policy, float]


@settings(max_examples=300, deadline=None)
@given(inputs)
def test_parts_add_up_and_percentages_are_bounded(args: Inputs) -> None:
    period, agents, windows, policy, target = args
    a = availability(period, agents, windows, policy, target)
    assert a.up_ms + a.down_ms + a.maintenance_ms + a.unmonitored_ms == period.duration_ms
    assert a.up_ms / 1000 + a.down_ms / 1000 + a.maintenance_ms / 1000 + a.unmonitored_ms / 1000 == pytest.approx(
        period.duration_ms / 1000
    )
    assert min(a.up_ms, a.down_ms, a.maintenance_ms, a.unmonitored_ms) >= 0
    assert sum(o.counted_ms for o in a.outages) == a.down_ms
    assert sum(o.maintenance_ms for o in a.outages) == a.maintenance_ms
    assert sum(i.end_ms - i.start_ms for i in a.unmonitored) == a.unmonitored_ms
    assert all(period.start_ms <= o.start_ms < o.end_ms <= period.end_ms for o in a.outages)
    assert all(x.end_ms <= y.start_ms for x, y in pairwise(a.outages))
    assert a.down_ms <= a.downtime_ms <= a.down_ms + a.unmonitored_ms
    if a.ratio is None:
        assert a.availability_pct is None and a.met is None
        assert a.unmonitored_ms == period.duration_ms or a.basis_ms == 0
    else:
        assert a.availability_pct is not None
        assert 0 <= a.ratio <= 1
        assert 0 <= a.availability_pct <= 100
        assert a.availability_pct <= a.ratio * 100 + 1e-9  # floored, never rounded up
        if abs(a.ratio * 100 - target) > 1e-6:  # away from the edge, floats are good enough to check
            assert a.met == (a.ratio * 100 > target)


@settings(max_examples=300, deadline=None)
@given(inputs, st.floats(min_value=0, max_value=1))
def test_splitting_the_period_gives_the_same_seconds(args: Inputs, where: float) -> None:
    period, agents, windows, policy, target = args
    cut = period.start_ms + int(period.duration_ms * where)
    whole = availability(period, agents, windows, policy, target)
    first = availability(Interval(period.start_ms, cut), agents, windows, policy, target)
    second = availability(Interval(cut, period.end_ms), agents, windows, policy, target)
    for name in ("up_ms", "down_ms", "maintenance_ms", "unmonitored_ms", "downtime_ms"):
        assert getattr(first, name) + getattr(second, name) == getattr(whole, name), name


@settings(max_examples=300, deadline=None)
@given(inputs, st.randoms(use_true_random=False))
def test_input_order_does_not_matter(args: Inputs, rnd: random.Random) -> None:
    period, agents, windows, policy, target = args
    expected = availability(period, agents, windows, policy, target)
    shuffled = [
        AgentView(
            v.agent,
            rnd.sample(list(v.changes), len(v.changes)),
            rnd.sample(list(v.coverage), len(v.coverage)),
        )
        for v in rnd.sample(agents, len(agents))
    ]
    assert availability(period, shuffled, rnd.sample(windows, len(windows)), policy, target) == expected


def _reference(
    period: Interval, agents: Sequence[AgentView], windows: Sequence[MaintenanceWindow], policy: Policy
) -> dict[str, int]:
    """The semantics read literally, one millisecond at a time: slow, obviously right, tiny inputs only."""
    totals = {"up_ms": 0, "down_ms": 0, "maintenance_ms": 0, "unmonitored_ms": 0}
    for t in range(period.start_ms, period.end_ms):
        known = down = 0
        for view in agents:
            past = sorted(
                (c for c in view.changes if c.ts_ms <= t), key=lambda c: (c.ts_ms, not c.up, c.reason)
            )
            if past and any(i.start_ms <= t < i.end_ms for i in view.coverage):
                known += 1
                down += not past[-1].up
        inside = [w for w in windows if w.start_ms <= t < w.end_ms]
        timely = any(w.start_ms - w.announced_ms >= policy.maintenance_notice_ms for w in inside)
        quorum = known // 2 + 1 if policy.quorum is None else policy.quorum
        if known == 0:
            totals["unmonitored_ms"] += 1
        elif down < min(quorum, known):
            totals["up_ms"] += 1
        elif timely:
            totals["maintenance_ms"] += 1
        else:
            totals["down_ms"] += 1
    return totals


tiny = st.integers(min_value=0, max_value=60)
tiny_spans = st.builds(lambda a, b: Interval(min(a, b), max(a, b)), tiny, tiny)
tiny_views = st.builds(
    AgentView,
    st.sampled_from(["a", "b", "c"]),
    st.lists(st.builds(change, tiny, st.booleans(), st.sampled_from(["x", "y"])), max_size=6),
    st.lists(tiny_spans, max_size=3),
)
tiny_windows = st.builds(
    lambda span, notice: mw(span.start_ms, span.end_ms, span.start_ms - notice, "", "w"),
    tiny_spans,
    st.sampled_from([0, 10, 20]),
)


@settings(max_examples=400, deadline=None)
@given(
    tiny_spans,
    st.lists(tiny_views, max_size=4),
    st.lists(tiny_windows, max_size=3),
    st.builds(Policy, maintenance_notice_ms=st.just(10), quorum=st.one_of(st.none(), st.integers(1, 3))),
)
def test_sweep_matches_a_millisecond_by_millisecond_reference(
    span: Interval, agents: list[AgentView], windows: list[MaintenanceWindow], policy: Policy
) -> None:
    period = Interval(span.start_ms, span.end_ms)
    a = availability(period, agents, windows, policy, 99.0)
    got = {k: getattr(a, k) for k in ("up_ms", "down_ms", "maintenance_ms", "unmonitored_ms")}
    assert got == _reference(period, agents, windows, policy)


def test_many_components_are_fast_enough() -> None:
    # A loose guard against an accidental quadratic sweep: the month report runs this per component.
    rnd = random.Random(7)
    views_per_component = []
    for _ in range(2000):
        cs = [change(APRIL.start_ms - D, True, "ok")]
        for ts in sorted(rnd.sample(range(APRIL.start_ms, APRIL.end_ms, M), 40)):
            cs.append(change(ts, not cs[-1].up, "flap"))
        views_per_component.append([watched("a", cs)])
    began = time.perf_counter()
    for vs in views_per_component:
        run(vs)
    assert time.perf_counter() - began < 5.0  # 2 000 components; measured ~0.6 s on a shared 2-core box

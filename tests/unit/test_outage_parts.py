"""The engine's outage parts (counted, late-notice, excused) and downtime_in: tables, and properties that the parts
add up to the totals."""

from __future__ import annotations

import random
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reporter.availability import (
    AgentView,
    Availability,
    Outage,
    OutagePart,
    PartKind,
    Policy,
    availability,
    downtime_in,
)
from reporter.periods import month_period
from slawatch.model import ComponentRef, Interval, MaintenanceWindow, StateChange

S = 1000
M = 60 * S
H = 60 * M
D = 24 * H
APRIL = month_period(2026, 4, "UTC")
NOTICE = 72 * H
REF = ComponentRef("sip-core", "sip", "gold", "acme")
T0 = APRIL.start_ms + 10 * D
KINDS: tuple[PartKind, ...] = ("counted", "late_notice", "excused")


def change(ts_ms: int, up: bool, reason: str = "", agent: str = "a") -> StateChange:
    return StateChange(REF, agent, ts_ms, up, reason)


def window(start: int, end: int, notice: int, wid: str) -> MaintenanceWindow:
    return MaintenanceWindow(wid, "component", REF.component, start, end, start - notice, "planned")


def down(start: int, end: int, agent: str = "a") -> AgentView:
    changes = [change(APRIL.start_ms - D, True), change(start, False, "SIP 503"), change(end, True)]
    return AgentView(agent, changes, [Interval(APRIL.start_ms - 40 * D, APRIL.end_ms + 40 * D)])


def run(agents: list[AgentView], windows: list[MaintenanceWindow], policy: Policy | None = None,
        period: Interval = APRIL) -> Availability:
    return availability(period, agents, windows, policy or Policy(), 99.99)


def parts(o: Outage) -> list[tuple[int, int, str]]:
    return [(p.start_ms - T0, p.end_ms - T0, p.kind) for p in o.parts]


# ---------------------------------------------------------------- tables


def test_an_outage_without_windows_is_one_counted_part() -> None:
    [o] = run([down(T0, T0 + 5 * M)], []).outages
    assert o.parts == (OutagePart(T0, T0 + 5 * M, "counted"),)
    assert o.part_ms("counted") == o.counted_ms == 5 * M


def test_an_outage_across_a_late_and_a_timely_window_is_cut_into_four_parts() -> None:
    """Down 10:00-14:00; a late window 11:00-12:00, a timely one 12:00-13:00: red, orange, blue, red."""
    late = window(T0 + 11 * H, T0 + 12 * H, H, "late")
    timely = window(T0 + 12 * H, T0 + 13 * H, NOTICE, "timely")
    a = run([down(T0 + 10 * H, T0 + 14 * H)], [late, timely])
    [o] = a.outages
    assert parts(o) == [(10 * H, 11 * H, "counted"), (11 * H, 12 * H, "late_notice"),
                        (12 * H, 13 * H, "excused"), (13 * H, 14 * H, "counted")]
    assert (o.counted_ms, o.maintenance_ms, o.late_notice) == (3 * H, H, True)
    assert (o.part_ms("counted"), o.part_ms("late_notice"), o.part_ms("excused")) == (2 * H, H, H)
    assert (a.down_ms, a.maintenance_ms) == (3 * H, H)


def test_a_late_window_inside_a_timely_one_is_excused() -> None:
    timely = window(T0, T0 + 4 * H, NOTICE, "timely")
    late = window(T0 + H, T0 + 2 * H, 0, "late")
    [o] = run([down(T0, T0 + 4 * H)], [timely, late]).outages
    assert parts(o) == [(0, 4 * H, "excused")]  # one part: pieces of one kind that touch are merged
    assert not o.late_notice


def test_overlapping_late_windows_give_one_late_part() -> None:
    a, b = window(T0, T0 + 2 * H, H, "a"), window(T0 + H, T0 + 3 * H, H, "b")
    [o] = run([down(T0 - H, T0 + 4 * H)], [a, b]).outages
    assert parts(o) == [(-H, 0, "counted"), (0, 3 * H, "late_notice"), (3 * H, 4 * H, "counted")]


def test_parts_follow_the_policys_notice() -> None:
    w = window(T0, T0 + H, 2 * H, "w")
    [strict] = run([down(T0, T0 + H)], [w]).outages
    [lenient] = run([down(T0, T0 + H)], [w], Policy(maintenance_notice_ms=H)).outages
    assert [p.kind for p in strict.parts] == ["late_notice"]
    assert [p.kind for p in lenient.parts] == ["excused"]


def test_parts_are_clipped_to_the_period() -> None:
    w = window(APRIL.end_ms - H, APRIL.end_ms + H, NOTICE, "w")
    [o] = run([down(APRIL.end_ms - 2 * H, APRIL.end_ms + 2 * H)], [w]).outages
    assert [(p.start_ms, p.end_ms, p.kind) for p in o.parts] == [
        (APRIL.end_ms - 2 * H, APRIL.end_ms - H, "counted"), (APRIL.end_ms - H, APRIL.end_ms, "excused")]


def test_downtime_in_a_window() -> None:
    late = window(T0 + 11 * H, T0 + 12 * H, H, "late")
    timely = window(T0 + 12 * H, T0 + 13 * H, NOTICE, "timely")
    a = run([down(T0 + 10 * H, T0 + 14 * H)], [late, timely])
    assert downtime_in(Interval(T0 + 11 * H, T0 + 13 * H), a.outages) == {
        "counted": 0, "late_notice": H, "excused": H}
    assert downtime_in(Interval(T0 + 9 * H, T0 + 10 * H + 30 * M), a.outages) == {
        "counted": 30 * M, "late_notice": 0, "excused": 0}
    assert downtime_in(Interval(T0, T0 + H), a.outages) == {"counted": 0, "late_notice": 0, "excused": 0}


# ---------------------------------------------------------------- properties

BASE = APRIL.start_ms
SPAN = 10 * D
instants = st.integers(min_value=BASE - D, max_value=BASE + SPAN + D)


@st.composite
def spans(draw: st.DrawFn) -> Interval:
    a, b = draw(instants), draw(instants)
    return Interval(min(a, b), max(a, b))


views = st.builds(
    AgentView,
    st.sampled_from(["a", "b", "c"]),
    st.lists(st.builds(change, instants, st.booleans(), st.sampled_from(["timeout", "503"])), max_size=8),
    st.lists(spans(), max_size=3),
)


@st.composite
def windows(draw: st.DrawFn) -> MaintenanceWindow:
    span = draw(spans())
    notice = draw(st.sampled_from([0, H, NOTICE, 10 * D]))
    return window(span.start_ms, span.end_ms, notice, draw(st.sampled_from("xyz")))


policies = st.builds(Policy, st.sampled_from(["720h", "period"]), st.sampled_from(["up", "down", "exclude"]),
                     st.sampled_from([NOTICE, H]), st.one_of(st.none(), st.integers(min_value=1, max_value=3)))
periods = st.builds(lambda a, length: Interval(a, a + length), st.integers(min_value=BASE, max_value=BASE + SPAN),
                    st.integers(min_value=0, max_value=SPAN))
inputs = st.tuples(periods, st.lists(views, max_size=3), st.lists(windows(), max_size=3), policies)
Inputs = tuple[Interval, list[AgentView], list[MaintenanceWindow], Policy]


@settings(max_examples=300, deadline=None)
@given(inputs)
def test_parts_cut_each_outage_and_add_up_to_the_totals(args: Inputs) -> None:
    period, agents, wins, policy = args
    a = availability(period, agents, wins, policy, 99.9)
    for o in a.outages:
        assert o.parts, "an outage has at least one part"
        assert o.parts[0].start_ms == o.start_ms and o.parts[-1].end_ms == o.end_ms
        assert all(p.start_ms < p.end_ms for p in o.parts)
        assert all(x.end_ms == y.start_ms and x.kind != y.kind for x, y in pairwise(o.parts)), "contiguous, merged"
        assert o.part_ms("counted") + o.part_ms("late_notice") == o.counted_ms
        assert o.part_ms("excused") == o.maintenance_ms
        assert o.late_notice == (o.part_ms("late_notice") > 0)
    assert sum(o.part_ms("counted") + o.part_ms("late_notice") for o in a.outages) == a.down_ms
    assert sum(o.part_ms("excused") for o in a.outages) == a.maintenance_ms
    # The whole period seen through downtime_in gives the same totals.
    whole = downtime_in(period, a.outages)
    assert (whole["counted"] + whole["late_notice"], whole["excused"]) == (a.down_ms, a.maintenance_ms)


@settings(max_examples=200, deadline=None)
@given(inputs, st.floats(min_value=0, max_value=1))
def test_downtime_in_adds_up_over_a_split_span(args: Inputs, where: float) -> None:
    period, agents, wins, policy = args
    a = availability(period, agents, wins, policy, 99.9)
    cut = period.start_ms + int(period.duration_ms * where)
    first = downtime_in(Interval(period.start_ms, cut), a.outages)
    second = downtime_in(Interval(cut, period.end_ms), a.outages)
    assert {k: first[k] + second[k] for k in KINDS} == downtime_in(period, a.outages)


@settings(max_examples=200, deadline=None)
@given(inputs, st.randoms(use_true_random=False))
def test_parts_do_not_depend_on_input_order(args: Inputs, rnd: random.Random) -> None:
    period, agents, wins, policy = args
    expected = [o.parts for o in availability(period, agents, wins, policy, 99.9).outages]
    shuffled = [AgentView(v.agent, rnd.sample(list(v.changes), len(v.changes)), list(v.coverage))
                for v in rnd.sample(agents, len(agents))]
    got = availability(period, shuffled, rnd.sample(wins, len(wins)), policy, 99.9).outages
    assert [o.parts for o in got] == expected


def _reference_kinds(period: Interval, agents: list[AgentView], wins: list[MaintenanceWindow],
                     policy: Policy) -> dict[int, str]:
    """Each down millisecond's kind, read literally from the rules: slow, obviously right, tiny inputs only."""
    out: dict[int, str] = {}
    for t in range(period.start_ms, period.end_ms):
        known = n_down = 0
        for view in agents:
            past = sorted((c for c in view.changes if c.ts_ms <= t), key=lambda c: (c.ts_ms, not c.up, c.reason))
            if past and any(i.start_ms <= t < i.end_ms for i in view.coverage):
                known += 1
                n_down += not past[-1].up
        quorum = known // 2 + 1 if policy.quorum is None else policy.quorum
        if known == 0 or n_down < min(quorum, known):
            continue
        inside = [w for w in wins if w.start_ms <= t < w.end_ms]
        if any(w.start_ms - w.announced_ms >= policy.maintenance_notice_ms for w in inside):
            out[t] = "excused"
        else:
            out[t] = "late_notice" if inside else "counted"
    return out


tiny = st.integers(min_value=0, max_value=60)
tiny_spans = st.builds(lambda a, b: Interval(min(a, b), max(a, b)), tiny, tiny)
tiny_views = st.builds(AgentView, st.sampled_from(["a", "b", "c"]),
                       st.lists(st.builds(change, tiny, st.booleans(), st.sampled_from(["x", "y"])), max_size=6),
                       st.lists(tiny_spans, max_size=3))
tiny_windows = st.builds(lambda span, notice, wid: MaintenanceWindow(wid, "component", REF.component, span.start_ms,
                                                                     span.end_ms, span.start_ms - notice, ""),
                         tiny_spans, st.sampled_from([0, 10, 20]), st.sampled_from("uvw"))


@settings(max_examples=400, deadline=None)
@given(tiny_spans, st.lists(tiny_views, max_size=3), st.lists(tiny_windows, max_size=3),
       st.builds(Policy, maintenance_notice_ms=st.just(10), quorum=st.one_of(st.none(), st.integers(1, 3))))
def test_parts_match_a_millisecond_by_millisecond_reference(
        span: Interval, agents: list[AgentView], wins: list[MaintenanceWindow], policy: Policy) -> None:
    a = availability(span, agents, wins, policy, 99.0)
    got = {t: p.kind for o in a.outages for p in o.parts for t in range(p.start_ms, p.end_ms)}
    assert got == _reference_kinds(span, agents, wins, policy)


@pytest.mark.parametrize("kind", KINDS)
def test_part_ms_of_an_outage_without_parts_is_zero(kind: PartKind) -> None:
    assert Outage(0, 10, 10, 0, "", (), False).part_ms(kind) == 0

"""Degraded time in the availability engine: up for the contract, measured apart, the quorum applied as for down."""

from __future__ import annotations

import random
from itertools import pairwise

from hypothesis import given, settings
from hypothesis import strategies as st

from reporter.availability import AgentView, Availability, DegradedSpell, Policy, availability
from reporter.periods import month_period
from slawatch.model import ComponentRef, Interval, StateChange

S = 1000
M = 60 * S
H = 60 * M
D = 24 * H
APRIL = month_period(2026, 4, "UTC")
REF = ComponentRef("ups-rack-a", "power", "gold", "acme")
T0 = APRIL.start_ms + 10 * D
BATTERY = "upsOutputSource=battery(5)"


def up(ts: int, agent: str = "a") -> StateChange:
    return StateChange(REF, agent, ts, True, "")


def degraded(ts: int, agent: str = "a", reason: str = BATTERY) -> StateChange:
    return StateChange(REF, agent, ts, True, reason, True)


def down(ts: int, agent: str = "a", reason: str = "timeout") -> StateChange:
    return StateChange(REF, agent, ts, False, reason)


def watched(agent: str, *changes: StateChange) -> AgentView:
    return AgentView(agent, [up(APRIL.start_ms - D, agent), *changes],
                     [Interval(APRIL.start_ms - 40 * D, APRIL.end_ms + 40 * D)])


def run(*agents: AgentView, quorum: int | None = None, period: Interval = APRIL) -> Availability:
    return availability(period, agents, [], Policy(quorum=quorum), 99.99)


def spells(a: Availability) -> list[tuple[int, int, str, tuple[str, ...]]]:
    return [(d.start_ms - T0, d.end_ms - T0, d.reason, d.agents) for d in a.degraded]


# ---------------------------------------------------------------- tables


def test_a_spell_on_battery_is_up_time_measured_apart() -> None:
    a = run(watched("a", degraded(T0), up(T0 + 45 * M)))
    assert a.degraded_ms == 45 * M
    assert spells(a) == [(0, 45 * M, BATTERY, ("a",))]
    assert (a.up_ms, a.down_ms, a.availability_pct, a.met) == (APRIL.duration_ms, 0, 100.0, True)
    assert a.outages == ()


def test_degraded_then_down_then_degraded_again() -> None:
    """A UPS on battery runs flat (down), comes back on battery, then on mains: two spells around the outage."""
    a = run(watched("a", degraded(T0), down(T0 + H, reason="no answer"), degraded(T0 + 2 * H, reason="battery low"),
                    up(T0 + 3 * H)))
    assert spells(a) == [(0, H, BATTERY, ("a",)), (2 * H, 3 * H, "battery low", ("a",))]
    assert a.degraded_ms == 2 * H and a.down_ms == H
    assert [(o.start_ms - T0, o.end_ms - T0, o.reason) for o in a.outages] == [(H, 2 * H, "no answer")]


def test_repeated_degraded_changes_keep_the_first_reason() -> None:
    a = run(watched("a", degraded(T0), degraded(T0 + 10 * M, reason="battery 40 %"), up(T0 + H)))
    assert spells(a) == [(0, H, BATTERY, ("a",))]


def test_a_degraded_spell_across_the_month_end_is_split() -> None:
    end = APRIL.end_ms
    view = watched("a", degraded(end - H), up(end + 2 * H))
    may = month_period(2026, 5, "UTC")
    assert run(view).degraded == (DegradedSpell(end - H, end, BATTERY, ("a",)),)
    assert run(view, period=may).degraded == (DegradedSpell(end, end + 2 * H, BATTERY, ("a",)),)


def test_no_data_ends_a_spell() -> None:
    view = AgentView("a", [up(APRIL.start_ms - D), degraded(T0), up(T0 + 3 * H)],
                     [Interval(APRIL.start_ms - D, T0 + H), Interval(T0 + 2 * H, APRIL.end_ms)])
    a = run(view)
    assert spells(a) == [(0, H, BATTERY, ("a",)), (2 * H, 3 * H, BATTERY, ("a",))]
    assert a.degraded_ms == 2 * H and a.unmonitored_ms == H


def test_at_one_instant_degraded_wins_over_up_and_down_over_degraded() -> None:
    assert run(watched("a", up(T0), degraded(T0), up(T0 + H))).degraded_ms == H
    a = run(watched("a", degraded(T0), down(T0), up(T0 + H)))
    assert (a.degraded_ms, a.down_ms) == (0, H)


def test_the_quorum_applies_as_for_down() -> None:
    one = [watched("a", degraded(T0), up(T0 + H)), watched("b"), watched("c")]
    two = [watched("a", degraded(T0), up(T0 + H)), watched("b", degraded(T0 + 10 * M), up(T0 + H)), watched("c")]
    assert run(*one).degraded_ms == 0  # 1 of 3: not a majority
    assert run(*one, quorum=1).degraded_ms == H
    assert spells(run(*two)) == [(10 * M, H, BATTERY, ("a", "b"))]  # from when the second agent agrees


def test_an_agent_seeing_down_counts_toward_degraded() -> None:
    """One agent sees the UPS down, another on battery, the third fine: not down (1 of 3), degraded (2 of 3)."""
    a = run(watched("a", down(T0), up(T0 + H)), watched("b", degraded(T0), up(T0 + H)), watched("c"))
    assert (a.down_ms, a.degraded_ms) == (0, H)
    assert spells(a) == [(0, H, "timeout", ("a", "b"))]  # at one instant, the reason of the agent sorting first


def test_a_change_without_the_degraded_field_reads_as_before() -> None:
    legacy = StateChange(REF, "a", T0, True, "recovered")
    assert legacy.degraded is False
    assert run(watched("a", down(T0 - H), legacy)).degraded_ms == 0


# ---------------------------------------------------------------- properties

BASE = APRIL.start_ms
SPAN = 10 * D
instants = st.integers(min_value=BASE - D, max_value=BASE + SPAN + D)


@st.composite
def changes(draw: st.DrawFn) -> StateChange:
    state = draw(st.sampled_from(["up", "down", "degraded"]))
    return StateChange(REF, "x", draw(instants), state != "down", draw(st.sampled_from(["r1", "r2"])),
                       state == "degraded")


@st.composite
def views(draw: st.DrawFn) -> AgentView:
    agent = draw(st.sampled_from(["a", "b", "c"]))
    cs = [c._replace(agent=agent) for c in draw(st.lists(changes(), max_size=8))]
    spans = draw(st.lists(st.tuples(instants, instants), max_size=3))
    return AgentView(agent, cs, [Interval(min(s), max(s)) for s in spans])


periods = st.builds(lambda a, length: Interval(a, a + length), st.integers(min_value=BASE, max_value=BASE + SPAN),
                    st.integers(min_value=0, max_value=SPAN))
quorums = st.one_of(st.none(), st.integers(min_value=1, max_value=3))


@settings(max_examples=300, deadline=None)
@given(periods, st.lists(views(), max_size=3), quorums)
def test_spells_add_up_and_stay_inside_up_time(period: Interval, agents: list[AgentView], quorum: int | None) -> None:
    a = availability(period, agents, [], Policy(quorum=quorum), 99.9)
    assert 0 <= a.degraded_ms <= a.up_ms
    assert sum(d.duration_ms for d in a.degraded) == a.degraded_ms
    assert all(period.start_ms <= d.start_ms < d.end_ms <= period.end_ms for d in a.degraded)
    assert all(x.end_ms <= y.start_ms for x, y in pairwise(a.degraded))
    for d in a.degraded:
        assert not any(o.start_ms < d.end_ms and d.start_ms < o.end_ms for o in a.outages)
        assert not any(g.start_ms < d.end_ms and d.start_ms < g.end_ms for g in a.unmonitored)


@settings(max_examples=200, deadline=None)
@given(periods, st.lists(views(), max_size=3), quorums, st.floats(min_value=0, max_value=1))
def test_splitting_the_period_splits_the_degraded_time(period: Interval, agents: list[AgentView],
                                                       quorum: int | None, where: float) -> None:
    cut = period.start_ms + int(period.duration_ms * where)
    whole = availability(period, agents, [], Policy(quorum=quorum), 99.9)
    parts = [availability(p, agents, [], Policy(quorum=quorum), 99.9)
             for p in (Interval(period.start_ms, cut), Interval(cut, period.end_ms))]
    assert parts[0].degraded_ms + parts[1].degraded_ms == whole.degraded_ms


@settings(max_examples=200, deadline=None)
@given(periods, st.lists(views(), max_size=3), quorums, st.randoms(use_true_random=False))
def test_degraded_time_does_not_depend_on_input_order(period: Interval, agents: list[AgentView],
                                                      quorum: int | None, rnd: random.Random) -> None:
    expected = availability(period, agents, [], Policy(quorum=quorum), 99.9)
    shuffled = [AgentView(v.agent, rnd.sample(list(v.changes), len(v.changes)), list(v.coverage))
                for v in rnd.sample(agents, len(agents))]
    assert availability(period, shuffled, [], Policy(quorum=quorum), 99.9) == expected


def _reference(period: Interval, agents: list[AgentView], quorum: int | None) -> set[int]:
    """The degraded milliseconds, read literally from the rule: slow, obviously right, tiny inputs only."""
    out: set[int] = set()
    for t in range(period.start_ms, period.end_ms):
        states = []
        for view in agents:
            past = sorted((c for c in view.changes if c.ts_ms <= t), key=lambda c: (c.ts_ms, not c.up, c.degraded))
            if past and any(i.start_ms <= t < i.end_ms for i in view.coverage):
                states.append("down" if not past[-1].up else "degraded" if past[-1].degraded else "up")
        need = min(len(states) // 2 + 1 if quorum is None else quorum, len(states))
        n_down = states.count("down")
        if states and n_down < need and n_down + states.count("degraded") >= need:
            out.add(t)
    return out


tiny = st.integers(min_value=0, max_value=50)


@st.composite
def tiny_views(draw: st.DrawFn) -> AgentView:
    agent = draw(st.sampled_from(["a", "b", "c"]))
    cs = [StateChange(REF, agent, draw(tiny), s != "down", "", s == "degraded")
          for s in draw(st.lists(st.sampled_from(["up", "down", "degraded"]), max_size=6))]
    spans = draw(st.lists(st.tuples(tiny, tiny), max_size=3))
    return AgentView(agent, cs, [Interval(min(s), max(s)) for s in spans])


@settings(max_examples=400, deadline=None)
@given(st.tuples(tiny, tiny), st.lists(tiny_views(), max_size=3), quorums)
def test_degraded_time_matches_a_millisecond_reference(span: tuple[int, int], agents: list[AgentView],
                                                       quorum: int | None) -> None:
    period = Interval(min(span), max(span))
    a = availability(period, agents, [], Policy(quorum=quorum), 99.0)
    got = {t for d in a.degraded for t in range(d.start_ms, d.end_ms)}
    assert got == _reference(period, agents, quorum)

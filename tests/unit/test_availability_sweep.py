"""The availability sweep against the contract read literally, one millisecond at a time (reporter.availability)."""

from __future__ import annotations

from collections.abc import Sequence
from itertools import groupby

from hypothesis import given, settings
from hypothesis import strategies as st

from reporter.availability import (
    AgentView,
    AgentViews,
    Policy,
    _agent_timeline,
    _merge,
    _walked_timeline,
    availability,
    timely,
)
from slawatch.model import ComponentRef, Interval, MaintenanceWindow, StateChange

REF = ComponentRef("sip-core", "sip", "gold", "acme")
NOTICE = 10
KINDS = ("up", "down", "degraded", "released")
UNKNOWN, UP, DOWN, DEGRADED = "unknown", "up", "down", "degraded"


def change(agent: str, ts_ms: int, kind: str, reason: str) -> StateChange:
    return StateChange(REF, agent, ts_ms, kind != "down", reason, kind == "degraded", kind == "released")


tiny = st.integers(min_value=0, max_value=40)
spans = st.builds(lambda a, b: Interval(min(a, b), max(a, b)), tiny, tiny)


@st.composite
def views(draw: st.DrawFn, distinct: bool = False) -> AgentView:
    agent = draw(st.sampled_from("abc"))
    instants = draw(st.lists(tiny, max_size=8, unique=distinct))
    changes = [change(agent, ts, draw(st.sampled_from(KINDS)), draw(st.sampled_from("xy"))) for ts in instants]
    return AgentView(agent, changes, draw(st.lists(spans, max_size=3)))


windows = st.builds(
    lambda span, notice, wid: MaintenanceWindow(wid, "component", "sip-core", span.start_ms, span.end_ms,
                                                span.start_ms - notice, "planned"),
    spans, st.sampled_from([0, NOTICE, 2 * NOTICE]), st.sampled_from(["w1", "w2", "w3"]),
)
policies = st.builds(Policy, maintenance_notice_ms=st.just(NOTICE), quorum=st.one_of(st.none(), st.integers(1, 3)))


def _view_at(view: AgentView, t: int) -> str:
    """One agent at instant t: the last change at or before t (at one instant a release first, then up, degraded,
    down), if it watches then."""
    past = sorted((c for c in view.changes if c.ts_ms <= t),
                  key=lambda c: (c.ts_ms, not c.released, not c.up, c.degraded))
    if not past or not any(i.start_ms <= t < i.end_ms for i in view.coverage) or past[-1].released:
        return UNKNOWN
    return DOWN if not past[-1].up else DEGRADED if past[-1].degraded else UP


def _runs(marks: Sequence[tuple[int, object]], wanted: object) -> list[tuple[int, int]]:
    """Maximal runs [start, end) of consecutive milliseconds marked `wanted`."""
    out = []
    for mark, group in groupby(marks, key=lambda m: m[1]):
        ms = [t for t, _ in group]
        if mark == wanted:
            out.append((ms[0], ms[-1] + 1))
    return out


def _reference(period: Interval, agents: Sequence[AgentView], ws: Sequence[MaintenanceWindow],
               policy: Policy) -> dict[str, object]:
    """Totals, outages (with their parts, windows and late flag), gaps and degraded spells, one ms at a time."""
    states: list[tuple[int, str]] = []
    kinds: list[tuple[int, str]] = []
    inside: dict[int, list[MaintenanceWindow]] = {}
    for t in range(period.start_ms, period.end_ms):
        seen = [s for s in (_view_at(v, t) for v in agents) if s != UNKNOWN]
        need = min(len(seen) // 2 + 1 if policy.quorum is None else policy.quorum, len(seen))
        down = sum(s == DOWN for s in seen)
        bad = down + sum(s == DEGRADED for s in seen)
        state = UNKNOWN if not seen else DOWN if down >= need else DEGRADED if bad >= need else UP
        states.append((t, state))
        inside[t] = [w for w in ws if w.start_ms <= t < w.end_ms]
        excused = any(timely(w, policy.maintenance_notice_ms) for w in inside[t])
        kinds.append((t, "none" if state != DOWN else "excused" if excused
                      else "late_notice" if inside[t] else "counted"))
    kind_of = dict(kinds)
    outages = []
    for s, e in _runs(states, DOWN):
        parts = []
        for kind, group in groupby(range(s, e), key=lambda t: kind_of[t]):
            ms = list(group)
            parts.append((ms[0], ms[-1] + 1, kind))
        outages.append((s, e, tuple(parts), any(k == "late_notice" for _, _, k in parts),
                        tuple(sorted({w.id for t in range(s, e) for w in inside[t]}))))
    counted = [k for _, k in kinds]
    unmonitored = [t for t, state in states if state == UNKNOWN]
    return {
        "up_ms": sum(state in (UP, DEGRADED) for _, state in states),
        "degraded_ms": sum(state == DEGRADED for _, state in states),
        "down_ms": counted.count("counted") + counted.count("late_notice"),
        "maintenance_ms": counted.count("excused"),
        "unmonitored_ms": len(unmonitored),
        "unmonitored_counted_ms": sum(1 for t in unmonitored
                                      if not any(timely(w, policy.maintenance_notice_ms) for w in inside[t])),
        "outages": outages,
        "gaps": _runs(states, UNKNOWN),
        "spells": _runs(states, DEGRADED),
    }


@settings(max_examples=300, deadline=None)
@given(spans, st.lists(views(), max_size=4), st.lists(windows, max_size=3), policies)
def test_sweep_matches_the_reference_with_releases_degraded_windows_and_quorum(
    period: Interval, agents: list[AgentView], ws: list[MaintenanceWindow], policy: Policy
) -> None:
    a = availability(period, agents, ws, policy, 99.0)
    ref = _reference(period, agents, ws, policy)
    assert (a.up_ms, a.degraded_ms, a.down_ms, a.maintenance_ms, a.unmonitored_ms) == (
        ref["up_ms"], ref["degraded_ms"], ref["down_ms"], ref["maintenance_ms"], ref["unmonitored_ms"])
    assert a.downtime_ms == a.down_ms + (ref["unmonitored_counted_ms"] if policy.unmonitored == "down" else 0)
    assert [(o.start_ms, o.end_ms, tuple((p.start_ms, p.end_ms, p.kind) for p in o.parts), o.late_notice,
             o.window_ids) for o in a.outages] == ref["outages"]
    assert [(i.start_ms, i.end_ms) for i in a.unmonitored] == ref["gaps"]
    assert [(d.start_ms, d.end_ms) for d in a.degraded] == ref["spells"]


@settings(max_examples=300, deadline=None)
@given(st.one_of(views(), views(distinct=True)), spans)
def test_timeline_of_changes_at_distinct_instants_equals_the_instant_by_instant_walk(
    view: AgentView, period: Interval
) -> None:
    # _agent_timeline takes a shortcut when no two changes share an instant; the walk handles any changes.
    change_ts = [c.ts_ms for c in view.changes]
    status = [0 if c.released else 2 if not c.up else 3 if c.degraded else 1 for c in view.changes]
    starts, ends = _merge(view.coverage, period.start_ms, period.end_ms)
    if period.start_ms < period.end_ms:
        assert _agent_timeline(view, period.start_ms, period.end_ms, 1) == _walked_timeline(
            change_ts, status, starts, ends, period.start_ms, period.end_ms, 1)


def test_latest_ref_takes_the_first_of_equal_latest_changes() -> None:
    other = ComponentRef("sip-core", "sip", "silver", "acme")
    first = StateChange(REF, "a", 10, True, "")
    index = AgentViews([first, first._replace(ref=other), StateChange(other, "a", 5, True, "")], {})
    assert index.latest_ref("sip-core") == REF

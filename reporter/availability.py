"""Availability of one component over one period: the pure, exact maths of the SLA contract (no I/O, no clock)."""

from __future__ import annotations

import functools
import operator
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from itertools import groupby
from typing import Literal, NamedTuple

from slawatch.model import ComponentRef, Heartbeats, Interval, MaintenanceWindow, StateChange

BASIS_720H_MS = 720 * 3600 * 1000
DEFAULT_NOTICE_MS = 72 * 3600 * 1000
HEARTBEAT_GAP_FACTOR = 3
"""Heartbeats further apart than this many periods leave a gap in an agent's coverage."""

# Status codes of one agent's view during a segment.
_UNKNOWN, _UP, _DOWN, _DEGRADED = 0, 1, 2, 3


_BY_TS = operator.attrgetter("ts_ms")
_BY_COMPONENT = operator.attrgetter("ref.component")
_BY_AGENT = operator.attrgetter("agent")
_FLAGS = operator.attrgetter("up", "degraded", "released")
_STATUS_OF_FLAGS = {  # a change's status by (up, degraded, released); released: the agent stopped watching it
    (up, degraded, released): _UNKNOWN if released else _DOWN if not up else _DEGRADED if degraded else _UP
    for up in (False, True) for degraded in (False, True) for released in (False, True)}


def _change_order(c: StateChange) -> tuple[int, bool, bool, bool, str]:
    # At equal instants a release sorts first (a change at the same instant is a later view), then a "down" sorts
    # last and so wins, then a "degraded": the conservative reading of a tie.
    return (c.ts_ms, not c.released, not c.up, c.degraded, c.reason)


@dataclass(frozen=True, slots=True)
class AgentView:
    """What one monitoring agent saw of the component: its state changes and when it was watching.

    Pass also the last change before the period, so that the state carries in. The view is unknown
    before the first change and outside `coverage`. The changes are sorted here, and only here.
    """

    agent: str
    changes: Sequence[StateChange]
    coverage: Sequence[Interval]

    def __post_init__(self) -> None:
        # By instant alone first (a C key); the full order decides only between changes at one instant.
        changes = sorted(self.changes, key=_BY_TS)
        if len(set(map(_BY_TS, changes))) < len(changes):
            changes = sorted(self.changes, key=_change_order)
        object.__setattr__(self, "changes", tuple(changes))
        object.__setattr__(self, "coverage", tuple(self.coverage))


@dataclass(frozen=True, slots=True)
class Policy:
    """How the contract counts: basis, unmonitored time, maintenance notice, agent quorum, decimals.

    The one policy type: the contract's, overridden by a customer's, is resolved into it once
    (reporter.report.policy_for) and used by the report and by `slawatch maintenance` alike.
    """

    basis: Literal["720h", "period"] = "720h"
    unmonitored: Literal["up", "down", "exclude"] = "up"
    maintenance_notice_ms: int = DEFAULT_NOTICE_MS
    quorum: int | None = None  # None: majority of the agents that have data at that instant
    decimals: int = 3

    def __post_init__(self) -> None:
        if self.quorum is not None and self.quorum < 1:
            raise ValueError(f"quorum must be at least 1, got {self.quorum}")
        if self.decimals < 0:
            raise ValueError(f"decimals must be >= 0, got {self.decimals}")
        if self.maintenance_notice_ms < 0:
            raise ValueError(f"maintenance_notice_ms must be >= 0, got {self.maintenance_notice_ms}")


def timely(window: MaintenanceWindow, notice_ms: int) -> bool:
    """The notice rule: a window announced at least `notice_ms` before it starts excuses the downtime in it."""
    return window.start_ms - window.announced_ms >= notice_ms


PartKind = Literal["counted", "late_notice", "excused"]
"""How the contract counts a piece of an outage: downtime outside any window ("counted"), downtime inside a window
announced too late ("late_notice", counted too), or down time inside a timely window ("excused")."""


# Outage and OutagePart are NamedTuples, not frozen dataclasses (immutable alike): a month of 100 000 components has
# a million of each, and a frozen dataclass's constructor, one object.__setattr__ per field, cost 5 % of the report.
class OutagePart(NamedTuple):
    """A maximal piece [start_ms, end_ms) of an outage that the contract counts one way (PartKind)."""

    start_ms: int
    end_ms: int
    kind: PartKind

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


class Outage(NamedTuple):
    """One maximal run of observed down time [start_ms, end_ms), clipped to the period.

    `counted_ms` is what the contract counts (duration minus `maintenance_ms`, what timely maintenance
    excuses); `late_notice` is True when some of it fell in a window announced too late to excuse it.
    `parts` cut it, in order and without gaps, into pieces counted one way each: the "counted" and
    "late_notice" parts add up to `counted_ms`, the "excused" ones to `maintenance_ms`.
    """

    start_ms: int
    end_ms: int
    counted_ms: int
    maintenance_ms: int
    reason: str
    agents: tuple[str, ...]
    late_notice: bool
    window_ids: tuple[str, ...] = ()
    parts: tuple[OutagePart, ...] = ()

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    def part_ms(self, kind: PartKind) -> int:
        return sum(p.duration_ms for p in self.parts if p.kind == kind)


@dataclass(frozen=True, slots=True)
class DegradedSpell:
    """One maximal run [start_ms, end_ms) of degraded time (up, but on battery, a pool short of members...), clipped
    to the period; `reason` is that of the change that began it, `agents` those that saw it degraded (or down)."""

    start_ms: int
    end_ms: int
    reason: str
    agents: tuple[str, ...]

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


@dataclass(frozen=True, slots=True)
class Availability:
    """The availability of one component over one period, in integer milliseconds.

    up_ms + down_ms + maintenance_ms + unmonitored_ms == the period length, exactly. down_ms is observed
    down time not excused by timely maintenance; downtime_ms is what the percentage counts (down_ms, plus
    unmonitored time outside timely windows when the policy says "down"). error_budget_ms is the downtime
    still allowed before the target is missed (negative once breached), rounded down to the millisecond.
    degraded_ms is the part of up_ms the component was degraded (`degraded`, its spells).
    """

    period: Interval
    up_ms: int
    down_ms: int
    maintenance_ms: int
    unmonitored_ms: int
    downtime_ms: int
    basis_ms: int
    error_budget_ms: int
    ratio: float | None
    availability_pct: float | None
    target_pct: float
    met: bool | None
    outages: tuple[Outage, ...]
    unmonitored: tuple[Interval, ...] = ()
    degraded_ms: int = 0
    degraded: tuple[DegradedSpell, ...] = ()


def coverage_from_heartbeats(
    ts_ms_list: Iterable[int], period_s: float, max_gap_factor: float = HEARTBEAT_GAP_FACTOR
) -> list[Interval]:
    """Intervals an agent was watching, from its heartbeat instants.

    Consecutive heartbeats less than `max_gap_factor` periods apart belong to one interval, which is
    [first, last + period): each heartbeat vouches for the period that follows it.
    """
    if period_s <= 0:
        raise ValueError(f"heartbeat period must be positive, got {period_s}")
    period_ms = round(period_s * 1000)
    max_gap_ms = max_gap_factor * period_ms
    beats = sorted(set(ts_ms_list))
    intervals: list[Interval] = []
    if not beats:
        return intervals
    first = last = beats[0]
    for ts in beats[1:]:
        if ts - last < max_gap_ms:
            last = ts
            continue
        intervals.append(Interval(first, last + period_ms))
        first = last = ts
    intervals.append(Interval(first, last + period_ms))
    return intervals


def by_component(changes: Iterable[StateChange]) -> dict[str, dict[str, list[StateChange]]]:
    """The changes by component, then by agent; each agent's in the order given."""
    by_component: dict[str, dict[str, list[StateChange]]] = {}
    # The stores read a component's changes together: one lookup per run of them, an agent's in their order.
    for component, run in groupby(changes, key=_BY_COMPONENT):
        per_agent = by_component.setdefault(component, {})
        for agent, own in groupby(sorted(run, key=_BY_AGENT), key=_BY_AGENT):
            per_agent.setdefault(agent, []).extend(own)
    return by_component


class AgentViews:
    """The AgentViews of every component of one read, indexed once: each agent's heartbeat coverage is
    computed once, not once per component."""

    def __init__(self, changes: Iterable[StateChange], heartbeats: Heartbeats,
                 max_gap_factor: float = HEARTBEAT_GAP_FACTOR) -> None:
        self._changes = by_component(changes)
        self._coverage = {agent: tuple(coverage_from_heartbeats(hb.instants_ms, hb.period_s, max_gap_factor))
                          for agent, hb in heartbeats.items()}

    def with_changes(self, changes: Iterable[StateChange]) -> AgentViews:
        """The views of other changes (another slice of a report's components) over the same heartbeats, whose
        coverage is not computed again."""
        other = object.__new__(AgentViews)
        other._changes = by_component(changes)
        other._coverage = self._coverage
        return other

    def components(self) -> list[str]:
        return sorted(self._changes)

    def changes(self) -> Mapping[str, Mapping[str, Sequence[StateChange]]]:
        """Every change read, by component and then agent (by_component): not to be changed."""
        return self._changes

    def views(self, component: str) -> list[AgentView]:
        """One view per agent that has a change of `component`; an agent without heartbeats has no coverage."""
        per_agent = self._changes.get(component, {})
        return [AgentView(agent, changes, self._coverage.get(agent, ()))
                for agent, changes in sorted(per_agent.items())]

    def latest_ref(self, component: str) -> ComponentRef | None:
        """The class, tier and customer stored with the component's latest change (of any agent; at one instant,
        the agent whose name sorts last): what was in force at the end of the read. None without changes."""
        per_agent = self._changes.get(component)
        if not per_agent:
            return None
        # The first latest change of each agent, then the latest of those (ties: the agent that sorts last).
        latest = max((max(changes, key=_BY_TS) for changes in per_agent.values()), key=lambda c: (c.ts_ms, c.agent))
        return latest.ref


def _merge(intervals: Iterable[Interval], start: int, end: int) -> tuple[list[int], list[int]]:
    """Clip to [start, end), sort and merge overlapping or touching intervals; (starts, ends)."""
    spans = sorted((max(i.start_ms, start), min(i.end_ms, end)) for i in intervals)
    starts: list[int] = []
    ends: list[int] = []
    for s, e in spans:
        if s >= e:
            continue
        if ends and s <= ends[-1]:
            ends[-1] = max(ends[-1], e)
        else:
            starts.append(s)
            ends.append(e)
    return starts, ends


def _agent_timeline(view: AgentView, start: int, end: int, idx: int) -> list[tuple[int, int, int, int]]:
    """One agent's view as transitions (ts, idx, status, index of the change that began the current run).

    The first transition is at `start`; the others fall strictly inside (start, end). The view can only move at a
    change or a coverage bound; when every change has an instant of its own, only where a run of one status begins.
    """
    changes = view.changes  # sorted by AgentView
    change_ts = list(map(_BY_TS, changes))
    status = list(map(_STATUS_OF_FLAGS.__getitem__, map(_FLAGS, changes)))
    cov_starts, cov_ends = _merge(view.coverage, start, end)
    if len(set(change_ts)) < len(change_ts):
        return _walked_timeline(change_ts, status, cov_starts, cov_ends, start, end, idx)

    timeline: list[tuple[int, int, int, int]] = []
    if not cov_starts or cov_starts[0] > start:
        timeline.append((start, idx, _UNKNOWN, -1))
    for cs, ce in zip(cov_starts, cov_ends, strict=True):
        i = bisect_right(change_ts, cs) - 1  # the change in force at cs
        if i >= 0 and status[i] != _UNKNOWN:  # after a release the agent has no data, as outside its coverage
            st, begun = status[i], i
            while begun and status[begun - 1] == st:
                begun -= 1
            timeline.append((cs, idx, st, begun))
        elif cs == start:
            timeline.append((start, idx, _UNKNOWN, -1))
        hi = bisect_left(change_ts, ce)  # the changes inside (cs, ce) are i + 1 .. hi - 1
        lo = i + 1
        if lo == 0 < hi:
            if status[0] != _UNKNOWN:
                timeline.append((change_ts[0], idx, status[0], 0))
            lo = 1
        timeline += [(change_ts[r], idx, status[r], r if status[r] != _UNKNOWN else -1)
                     for r in range(lo, hi) if status[r] != status[r - 1]]
        if ce < end and hi > 0 and status[hi - 1] != _UNKNOWN:
            timeline.append((ce, idx, _UNKNOWN, -1))
    return timeline


def _walked_timeline(change_ts: Sequence[int], status: Sequence[int], cov_starts: Sequence[int],
                     cov_ends: Sequence[int], start: int, end: int, idx: int) -> list[tuple[int, int, int, int]]:
    """_agent_timeline for any changes (several at one instant: the last one there counts), instant by instant."""
    n, n_cov = len(change_ts), len(cov_starts)
    run_start: list[int] = []
    for i in range(n):
        run_start.append(i if i == 0 or status[i - 1] != status[i] else run_start[i - 1])
    timeline: list[tuple[int, int, int, int]] = []
    i = bisect_right(change_ts, start) - 1  # the change in force at t
    j = 0  # the coverage interval t is in, or the next one
    prev_st, prev_rn = -1, -2
    t = start
    while True:
        while i + 1 < n and change_ts[i + 1] <= t:
            i += 1
        while j < n_cov and cov_ends[j] <= t:
            j += 1
        if j < n_cov and cov_starts[j] <= t and i >= 0 and status[i] != _UNKNOWN:
            st, rn = status[i], run_start[i]
        else:
            st, rn = _UNKNOWN, -1
        if st != prev_st or rn != prev_rn:
            timeline.append((t, idx, st, rn))
            prev_st, prev_rn = st, rn
        nxt = change_ts[i + 1] if i + 1 < n else end
        if j < n_cov:
            bound = cov_starts[j] if cov_starts[j] > t else cov_ends[j]
            if bound < nxt:
                nxt = bound
        if nxt >= end:
            return timeline
        t = nxt



def quorum_size(n_known: int, quorum: int | None) -> int:
    """How many of the `n_known` agents with data must see a component down for it to be down: `quorum`, or a
    majority when None; all of them when fewer have data than the quorum. The one rule for the report and the
    incident desk."""
    return min(n_known // 2 + 1 if quorum is None else quorum, n_known)

@functools.lru_cache(maxsize=64)
def _state_table(n: int, quorum: int | None) -> tuple[tuple[int, ...], tuple[int, int, int, int]]:
    """The component's state by how many of its `n` agents see it unknown, down and degraded (the rest see it up),
    and the weight of each agent status in the table's index: the sweep moves the index by one addition per event."""
    base = n + 1
    weight = (base * base, 0, base, 1)  # by status: _UNKNOWN, _UP, _DOWN, _DEGRADED
    table: list[int] = []
    for unknown in range(base):
        for down in range(base):
            for degraded in range(base):
                n_known = n - unknown
                need = quorum_size(n_known, quorum)
                table.append(_UNKNOWN if n_known <= 0 else _DOWN if down >= need
                             else _DEGRADED if down + degraded >= need else _UP)
    return tuple(table), weight


@dataclass(slots=True)
class _OpenSpell:
    start: int
    reason: str
    agents: set[str]

    def close(self, end: int) -> DegradedSpell:
        return DegradedSpell(self.start, end, self.reason, tuple(sorted(self.agents)))


@dataclass(frozen=True, slots=True)
class CurrentState:
    """A component's state now, by the quorum rule, from each agent's latest confirmed change."""

    state: Literal["down", "degraded", "up"]
    since_ms: int
    """Down or degraded: when the quorum-th agent saw it so; up: the latest recovery among the agents seeing it up."""
    reason: str
    agents: tuple[str, ...]
    """The agents that see it in that state."""


def current_state(latest: Sequence[StateChange], quorum: int | None) -> CurrentState | None:
    """The state the report's rule gives now: down when the quorum of agents see it down, degraded when the
    quorum see it degraded or down, else up; None without any agent. An agent whose latest change is a release
    no longer watches the component and is left out. The console and the incident desk both ask here."""
    latest = [c for c in latest if not c.released]
    if not latest:
        return None
    need = quorum_size(len(latest), quorum)
    faults: tuple[tuple[Literal["down", "degraded"], list[StateChange]], ...] = (
        ("down", [c for c in latest if not c.up]), ("degraded", [c for c in latest if not c.up or c.degraded]))
    for state, seen in faults:
        if len(seen) >= need:
            at = sorted(c.ts_ms for c in seen)[need - 1]
            reason = "; ".join(dict.fromkeys(c.reason for c in seen if c.reason))
            return CurrentState(state, at, reason, tuple(c.agent for c in seen))
    ups = [c for c in latest if c.up]
    return CurrentState("up", max(c.ts_ms for c in ups), "", tuple(c.agent for c in ups))


_new = tuple.__new__  # a NamedTuple made without its Python-level __new__: half the time


@dataclass(slots=True)
class _OpenOutage:
    start: int
    reason: str
    agents: set[str]
    window_ids: set[str] = field(default_factory=set)
    maintenance_ms: int = 0
    late: bool = False
    parts: list[OutagePart] = field(default_factory=list)
    part_start: int = 0
    part_kind: PartKind | None = None

    def add(self, start: int, kind: PartKind) -> None:
        """The outage goes on from `start` counted as `kind` (a new part when the kind changes)."""
        if kind != self.part_kind:
            if self.part_kind is not None:
                self.parts.append(_new(OutagePart, (self.part_start, start, self.part_kind)))
            self.part_start, self.part_kind = start, kind

    def close(self, end: int) -> Outage:
        if self.part_kind is not None:
            self.parts.append(_new(OutagePart, (self.part_start, end, self.part_kind)))
        return _new(Outage, (self.start, end, end - self.start - self.maintenance_ms, self.maintenance_ms, self.reason,
                             tuple(sorted(self.agents)), self.late,
                             tuple(sorted(self.window_ids)) if self.window_ids else (), tuple(self.parts)))


def downtime_in(span: Interval, outages: Iterable[Outage]) -> dict[PartKind, int]:
    """How much of each kind of outage part falls inside `span` (a maintenance window, say)."""
    out: dict[PartKind, int] = {"counted": 0, "late_notice": 0, "excused": 0}
    for o in outages:
        if o.end_ms <= span.start_ms or o.start_ms >= span.end_ms:
            continue
        for p in o.parts:
            overlap = min(p.end_ms, span.end_ms) - max(p.start_ms, span.start_ms)
            if overlap > 0:
                out[p.kind] += overlap
    return out


_DOWN_ONLY = (_DOWN,)
_FAULTS = (_DOWN, _DEGRADED)


def _first_cause(views: Sequence[tuple[str, Sequence[StateChange]]], status: Sequence[int], run: Sequence[int],
                 wanted: tuple[int, ...]) -> StateChange:
    """The earliest change that put one of the agents seeing a `wanted` status in its present state: an outage's or a
    spell's reason."""
    best: StateChange | None = None
    best_key: tuple[int, str, str] | None = None
    for a, (name, changes) in enumerate(views):
        if status[a] not in wanted:
            continue
        c = changes[run[a]]
        key = (c.ts_ms, name, c.reason)
        if best_key is None or key < best_key:
            best, best_key = c, key
    assert best is not None
    return best


def period_basis_ms(policy: Policy, period: Interval) -> int:
    """The basis the policy measures `period` on, before unmonitored time is excluded: 720 h or its real length."""
    return BASIS_720H_MS if policy.basis == "720h" else period.duration_ms


@functools.lru_cache(maxsize=1024)
def _exact_target(target_pct: float) -> tuple[int, int]:
    """The decimal the user wrote, not its binary approximation, as (numerator, denominator) (a report has a few
    distinct targets: parsed once each)."""
    exact = Fraction(repr(float(target_pct)))
    return exact.numerator, exact.denominator


def availability(
    period: Interval,
    agents: Sequence[AgentView],
    windows: Sequence[MaintenanceWindow],
    policy: Policy,
    target_pct: float,
) -> Availability:
    """Availability of one component over `period`, as the contract counts it.

    - An instant is unmonitored when no agent has data (covered and after its first change).
    - Otherwise the component is down when at least `policy.quorum` agents with data see it down;
      with quorum None, a majority of them (floor(n/2) + 1). When fewer agents have data than the
      quorum, all of those that have data must see it down.
    - When it is not down, it is degraded when as many agents (the same quorum) see it degraded or down: an
      agent that sees it down sees at least a degraded service. Degraded time is up time (`degraded_ms` is a
      part of `up_ms`), in maintenance windows or not; a spell runs from the change that made it degraded to
      the next change that ends it (up, down, or no data).
    - Down time inside a window announced at least `maintenance_notice_ms` before its start is
      maintenance; inside a window announced later it stays downtime and its outage is `late_notice`.
      Up time inside a window stays up; overlapping windows never count twice.
    - Unmonitored time: "up" is not downtime, "down" is downtime (except inside timely windows),
      "exclude" removes it from the basis (720 h or the period length).
    - availability_pct is floored to `policy.decimals`; `met` compares the exact value with the
      target. ratio, availability_pct and met are None when no agent has data in the period.
    """
    if not 0 <= target_pct <= 100:
        raise ValueError(f"target must be within 0-100 %, got {target_pct}")
    start, end = period.start_ms, period.end_ms

    # (ts, agent index, status, run index) or (ts, -1 - window index, +1 open / -1 close, 0), sorted by instant
    events: list[tuple[int, int, int, int]] = []
    views: list[tuple[str, Sequence[StateChange]]] = []
    for idx, view in enumerate(agents):
        views.append((view.agent, view.changes))
        events += _agent_timeline(view, start, end, idx)
    timely_flags: list[bool] = []
    for w_idx, w in enumerate(windows):
        timely_flags.append(timely(w, policy.maintenance_notice_ms))
        s, e = max(w.start_ms, start), min(w.end_ms, end)
        if s < e:
            events.append((s, -1 - w_idx, 1, 0))
            events.append((e, -1 - w_idx, -1, 0))
    events.sort()  # the agents' runs are sorted already: a merge
    events.append((end, 0, 0, 0))  # ends the last segment

    n = len(views)
    status = [_UNKNOWN] * n
    run = [-1] * n
    # How many agents see the component unknown, down and degraded, as one index into the table of its state.
    state_of, weight = _state_table(n, policy.quorum)
    seen = weight[_UNKNOWN] * n
    active_windows: set[int] = set()
    n_timely = n_late = 0

    down_ms = maint_ms = unmon_ms = unmon_counted_ms = degraded_ms = 0
    outages: list[Outage] = []
    spells: list[DegradedSpell] = []
    spell: _OpenSpell | None = None
    gaps: list[Interval] = []
    gap_start: int | None = None
    current: _OpenOutage | None = None

    # Each segment [t, nxt) is counted when the first event after it arrives, once every event at t is applied.
    # Up time is what is left at the end: a segment up after one up needs nothing.
    t, before = start, -1
    for nxt, a, st, rn in events if start < end else ():
        if nxt != t:
            state = state_of[seen]
            if state != _UP or before != _UP:
                before = state
                length = nxt - t
                if spell is not None and state != _DEGRADED:
                    spells.append(spell.close(t))
                    spell = None
                if current is not None and state != _DOWN:
                    outages.append(current.close(t))
                    current = None
                if state == _UNKNOWN:
                    unmon_ms += length
                    if n_timely == 0:
                        unmon_counted_ms += length
                    if gap_start is None:
                        gap_start = t
                else:
                    if gap_start is not None:
                        gaps.append(Interval(gap_start, t))
                        gap_start = None
                    if state == _DEGRADED:
                        degraded_ms += length
                        if spell is None:
                            spell = _OpenSpell(t, _first_cause(views, status, run, _FAULTS).reason, set())
                        spell.agents.update([views[i][0] for i in range(n) if status[i] in _FAULTS])
                    elif state == _DOWN:
                        if current is None:
                            current = _OpenOutage(t, _first_cause(views, status, run, _DOWN_ONLY).reason, set())
                        current.agents.update([views[i][0] for i in range(n) if status[i] == _DOWN])
                        if active_windows:
                            current.window_ids.update([windows[w].id for w in active_windows])
                        if n_timely > 0:
                            maint_ms += length
                            current.maintenance_ms += length
                            current.add(t, "excused")
                        else:
                            down_ms += length
                            if n_late > 0:
                                current.late = True
                            current.add(t, "late_notice" if n_late > 0 else "counted")
            if nxt >= end:
                break
            t = nxt
        if a >= 0:
            seen += weight[st] - weight[status[a]]
            status[a], run[a] = st, rn
        else:
            w_idx = -1 - a
            if st > 0:
                active_windows.add(w_idx)
            else:
                active_windows.discard(w_idx)
            if timely_flags[w_idx]:
                n_timely += st
            else:
                n_late += st

    if current is not None:
        outages.append(current.close(end))
    if spell is not None:
        spells.append(spell.close(end))
    if gap_start is not None:
        gaps.append(Interval(gap_start, end))
    up_ms = end - start - down_ms - maint_ms - unmon_ms  # degraded time is up time

    basis_ms = period_basis_ms(policy, period)
    if policy.unmonitored == "exclude":
        basis_ms = max(0, basis_ms - unmon_ms)
    downtime_ms = down_ms + (unmon_counted_ms if policy.unmonitored == "down" else 0)
    # Exact rational arithmetic in integers: the target is num/den percent, the budget
    # floor((1 - target / 100) * basis) - downtime, the availability (basis - downtime) / basis.
    target_num, target_den = _exact_target(target_pct)
    budget = (100 * target_den - target_num) * basis_ms // (100 * target_den) - downtime_ms

    ratio: float | None = None
    pct: float | None = None
    met: bool | None = None
    if unmon_ms < end - start and basis_ms > 0:
        kept = max(0, basis_ms - downtime_ms)
        ratio = kept / basis_ms  # int / int is correctly rounded, as float(Fraction(kept, basis_ms)) is
        scale = 10**policy.decimals
        pct = kept * 100 * scale // basis_ms / scale
        met = kept * 100 * target_den >= target_num * basis_ms

    return Availability(
        period=period,
        up_ms=up_ms,
        down_ms=down_ms,
        maintenance_ms=maint_ms,
        unmonitored_ms=unmon_ms,
        downtime_ms=downtime_ms,
        basis_ms=basis_ms,
        error_budget_ms=budget,
        ratio=ratio,
        availability_pct=pct,
        target_pct=target_pct,
        met=met,
        outages=tuple(outages),
        unmonitored=tuple(gaps),
        degraded_ms=degraded_ms,
        degraded=tuple(spells),
    )

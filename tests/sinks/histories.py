"""State-change histories the store tests share, and what a report's read of them must return."""

from __future__ import annotations

from collections.abc import Iterable

from slawatch.model import ComponentRef, StateChange


def months_of_agents(t0: int, day: int) -> list[StateChange]:
    """~100 days of changes from `t0`: components a-d with one to three agents, an agent that begins on day 40, one
    that stops on day 20 (none: a component without changes)."""
    points: list[StateChange] = []
    for i, name in enumerate(["a", "b", "c", "d"]):
        for n, agent in enumerate(["m1", "m2", "m3"][:1 + i % 3]):
            days = range(40 if n == 2 else 0, 100 if (i, n) != (2, 1) else 20, 5 + i)
            points += [StateChange(ComponentRef(name, "sip", "gold", "acme"), agent, t0 + d * day + 60_000 * n,
                                   d % 2 == 0, f"r{d}") for d in days]
    return points


def read_of(points: Iterable[StateChange], start: int, end: int) -> list[StateChange]:
    """Each (component, agent)'s last change before [start, end) and every change in it, in identity order."""
    points = list(points)
    last: dict[tuple[str, str], StateChange] = {}
    for c in sorted(points, key=lambda c: c.ts_ms):
        if c.ts_ms < start:
            last[(c.ref.component, c.agent)] = c
    return sorted([*last.values(), *(c for c in points if start <= c.ts_ms < end)],
                  key=lambda c: (c.ref.component, c.ts_ms, c.agent))

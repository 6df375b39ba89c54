"""Which agents watch which components: the zone rule, lease liveness and rendezvous hashing (pure: no I/O, no clock).

Rendezvous (highest random weight) hashing: a component goes to the `replicas` eligible live agents with the
highest weight blake2b(agent, component), a hash every host computes alike (never Python's salted hash()). An agent
that leaves hands over only the components it had; one that joins takes only those whose top weights it now holds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from slawatch.model import LEASE_LIVE_FRACTION, AgentLease, AssignMode, lease_live_ms

LIVE_FRACTION = LEASE_LIVE_FRACTION
"""A lease is live while its last renewal is at most this many of its agent's heartbeat periods old."""
RENEW_FRACTION = 1 / 4
"""Agents renew their lease, and read the others', this many heartbeat periods apart..."""
MIN_RENEW_S = 0.25
"""...but not more often than this."""
SEPARATOR = "\0"  # agent ids and component names are NAME_PATTERN: neither holds a NUL


def weight(agent: str, component: str) -> int:
    """The stable weight of `component` for `agent`: 8 bytes of blake2b, the same on every host and run."""
    digest = hashlib.blake2b(f"{agent}{SEPARATOR}{component}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def owners(component: str, agents: Iterable[str], replicas: int) -> tuple[str, ...]:
    """The agents that watch `component`: the `replicas` of `agents` with the highest weight (all of them when
    fewer), best first. Ties (never seen with 64 bits) go to the agent whose id sorts first."""
    ranked = sorted(set(agents), key=lambda a: (-weight(a, component), a))
    return tuple(ranked[:max(1, replicas)])


def renew_every_s(heartbeat_s: float) -> float:
    """How often an agent renews its lease and reads the others'."""
    return max(MIN_RENEW_S, heartbeat_s * RENEW_FRACTION)


def live_ms(heartbeat_s: float) -> int:
    """How long a lease stays live after its renewal (slawatch.model.lease_live_ms)."""
    return lease_live_ms(heartbeat_s)


def is_live(lease: AgentLease, now_ms: int) -> bool:
    """Whether the lease is fresh at the store's instant `now_ms` (AgentLease.live_at)."""
    return lease.live_at(now_ms)


def watches_zone(agent_zone: str | None, component_zone: str | None, mode: AssignMode) -> bool:
    """The zone rule: a component with a zone is watched only by agents of that zone, one without a zone by agents
    without one; with `assign: static` an agent with a zone also watches the components without one."""
    if component_zone == agent_zone:
        return True
    return mode == "static" and component_zone is None


@dataclass(frozen=True, slots=True)
class Member:
    """A live agent taking part in automatic assignment."""

    agent: str
    zone: str | None


def auto_members(leases: Iterable[AgentLease], now_ms: int) -> list[Member]:
    """The live agents with `assign: auto`, sorted by id: those that share the components."""
    return [Member(lease.agent, lease.zone or None) for lease in sorted(leases, key=lambda x: x.agent)
            if lease.assign == "auto" and is_live(lease, now_ms)]


class Assigner:
    """Shares one config's components among members, with the weights cached per (agent, component list): a new
    membership computes the columns of new agents only (a join of one agent to ten over 100 000 components hashes
    100 000 pairs, not a million), and the share of a membership is cached until it changes."""

    def __init__(self, components: Mapping[str, str | None]) -> None:
        """`components`: name -> zone (None: no zone)."""
        names: dict[str | None, list[str]] = {}
        for name, zone in sorted(components.items()):
            names.setdefault(zone, []).append(name)
        self.by_zone: dict[str | None, tuple[str, ...]] = {zone: tuple(n) for zone, n in names.items()}
        self._columns: dict[tuple[str | None, str], list[int]] = {}
        self._shares: dict[tuple[frozenset[Member], int], dict[str, frozenset[str]]] = {}

    def _column(self, zone: str | None, agent: str) -> list[int]:
        key = (zone, agent)
        column = self._columns.get(key)
        if column is None:
            prefix = f"{agent}{SEPARATOR}"
            blake2b, from_bytes = hashlib.blake2b, int.from_bytes
            column = self._columns[key] = [from_bytes(blake2b(f"{prefix}{c}".encode(), digest_size=8).digest(), "big")
                                           for c in self.by_zone[zone]]
        return column

    def shares(self, members: Iterable[Member], replicas: int) -> dict[str, frozenset[str]]:
        """Each member's share: the components it watches (the zone rule of `assign: auto`, then rendezvous)."""
        group = frozenset(members)
        cached = self._shares.get((group, replicas))
        if cached is not None:
            return cached
        out: dict[str, frozenset[str]] = {m.agent: frozenset() for m in group}
        for zone, names in self.by_zone.items():
            agents = sorted(m.agent for m in group if m.zone == zone)
            if not agents:
                continue
            if len(agents) <= replicas:
                for a in agents:
                    out[a] = out[a] | frozenset(names)
                continue
            columns = [self._column(zone, a) for a in agents]
            picked: list[list[str]] = [[] for _ in agents]
            if replicas == 1:
                for i, ws in enumerate(zip(*columns, strict=True)):
                    picked[ws.index(max(ws))].append(names[i])
            else:
                order = range(len(agents))
                for i, ws in enumerate(zip(*columns, strict=True)):
                    # highest weights first; at equal weight the agent that sorts first (as owners())
                    for k in sorted(order, key=lambda k: -ws[k])[:replicas]:
                        picked[k].append(names[i])
            for a, names_of in zip(agents, picked, strict=True):
                out[a] = out[a] | frozenset(names_of)
        # Forget the columns of agents that are gone, and older memberships: memory stays bounded.
        live = {(m.zone, m.agent) for m in group}
        for key in [k for k in self._columns if k not in live]:
            del self._columns[key]
        self._shares = {(group, replicas): out}
        return out

    def share(self, agent: str, members: Iterable[Member], replicas: int) -> frozenset[str]:
        """The components `agent` watches; empty when it is not a member."""
        return self.shares(members, replicas).get(agent, frozenset())


__all__ = ["LIVE_FRACTION", "MIN_RENEW_S", "RENEW_FRACTION", "Assigner", "Member", "auto_members",
           "is_live", "live_ms", "owners", "renew_every_s", "watches_zone", "weight"]

"""The agent's lease in the shared store, and its share of the components from the other agents' leases."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Mapping
from dataclasses import dataclass

from agent.assign import Assigner, Member, auto_members, is_live
from slawatch import __version__
from slawatch.config.settings import AgentSettings
from slawatch.model import AgentLease
from slawatch.store import MemberStore, SourceError

log = logging.getLogger(__name__)

ROUND_TIMEOUT_S = 5.0


@dataclass(frozen=True, slots=True)
class Shares:
    """One read of the leases: the store's instant, the live agents (auto) and each one's share."""

    now_ms: int
    members: tuple[Member, ...]
    shares: Mapping[str, frozenset[str]]

    def owners(self, component: str) -> frozenset[str]:
        return frozenset(a for a, names in self.shares.items() if component in names)


class Membership:
    """Renews this agent's lease and reads the others' (one round per `renew_every_s`). A store that cannot be
    read leaves the share as it was (never everything dropped): logged once per outage, counted in `errors`."""

    def __init__(self, store: MemberStore, settings: AgentSettings) -> None:
        self.store = store
        self.settings = settings
        self.started_ms = time.time_ns() // 1_000_000
        self.host = socket.gethostname()
        self.errors = 0
        self.live = 0
        self.failing = False
        self.assigner: Assigner | None = None
        self._components: dict[str, str | None] = {}

    def set_components(self, components: Mapping[str, str | None]) -> bool:
        """The config's components (name -> zone); the weights are computed again only when they change. True
        when they did."""
        if self.assigner is not None and components == self._components:
            return False
        self._components = dict(components)
        self.assigner = Assigner(self._components)
        return True

    async def round(self, watching: int) -> Shares | None:
        """Renew the lease, read the leases and share the components among the live `assign: auto` agents; None
        when the store failed."""
        s = self.settings
        lease = AgentLease(s.id, 0, self.started_ms, s.heartbeat_s, s.zone or "", s.assign, s.replicas, watching,
                           self.host, __version__)
        try:
            # A store that hangs must not hold the share task: its next round comes, the share stays.
            async with asyncio.timeout(max(ROUND_TIMEOUT_S, s.heartbeat_s / 2)):
                await self.store.renew(lease)
                now_ms, leases = await self.store.members()
        except (SourceError, OSError, TimeoutError) as exc:
            self.errors += 1
            if not self.failing:
                self.failing = True
                log.error("member store %s: %s; keeping the current share of %d components until it answers",
                          self.store.name, str(exc) or "no answer in time", watching)
            return None
        if self.failing:
            self.failing = False
            log.info("member store %s answers again", self.store.name)
        members = auto_members(leases, now_ms)
        self.live = sum(1 for x in leases if is_live(x, now_ms))
        if s.assign != "auto":
            return Shares(now_ms, tuple(members), {})
        me = Member(s.id, s.zone)
        if me not in members:  # this agent is running, whatever its lease says (a renewal that came late)
            members = sorted([*members, me], key=lambda m: m.agent)
        assigner = self.assigner or Assigner({})
        # Pure but CPU-bound the first time (100 000 components: ~1 s per new agent): off the event loop.
        shares = await asyncio.to_thread(assigner.shares, members, s.replicas)
        return Shares(now_ms, tuple(members), shares)

    async def leave(self) -> None:
        try:
            async with asyncio.timeout(2.0):
                await self.store.leave(self.settings.id)
        except (SourceError, OSError, TimeoutError) as exc:
            log.warning("member store %s: could not remove this agent's lease (it goes stale): %s",
                        self.store.name, exc)


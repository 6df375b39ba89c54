"""Agents and stores (`/agents`, operators and admins only): each agent's last heartbeat and period and whether it is
fresh, the agents' leases in the shared store (where the console has them), the store as the console reads it, and,
inside `slawatch agent`, what /healthz knows of this process."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from aiohttp import web

from console.board import fresh_agents
from console.context import Ctx
from console.scope import sees_everything
from slawatch.model import AgentLease, Heartbeats, StateChange
from slawatch.store import MemberStore, SourceError

LOOKBACK_MS = 24 * 3600 * 1000
"""How far back the page looks for heartbeats: an agent silent for longer shows only through its stored states."""
MEMBERS = "agents.members"
"""The key in Console.extra of the agents' lease store (a MemberStore), where the composition root gives one."""


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One agent as the store knows it: its last heartbeat (None: none in the lookback), the period it announced,
    whether that heartbeat still vouches for now, and the components whose latest stored state is its own."""

    agent: str
    last_ms: int | None
    period_s: float | None
    fresh: bool
    components: int
    here: bool


def agent_rows(beats: Heartbeats, changes: Iterable[StateChange], now_ms: int, here: str | None) -> list[AgentRow]:
    """Every agent that beat within the lookback or has a stored state, fresh ones first, then by name."""
    # A released change ends the agent's view: the component is another agent's now.
    watching = Counter(agent for _, agent in {(c.ref.component, c.agent) for c in changes if not c.released})
    live = fresh_agents(beats, now_ms)
    rows = []
    for agent in sorted(set(beats) | set(watching)):
        hb = beats.get(agent)
        last = hb.instants_ms[-1] if hb is not None and hb.instants_ms else None
        rows.append(AgentRow(agent, last, hb.period_s if hb is not None else None, agent in live,
                             watching.get(agent, 0), agent == here))
    return sorted(rows, key=lambda r: (not r.fresh, r.agent))


@dataclass(frozen=True, slots=True)
class LeaseRow:
    """An agent's lease as the shared store holds it, its age by the store's clock; live by the agents' own rule
    (AgentLease.live_at)."""

    lease: AgentLease
    age_ms: int
    live: bool


def lease_rows(now_ms: int, leases: Iterable[AgentLease]) -> list[LeaseRow]:
    """Live leases first, then by agent."""
    rows = [LeaseRow(lease, now_ms - lease.seen_ms, lease.live_at(now_ms)) for lease in leases]
    return sorted(rows, key=lambda r: (not r.live, r.lease.agent))


async def read_leases(store: MemberStore | None) -> tuple[list[LeaseRow] | None, str]:
    """(rows, error); rows None where the console has no lease store."""
    if store is None:
        return None, ""
    try:
        now_ms, leases = await store.members()
    except SourceError as exc:
        return [], str(exc)
    return lease_rows(now_ms, leases), ""


async def show(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    if not sees_everything(ctx.user):
        raise web.HTTPNotFound(text="no such page", content_type="text/plain")
    console = ctx.console
    now = console.board.clock()
    local = console.local_health() if console.local_health is not None else None
    error = ""
    rows: list[AgentRow] = []
    try:
        beats = await console.source.heartbeats(now - LOOKBACK_MS, now + 1)
        changes = await console.source.changes(now, now + 1)
    except SourceError as exc:
        error = str(exc)
    else:
        rows = agent_rows(beats, changes, now, local.agent if local is not None else None)
    leases, lease_error = await read_leases(console.extra.get(MEMBERS))
    storage = console.loaded.config.storage
    # The one the console reads (open_source): PostgreSQL first, then InfluxDB, then SQLite.
    store = ("PostgreSQL" if storage.postgres is not None else "InfluxDB" if storage.influxdb is not None
             else "SQLite")
    return ctx.render("agents.html", title="Agents & stores", rows=rows, now=now, error=error, local=local,
                      leases=leases, lease_error=lease_error,
                      store=store, lookback_ms=LOOKBACK_MS, board_error=console.board.snapshot.error,
                      read_ms=console.board.snapshot.read_ms)

"""The operator console inside `slawatch agent` (one host): its stores opened here, mounted on the agent's listener
beside /metrics and /healthz, following the agent's reloads."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from aiohttp import web

from console.app import SecretError, load_secret, mount, new_console
from console.health import HealthFn, LocalHealth, SinkHealth, TaskHealth
from slawatch.cli.usage import EXIT_USAGE
from slawatch.config.loader import Loaded
from slawatch.store import DeskStore, MemberStore, open_desk_store, open_source, open_user_store

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger(__name__)


class OperatorConsole:
    """The console of one agent process. It reads the store (never the agent's memory); the desk's store is
    shared with the incident desk when there is one."""

    def __init__(self, loaded: Loaded, desk_store: DeskStore | None = None, *,
                 local_health: HealthFn | None = None, members: MemberStore | None = None) -> None:
        storage = loaded.config.storage
        self.source = open_source(storage, retention_s=loaded.contract.retention_s)
        self._own_desk_store = desk_store is None
        self.desk_store = desk_store if desk_store is not None else open_desk_store(storage)
        self.users = open_user_store(storage)
        try:
            self.secret = load_secret(loaded.config.console.secret_path(storage))
        except SecretError as exc:  # a start-up error the operator fixes, not a crash
            log.error("%s", exc)
            raise SystemExit(EXIT_USAGE) from None
        self.console = new_console(loaded, self.source, self.desk_store, self.users, local_health=local_health)
        self.members = members  # the agents' leases on the agents page; closed with the console
        if members is not None:
            from console.pages.agents import MEMBERS  # lazy, as the console is

            self.console.extra[MEMBERS] = members

    def mount(self, app: web.Application) -> None:
        mount(app, self.console, secret=self.secret)

    def apply(self, loaded: Loaded) -> None:
        self.console.apply(loaded)

    async def close(self) -> None:
        await self.source.close()
        await self.users.close()
        if self._own_desk_store:
            await self.desk_store.close()
        if self.members is not None:
            await self.members.close()



def agent_health(agent: Agent) -> HealthFn:
    """What /healthz knows of `agent`, as the console's agents page shows it."""
    def read() -> LocalHealth:
        held, sinks = agent.sink_health()
        now = time.monotonic()
        stable_s = agent.supervisor.stable_s
        return LocalHealth(
            agent.agent_id, tuple(agent.health()), time.time() - agent.started, len(agent.states), agent.probe_runs,
            agent.spool.bytes, held, tuple(SinkHealth(*s) for s in sinks),
            tuple(TaskHealth(t.name, t.restarts, t.last_error, t.failing(now, stable_s))
                  for t in agent.supervisor.tasks.values()))

    return read

"""The agents' leases in SQLite (`slawatch_agent`), on the records file: the members of one host's agents."""

from __future__ import annotations

import dataclasses
import time

from slawatch import schema
from slawatch.model import AgentLease
from slawatch.schema import AGENT
from slawatch.store.sqlite import SqliteStatements

_SELECT = f"SELECT {', '.join(AGENT.names)} FROM {AGENT.name} ORDER BY agent"
_UPSERT = (f"INSERT OR REPLACE INTO {AGENT.name} ({', '.join(AGENT.names)}) "
           f"VALUES ({', '.join('?' * len(AGENT.names))})")


class SqliteMemberStore(SqliteStatements):
    """Agent leases on one SQLite file (the records file), shared by the agents of one host. `seen_ms` is this
    host's clock, the one all of them read."""

    async def renew(self, lease: AgentLease) -> None:
        stamped = dataclasses.replace(lease, seen_ms=time.time_ns() // 1_000_000)
        await self._run("renew an agent lease in", _UPSERT, schema.agent_lease_row(stamped))

    async def members(self) -> tuple[int, list[AgentLease]]:
        rows, _ = await self._run("read agent leases from", _SELECT)
        return time.time_ns() // 1_000_000, [schema.agent_lease(r) for r in rows]

    async def leave(self, agent: str) -> None:
        await self._run("remove an agent lease from", f"DELETE FROM {AGENT.name} WHERE agent = ?", [agent])


__all__ = ["SqliteMemberStore"]

"""The agents' leases in SQLite (`slawatch_agent`), on the records file: the members of one host's agents."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from slawatch import schema
from slawatch.config.settings import SqliteSettings
from slawatch.model import AgentLease
from slawatch.schema import AGENT
from slawatch.store import SinkError, SourceError, StoreUnavailable
from slawatch.store.sqlite import SqliteSink

_SELECT = f"SELECT {', '.join(AGENT.names)} FROM {AGENT.name} ORDER BY agent"
_UPSERT = (f"INSERT OR REPLACE INTO {AGENT.name} ({', '.join(AGENT.names)}) "
           f"VALUES ({', '.join('?' * len(AGENT.names))})")


class SqliteMemberStore:
    """Agent leases on one SQLite file (the records file), shared by the agents of one host. `seen_ms` is this
    host's clock, the one all of them read."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self._sink = SqliteSink(SqliteSettings(path=self.path))
        self._lock = asyncio.Lock()

    async def _run(self, doing: str, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._lock:
            try:
                db = await self._sink.connect()  # WAL, schema and migrations, as the agent's own store
            except SinkError as exc:
                raise StoreUnavailable(str(exc)) from exc
            try:
                async with db.execute(sql, params) as cursor:
                    rows = list(await cursor.fetchall())
                await db.commit()
                return rows
            except sqlite3.Error as exc:
                raise SourceError(f"cannot {doing} SQLite store {self.path}: {exc}") from exc

    async def renew(self, lease: AgentLease) -> None:
        stamped = dataclasses.replace(lease, seen_ms=time.time_ns() // 1_000_000)
        await self._run("renew an agent lease in", _UPSERT, schema.agent_lease_row(stamped))

    async def members(self) -> tuple[int, list[AgentLease]]:
        rows = await self._run("read agent leases from", _SELECT)
        return time.time_ns() // 1_000_000, [schema.agent_lease(r) for r in rows]

    async def leave(self, agent: str) -> None:
        await self._run("remove an agent lease from", f"DELETE FROM {AGENT.name} WHERE agent = ?", [agent])

    async def close(self) -> None:
        await self._sink.close()


__all__ = ["SqliteMemberStore"]

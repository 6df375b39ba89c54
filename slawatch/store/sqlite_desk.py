"""The incident desk's records in SQLite: incidents, the faults that raised them, their event logs and the
notification outbox, written in one transaction per change (tables from slawatch.schema)."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite

from slawatch import schema
from slawatch.config.settings import SqliteSettings
from slawatch.model import Incident, IncidentEvent, Notification, NotificationState
from slawatch.schema import INCIDENT, INCIDENT_EVENT, INCIDENT_FAULT, NOTIFICATION
from slawatch.store import SinkError, SourceError, StoreUnavailable
from slawatch.store.sqlite import SqliteSink

T = TypeVar("T")


def _insert(m: schema.Measurement, verb: str = "INSERT") -> str:
    return f"{verb} INTO {m.name} ({', '.join(m.names)}) VALUES ({', '.join('?' * len(m.names))})"


def _select(m: schema.Measurement) -> str:
    return f"SELECT {', '.join(m.names)} FROM {m.name}"


_INCIDENT_SETS = ", ".join(f"{n} = ?" for n in INCIDENT.names if n != "id")
_SQL_UPDATE = f"UPDATE {INCIDENT.name} SET {_INCIDENT_SETS} WHERE id = ? AND version = ?"
_SQL_FAULT = _insert(INCIDENT_FAULT, "INSERT OR IGNORE")
_SQL_KNOWN_FAULT = f"SELECT incident FROM {INCIDENT_FAULT.name} WHERE component = ? AND start_ms = ?"
_SQL_EVENT = _insert(INCIDENT_EVENT)
_SQL_MARK = (f"UPDATE {NOTIFICATION.name} SET state = ?, attempts = ?, due_ms = ?, last_error = ?, sent_ms = ? "
             f"WHERE id = ? AND state = ?")
# A replayed write of the same change finds its notifications there already: they are not queued twice.
_SQL_NOTE = _insert(NOTIFICATION, "INSERT OR IGNORE")
_SQL_NEXT_ID = (f"SELECT MAX(CAST(substr(id, ?) AS INTEGER)) FROM {INCIDENT.name} WHERE id LIKE ? "
                f"UNION ALL SELECT MAX(CAST(substr(incident, ?) AS INTEGER)) FROM {INCIDENT_FAULT.name} "
                f"WHERE incident LIKE ?")


class SqliteDeskStore:
    """The desk's store on one SQLite file (the embedded store's, by default). One connection, one transaction
    at a time; other processes (the agent, `slawatch incident`) take turns through SQLite's own lock."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self._sink = SqliteSink(SqliteSettings(path=self.path))
        self._lock = asyncio.Lock()

    async def _db(self) -> aiosqlite.Connection:
        try:
            return await self._sink.connect()  # WAL, schema and migrations, as the agent's own store
        except SinkError as exc:
            raise StoreUnavailable(str(exc)) from exc

    async def _read(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        async with self._lock:
            db = await self._db()
            try:
                async with db.execute(sql, params) as cursor:
                    return list(await cursor.fetchall())
            except sqlite3.Error as exc:
                raise SourceError(f"cannot read incidents from SQLite store {self.path}: {exc}") from exc

    # ------------------------------------------------------------ incidents

    async def next_id(self, year: int) -> str:
        """A fresh incident id for `year` (INC-2026-000124). Two processes may draw the same one: `open` then
        refuses the second, which draws again."""
        prefix = f"INC-{year:04d}-"
        rows = await self._read(_SQL_NEXT_ID, [len(prefix) + 1, prefix + "%", len(prefix) + 1, prefix + "%"])
        last = max((int(r[0]) for r in rows if r[0] is not None), default=0)
        return f"{prefix}{last + 1:06d}"

    async def fault_known(self, component: str, start_ms: int) -> str | None:
        """The incident a fault of `component` starting at `start_ms` already raised, if any."""
        rows = await self._read(_SQL_KNOWN_FAULT, [component, start_ms])
        return str(rows[0][0]) if rows else None

    async def open(self, incident: Incident, events: Sequence[IncidentEvent],
                   notes: Sequence[Notification]) -> bool:
        """Record a new incident with its first events and notifications, and its fault; False (nothing written)
        when that fault has raised an incident already or the id is taken."""
        async def work(db: aiosqlite.Connection) -> bool:
            if await _exists(db, _SQL_KNOWN_FAULT, [incident.ref.component, incident.start_ms]):
                return False
            try:
                await db.execute(_insert(INCIDENT), schema.incident_row(incident))
            except sqlite3.IntegrityError:
                return False  # the id was drawn by another writer a moment ago
            await db.execute(_SQL_FAULT, [incident.ref.component, incident.start_ms, incident.id])
            await _append(db, events, notes)
            return True

        return (await self._transaction("open an incident in", work))

    async def open_many(self, items: Sequence[tuple[Incident, Sequence[IncidentEvent], Sequence[Notification]]]
                        ) -> list[bool]:
        """`open` for several incidents in one transaction (one disk sync for a core switch's thousand faults):
        for each, True when stored, False when its fault was known already or its id taken (nothing of it
        stored)."""
        async def work(db: aiosqlite.Connection) -> list[bool]:
            done = []
            for incident, events, notes in items:
                if await _exists(db, _SQL_KNOWN_FAULT, [incident.ref.component, incident.start_ms]):
                    done.append(False)
                    continue
                try:
                    await db.execute(_insert(INCIDENT), schema.incident_row(incident))
                except sqlite3.IntegrityError:
                    done.append(False)
                    continue
                await db.execute(_SQL_FAULT, [incident.ref.component, incident.start_ms, incident.id])
                await _append(db, events, notes)
                done.append(True)
            return done

        if not items:
            return []
        return await self._transaction("open incidents in", work)

    async def update(self, version: int, incident: Incident, events: Sequence[IncidentEvent],
                     notes: Sequence[Notification], *, fault_start_ms: int | None = None) -> bool:
        """Replace the incident written at `version` by `incident`, append events and notifications; False
        (nothing written) when it has moved on since, or when `fault_start_ms` (a fault re-opening it) has
        already been recorded."""
        row = schema.incident_row(incident)

        async def work(db: aiosqlite.Connection) -> bool:
            if fault_start_ms is not None:
                if await _exists(db, _SQL_KNOWN_FAULT, [incident.ref.component, fault_start_ms]):
                    return False
                await db.execute(_SQL_FAULT, [incident.ref.component, fault_start_ms, incident.id])
            cursor = await db.execute(_SQL_UPDATE, [*row[1:], incident.id, version])
            if cursor.rowcount != 1:
                raise _Moved  # rolls the fault back too
            await _append(db, events, notes)
            return True

        try:
            return (await self._transaction("update an incident in", work))
        except _Moved:
            return False

    async def get(self, id: str) -> Incident | None:
        rows = await self._read(f"{_select(INCIDENT)} WHERE id = ?", [id])
        return schema.incident(rows[0]) if rows else None

    async def active(self) -> list[Incident]:
        """Every incident not resolved, oldest first."""
        rows = await self._read(f"{_select(INCIDENT)} WHERE state != 'resolved' ORDER BY raised_ms, id")
        return [schema.incident(r) for r in rows]

    async def latest(self, component: str) -> Incident | None:
        """The component's most recent incident (the one a flapping fault re-opens)."""
        rows = await self._read(f"{_select(INCIDENT)} WHERE component = ? ORDER BY start_ms DESC, id DESC LIMIT 1",
                                [component])
        return schema.incident(rows[0]) if rows else None

    async def incidents(self, start_ms: int | None = None, end_ms: int | None = None, *,
                        customer: str | None = None, component: str | None = None,
                        active_only: bool = False) -> list[Incident]:
        """Incidents raised in [start_ms, end_ms) (unbounded where None), oldest first."""
        where, params = ["1 = 1"], []
        for clause, value in (("raised_ms >= ?", start_ms), ("raised_ms < ?", end_ms), ("customer = ?", customer),
                              ("component = ?", component)):
            if value is not None:
                where.append(clause)
                params.append(value)
        if active_only:
            where.append("state != 'resolved'")
        rows = await self._read(f"{_select(INCIDENT)} WHERE {' AND '.join(where)} ORDER BY raised_ms, id", params)
        return [schema.incident(r) for r in rows]

    async def events(self, id: str) -> list[IncidentEvent]:
        rows = await self._read(f"{_select(INCIDENT_EVENT)} WHERE incident = ? ORDER BY seq", [id])
        return [schema.incident_event(r) for r in rows]

    # ------------------------------------------------------------ the notification outbox

    async def due_notifications(self, now_ms: int, limit: int) -> list[Notification]:
        rows = await self._read(f"{_select(NOTIFICATION)} WHERE state = 'pending' AND due_ms <= ? "
                                f"ORDER BY due_ms, id LIMIT ?", [now_ms, limit])
        return [schema.notification(r) for r in rows]

    async def next_due_ms(self) -> int | None:
        rows = await self._read(f"SELECT MIN(due_ms) FROM {NOTIFICATION.name} WHERE state = 'pending'")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def pending_count(self) -> int:
        rows = await self._read(f"SELECT COUNT(*) FROM {NOTIFICATION.name} WHERE state = 'pending'")
        return int(rows[0][0])

    async def notifications(self, incident_id: str | None = None) -> list[Notification]:
        if incident_id is None:
            rows = await self._read(f"{_select(NOTIFICATION)} ORDER BY created_ms, id")
        else:
            rows = await self._read(f"{_select(NOTIFICATION)} WHERE incident = ? ORDER BY created_ms, id",
                                    [incident_id])
        return [schema.notification(r) for r in rows]

    async def mark(self, note: Notification) -> None:
        """Store a delivery attempt's outcome (state, attempts, due_ms, last_error, sent_ms) of a pending one."""
        await self.mark_many([note])

    async def mark_many(self, notes: Sequence[Notification]) -> None:
        """`mark` for several, in one transaction."""
        async def work(db: aiosqlite.Connection) -> bool:
            await db.executemany(_SQL_MARK, [[str(n.state), n.attempts, n.due_ms, schema.clean_text(n.last_error),
                                              n.sent_ms, n.id, str(NotificationState.PENDING)] for n in notes])
            return True

        if notes:
            await self._transaction("record notifications in", work)

    # ------------------------------------------------------------ upkeep

    async def prune(self, older_than_ms: int) -> int:
        """Forget resolved incidents (with their faults, events, notifications) raised before `older_than_ms`."""
        async def work(db: aiosqlite.Connection) -> int:
            old = f"SELECT id FROM {INCIDENT.name} WHERE state = 'resolved' AND raised_ms < ?"
            n = 0
            for table in (NOTIFICATION.name, INCIDENT_EVENT.name, INCIDENT_FAULT.name):
                n += (await db.execute(f"DELETE FROM {table} WHERE incident IN ({old})", [older_than_ms])).rowcount
            n += (await db.execute(f"DELETE FROM {INCIDENT.name} WHERE state = 'resolved' AND raised_ms < ?",
                                   [older_than_ms])).rowcount
            return n

        return (await self._transaction("prune incidents in", work))

    async def close(self) -> None:
        await self._sink.close()

    async def _transaction(self, doing: str, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run `work` in one BEGIN IMMEDIATE transaction: all of it is stored, or none."""
        async with self._lock:
            db = await self._db()
            try:
                await db.execute("BEGIN IMMEDIATE")
                try:
                    result = await work(db)
                except BaseException:
                    await db.rollback()
                    raise
                await db.commit()
                return result
            except sqlite3.Error as exc:
                raise SourceError(f"cannot {doing} SQLite store {self.path}: {exc}") from exc


class _Moved(Exception):
    """The incident was written by someone else since it was read."""


async def _exists(db: aiosqlite.Connection, sql: str, params: Sequence[Any]) -> bool:
    async with db.execute(sql, params) as cursor:
        return await cursor.fetchone() is not None


async def _append(db: aiosqlite.Connection, events: Sequence[IncidentEvent], notes: Sequence[Notification]) -> None:
    await db.executemany(_SQL_EVENT, [schema.event_row(e) for e in events])
    await db.executemany(_SQL_NOTE, [schema.notification_row(n) for n in notes])


__all__ = ["SqliteDeskStore"]

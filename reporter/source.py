"""Reading the store for reports: state changes, heartbeats, maintenance windows and sent reports (SQLite, InfluxDB)."""

from __future__ import annotations

import asyncio
import json
import logging
import operator
import sqlite3
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol
from urllib.request import pathname2url

import aiohttp
import aiosqlite

from slawatch.config.settings import InfluxSettings, SqliteSettings, StorageSettings
from slawatch.store import SinkError
from slawatch.store.influxdb import RETENTION_POLICY, auth_headers, quote_ident, write_endpoint
from slawatch.store.lineprotocol import HEARTBEAT, MAINTENANCE, STATE, FieldValue, Record, clean_text, line

log = logging.getLogger(__name__)

REPORT_SENT = "slawatch_report_sent"
HEARTBEAT_GAP_FACTOR = 3
"""Heartbeats further apart than this many periods leave a gap (as in coverage_from_heartbeats)."""

CHUNK_SIZE = 10_000
"""Rows per chunk of a streamed InfluxQL answer."""

Scope = Literal["component", "class", "customer"]
SCOPES: tuple[Scope, ...] = ("component", "class", "customer")


class SourceError(Exception):
    """The store could not be read or written: unreachable, refused, missing or corrupt."""


class StoreUnavailable(SourceError):
    """The store cannot be reached or opened at all: every read fails the same way until it is back."""


class StoredChange(NamedTuple):
    """One row of `slawatch_state`: a confirmed change of a component as one agent saw it (a NamedTuple for
    speed: a month's read holds hundreds of thousands)."""

    component: str
    agent: str
    ts_ms: int
    up: bool
    reason: str


@dataclass(frozen=True, slots=True)
class StoredWindow:
    """A planned maintenance window [start_ms, end_ms) over one component, class or customer.

    `announced_ms` is when the customer was told (the evidence for the notice rule); `created_ms` when
    it was entered.
    """

    id: str
    scope: Scope
    value: str
    start_ms: int
    end_ms: int
    announced_ms: int
    reason: str
    created_ms: int

    def applies_to(self, component: str, klass: str, customer: str) -> bool:
        if self.scope == "component":
            return self.value == component
        if self.scope == "class":
            return self.value == klass
        return self.value == customer


class Source(Protocol):
    """A store the reporter reads (and where it keeps maintenance windows and what it sent)."""

    async def changes(self, start_ms: int, end_ms: int,
                      components: Sequence[str] | None = None) -> list[StoredChange]:
        """Every change in [start_ms, end_ms) plus, per (component, agent), the last change before start_ms."""
        ...

    async def heartbeats(self, start_ms: int, end_ms: int) -> dict[str, tuple[list[int], float]]:
        """agent -> (sorted heartbeat instants in [start_ms - 3 periods, end_ms), period_s)."""
        ...

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[StoredWindow]:
        """Windows overlapping [start_ms, end_ms) (unbounded where None), removed ones left out."""
        ...

    async def add_window(self, window: StoredWindow) -> None: ...

    async def remove_window(self, id: str) -> bool:
        """Mark the window removed (kept as evidence); False when there is no such window in force."""
        ...

    async def report_sent(self, period_key: str, customer: str) -> bool: ...

    async def record_report_sent(self, period_key: str, customer: str, sent_ms: int, sha256: str) -> None: ...

    async def close(self) -> None: ...


def open_source(storage: StorageSettings) -> Source:
    """The InfluxDB source when InfluxDB is configured, else SQLite."""
    if storage.influxdb is not None:
        return InfluxSource(storage.influxdb)
    return SqliteSource(storage.sqlite or SqliteSettings())


# ---------------------------------------------------------------- shared by both stores


_change_order = operator.itemgetter(0, 2, 1)  # component, ts_ms, agent


def _heartbeat_result(rows: Iterable[tuple[str, int, float]], start_ms: int,
                      lookback_ms: dict[str, int]) -> dict[str, tuple[list[int], float]]:
    """Group (agent, ts_ms, period_s) rows; keep those before start only within the agent's own margin."""
    beats: dict[str, list[int]] = defaultdict(list)
    periods: dict[str, float] = {}
    for agent, ts, period_s in rows:
        if ts < start_ms - lookback_ms.get(agent, 0):
            continue
        beats[agent].append(int(ts))
        # One period per agent: the longest it used, so a change of heartbeat_s never opens a false gap.
        periods[agent] = max(periods.get(agent, 0.0), float(period_s))
    return {agent: (sorted(ts_list), periods[agent]) for agent, ts_list in sorted(beats.items())}


def _margin_ms(period_s: float) -> int:
    return round(HEARTBEAT_GAP_FACTOR * period_s * 1000)


# ---------------------------------------------------------------- SQLite


_SQL_CHANGES = "SELECT component, agent, ts_ms, up, reason FROM slawatch_state WHERE ts_ms >= ? AND ts_ms < ?"
# Bare columns with MAX(): SQLite returns them from the row that holds the maximum.
_SQL_LAST_CHANGES = ("SELECT component, agent, MAX(ts_ms), up, reason FROM slawatch_state "
                     "WHERE ts_ms < ? {filter} GROUP BY component, agent")
_SQL_FILTER = "AND component IN (SELECT value FROM json_each(?))"
# The agents, by skipping along the primary key (agent, ts_ms): one seek per agent, not a scan.
_SQL_AGENTS = """
WITH RECURSIVE a(agent) AS (
    SELECT (SELECT MIN(agent) FROM slawatch_heartbeat)
    UNION ALL
    SELECT (SELECT MIN(agent) FROM slawatch_heartbeat WHERE agent > a.agent) FROM a WHERE a.agent IS NOT NULL
)
SELECT a.agent, (SELECT period_s FROM slawatch_heartbeat h WHERE h.agent = a.agent AND h.ts_ms < ?
                 ORDER BY h.ts_ms DESC LIMIT 1)
FROM a WHERE a.agent IS NOT NULL
"""
_SQL_HEARTBEATS = "SELECT agent, ts_ms, period_s FROM slawatch_heartbeat WHERE ts_ms >= ? AND ts_ms < ?"
_WINDOW_COLUMNS = "id, scope, value, start_ms, end_ms, announced_ms, reason, created_ms"


class SqliteSource:
    """Reads through a read-only connection (safe beside the agent writing in WAL mode); writes windows and
    sent-report records through a second connection opened on first use."""

    def __init__(self, settings: SqliteSettings) -> None:
        self.path = Path(settings.path)
        self.settings = settings
        self._ro: aiosqlite.Connection | None = None
        self._rw: aiosqlite.Connection | None = None
        self._lock = asyncio.Lock()

    async def _reader(self) -> aiosqlite.Connection:
        async with self._lock:
            if self._ro is None:
                if not self.path.exists():
                    raise StoreUnavailable(f"SQLite store {self.path} does not exist (the agent creates it on its "
                                      f"first write; check storage.sqlite.path)")
                self._check_file()
                uri = f"file:{pathname2url(str(self.path.resolve()))}?mode=ro"
                try:
                    db = await aiosqlite.connect(uri, uri=True, timeout=10.0, isolation_level=None)
                except sqlite3.Error as exc:
                    await _let_aiosqlite_stop()
                    raise StoreUnavailable(f"cannot open SQLite store {self.path} read-only: {exc}") from exc
                self._ro = db
            return self._ro

    async def _writer(self) -> aiosqlite.Connection:
        async with self._lock:
            if self._rw is None:
                from slawatch.store.sqlite import SqliteSink

                if self.path.exists():
                    self._check_file()
                try:  # the sink's own set-up: WAL, and the schema's tables if they are not there yet
                    self._rw = await SqliteSink(self.settings).connect()
                except SinkError as exc:
                    await _let_aiosqlite_stop()
                    raise StoreUnavailable(str(exc)) from exc
            return self._rw

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise StoreUnavailable(f"SQLite store {self.path} is not a file (check storage.sqlite.path)")

    async def _read(self, sql: str, params: Sequence[Any], *, missing_ok: bool = False) -> list[sqlite3.Row]:
        if missing_ok and self._ro is None and self._rw is None and not self.path.exists():
            return []  # no store yet, so no window or report recorded: the reads that may say so
        db = await self._reader()
        try:
            return list(await db.execute_fetchall(sql, params))
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                # The file is there but the agent has not written its first batch (or this table) yet:
                # nothing was recorded, which a report shows as "no data" rather than as an error.
                return []
            raise SourceError(f"cannot read SQLite store {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise SourceError(f"cannot read SQLite store {self.path}: {exc}") from exc

    async def _write(self, sql: str, params: Sequence[Any]) -> int:
        db = await self._writer()
        try:
            cursor = await db.execute(sql, params)
            await db.commit()
            return int(cursor.rowcount)
        except sqlite3.IntegrityError as exc:
            raise SourceError(f"SQLite store {self.path} refused the row: {exc}") from exc
        except sqlite3.Error as exc:
            raise SourceError(f"cannot write to SQLite store {self.path}: {exc}") from exc

    async def changes(self, start_ms: int, end_ms: int,
                      components: Sequence[str] | None = None) -> list[StoredChange]:
        filter_sql, extra = ("", []) if components is None else (_SQL_FILTER, [json.dumps(list(components))])
        in_period = await self._read(f"{_SQL_CHANGES} {filter_sql}", [start_ms, end_ms, *extra])
        before = await self._read(_SQL_LAST_CHANGES.format(filter=filter_sql), [start_ms, *extra])
        out = [StoredChange(r[0], r[1], int(r[2]), bool(r[3]), r[4]) for r in (*before, *in_period)]
        out.sort(key=_change_order)
        return out

    async def heartbeats(self, start_ms: int, end_ms: int) -> dict[str, tuple[list[int], float]]:
        agents = await self._read(_SQL_AGENTS, [start_ms])
        lookback = {agent: _margin_ms(period) for agent, period in agents if period is not None}
        low = start_ms - max(lookback.values(), default=0)
        rows = await self._read(_SQL_HEARTBEATS, [low, end_ms])
        return _heartbeat_result(((r[0], r[1], r[2]) for r in rows), start_ms, lookback)

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[StoredWindow]:
        sql = f"SELECT {_WINDOW_COLUMNS} FROM slawatch_maintenance WHERE removed = 0"
        params: list[int] = []
        if end_ms is not None:
            sql += " AND start_ms < ?"
            params.append(end_ms)
        if start_ms is not None:
            sql += " AND end_ms > ?"
            params.append(start_ms)
        rows = await self._read(sql + " ORDER BY start_ms, id", params, missing_ok=True)
        return [StoredWindow(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), r[6], int(r[7])) for r in rows]

    async def add_window(self, window: StoredWindow) -> None:
        _check_window(window)
        await self._write(f"INSERT INTO slawatch_maintenance ({_WINDOW_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                          [window.id, window.scope, window.value, window.start_ms, window.end_ms,
                           window.announced_ms, window.reason, window.created_ms])

    async def remove_window(self, id: str) -> bool:
        return await self._write("UPDATE slawatch_maintenance SET removed = 1 WHERE id = ? AND removed = 0",
                                 [id]) > 0

    async def report_sent(self, period_key: str, customer: str) -> bool:
        rows = await self._read(f"SELECT 1 FROM {REPORT_SENT} WHERE period = ? AND customer = ? LIMIT 1",
                                [period_key, customer], missing_ok=True)
        return bool(rows)

    async def record_report_sent(self, period_key: str, customer: str, sent_ms: int, sha256: str) -> None:
        await self._write(f"INSERT OR REPLACE INTO {REPORT_SENT} (period, customer, sent_ms, sha256) "
                          "VALUES (?, ?, ?, ?)", [period_key, customer, sent_ms, sha256])

    async def close(self) -> None:
        for db in (self._ro, self._rw):
            if db is not None:
                await db.close()
        self._ro = self._rw = None


async def _let_aiosqlite_stop() -> None:
    # A failed aiosqlite.connect stops its worker thread without awaiting it; the thread then reports to
    # this event loop. Give it a moment so that a CLI leaving asyncio.run right after does not close the
    # loop under it.
    await asyncio.sleep(0.05)


def _check_window(window: StoredWindow) -> None:
    if window.scope not in SCOPES:
        raise ValueError(f"bad maintenance scope {window.scope!r}: one of {', '.join(SCOPES)}")
    if window.end_ms <= window.start_ms:
        raise ValueError(f"maintenance window {window.id!r} must end after it starts")


# ---------------------------------------------------------------- InfluxDB


def quote_string(text: str) -> str:
    """An InfluxQL string literal: single quotes, with backslash, quote and newline escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def time_ms(ts_ms: int) -> str:
    """An epoch-milliseconds InfluxQL time literal."""
    return f"{int(ts_ms)}ms"


_COMPONENT_FILTER_MAX = 200
"""Above this many components the filter is applied to the answer rather than written into the query."""


class InfluxSource:
    """InfluxQL over /query (v1, or v2's v1-compatible API with db=bucket), answers streamed in chunks."""

    def __init__(self, settings: InfluxSettings, *, session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self.base_url = settings.url.rstrip("/")
        if settings.api == "v1":
            assert settings.database is not None  # InfluxSettings validates this
            self.database = settings.database
            self.retention_policy = settings.retention_policy or RETENTION_POLICY
        else:
            assert settings.bucket is not None
            # v2 maps a bucket to the virtual database of that name, retention policy "autogen".
            self.database = settings.bucket
            self.retention_policy = settings.retention_policy or "autogen"
        self.name = f"influxdb:{self.base_url}/{self.database}.{self.retention_policy}"
        self._session = session
        self._own_session = session is None

    def _from(self, measurement: str) -> str:
        return f"{quote_ident(self.database)}.{quote_ident(self.retention_policy)}.{quote_ident(measurement)}"

    # ------------------------------------------------------------ reads

    async def changes(self, start_ms: int, end_ms: int,
                      components: Sequence[str] | None = None) -> list[StoredChange]:
        where = ""
        wanted: set[str] | None = None
        if components is not None:
            wanted = set(components)
            if not wanted:
                return []
            if len(wanted) <= _COMPONENT_FILTER_MAX:
                where = " AND (" + " OR ".join(f'"component" = {quote_string(c)}' for c in sorted(wanted)) + ")"
        src = self._from(STATE)
        by = 'GROUP BY "component", "agent"'
        in_period = (f'SELECT "up", "reason" FROM {src} WHERE time >= {time_ms(start_ms)} '
                     f"AND time < {time_ms(end_ms)}{where} {by}")
        # LAST is a selector: "reason" comes from the same point.
        before = f'SELECT LAST("up") AS "up", "reason" FROM {src} WHERE time < {time_ms(start_ms)}{where} {by}'

        async def collect(q: str) -> list[StoredChange]:
            found: list[StoredChange] = []
            async for tags, row in self._rows(q, missing_ok=True):
                component, agent = tags.get("component", ""), tags.get("agent", "")
                if (wanted is not None and component not in wanted) or row.get("up") is None:
                    continue
                found.append(StoredChange(component, agent, int(row["time"]), bool(row["up"]),
                                          row.get("reason") or ""))
            return found

        # The two queries are independent and each mostly waits on the server: run them side by side.
        last, inside = await asyncio.gather(collect(before), collect(in_period))
        out = last + inside
        out.sort(key=_change_order)
        return out

    async def heartbeats(self, start_ms: int, end_ms: int) -> dict[str, tuple[list[int], float]]:
        src = self._from(HEARTBEAT)
        lookback: dict[str, int] = {}
        async for tags, row in self._rows(f'SELECT LAST("period_s") AS "period_s" FROM {src} '
                                          f'WHERE time < {time_ms(start_ms)} GROUP BY "agent"', missing_ok=True):
            if row.get("period_s") is not None:
                lookback[tags.get("agent", "")] = _margin_ms(float(row["period_s"]))
        low = start_ms - max(lookback.values(), default=0)
        rows = [(tags.get("agent", ""), int(row["time"]), float(row["period_s"]))
                async for tags, row in self._rows(f'SELECT "period_s" FROM {src} WHERE time >= {time_ms(low)} '
                                                  f'AND time < {time_ms(end_ms)} GROUP BY "agent"',
                                                  missing_ok=True)
                if row.get("period_s") is not None]
        return _heartbeat_result(rows, start_ms, lookback)

    async def _window_rows(self, where: str) -> list[tuple[StoredWindow, bool, int]]:
        """(window, removed, point time) for every stored window matching `where`."""
        q = (f'SELECT "scope", "value", "end_ms", "announced_ms", "created_ms", "reason", "removed" '
             f'FROM {self._from(MAINTENANCE)}{where} GROUP BY "id"')
        out: list[tuple[StoredWindow, bool, int]] = []
        async for tags, row in self._rows(q, missing_ok=True):
            if row.get("scope") not in SCOPES or row.get("end_ms") is None:
                continue
            window = StoredWindow(tags.get("id", ""), row["scope"], row.get("value") or "", int(row["time"]),
                                  int(row["end_ms"]), int(row.get("announced_ms") or 0), row.get("reason") or "",
                                  int(row.get("created_ms") or 0))
            out.append((window, bool(row.get("removed")), int(row["time"])))
        return out

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[StoredWindow]:
        conditions = []
        if end_ms is not None:
            conditions.append(f"time < {time_ms(end_ms)}")
        if start_ms is not None:
            conditions.append(f'"end_ms" > {int(start_ms)}')
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        found = [w for w, removed, _ in await self._window_rows(where) if not removed]
        return sorted(found, key=lambda w: (w.start_ms, w.id))

    async def add_window(self, window: StoredWindow) -> None:
        _check_window(window)
        existing = await self._window_rows(f' WHERE "id" = {quote_string(window.id)}')
        if existing:
            raise SourceError(f"{self.name}: a maintenance window with id {window.id!r} exists already")
        await self._write([_window_record(window, removed=False)])

    async def remove_window(self, id: str) -> bool:
        found = [w for w, removed, _ in await self._window_rows(f' WHERE "id" = {quote_string(id)}') if not removed]
        if not found:
            return False
        # Same series and time: the point is overwritten with removed=1, and stays as evidence.
        await self._write([_window_record(w, removed=True) for w in found])
        return True

    async def report_sent(self, period_key: str, customer: str) -> bool:
        q = (f'SELECT "sha256" FROM {self._from(REPORT_SENT)} WHERE "period" = {quote_string(period_key)} '
             f'AND "customer" = {quote_string(customer)} LIMIT 1')
        return any([row async for _, row in self._rows(q, missing_ok=True)])

    async def record_report_sent(self, period_key: str, customer: str, sent_ms: int, sha256: str) -> None:
        rec = Record(REPORT_SENT, (("customer", clean_text(customer)), ("period", clean_text(period_key))),
                     (("sent_ms", int(sent_ms)), ("sha256", sha256)), int(sent_ms))
        await self._write([rec])

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._own_session:
            await session.close()

    # ------------------------------------------------------------ HTTP

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._own_session = True
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.timeout_s,
                                            sock_read=max(60.0, self.settings.timeout_s))
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        return auth_headers(self.settings)

    async def _rows(self, q: str, *, missing_ok: bool = False) -> AsyncIterator[tuple[dict[str, str], dict[str, Any]]]:
        """Run one SELECT, streamed in chunks; yield (series tags, row as column -> value).

        With `missing_ok`, a database or retention policy not created yet reads as empty: the agent creates
        them on its first write, so until then nothing was recorded (as with SQLite's tables).
        """
        async for doc in self._query(q):
            for result in [doc, *doc.get("results", ())]:
                if "error" in result:  # query errors come back with status 200
                    error = str(result["error"])
                    if missing_ok and ("database not found" in error or "retention policy not found" in error):
                        return
                    raise SourceError(f"{self.name}: {error} (query: {q})")
            for result in doc.get("results", ()):
                for series in result.get("series", ()):
                    tags = series.get("tags") or {}
                    columns = series["columns"]
                    for values in series.get("values", ()):
                        yield tags, dict(zip(columns, values, strict=True))

    async def _query(self, q: str) -> AsyncIterator[dict[str, Any]]:
        params = {"db": self.database, "q": q, "epoch": "ms", "chunked": "true", "chunk_size": str(CHUNK_SIZE)}
        log.debug("%s: %s", self.name, q)
        try:
            async with self._session_().post(f"{self.base_url}/query", data=params,
                                             headers=self._auth_headers()) as resp:
                if resp.status != 200:
                    text = (await resp.text(errors="replace")).strip()[:500]
                    # A 400 is this query's own fault; refused credentials or a server error fail every query.
                    error = SourceError if resp.status == 400 else StoreUnavailable
                    raise error(f"{self.name}: query answered {resp.status}: {text}")
                buffer = b""
                async for chunk in resp.content.iter_any():
                    buffer += chunk
                    *complete, buffer = buffer.split(b"\n")
                    for doc in complete:
                        if doc.strip():
                            yield await _parse(doc)
                if buffer.strip():
                    yield await _parse(buffer)
        except TimeoutError:
            raise StoreUnavailable(f"{self.name}: no answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailable(f"{self.name}: cannot reach the server: {type(exc).__name__}: {exc}") from exc

    async def _write(self, records: Sequence[Record]) -> None:
        body = "".join(line(r) + "\n" for r in records).encode("utf-8")
        url, params = write_endpoint(self.settings, self.retention_policy)
        for attempt in range(2):
            headers = {"Content-Type": "text/plain; charset=utf-8", **self._auth_headers()}
            try:
                async with self._session_().post(url, params=params, data=body, headers=headers) as resp:
                    status, text = resp.status, (await resp.text(errors="replace")).strip()[:500]
            except TimeoutError:
                raise StoreUnavailable(f"{self.name}: no answer in time") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise StoreUnavailable(f"{self.name}: cannot reach the server: {type(exc).__name__}: {exc}") from exc
            if 200 <= status < 300:
                return
            missing = "database not found" in text or "retention policy not found" in text
            if missing and self.settings.api == "v1" and attempt == 0:
                await self._set_up()
                continue
            raise SourceError(f"{self.name}: write answered {status}: {text}")

    async def _set_up(self) -> None:
        """Create the database and retention policy as the agent's sink would (first write to a new store)."""
        from slawatch.store.influxdb import InfluxSink

        sink = InfluxSink(self.settings, session=self._session_())
        try:
            await sink.set_up()
        except SinkError as exc:
            raise SourceError(str(exc)) from exc


async def _parse(doc: bytes) -> dict[str, Any]:
    # A chunk of 10 000 rows takes milliseconds to decode: off the event loop.
    parsed = await asyncio.to_thread(json.loads, doc) if len(doc) > 65536 else json.loads(doc)
    if not isinstance(parsed, dict):
        raise SourceError(f"unexpected answer from InfluxDB: {doc[:200]!r}")
    return parsed


def _window_record(window: StoredWindow, *, removed: bool) -> Record:
    fields: tuple[tuple[str, FieldValue], ...] = (
        ("scope", window.scope), ("value", clean_text(window.value)), ("end_ms", int(window.end_ms)),
        ("announced_ms", int(window.announced_ms)), ("created_ms", int(window.created_ms)),
        ("reason", clean_text(window.reason)), ("removed", int(removed)),
    )
    return Record(MAINTENANCE, (("id", clean_text(window.id)),), fields, int(window.start_ms))


__all__ = [
    "InfluxSource", "Source", "SourceError", "SqliteSource", "StoreUnavailable", "StoredChange",
    "StoredWindow",
    "open_source", "quote_string",
]

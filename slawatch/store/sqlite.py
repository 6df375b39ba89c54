"""The embedded default store: SQLite in WAL mode through aiosqlite (its own thread), written by the agent
(SqliteSink) and read by the reporter (SqliteSource); tables from slawatch.schema (docs/schema.md)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.request import pathname2url

import aiosqlite

from slawatch import schema
from slawatch.config.settings import SqliteSettings
from slawatch.model import ComponentRef, Heartbeats, MaintenanceWindow, Point, Sample, StateChange
from slawatch.schema import HEARTBEAT, MAINTENANCE, MEASUREMENTS, REPORT_SENT, SCHEMA_VERSION, STATE, Row
from slawatch.store import (
    SinkError,
    SourceError,
    StoreUnavailable,
    check_window,
    group_heartbeats,
    heartbeat_margin_ms,
)

log = logging.getLogger(__name__)

# Every data table's primary key is the point's identity + ts_ms, so INSERT OR REPLACE makes a replayed
# batch overwrite instead of duplicate. WITHOUT ROWID: the key is the storage order, so the reporter's
# reads (one component or agent over a time range) are range scans of the primary key itself.
SCHEMA = schema.ddl()
SCHEMA_STATEMENTS = tuple(f"{part.strip()};" for part in SCHEMA.split(";\n") if part.strip())

COLUMNS: dict[str, tuple[str, ...]] = {m.name: m.names for m in (schema.PROBE, STATE, HEARTBEAT)}
"""Column order of each data table's INSERT: the schema's, as `schema.point_row` builds the rows."""


def _insert(m: schema.Measurement, verb: str = "INSERT OR REPLACE") -> str:
    return f"{verb} INTO {m.name} ({', '.join(m.names)}) VALUES ({', '.join('?' * len(m.names))})"


_INSERT = {name: _insert(m) for name, m in ((m.name, m) for m in MEASUREMENTS) if name in COLUMNS}
_PRUNE: tuple[tuple[str, str], ...] = tuple((m.name, m.prune) for m in MEASUREMENTS if m.prune is not None)


def rows(batch: Sequence[Point]) -> dict[str, list[Row]]:
    """The batch as INSERT parameters per table, in COLUMNS order (a missing latency_ms becomes NULL)."""
    per_table: dict[str, list[Row]] = {name: [] for name in COLUMNS}
    for p in batch:
        measurement, row = schema.point_row(p)
        per_table[measurement.name].append(row)
    return per_table


ENCODING = f"sqlite-rows-{SCHEMA_VERSION}"
"""Names `encode_rows`' bytes where they are kept (the agent's spool): a change of the rows must change it."""

_TABLES = tuple(COLUMNS)
_TABLE_NO = {name: i for i, name in enumerate(_TABLES)}
# ASCII JSON: exact for floats (NaN too), None and any text; one array per point, its table's number first.
_dumps = json.JSONEncoder(separators=(",", ":"), ensure_ascii=True, allow_nan=True).encode


def encode_rows(batch: Sequence[Point]) -> list[bytes]:
    """Each point's stored row, as the spool keeps it for this sink: `[table number, *row]` in JSON."""
    point_row, table_no = schema.point_row, _TABLE_NO
    out = []
    for p in batch:
        measurement, row = point_row(p)
        out.append(_dumps([table_no[measurement.name], *row]).encode("ascii"))
    return out


def decode_rows(items: Sequence[bytes]) -> tuple[dict[str, list[Row]], int]:
    """`encode_rows` items back as INSERT parameters per table (one JSON parse for the whole batch), and how many
    could not be (left out: they would never parse on a retry either)."""
    per_table: dict[str, list[Row]] = {name: [] for name in COLUMNS}
    lists = [per_table[name] for name in _TABLES]
    try:
        parsed: list[Any] = json.loads(b"[" + b",".join(items) + b"]")
        if len(parsed) != len(items):
            raise ValueError("an item split across rows")
    except ValueError:
        parsed = []
        for item in items:
            try:
                parsed.append(json.loads(item))
            except ValueError:
                parsed.append(None)
    bad = 0
    for row in parsed:
        if type(row) is list and row and type(row[0]) is int and 0 <= row[0] < len(lists) \
                and len(row) == len(COLUMNS[_TABLES[row[0]]]) + 1:
            lists[row[0]].append(tuple(row[1:]))
        else:
            bad += 1
    return per_table, bad


class SqliteSink:
    """SQLite store. One connection on aiosqlite's thread; one transaction per batch."""

    def __init__(self, settings: SqliteSettings, *, takes_samples: bool = True) -> None:
        self.settings = settings
        self.takes_samples = takes_samples
        self.path = Path(settings.path)
        self.name = f"sqlite:{self.path}"
        self.write_errors = 0
        self.bad_points = 0
        self._db: aiosqlite.Connection | None = None
        # One connection, one transaction at a time: concurrent write()/prune() calls take turns.
        self._lock = asyncio.Lock()

    async def connect(self) -> aiosqlite.Connection:
        """Open the file, switch to WAL and create the schema (idempotent; `write` calls it)."""
        async with self._lock:
            return await self._connect()

    async def _connect(self) -> aiosqlite.Connection:
        if self._db is not None:
            return self._db
        try:
            if self.path.parent != Path():
                self.path.parent.mkdir(parents=True, exist_ok=True)
            db = await open_sqlite(self.path, timeout=10.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._error("cannot open", exc) from exc
        try:
            await db.execute("PRAGMA busy_timeout=10000")
            await _wal(db)
            # FULL: a batch is on disk when write() returns, because the spool then forgets it.
            await db.execute("PRAGMA synchronous=FULL")
            # One transaction, so that processes opening a new store at once (the agent, `slawatch incident`,
            # the reporter) take turns instead of one failing on the other's half-made schema.
            await db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA_STATEMENTS:
                await db.execute(statement)
            await _migrate(db)
            await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            await db.commit()
        except BaseException as exc:  # cancelled too (an agent stopping): the connection is not left open
            await _close_quietly(db)
            if isinstance(exc, sqlite3.Error):
                raise self._error("cannot set up", exc) from exc
            raise
        self._db = db
        return db

    async def write(self, batch: Sequence[Point]) -> None:
        if not self.takes_samples:  # storage.samples sends them elsewhere: only the events are kept here
            batch = [p for p in batch if not isinstance(p, Sample)]
        if not batch:
            return
        per_table = await asyncio.to_thread(rows, batch)  # ~100 ms for 40 000 points: not on the loop
        async with self._lock:
            await self._write(per_table, len(batch))

    spool_encoding = ENCODING

    def encode(self, batch: Sequence[Point]) -> list[bytes]:
        """Each point's row (the spool keeps them: a replay then skips building points and rows again); an empty
        item for a sample that `storage.samples` sends elsewhere (one item per point)."""
        if self.takes_samples:
            return encode_rows(batch)
        return [b"" if isinstance(p, Sample) else row for p, row in zip(batch, encode_rows(batch), strict=True)]

    async def write_encoded(self, items: Sequence[bytes]) -> None:
        """Rows from `encode`, as `write` stores points."""
        items = [i for i in items if i]
        if not items:
            return
        per_table, bad = await asyncio.to_thread(decode_rows, items)
        if bad:
            log.error("%s: %d spooled rows could not be read back; dropped", self.name, bad)
            self.bad_points += bad
        async with self._lock:
            await self._write(per_table, len(items))

    async def write_rows(self, rows: Mapping[str, Sequence[Row]], count: int) -> None:
        """Rows as `schema.point_row` makes them, per table (the agent's spool makes them from its records)."""
        if not self.takes_samples:
            rows = {table: r for table, r in rows.items() if table != schema.PROBE.name}
        if not any(rows.values()):
            return
        async with self._lock:
            await self._write(rows, count)

    async def _write(self, per_table: Mapping[str, Sequence[Row]], n: int) -> None:
        db = await self._connect()
        try:
            await db.execute("BEGIN IMMEDIATE")
            for table, params in per_table.items():
                if params:
                    await db.executemany(_INSERT[table], params)
            await db.commit()
        except sqlite3.Error as exc:
            await self._rollback(db)
            raise self._error(f"cannot write {n} points to", exc) from exc

    async def prune(self, older_than_ms: int) -> int:
        """Delete measurements (and ended maintenance windows, acks) older than `older_than_ms`."""
        async with self._lock:
            removed = await self._prune(older_than_ms)
        if removed:
            log.info("pruned %d rows older than %d from %s", removed, older_than_ms, self.path)
        return removed

    async def _prune(self, older_than_ms: int) -> int:
        db = await self._connect()
        removed = 0
        try:
            await db.execute("BEGIN IMMEDIATE")
            for table, column in _PRUNE:
                cursor = await db.execute(f"DELETE FROM {table} WHERE {column} < ?", (older_than_ms,))
                removed += max(cursor.rowcount, 0)
            await db.commit()
        except sqlite3.Error as exc:
            await self._rollback(db)
            raise self._error("cannot prune", exc) from exc
        return removed

    async def close(self) -> None:
        async with self._lock:
            db, self._db = self._db, None
            if db is not None:
                await db.close()

    async def _rollback(self, db: aiosqlite.Connection) -> None:
        if not db.in_transaction:
            return
        try:
            await db.rollback()
        except sqlite3.Error:
            log.exception("rollback failed on %s", self.path)

    def _error(self, doing: str, exc: Exception) -> SinkError:
        self.write_errors += 1
        # Busy, full disk, I/O errors pass; a constraint or a corrupt file will not by waiting.
        retryable = isinstance(exc, sqlite3.OperationalError | OSError)
        return SinkError(f"SQLite {doing} {self.path}: {exc}", retryable=retryable)


async def _wal(db: aiosqlite.Connection) -> None:
    """Switch to WAL; a moment's wait when another connection is making the file at the same instant (the switch
    can answer "locked" at once, without the busy timeout)."""
    for attempt in range(50):
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or attempt == 49:
                raise
            await asyncio.sleep(0.1)


async def _migrate(db: aiosqlite.Connection) -> None:
    """Bring a store made by an earlier version up to SCHEMA_VERSION: add the columns it lacks."""
    version = await schema_version(db)
    for since, measurement, column in schema.MIGRATIONS:
        if version >= since:
            continue
        async with db.execute(f"PRAGMA table_info({measurement.name})") as cursor:
            present = {r[1] for r in await cursor.fetchall()}
        if column not in present:
            log.info("SQLite store: adding %s.%s (schema version %d)", measurement.name, column, since)
            await db.execute(schema.add_column_sql(measurement, column))


async def schema_version(db: aiosqlite.Connection) -> int:
    async with db.execute("PRAGMA user_version") as cursor:
        row = await cursor.fetchone()
    return int(row[0]) if row else 0


# ---------------------------------------------------------------- reading (the reporter)


_STATE_COLUMNS = ", ".join(STATE.names)
_SQL_CHANGES = f"SELECT {_STATE_COLUMNS} FROM {STATE.name} WHERE ts_ms >= ? AND ts_ms < ?"
_SQL_FILTER = "AND component IN (SELECT value FROM json_each(?))"
# With the filter the rows come off the primary key in its order, so this ORDER BY costs nothing (and spares the
# sort in Python); without it SQLite would sort through a temporary B-tree, slower than Python's sort.
_SQL_FILTER_ORDERED = f"{_SQL_FILTER} ORDER BY {', '.join(STATE.key)}"
# A report's slice, a component per row (schema.unpacked_changes): its tags, and each column of its changes joined
# into one text. group_concat takes the rows in the order of the primary key, which the plan walks.
_SQL_CHANGES_PACKED = (
    f"SELECT component, count(*), min(class), max(class), min(tier), max(tier), min(customer), max(customer), "
    f"group_concat(ts_ms), group_concat(agent, char(31)), group_concat({schema.PACKED_FLAGS_SQL}, ''), "
    f"group_concat(reason, char(31)) "
    f"FROM {STATE.name} WHERE ts_ms >= ? AND ts_ms < ? {_SQL_FILTER} GROUP BY component ORDER BY component")
PACKED_BATCH = 1000
"""Components (packed rows) fetched at a time by a report's read."""
# The last change before the period per (component, agent), by a scan of the history before it: for a store
# whose agent has not created the index below yet (bare columns with MAX() come from the row that holds it).
_SQL_LAST_CHANGES_SCAN = (f"SELECT {', '.join('MAX(ts_ms)' if n == 'ts_ms' else n for n in STATE.names)} "
                          f"FROM {STATE.name} WHERE ts_ms < ? {{filter}} GROUP BY component, agent")
_SQL_HISTORY_FROM = f"SELECT MIN(ts_ms) FROM {STATE.name}"
_LAST_INDEX = f"{STATE.name}_last"  # schema.STATE's index on (component, agent, ts_ms)
# The same with the index on (component, agent, ts_ms): walk the (component, agent) pairs one seek at a time
# (step 0: a component's first agent; 1: its next agent, NULL after the last; then the next component), then
# one seek each for its last change before the period, instead of reading the whole history before it.
_SQL_LAST_CHANGES = f"""
WITH RECURSIVE pair(component, agent, step) AS (
    SELECT (SELECT MIN(component) FROM {STATE.name}), NULL, 0
    UNION ALL
    SELECT CASE WHEN step = 1 AND agent IS NULL
                THEN (SELECT MIN(component) FROM {STATE.name} WHERE component > pair.component)
                ELSE component END,
           CASE WHEN step = 0 THEN (SELECT MIN(agent) FROM {STATE.name} WHERE component = pair.component)
                WHEN agent IS NULL THEN NULL
                ELSE (SELECT MIN(agent) FROM {STATE.name} WHERE component = pair.component AND agent > pair.agent)
                END,
           CASE WHEN step = 1 AND agent IS NULL THEN 0 ELSE 1 END
    FROM pair WHERE component IS NOT NULL
)
SELECT {', '.join('s.' + n for n in STATE.names)} FROM pair JOIN {STATE.name} s
    ON s.component = pair.component AND s.agent = pair.agent
    AND s.ts_ms = (SELECT MAX(ts_ms) FROM {STATE.name} WHERE component = pair.component AND agent = pair.agent
                   AND ts_ms < ?)
WHERE pair.step = 1
"""
# The same for the components listed (a report's slice): their agents one seek each, not a walk of every pair.
_SQL_LAST_CHANGES_OF = f"""
WITH RECURSIVE pair(component, agent) AS (
    SELECT value, (SELECT MIN(agent) FROM {STATE.name} WHERE component = value) FROM json_each(?)
    UNION ALL
    SELECT component, (SELECT MIN(agent) FROM {STATE.name} WHERE component = pair.component AND agent > pair.agent)
    FROM pair WHERE agent IS NOT NULL
)
SELECT {', '.join('s.' + n for n in STATE.names)} FROM pair JOIN {STATE.name} s
    ON s.component = pair.component AND s.agent = pair.agent
    AND s.ts_ms = (SELECT MAX(ts_ms) FROM {STATE.name} WHERE component = pair.component AND agent = pair.agent
                   AND ts_ms < ?)
"""
# The agents, by skipping along the primary key (agent, ts_ms): one seek per agent, not a scan.
_SQL_AGENTS = f"""
WITH RECURSIVE a(agent) AS (
    SELECT (SELECT MIN(agent) FROM {HEARTBEAT.name})
    UNION ALL
    SELECT (SELECT MIN(agent) FROM {HEARTBEAT.name} WHERE agent > a.agent) FROM a WHERE a.agent IS NOT NULL
)
SELECT a.agent, (SELECT period_s FROM {HEARTBEAT.name} h WHERE h.agent = a.agent AND h.ts_ms < ?
                 ORDER BY h.ts_ms DESC LIMIT 1)
FROM a WHERE a.agent IS NOT NULL
"""
_SQL_SAMPLES = f"SELECT {', '.join(schema.PROBE.names)} FROM {schema.PROBE.name} WHERE ts_ms >= ? AND ts_ms < ?"
_SQL_SAMPLES_ORDER = f" ORDER BY {', '.join(schema.PROBE.key)}"
_SQL_LATENCY = (f"SELECT component, ts_ms - ts_ms % ? AS step, AVG(latency_ms) FROM {schema.PROBE.name} "
                f"WHERE ts_ms >= ? AND ts_ms < ? AND latency_ms IS NOT NULL GROUP BY component, step")
_SQL_HEARTBEATS = f"SELECT agent, ts_ms, period_s FROM {HEARTBEAT.name} WHERE ts_ms >= ? AND ts_ms < ?"
_SQL_WINDOWS = f"SELECT {', '.join(schema.WINDOW_COLUMNS)} FROM {MAINTENANCE.name} WHERE removed = 0"
_SQL_ADD_WINDOW = _insert(MAINTENANCE, "INSERT")
_SQL_REPORT_SENT = f"SELECT 1 FROM {REPORT_SENT.name} WHERE period = ? AND customer = ? LIMIT 1"
_SQL_RECORD_REPORT_SENT = _insert(REPORT_SENT)


class SqliteSource:
    """Reads through a read-only connection (safe beside the agent writing in WAL mode); writes windows and
    sent-report records through a second connection opened on first use, set up as the sink's."""

    def __init__(self, settings: SqliteSettings) -> None:
        self.path = Path(settings.path)
        self.settings = settings
        self.name = f"sqlite:{self.path}"
        self._ro: aiosqlite.Connection | None = None
        self._rw: aiosqlite.Connection | None = None
        self._has_last_index: bool | None = None
        self._history_from_ms: int | None = None
        self._lock = asyncio.Lock()

    async def _reader(self) -> aiosqlite.Connection:
        async with self._lock:
            if self._ro is None:
                if not self.path.exists():
                    raise StoreUnavailable(f"SQLite store {self.path} does not exist (the agent creates it on its "
                                           f"first write; check storage.sqlite.path)")
                self._check_file()
                db = await self._open_read_only()
                try:
                    old = 0 < await schema_version(db) < SCHEMA_VERSION
                except BaseException as exc:  # as in SqliteSink._connect
                    await _close_quietly(db)
                    if isinstance(exc, sqlite3.Error):
                        raise StoreUnavailable(f"cannot read SQLite store {self.path}: {exc}") from exc
                    raise
                if old:  # made by an earlier version and not opened by an agent since: bring it up to date first
                    await db.close()
                    await self._writer_locked()
                    db = await self._open_read_only()
                self._ro = db
            return self._ro

    async def _open_read_only(self) -> aiosqlite.Connection:
        uri = f"file:{pathname2url(str(self.path.resolve()))}?mode=ro"
        try:
            return await open_sqlite(uri, uri=True, timeout=10.0, isolation_level=None)
        except sqlite3.Error as exc:
            raise StoreUnavailable(f"cannot open SQLite store {self.path} read-only: {exc}") from exc

    async def _writer(self) -> aiosqlite.Connection:
        async with self._lock:
            return await self._writer_locked()

    async def _writer_locked(self) -> aiosqlite.Connection:
        if self._rw is None:
            if self.path.exists():
                self._check_file()
            try:  # the sink's own set-up: WAL, the schema's tables if they are not there yet, migrations
                self._rw = await SqliteSink(self.settings).connect()
            except SinkError as exc:
                raise StoreUnavailable(str(exc)) from exc
        return self._rw

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise StoreUnavailable(f"SQLite store {self.path} is not a file (check storage.sqlite.path)")

    async def _read(self, sql: str, params: Sequence[Any], *, missing_ok: bool = False) -> list[Any]:
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
                      components: Sequence[str] | None = None) -> list[StateChange]:
        wanted = [] if components is None else [json.dumps(list(components))]
        if wanted:
            return await self._changes_of(start_ms, end_ms, wanted)
        in_period = await self._read(_SQL_CHANGES, [start_ms, end_ms])
        if self._has_last_index is None:
            self._has_last_index = bool(await self._read("SELECT 1 FROM sqlite_master WHERE type = 'index' AND "
                                                         "name = ?", [_LAST_INDEX]))
        sql = _SQL_LAST_CHANGES if self._has_last_index else _SQL_LAST_CHANGES_SCAN.format(filter="")
        rows = await self._read(sql, [start_ms])
        rows += in_period
        schema.sort_state_rows(rows)
        return schema.state_changes(rows)

    async def _last_rows(self, start_ms: int, end_ms: int, wanted: list[str]) -> list[Any]:
        """Each (component, agent)'s last change before `start_ms` of the components listed, sorted: walked along
        the index or read from every change before the period, as schema.walks_last_changes says."""
        if self._has_last_index is None:
            self._has_last_index = bool(await self._read("SELECT 1 FROM sqlite_master WHERE type = 'index' AND "
                                                         "name = ?", [_LAST_INDEX]))
        if self._history_from_ms is None:  # once: the oldest change (history only grows forward, or is pruned)
            oldest = await self._read(_SQL_HISTORY_FROM, [])
            self._history_from_ms = oldest[0][0] if oldest and oldest[0][0] is not None else start_ms
        if self._has_last_index and schema.walks_last_changes(self._history_from_ms, start_ms, end_ms):
            rows = await self._read(_SQL_LAST_CHANGES_OF, [*wanted, start_ms])
        else:
            rows = await self._read(_SQL_LAST_CHANGES_SCAN.format(filter=_SQL_FILTER), [start_ms, *wanted])
        schema.sort_state_rows(rows)
        return rows

    async def _changes_of(self, start_ms: int, end_ms: int, wanted: list[str]) -> list[StateChange]:
        """The changes of the components named: read a component per row (_SQL_CHANGES_PACKED), in batches, in
        component order, and made into StateChanges sharing refs and strings; a component that cannot be read so
        (schema.unpacked_changes) is read as rows. Each component's last change before the period goes in front of
        its first in the period (schema.LastRows)."""
        last = schema.LastRows(await self._last_rows(start_ms, end_ms, wanted))
        refs: dict[Any, ComponentRef] = {}
        strings: dict[str, str] = {}
        out: list[StateChange] = []
        db = await self._reader()
        try:
            async with db.execute(_SQL_CHANGES_PACKED, [start_ms, end_ms, *wanted]) as cursor:
                while batch := await cursor.fetchmany(PACKED_BATCH):
                    for row in batch:
                        out += schema.state_changes(last.through(row[0]), refs, strings)
                        changes = schema.unpacked_changes(row, refs, strings)
                        if changes is None:
                            rows = await db.execute_fetchall(f"{_SQL_CHANGES} {_SQL_FILTER_ORDERED}",
                                                             [start_ms, end_ms, json.dumps([row[0]])])
                            changes = schema.state_changes(rows, refs, strings)
                        out += changes
        except sqlite3.OperationalError as exc:
            if "no such table" not in str(exc):
                raise SourceError(f"cannot read SQLite store {self.path}: {exc}") from exc
        except sqlite3.Error as exc:
            raise SourceError(f"cannot read SQLite store {self.path}: {exc}") from exc
        out += schema.state_changes(last.rest(), refs, strings)
        return out

    async def heartbeats(self, start_ms: int, end_ms: int) -> Heartbeats:
        agents = await self._read(_SQL_AGENTS, [start_ms])
        lookback = {agent: heartbeat_margin_ms(period) for agent, period in agents if period is not None}
        low = start_ms - max(lookback.values(), default=0)
        rows = await self._read(_SQL_HEARTBEATS, [low, end_ms])
        return group_heartbeats(((r[0], r[1], r[2]) for r in rows), start_ms, lookback)

    async def samples(self, start_ms: int, end_ms: int, components: Sequence[str] | None = None) -> list[Sample]:
        wanted = [] if components is None else [json.dumps(list(components))]
        rows = await self._read(f"{_SQL_SAMPLES} {_SQL_FILTER if wanted else ''}{_SQL_SAMPLES_ORDER}",
                                [start_ms, end_ms, *wanted])
        return schema.samples(rows)

    async def latency(self, start_ms: int, end_ms: int, step_ms: int) -> dict[str, list[tuple[int, float]]]:
        if step_ms <= 0:
            raise ValueError(f"step_ms must be positive, got {step_ms}")
        out: dict[str, list[tuple[int, float]]] = {}
        for component, step, mean in await self._read(_SQL_LATENCY, [step_ms, start_ms, end_ms]):
            out.setdefault(component, []).append((int(step), float(mean)))
        return out

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[MaintenanceWindow]:
        sql = _SQL_WINDOWS
        params: list[int] = []
        if end_ms is not None:
            sql += " AND start_ms < ?"
            params.append(end_ms)
        if start_ms is not None:
            sql += " AND end_ms > ?"
            params.append(start_ms)
        rows = await self._read(sql + " ORDER BY start_ms, id", params, missing_ok=True)
        return [schema.maintenance_window(r) for r in rows]

    async def add_window(self, window: MaintenanceWindow) -> None:
        check_window(window)
        await self._write(_SQL_ADD_WINDOW, schema.window_row(window))

    async def remove_window(self, id: str) -> bool:
        return await self._write(f"UPDATE {MAINTENANCE.name} SET removed = 1 WHERE id = ? AND removed = 0",
                                 [id]) > 0

    async def report_sent(self, period_key: str, customer: str) -> bool:
        return bool(await self._read(_SQL_REPORT_SENT, [period_key, customer], missing_ok=True))

    async def record_report_sent(self, period_key: str, customer: str, sent_ms: int, sha256: str) -> None:
        await self._write(_SQL_RECORD_REPORT_SENT, schema.report_sent_row(period_key, customer, sent_ms, sha256))

    async def close(self) -> None:
        for db in (self._ro, self._rw):
            if db is not None:
                await db.close()
        self._ro = self._rw = None


async def open_sqlite(database: str | Path, **kwargs: Any) -> aiosqlite.Connection:
    """`aiosqlite.connect`, except that a failed open returns only once aiosqlite's worker thread has ended.

    aiosqlite stops that thread without waiting for it, and the thread then posts its last result to this event
    loop: a caller that closes the loop at once (a CLI leaving `asyncio.run`, a test) would have it raise
    "Event loop is closed" in the thread."""
    pending = aiosqlite.connect(database, **kwargs)
    try:
        return await pending
    except BaseException:
        await asyncio.to_thread(pending._thread.join, 5.0)  # its stop is already queued: it ends at once
        raise


async def _close_quietly(db: aiosqlite.Connection) -> None:
    """Close a connection given up on: what made it given up is what the caller reports."""
    with contextlib.suppress(Exception):
        await db.close()


class SqliteStatements:
    """Single statements on one SQLite file, one connection in turn: the records file's small stores (accounts,
    agent leases). The file is opened as the agent's own store (WAL, schema, migrations)."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.name = f"sqlite:{self.path}"
        self._sink = SqliteSink(SqliteSettings(path=self.path))
        self._lock = asyncio.Lock()

    async def _run(self, doing: str, sql: str, params: Sequence[Any] = ()) -> tuple[list[Any], int]:
        """The statement's rows and row count, committed. An IntegrityError is the caller's to read (a name
        taken); any other error is a SourceError saying what could not be done, StoreUnavailable when the file
        cannot be opened at all."""
        async with self._lock:
            try:
                db = await self._sink.connect()
            except SinkError as exc:
                raise StoreUnavailable(str(exc)) from exc
            try:
                async with db.execute(sql, params) as cursor:
                    rows = list(await cursor.fetchall())
                    count = cursor.rowcount
                await db.commit()
                return rows, count
            except sqlite3.IntegrityError:
                raise
            except sqlite3.Error as exc:
                raise SourceError(f"cannot {doing} SQLite store {self.path}: {exc}") from exc

    async def close(self) -> None:
        await self._sink.close()

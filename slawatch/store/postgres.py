"""The shared store of several hosts: PostgreSQL through asyncpg, with the same tables and columns as the SQLite
store (slawatch.schema), samples in monthly partitions, and the incident desk safe across processes."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime
from operator import itemgetter
from typing import Any, Literal, TypeVar, cast

import asyncpg

from slawatch import schema
from slawatch.config.settings import PostgresSettings
from slawatch.model import (
    AgentLease,
    ComponentRef,
    Heartbeats,
    Incident,
    IncidentEvent,
    MaintenanceWindow,
    Notification,
    NotificationState,
    Point,
    Sample,
    StateChange,
    User,
)
from slawatch.schema import (
    AGENT,
    HEARTBEAT,
    INCIDENT,
    INCIDENT_EVENT,
    INCIDENT_FAULT,
    MAINTENANCE,
    NOTIFICATION,
    PROBE,
    REPORT_SENT,
    SCHEMA_VERSION,
    STATE,
    USER,
    Row,
)
from slawatch.store import (
    SinkError,
    Source,
    SourceError,
    StoreUnavailable,
    check_window,
    group_heartbeats,
    heartbeat_margin_ms,
)
from slawatch.store.pgconnect import PasswordError, connect_kwargs, shown_dsn

log = logging.getLogger(__name__)
T = TypeVar("T")

# ---------------------------------------------------------------- schema and migrations

VERSION_TABLE = "slawatch_schema"
COUNTER_TABLE = "slawatch_incident_counter"
CLAIM_TABLE = "slawatch_notification_claim"
# PostgreSQL-only tables beside the schema's: the schema version, the per-year incident counter (ids without gaps
# or duplicates whoever opens them) and the senders' claims on due notifications.
_OWN_DDL = f"""
CREATE TABLE IF NOT EXISTS {VERSION_TABLE} (
    id BIGINT PRIMARY KEY CHECK (id = 1),
    version BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {COUNTER_TABLE} (
    year BIGINT PRIMARY KEY,
    last BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS {CLAIM_TABLE} (
    id TEXT PRIMARY KEY,
    holder TEXT NOT NULL,
    until_ms BIGINT NOT NULL
);
"""
SCHEMA_LOCK = 0x736C6177  # pg_advisory_xact_lock key: processes starting together set the schema up in turn
PARTITION_LOCK = 0x736C6178

NOTIFY_CHANNEL = "slawatch_state"
NOTIFY_MAX_BYTES = 7900
"""A NOTIFY payload stays under PostgreSQL's 8000-byte limit."""
NOTIFY_MAX_CHUNKS = 8
"""More components than fit in this many payloads are announced as `*` (re-read all)."""
CLAIM_MS = 300_000
"""How long a sender's claim on a due notification keeps other senders off it (a sender that died is replaced)."""


async def set_up_schema(conn: asyncpg.Connection) -> int:
    """Create the tables and bring a store made by an earlier version up to SCHEMA_VERSION, under an advisory
    lock (several processes may start at once). Returns the version found (0: a fresh database)."""
    found = await _stored_version(conn)
    if found == SCHEMA_VERSION:
        return found  # the common start: nothing to do, and nothing a read-only role could not do
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK)
        found = await _stored_version(conn)  # another process may have done it while we waited
        if found == SCHEMA_VERSION:
            return found
        if found > SCHEMA_VERSION:
            raise StoreUnavailable(f"the PostgreSQL store has schema version {found}, newer than this slawatch "
                                   f"({SCHEMA_VERSION}): upgrade slawatch")
        # One script, one round trip (the simple query protocol runs several statements).
        script = [_OWN_DDL, schema.pg_ddl(), *(schema.pg_add_column_sql(measurement, column) + ";"
                                               for since, measurement, column in schema.MIGRATIONS if found < since)]
        await conn.execute("\n".join(script))
        await conn.execute(f"INSERT INTO {VERSION_TABLE} (id, version) VALUES (1, $1) "
                           f"ON CONFLICT (id) DO UPDATE SET version = EXCLUDED.version", SCHEMA_VERSION)
        if found:
            log.info("PostgreSQL store: schema version %d brought up to %d", found, SCHEMA_VERSION)
    return found


async def _stored_version(conn: asyncpg.Connection) -> int:
    if await conn.fetchval("SELECT to_regclass($1)", VERSION_TABLE) is None:
        return 0
    return int(await conn.fetchval(f"SELECT COALESCE(MAX(version), 0) FROM {VERSION_TABLE}"))


# ---------------------------------------------------------------- errors and the pool

_RETRYABLE_CLASSES = ("08", "40", "53", "55", "57", "58")
"""SQLSTATE classes that pass by waiting: connection, rollback (serialization), resources, lock, shutdown, I/O."""


def retryable(exc: BaseException) -> bool:
    """Whether waiting may cure the error: a lost connection or a server restarting, not a refused statement."""
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in _RETRYABLE_CLASSES
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError)


def _unreachable(exc: BaseException) -> bool:
    if isinstance(exc, asyncpg.PostgresError):
        return str(getattr(exc, "sqlstate", "") or "")[:2] in ("08", "57")
    return isinstance(exc, OSError | TimeoutError | asyncpg.InterfaceError | asyncpg.InternalClientError)


# InternalClientError: a connection the server closed, met in the middle of an operation.
_ERRORS = (asyncpg.PostgresError, asyncpg.InterfaceError, asyncpg.InternalClientError, OSError, TimeoutError)


class _Pool:
    """One asyncpg pool per store object, opened on first use with the schema set up; errors named."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self.name = f"postgres:{shown_dsn(settings)}"
        self._pool: asyncpg.Pool | None = None
        self._lock = asyncio.Lock()

    async def get(self) -> asyncpg.Pool:
        if self._pool is not None:
            return self._pool
        async with self._lock:
            if self._pool is None:
                self._pool = await self._open()
        return self._pool

    async def _open(self) -> asyncpg.Pool:
        try:
            kwargs = connect_kwargs(self.settings)
        except PasswordError as exc:
            raise StoreUnavailable(f"{self.name}: {exc}") from None
        try:
            pool = await asyncpg.create_pool(min_size=0, max_size=self.settings.pool_max, **kwargs)
        except (*_ERRORS, ValueError) as exc:
            raise StoreUnavailable(f"cannot connect to {self.name}: {_describe(exc)}") from exc
        try:
            async with pool.acquire() as conn:
                await set_up_schema(conn)
        except _ERRORS as exc:
            await pool.close()
            raise StoreUnavailable(f"cannot set up the schema in {self.name}: {_describe(exc)}") from exc
        except BaseException:
            await pool.close()
            raise
        return pool

    async def close(self) -> None:
        async with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            await pool.close()

    async def run(self, doing: str, work: Callable[[asyncpg.Connection], Awaitable[T]], *,
                  transaction: bool = True) -> T:
        """Run `work` on a pooled connection (in one transaction); errors as SourceError / StoreUnavailable."""
        pool = await self.get()
        try:
            async with pool.acquire() as conn:
                if not transaction:
                    return await work(conn)
                async with conn.transaction():
                    return await work(conn)
        except _ERRORS as exc:
            error = StoreUnavailable if _unreachable(exc) else SourceError
            raise error(f"cannot {doing} {self.name}: {_describe(exc)}") from exc


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return f"{type(exc).__name__}: {text}" if isinstance(exc, OSError | TimeoutError) else text


def _count(status: str) -> int:
    """The row count of a command status ('UPDATE 3', 'INSERT 0 1', 'DELETE 0')."""
    try:
        return int(status.rsplit(" ", 1)[-1])
    except (ValueError, IndexError):
        return 0


# ---------------------------------------------------------------- writing points (the agent)

WriteMethod = Literal["unnest", "copy", "executemany"]


def _upsert(m: schema.Measurement, source: str) -> str:
    updates = ", ".join(f"{n} = EXCLUDED.{n}" for n in m.names if n not in m.key)
    return (f"INSERT INTO {m.name} ({', '.join(m.names)}) {source} "
            f"ON CONFLICT ({', '.join(m.key)}) DO UPDATE SET {updates}")


_PG_TYPES = {"string": "text", "integer": "int8", "float": "float8"}
_POINT_TABLES = (PROBE, STATE, HEARTBEAT)
_UNNEST = {m.name: _upsert(m, "SELECT * FROM unnest(" + ", ".join(
    f"${i}::{_PG_TYPES[c.type]}[]" for i, c in enumerate(m.columns, 1)) + ")") for m in _POINT_TABLES}
_VALUES = {m.name: _upsert(m, "VALUES (" + ", ".join(f"${i}" for i in range(1, len(m.names) + 1)) + ")")
           for m in _POINT_TABLES}
_TEMP = {m.name: f"slawatch_tmp_{m.name.removeprefix('slawatch_')}" for m in _POINT_TABLES}
_FROM_TEMP = {m.name: _upsert(m, f"SELECT {', '.join(m.names)} FROM {_TEMP[m.name]}") for m in _POINT_TABLES}
_TEXT_AT = {m.name: tuple(i for i, c in enumerate(m.columns) if c.type == "string") for m in _POINT_TABLES}
_COMPONENT_AT = STATE.index("component")
_TS_AT = PROBE.index("ts_ms")
_DAY_MS = 86_400_000


def notify_payloads(components: Sequence[str]) -> list[str]:
    """The NOTIFY payloads announcing changes of `components`: JSON arrays of names, each under
    NOTIFY_MAX_BYTES, or ["*"] (re-read all) when they would take more than NOTIFY_MAX_CHUNKS payloads."""
    names = sorted(set(components))
    payloads: list[str] = []
    chunk: list[str] = []
    size = 2  # the brackets
    for name in names:
        cost = len(json.dumps(name, ensure_ascii=False).encode()) + 1
        if cost + 2 > NOTIFY_MAX_BYTES:
            return ["*"]
        if chunk and size + cost > NOTIFY_MAX_BYTES:
            payloads.append(json.dumps(chunk, ensure_ascii=False, separators=(",", ":")))
            chunk, size = [], 2
            if len(payloads) >= NOTIFY_MAX_CHUNKS:
                return ["*"]
        chunk.append(name)
        size += cost
    if chunk:
        payloads.append(json.dumps(chunk, ensure_ascii=False, separators=(",", ":")))
    return payloads if len(payloads) <= NOTIFY_MAX_CHUNKS else ["*"]


def parse_payload(payload: str) -> list[str] | None:
    """A NOTIFY payload back as component names; None for `*` or anything not understood (re-read all)."""
    if payload == "*":
        return None
    try:
        names = json.loads(payload)
    except ValueError:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        return None
    return names


def month_start(ts_ms: int) -> datetime:
    d = datetime.fromtimestamp(ts_ms // 1000, UTC)
    return datetime(d.year, d.month, 1, tzinfo=UTC)


def month_bounds(start: datetime) -> tuple[int, int]:
    """[start, next month's start) in epoch ms."""
    following = datetime(start.year + start.month // 12, start.month % 12 + 1, 1, tzinfo=UTC)
    return int(start.timestamp() * 1000), int(following.timestamp() * 1000)


def partition_name(start: datetime) -> str:
    return f"{PROBE.name}_y{start.year:04d}m{start.month:02d}"


_PARTITION_NAME = re.compile(rf"^{PROBE.name}_y(\d{{4}})m(\d{{2}})$")
MIN_TS_MS = 0
MAX_TS_MS = 253_402_300_800_000 - 1  # the end of year 9999: a month partition can be named for every point


def _scrub(row: Row, text_at: Sequence[int]) -> Row:
    """The row with NUL characters (which PostgreSQL text cannot hold) replaced by U+FFFD."""
    values = list(row)
    for i in text_at:
        v = values[i]
        if isinstance(v, str) and "\x00" in v:
            values[i] = v.replace("\x00", "\ufffd")
    return tuple(values)


class _BadRow(Exception):
    """One row PostgreSQL refused even alone."""


class PostgresSink:
    """Writes batches in one transaction each: one upsert per table (same key overwrites), a NOTIFY on
    `slawatch_state` with the changed components when the batch holds state changes."""

    WRITE_METHOD: WriteMethod = "copy"
    """How rows go in: COPY (binary) into a temporary table then one INSERT … SELECT … ON CONFLICT per table (the
    least client CPU and as fast or faster than the others in bench/pgstore.py), one INSERT … SELECT FROM
    unnest(arrays), or executemany of single-row upserts (half as fast)."""

    def __init__(self, settings: PostgresSettings, *, takes_samples: bool = True) -> None:
        self.settings = settings
        self.takes_samples = takes_samples
        self._pool = _Pool(settings)
        self.name = self._pool.name
        self.write_errors = 0
        self.bad_points = 0
        self._partitions: set[str] = set()
        self.method: WriteMethod = self.WRITE_METHOD

    async def write(self, batch: Sequence[Point]) -> None:
        if not self.takes_samples:
            batch = [p for p in batch if not isinstance(p, Sample)]
        if not batch:
            return
        per_table, bad = await asyncio.to_thread(_rows, batch)  # ~15 ms per 5 000 points: not on the loop
        self.bad_points += bad
        try:
            pool = await self._pool.get()
            months = {partition_name(m): m for m in {month_start(cast(int, r[_TS_AT])) for r in per_table[PROBE.name]}}
            if months.keys() - self._partitions:
                await self._create_partitions(pool, list(months.values()))
            async with pool.acquire() as conn:
                try:
                    try:
                        async with conn.transaction():
                            await self._insert_all(conn, per_table)
                    except asyncpg.CheckViolationError as exc:
                        if "no partition" not in str(exc):
                            raise
                        # Another process pruned a month this one still knew: make the partitions again, once.
                        self._partitions.clear()
                        await self._create_partitions(pool, list(months.values()))
                        async with conn.transaction():
                            await self._insert_all(conn, per_table)
                except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError,
                        OverflowError) as exc:
                    log.warning("%s refused a batch of %d points (%s): writing them one by one",
                                self.name, len(batch), exc)
                    async with conn.transaction():
                        self.bad_points += await self._insert_each(conn, per_table)
        except StoreUnavailable as exc:
            self.write_errors += 1
            raise SinkError(str(exc), retryable=True) from exc
        except _ERRORS as exc:
            self.write_errors += 1
            raise SinkError(f"cannot write {len(batch)} points to {self.name}: {_describe(exc)}",
                            retryable=retryable(exc)) from exc

    async def _insert_all(self, conn: asyncpg.Connection, per_table: dict[str, list[Row]]) -> None:
        for table, rows in per_table.items():
            if not rows:
                continue
            if self.method == "unnest":
                await conn.execute(_UNNEST[table], *zip(*rows, strict=True))
            elif self.method == "copy":
                temp = _TEMP[table]
                await conn.execute(f"CREATE TEMP TABLE IF NOT EXISTS {temp} "
                                   f"(LIKE {table} INCLUDING DEFAULTS) ON COMMIT DELETE ROWS")
                await conn.copy_records_to_table(temp, records=rows)
                await conn.execute(_FROM_TEMP[table])
            else:
                await conn.executemany(_VALUES[table], rows)
        changed = [str(r[_COMPONENT_AT]) for r in per_table[STATE.name]]
        for payload in notify_payloads(changed) if changed else ():
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)

    async def _insert_each(self, conn: asyncpg.Connection, per_table: dict[str, list[Row]]) -> int:
        """Row by row, each in a savepoint: a row refused as is gets another try without NUL characters, then
        is dropped. Returns how many were dropped."""
        bad = 0
        for table, rows in per_table.items():
            for row in rows:
                try:
                    await self._insert_row(conn, table, row)
                except _BadRow:
                    scrubbed = _scrub(row, _TEXT_AT[table])
                    try:
                        if scrubbed == row:
                            raise
                        await self._insert_row(conn, table, scrubbed)
                    except _BadRow:
                        bad += 1
        changed = [str(r[_COMPONENT_AT]) for r in per_table[STATE.name]]
        for payload in notify_payloads(changed) if changed else ():
            await conn.execute("SELECT pg_notify($1, $2)", NOTIFY_CHANNEL, payload)
        if bad:
            log.warning("%s refused %d points (dropped, not retried)", self.name, bad)
        return bad

    @staticmethod
    async def _insert_row(conn: asyncpg.Connection, table: str, row: Row) -> None:
        try:
            async with conn.transaction():
                await conn.execute(_VALUES[table], *row)
        except (asyncpg.DataError, asyncpg.IntegrityConstraintViolationError, ValueError, OverflowError) as exc:
            raise _BadRow(str(exc)) from exc

    async def _create_partitions(self, pool: asyncpg.Pool, months: list[datetime]) -> None:
        """Create the month partitions of `slawatch_probe` these rows need, and the next month's ahead."""
        wanted = {partition_name(m): m for m in months}
        now = month_start(int(datetime.now(UTC).timestamp() * 1000))
        for m in (now, datetime.fromtimestamp(month_bounds(now)[1] / 1000, UTC)):
            wanted.setdefault(partition_name(m), m)
        missing = {name: m for name, m in wanted.items() if name not in self._partitions}
        async with pool.acquire() as conn, conn.transaction():
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            for name, m in sorted(missing.items()):
                low, high = month_bounds(m)
                await conn.execute(f"CREATE TABLE IF NOT EXISTS {name} PARTITION OF {PROBE.name} "
                                   f"FOR VALUES FROM ({low}) TO ({high})")
        self._partitions.update(missing)

    async def partitions(self) -> list[str]:
        """The month partitions of `slawatch_probe`, oldest first."""
        pool = await self._pool.get()
        rows = await pool.fetch("SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
                                "WHERE i.inhparent = $1::regclass", PROBE.name)
        return sorted(str(r[0]) for r in rows)

    async def prune(self, older_than_ms: int) -> int:
        """Drop the sample partitions wholly older than `older_than_ms` (their rows counted by the planner's
        estimate), delete older rows from the month it falls in and from the other prunable tables."""
        async def work(conn: asyncpg.Connection) -> int:
            # In turn with partition creation and with the other agents' prunes (each agent prunes hourly).
            await conn.execute("SELECT pg_advisory_xact_lock($1)", PARTITION_LOCK)
            removed = 0
            for name in await self.partitions():
                match = _PARTITION_NAME.match(name)
                if match is None:
                    continue
                _, high = month_bounds(datetime(int(match[1]), int(match[2]), 1, tzinfo=UTC))
                if high <= older_than_ms:
                    estimate = await conn.fetchval("SELECT reltuples FROM pg_class WHERE oid = $1::regclass", name)
                    await conn.execute(f"DROP TABLE IF EXISTS {name}")
                    self._partitions.discard(name)
                    removed += max(int(estimate or 0), 0)
            for m in schema.MEASUREMENTS:
                if m.prune is not None:
                    removed += _count(await conn.execute(f"DELETE FROM {m.name} WHERE {m.prune} < $1",
                                                         older_than_ms))
            return removed

        try:
            removed = await self._pool.run("prune", work)
        except SourceError as exc:
            raise SinkError(str(exc), retryable=isinstance(exc, StoreUnavailable)) from exc
        if removed:
            log.info("pruned %d rows older than %d from %s", removed, older_than_ms, self.name)
        return removed

    async def close(self) -> None:
        await self._pool.close()


def _rows(batch: Sequence[Point]) -> tuple[dict[str, list[Row]], int]:
    """The batch as rows per table, the last of each key kept (one upsert may not touch a row twice), and how
    many points were dropped as unstorable (a time no month partition can hold)."""
    per_key: dict[str, dict[Any, Row]] = {m.name: {} for m in _POINT_TABLES}
    bad = 0
    point_row = schema.point_row
    for p in batch:
        measurement, row = point_row(p)
        name = measurement.name
        ts = row[_ROW_TS_AT[name]]
        if not isinstance(ts, int) or not MIN_TS_MS <= ts <= MAX_TS_MS:
            bad += 1
            continue
        per_key[name][_ROW_KEY[name](row)] = row
    return {name: list(rows.values()) for name, rows in per_key.items()}, bad


# Per table: where a row's time is, and its key (computed once: this runs for every point).
_ROW_TS_AT = {m.name: m.index(m.time) for m in _POINT_TABLES}
_ROW_KEY = {m.name: itemgetter(*(m.index(k) for k in m.key)) for m in _POINT_TABLES}


# ---------------------------------------------------------------- reading (the reporter, the console)


def _select(m: schema.Measurement, names: Sequence[str] | None = None) -> str:
    return f"SELECT {', '.join(names or m.names)} FROM {m.name}"


def _collated(names: Sequence[str], m: schema.Measurement) -> str:
    # Code-point order (as Python sorts), whatever the database's collation.
    return ", ".join(f'{n} COLLATE "C"' if m.column(n).type == "string" else n for n in names)


_STATE_ORDER = _collated(STATE.key, STATE)
_SQL_CHANGES = f"{_select(STATE)} WHERE ts_ms >= $1 AND ts_ms < $2"
# The last change before the period per (component, agent): walk the pairs along the index (component, agent,
# ts_ms) one seek at a time, then one seek each for its last change — not a read of the whole history before it.
_SQL_LAST_CHANGES = f"""
WITH RECURSIVE pair(component, agent) AS (
    (SELECT component, agent FROM {STATE.name} ORDER BY component, agent LIMIT 1)
    UNION ALL
    SELECT n.component, n.agent FROM pair, LATERAL (
        SELECT component, agent FROM {STATE.name} WHERE (component, agent) > (pair.component, pair.agent)
        ORDER BY component, agent LIMIT 1) n
)
SELECT l.* FROM pair, LATERAL (
    {_select(STATE)} s WHERE s.component = pair.component AND s.agent = pair.agent AND s.ts_ms < $1
    ORDER BY s.ts_ms DESC LIMIT 1) l
"""
# A slice of components (a report's worker reads one at a time) takes a change's three tags as one text: most rows
# repeat their component's tags, and the driver makes a str of every value of every row (a fifth of a slice's
# read). Tags are names (letters, digits and - _ . :), never the separator; they are split once per component and
# tags. A slice with tags that do not split in three (written by something else) is read again as columns.
_TAG_SEPARATOR = "\x1f"
_SLICE_NAMES = tuple("tags" if n == "class" else n for n in STATE.names if n not in ("tier", "customer"))
_SLICE_SELECT = ", ".join("class || chr(31) || tier || chr(31) || customer" if n == "tags" else n
                          for n in _SLICE_NAMES)


def _slice_ref(key: tuple[str, str]) -> ComponentRef:
    parts = key[1].split(_TAG_SEPARATOR) if isinstance(key[1], str) else ()
    if len(parts) != 3:
        raise schema.RowShapeError(f"tags {key[1]!r} of {key[0]!r} are not three")
    return ComponentRef(key[0], *parts)


_SLICE_SHAPE = schema.RowShape(itemgetter(_SLICE_NAMES.index("component"), _SLICE_NAMES.index("tags")), _slice_ref,
                               *(_SLICE_NAMES.index(n) for n in ("agent", "ts_ms", "up", "reason", "degraded",
                                                                  "released")))
_SQL_SLICE_CHANGES = (f"SELECT {_SLICE_SELECT} FROM {STATE.name} "
                      f"WHERE ts_ms >= $1 AND ts_ms < $2 AND component = ANY($3::text[])")
_SQL_SLICE_LAST_CHANGES = (f"SELECT DISTINCT ON (component, agent) {_SLICE_SELECT} FROM {STATE.name} "
                           f"WHERE ts_ms < $1 AND component = ANY($2::text[]) ORDER BY component, agent, ts_ms DESC")
# The same rows, walked along the index (component, agent, ts_ms): a seek for each of a component's agents and one
# for each last change, whatever the history before the period. DISTINCT ON reads every change before the period:
# faster while that is a short history (a store's first month: 17-32 ms a slice of 2 000 components, against 47-67),
# four times slower after a month of it (190 ms against 48), and growing with every month.
_SQL_SLICE_LAST_CHANGES_WALKED = f"""
WITH RECURSIVE pair(component, agent) AS (
    SELECT c, (SELECT s.agent FROM {STATE.name} s WHERE s.component = c ORDER BY s.agent LIMIT 1)
    FROM unnest($2::text[]) c
    UNION ALL
    SELECT p.component, (SELECT s.agent FROM {STATE.name} s WHERE s.component = p.component AND s.agent > p.agent
                         ORDER BY s.agent LIMIT 1)
    FROM pair p WHERE p.agent IS NOT NULL
)
SELECT l.* FROM pair p, LATERAL (
    SELECT {_SLICE_SELECT} FROM {STATE.name} s WHERE s.component = p.component AND s.agent = p.agent AND s.ts_ms < $1
    ORDER BY s.ts_ms DESC LIMIT 1) l
WHERE p.agent IS NOT NULL
"""
_SQL_HISTORY_FROM = f"SELECT MIN(ts_ms) FROM {STATE.name}"
_SQL_LAST_CHANGES_OF = (f"SELECT DISTINCT ON (component, agent) {', '.join(STATE.names)} FROM {STATE.name} "
                        f"WHERE ts_ms < $1 AND component = ANY($2::text[]) ORDER BY component, agent, ts_ms DESC")
assert _SLICE_NAMES[:len(STATE.key)] == STATE.key  # sorted as state rows are (schema.sort_state_rows, LastRows)


_SQL_AGENTS = f"""
WITH RECURSIVE a(agent) AS (
    SELECT MIN(agent) FROM {HEARTBEAT.name}
    UNION ALL
    SELECT (SELECT MIN(agent) FROM {HEARTBEAT.name} WHERE agent > a.agent) FROM a WHERE a.agent IS NOT NULL
)
SELECT a.agent, (SELECT period_s FROM {HEARTBEAT.name} h WHERE h.agent = a.agent AND h.ts_ms < $1
                 ORDER BY h.ts_ms DESC LIMIT 1)
FROM a WHERE a.agent IS NOT NULL
"""
_SQL_HEARTBEATS = f"SELECT agent, ts_ms, period_s FROM {HEARTBEAT.name} WHERE ts_ms >= $1 AND ts_ms < $2"
_SQL_SAMPLES = f"{_select(PROBE)} WHERE ts_ms >= $1 AND ts_ms < $2"
_SQL_SAMPLES_ORDER = f" ORDER BY {_collated(PROBE.key, PROBE)}"
_SQL_LATENCY = (f"SELECT component, ts_ms - ts_ms % $1 AS step, AVG(latency_ms) FROM {PROBE.name} "
                f"WHERE ts_ms >= $2 AND ts_ms < $3 AND latency_ms IS NOT NULL GROUP BY component, step "
                f"ORDER BY step")
_SQL_WINDOWS = f"{_select(MAINTENANCE, schema.WINDOW_COLUMNS)} WHERE removed = 0"
_SQL_ADD_WINDOW = (f"INSERT INTO {MAINTENANCE.name} ({', '.join(MAINTENANCE.names)}) "
                   f"VALUES ({', '.join(f'${i}' for i in range(1, len(MAINTENANCE.names) + 1))})")
_SQL_REPORT_SENT = f"SELECT 1 FROM {REPORT_SENT.name} WHERE period = $1 AND customer = $2 LIMIT 1"
_SQL_RECORD_REPORT_SENT = _upsert(REPORT_SENT, "VALUES ($1, $2, $3, $4)")
_SQL_NOW_MS = "(extract(epoch FROM clock_timestamp()) * 1000)::bigint"


class PostgresSource:
    """Reads for reports and the console; keeps maintenance windows and the report ledger. With `samples`,
    probe samples and latency are read from that store instead (where `storage.samples` sends them)."""

    def __init__(self, settings: PostgresSettings, *, samples: Source | None = None,
                 reconnect_s: float = 1.0) -> None:
        self.settings = settings
        self._pool = _Pool(settings)
        self.name = self._pool.name
        self._samples = samples
        self._reconnect_s = reconnect_s
        self._history_from_ms: int | None = None

    async def _fetch(self, doing: str, sql: str, *args: Any) -> list[Any]:
        async def work(conn: asyncpg.Connection) -> list[Any]:
            return list(await conn.fetch(sql, *args))
        return await self._pool.run(doing, work, transaction=False)

    async def _execute(self, doing: str, sql: str, *args: Any) -> int:
        async def work(conn: asyncpg.Connection) -> int:
            return _count(await conn.execute(sql, *args))
        try:
            return await self._pool.run(doing, work, transaction=False)
        except SourceError as exc:
            if isinstance(exc.__cause__, asyncpg.IntegrityConstraintViolationError):
                raise SourceError(f"{self.name} refused the row: {exc.__cause__}") from exc.__cause__
            raise

    async def changes(self, start_ms: int, end_ms: int,
                      components: Sequence[str] | None = None) -> list[StateChange]:
        if components is None:
            before, inside = await self._snapshot(_SQL_LAST_CHANGES, (start_ms,),
                                                  f"{_SQL_CHANGES} ORDER BY {_STATE_ORDER}", (start_ms, end_ms))
            return self._changes(before, inside)
        if not components:
            return []
        wanted = list(components)
        if self._history_from_ms is None:  # once: the oldest change (the store's history only grows forward)
            oldest = await self._fetch("read state changes from", _SQL_HISTORY_FROM)
            self._history_from_ms = oldest[0][0] if oldest and oldest[0][0] is not None else start_ms
        walked = schema.walks_last_changes(self._history_from_ms, start_ms, end_ms)
        before, inside = await self._snapshot(_SQL_SLICE_LAST_CHANGES_WALKED if walked else _SQL_SLICE_LAST_CHANGES,
                                              (start_ms, wanted), _SQL_SLICE_CHANGES, (start_ms, end_ms, wanted))
        # Sorted here, not by the server: PostgreSQL (before 17) cannot take `= ANY` off the primary key in its
        # order, and sorted 2 000 components' month (80 000 rows) in 120 ms, with two parallel workers and on disk,
        # where Python sorts the records in 50 ms.
        schema.sort_state_rows(inside)
        try:
            return self._changes(before, inside, _SLICE_SHAPE)
        except schema.RowShapeError:
            del inside
        before, inside = await self._snapshot(_SQL_LAST_CHANGES_OF, (start_ms, wanted),
                                              f"{_SQL_CHANGES} AND component = ANY($3::text[])",
                                              (start_ms, end_ms, wanted))
        schema.sort_state_rows(inside)
        return self._changes(before, inside)

    async def _snapshot(self, before_sql: str, before_args: tuple[Any, ...], inside_sql: str,
                        inside_args: tuple[Any, ...]) -> tuple[list[Any], list[Any]]:
        """The last changes before a period and the changes in it, read in one snapshot: a change written between
        the two reads is in neither or in its right place."""
        async def snapshot(conn: asyncpg.Connection) -> tuple[list[Any], list[Any]]:
            async with conn.transaction(isolation="repeatable_read", readonly=True):
                # The planner's cost of a walk along the index is far above what it takes (a seek per step), and
                # over jit_above_cost: compiling it took longer than the read.
                await conn.execute("SET LOCAL jit = off")
                return await conn.fetch(before_sql, *before_args), await conn.fetch(inside_sql, *inside_args)

        return await self._pool.run("read state changes from", snapshot, transaction=False)

    def _changes(self, before: list[Any], inside: list[Any],
                 shape: schema.RowShape = schema.STATE_SHAPE) -> list[StateChange]:
        """State rows (in the period, sorted) and the last ones before it as StateChanges."""
        rows = [tuple(r) for r in before]
        schema.sort_state_rows(rows)
        last = schema.LastRows(rows)
        # The records as they are (no tuple each), an agent's and a reason's str shared by their changes.
        refs: dict[Any, ComponentRef] = {}
        strings: dict[str, str] = {}
        changes = schema.state_changes(last.merged(inside), refs, strings, shape)
        changes += schema.state_changes(last.rest(), refs, strings, shape)
        return changes

    async def heartbeats(self, start_ms: int, end_ms: int) -> Heartbeats:
        agents = await self._fetch("read heartbeats from", _SQL_AGENTS, start_ms)
        lookback = {str(a): heartbeat_margin_ms(float(p)) for a, p in agents if p is not None}
        low = start_ms - max(lookback.values(), default=0)
        rows = await self._fetch("read heartbeats from", _SQL_HEARTBEATS, low, end_ms)
        return group_heartbeats(((r[0], r[1], r[2]) for r in rows), start_ms, lookback)

    async def samples(self, start_ms: int, end_ms: int, components: Sequence[str] | None = None) -> list[Sample]:
        if self._samples is not None:
            return await self._samples.samples(start_ms, end_ms, components)
        if components is not None and not components:
            return []
        if components is None:
            rows = await self._fetch("read samples from", _SQL_SAMPLES + _SQL_SAMPLES_ORDER, start_ms, end_ms)
        else:
            rows = await self._fetch("read samples from",
                                     f"{_SQL_SAMPLES} AND component = ANY($3::text[]){_SQL_SAMPLES_ORDER}",
                                     start_ms, end_ms, list(components))
        return schema.samples(rows)

    async def latency(self, start_ms: int, end_ms: int, step_ms: int) -> dict[str, list[tuple[int, float]]]:
        if step_ms <= 0:
            raise ValueError(f"step_ms must be positive, got {step_ms}")
        if self._samples is not None:
            return await self._samples.latency(start_ms, end_ms, step_ms)
        out: dict[str, list[tuple[int, float]]] = {}
        for component, step, mean in await self._fetch("read latency from", _SQL_LATENCY, step_ms, start_ms,
                                                       end_ms):
            out.setdefault(component, []).append((int(step), float(mean)))
        return out

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[MaintenanceWindow]:
        sql = _SQL_WINDOWS
        params: list[int] = []
        if end_ms is not None:
            params.append(end_ms)
            sql += f" AND start_ms < ${len(params)}"
        if start_ms is not None:
            params.append(start_ms)
            sql += f" AND end_ms > ${len(params)}"
        rows = await self._fetch("read maintenance windows from", sql + ' ORDER BY start_ms, id COLLATE "C"',
                                 *params)
        return [schema.maintenance_window(r) for r in rows]

    async def add_window(self, window: MaintenanceWindow) -> None:
        check_window(window)
        await self._execute("add a maintenance window to", _SQL_ADD_WINDOW, *schema.window_row(window))

    async def remove_window(self, id: str) -> bool:
        return await self._execute("remove a maintenance window from",
                                   f"UPDATE {MAINTENANCE.name} SET removed = 1 WHERE id = $1 AND removed = 0",
                                   id) > 0

    async def report_sent(self, period_key: str, customer: str) -> bool:
        return bool(await self._fetch("read the report ledger of", _SQL_REPORT_SENT, period_key, customer))

    async def record_report_sent(self, period_key: str, customer: str, sent_ms: int, sha256: str) -> None:
        await self._execute("record a sent report in", _SQL_RECORD_REPORT_SENT,
                            *schema.report_sent_row(period_key, customer, sent_ms, sha256))

    async def watch_changes(self, on_change: Callable[[list[str] | None], None], stop: asyncio.Event) -> None:
        """Call `on_change` with the components whose state changes were written (None: re-read all), from
        LISTEN on `slawatch_state`, until `stop` is set; reconnects after errors (and then says None: what was
        announced meanwhile is lost)."""
        lost_before = False
        delay = self._reconnect_s
        while not stop.is_set():
            conn: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                conn = await asyncpg.connect(**connect_kwargs(self.settings))
                conn.add_termination_listener(lambda _c, lost=lost: lost.set())
                await conn.add_listener(NOTIFY_CHANNEL, lambda _c, _pid, _ch, payload: on_change(
                    parse_payload(str(payload))))
                delay = self._reconnect_s
                if lost_before:
                    on_change(None)
                while not stop.is_set() and not lost.is_set():
                    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(lost.wait())}
                    _, pending = await asyncio.wait(waiters, timeout=self.settings.timeout_s,
                                                    return_when=asyncio.FIRST_COMPLETED)
                    for w in pending:
                        w.cancel()
                    if not stop.is_set() and not lost.is_set():
                        await conn.fetchval("SELECT 1")  # a connection dead without a word shows here
            except (*_ERRORS, PasswordError) as exc:
                log.warning("%s: watching state changes: %s (again in %.0fs)", self.name, _describe(exc), delay)
            finally:
                if conn is not None:
                    conn.terminate()  # it only listened: nothing to flush, and no wait on a dead server
            if stop.is_set():
                return
            lost_before = True
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=delay)
            delay = min(delay * 2, 30.0)

    async def close(self) -> None:
        await self._pool.close()
        if self._samples is not None:
            await self._samples.close()


# ---------------------------------------------------------------- the incident desk


def _insert_sql(m: schema.Measurement, tail: str = "") -> str:
    return (f"INSERT INTO {m.name} ({', '.join(m.names)}) "
            f"VALUES ({', '.join(f'${i}' for i in range(1, len(m.names) + 1))}){tail}")


_INCIDENT_SETS = ", ".join(f"{n} = ${i}" for i, n in enumerate((n for n in INCIDENT.names if n != "id"), 1))
_N_SETS = len(INCIDENT.names) - 1
_SQL_UPDATE = f"UPDATE {INCIDENT.name} SET {_INCIDENT_SETS} WHERE id = ${_N_SETS + 1} AND version = ${_N_SETS + 2}"
_SQL_FAULT = _insert_sql(INCIDENT_FAULT, " ON CONFLICT DO NOTHING")
_SQL_KNOWN_FAULT = f"SELECT incident FROM {INCIDENT_FAULT.name} WHERE component = $1 AND start_ms = $2"
_SQL_INCIDENT = _insert_sql(INCIDENT, " ON CONFLICT DO NOTHING")
_SQL_EVENT = _insert_sql(INCIDENT_EVENT)
_SQL_NOTE = _insert_sql(NOTIFICATION, " ON CONFLICT DO NOTHING")
_SQL_MARK = (f"UPDATE {NOTIFICATION.name} SET state = $1, attempts = $2, due_ms = $3, last_error = $4, "
             f"sent_ms = $5 WHERE id = $6 AND state = $7")
_ID = re.compile(r"^INC-(\d{4})-(\d{6})$")
_SQL_MAX_NUMBER = (f"SELECT MAX(substr(id, 10)::bigint) FROM {INCIDENT.name} WHERE id ~ ('^INC-' || $1 || "
                   f"'-[0-9]{{6}}$')")


class _Refused(Exception):
    """An item of `open_many` not stored: its savepoint is rolled back."""


class _Moved(Exception):
    """The incident was written by someone else since it was read."""


class PostgresDeskStore:
    """The desk's records in PostgreSQL, shared by every server: one transaction per call; a fault raises one
    incident (the key of slawatch_incident_fault); an update is a compare-and-set on the version; ids come from
    a per-year counter row taken in the opening transaction; a due notification is claimed by one sender."""

    def __init__(self, settings: PostgresSettings) -> None:
        self.settings = settings
        self._pool = _Pool(settings)
        self.name = self._pool.name
        self._holder = uuid.uuid4().hex  # this store object's claims on due notifications

    async def _read(self, doing: str, sql: str, *args: Any) -> list[Any]:
        async def work(conn: asyncpg.Connection) -> list[Any]:
            return list(await conn.fetch(sql, *args))
        return await self._pool.run(doing, work, transaction=False)

    async def next_id(self, year: int) -> str:
        """The next incident id of `year` (INC-2026-000124): the one `open` will take unless another process
        takes it first (then `open` refuses, and the caller draws again)."""
        async def work(conn: asyncpg.Connection) -> int:
            last = await conn.fetchval(f"SELECT last FROM {COUNTER_TABLE} WHERE year = $1", year)
            if last is None:
                last = await conn.fetchval(_SQL_MAX_NUMBER, f"{year:04d}")
            return int(last or 0)
        last = await self._pool.run("draw an incident id from", work, transaction=False)
        return f"INC-{year:04d}-{last + 1:06d}"

    async def fault_known(self, component: str, start_ms: int) -> str | None:
        rows = await self._read("read incidents from", _SQL_KNOWN_FAULT, component, start_ms)
        return str(rows[0][0]) if rows else None

    async def open(self, incident: Incident, events: Sequence[IncidentEvent],
                   notes: Sequence[Notification]) -> bool:
        """Store a new incident with its first events, notifications and fault; False (nothing stored) when the
        fault is known already, or its id is not the next of its year's counter (taken)."""
        return (await self.open_many([(incident, events, notes)]))[0]

    async def open_many(self, items: Sequence[tuple[Incident, Sequence[IncidentEvent], Sequence[Notification]]]
                        ) -> list[bool]:
        async def work(conn: asyncpg.Connection) -> list[bool]:
            done = []
            for incident, events, notes in items:
                try:
                    async with conn.transaction():  # a savepoint: a refused item leaves nothing behind
                        await _open_one(conn, incident, events, notes)
                    done.append(True)
                except _Refused:
                    done.append(False)
            return done

        if not items:
            return []
        return await self._pool.run("open incidents in", work)

    async def update(self, version: int, incident: Incident, events: Sequence[IncidentEvent],
                     notes: Sequence[Notification], *, fault_start_ms: int | None = None) -> bool:
        row = schema.incident_row(incident)

        async def work(conn: asyncpg.Connection) -> bool:
            if fault_start_ms is not None:
                added = await conn.fetch(_SQL_FAULT + " RETURNING 1", incident.ref.component, fault_start_ms,
                                         incident.id)
                if not added:
                    raise _Moved
            # Under READ COMMITTED a concurrent writer's update is waited for, then the version re-checked.
            if _count(await conn.execute(_SQL_UPDATE, *row[1:], incident.id, version)) != 1:
                raise _Moved  # rolls the fault back too
            await _append(conn, events, notes)
            return True

        try:
            return await self._pool.run("update an incident in", work)
        except _Moved:
            return False

    async def get(self, id: str) -> Incident | None:
        rows = await self._read("read incidents from", f"{_select(INCIDENT)} WHERE id = $1", id)
        return schema.incident(rows[0]) if rows else None

    async def active(self) -> list[Incident]:
        rows = await self._read("read incidents from", f"{_select(INCIDENT)} WHERE state != 'resolved' "
                                                        f'ORDER BY raised_ms, id COLLATE "C"')
        return [schema.incident(r) for r in rows]

    async def latest(self, component: str) -> Incident | None:
        rows = await self._read("read incidents from", f"{_select(INCIDENT)} WHERE component = $1 "
                                                        f'ORDER BY start_ms DESC, id COLLATE "C" DESC LIMIT 1',
                                component)
        return schema.incident(rows[0]) if rows else None

    async def incidents(self, start_ms: int | None = None, end_ms: int | None = None, *,
                        customer: str | None = None, component: str | None = None,
                        active_only: bool = False) -> list[Incident]:
        where, params = ["TRUE"], []
        for clause, value in (("raised_ms >= ", start_ms), ("raised_ms < ", end_ms), ("customer = ", customer),
                              ("component = ", component)):
            if value is not None:
                params.append(value)
                where.append(f"{clause}${len(params)}")
        if active_only:
            where.append("state != 'resolved'")
        rows = await self._read("read incidents from", f"{_select(INCIDENT)} WHERE {' AND '.join(where)} "
                                                        f'ORDER BY raised_ms, id COLLATE "C"', *params)
        return [schema.incident(r) for r in rows]

    async def events(self, id: str) -> list[IncidentEvent]:
        rows = await self._read("read incident events from", f"{_select(INCIDENT_EVENT)} WHERE incident = $1 "
                                                              f"ORDER BY seq", id)
        return [schema.incident_event(r) for r in rows]

    async def due_notifications(self, now_ms: int, limit: int) -> list[Notification]:
        """Pending notifications due by `now_ms`, claimed for this store object: another sender (a second server)
        is not handed them until this one marks them or its claim runs out (CLAIM_MS)."""
        names = ", ".join(f"n.{c}" for c in NOTIFICATION.names)

        async def work(conn: asyncpg.Connection) -> list[Any]:
            rows = await conn.fetch(
                f"SELECT {names} FROM {NOTIFICATION.name} n LEFT JOIN {CLAIM_TABLE} c ON c.id = n.id "
                f"WHERE n.state = 'pending' AND n.due_ms <= $1 "
                f"AND (c.id IS NULL OR c.holder = $2 OR c.until_ms <= $1) "
                f'ORDER BY n.due_ms, n.id COLLATE "C" LIMIT $3 FOR UPDATE OF n SKIP LOCKED',
                now_ms, self._holder, limit)
            if rows:
                await conn.execute(
                    f"INSERT INTO {CLAIM_TABLE} (id, holder, until_ms) SELECT unnest($1::text[]), $2, $3 "
                    f"ON CONFLICT (id) DO UPDATE SET holder = EXCLUDED.holder, until_ms = EXCLUDED.until_ms",
                    [r[0] for r in rows], self._holder, now_ms + CLAIM_MS)
            return list(rows)

        return [schema.notification(r) for r in await self._pool.run("claim due notifications in", work)]

    async def next_due_ms(self) -> int | None:
        rows = await self._read("read notifications from",
                                f"SELECT MIN(due_ms) FROM {NOTIFICATION.name} WHERE state = 'pending'")
        return None if not rows or rows[0][0] is None else int(rows[0][0])

    async def pending_count(self) -> int:
        rows = await self._read("read notifications from",
                                f"SELECT COUNT(*) FROM {NOTIFICATION.name} WHERE state = 'pending'")
        return int(rows[0][0])

    async def notifications(self, incident_id: str | None = None) -> list[Notification]:
        if incident_id is None:
            rows = await self._read("read notifications from",
                                    f'{_select(NOTIFICATION)} ORDER BY created_ms, id COLLATE "C"')
        else:
            rows = await self._read("read notifications from", f"{_select(NOTIFICATION)} WHERE incident = $1 "
                                                                f'ORDER BY created_ms, id COLLATE "C"', incident_id)
        return [schema.notification(r) for r in rows]

    async def mark(self, note: Notification) -> None:
        await self.mark_many([note])

    async def mark_many(self, notes: Sequence[Notification]) -> None:
        """Store delivery outcomes of pending notifications (a sent one stays sent) and drop their claims."""
        async def work(conn: asyncpg.Connection) -> None:
            await conn.executemany(_SQL_MARK, [(str(n.state), n.attempts, n.due_ms, schema.clean_text(n.last_error),
                                                n.sent_ms, n.id, str(NotificationState.PENDING)) for n in notes])
            await conn.execute(f"DELETE FROM {CLAIM_TABLE} WHERE id = ANY($1::text[])", [n.id for n in notes])

        if notes:
            await self._pool.run("record notifications in", work)

    async def release_claims(self) -> int:
        """Drop every sender's claims (how many there were): a server that takes over the sending sends what the
        one before it claimed and never marked at once, not CLAIM_MS later."""
        async def work(conn: asyncpg.Connection) -> int:
            return _count(await conn.execute(f"DELETE FROM {CLAIM_TABLE}"))

        return await self._pool.run("release notification claims in", work)

    async def prune(self, older_than_ms: int) -> int:
        """Forget resolved incidents (with their faults, events, notifications) raised before `older_than_ms`."""
        async def work(conn: asyncpg.Connection) -> int:
            old = f"SELECT id FROM {INCIDENT.name} WHERE state = 'resolved' AND raised_ms < $1"
            await conn.execute(f"DELETE FROM {CLAIM_TABLE} WHERE id IN (SELECT id FROM {NOTIFICATION.name} "
                               f"WHERE incident IN ({old}))", older_than_ms)
            n = 0
            for table in (NOTIFICATION.name, INCIDENT_EVENT.name, INCIDENT_FAULT.name):
                n += _count(await conn.execute(f"DELETE FROM {table} WHERE incident IN ({old})", older_than_ms))
            n += _count(await conn.execute(f"DELETE FROM {INCIDENT.name} WHERE state = 'resolved' "
                                           f"AND raised_ms < $1", older_than_ms))
            return n

        return await self._pool.run("prune incidents in", work)

    async def close(self) -> None:
        await self._pool.close()


async def _open_one(conn: asyncpg.Connection, incident: Incident, events: Sequence[IncidentEvent],
                    notes: Sequence[Notification]) -> None:
    """Store one new incident or raise _Refused. The year's counter row is locked until the transaction ends:
    openings take turns, so numbers follow each other with neither gap nor duplicate."""
    match = _ID.match(incident.id)
    if match is not None:
        year, number = int(match[1]), int(match[2])
        await conn.execute(f"INSERT INTO {COUNTER_TABLE} (year, last) "
                           f"VALUES ($1, COALESCE(({_SQL_MAX_NUMBER.replace('$1', '$2')}), 0)) "
                           f"ON CONFLICT (year) DO NOTHING", year, f"{year:04d}")
        last = int(await conn.fetchval(f"SELECT last FROM {COUNTER_TABLE} WHERE year = $1 FOR UPDATE", year))
        if number != last + 1:
            raise _Refused  # taken (or not the next one): the caller draws again
        await conn.execute(f"UPDATE {COUNTER_TABLE} SET last = $2 WHERE year = $1", year, number)
    if not await conn.fetch(_SQL_FAULT + " RETURNING 1", incident.ref.component, incident.start_ms, incident.id):
        raise _Refused  # the fault has raised an incident already
    if _count(await conn.execute(_SQL_INCIDENT, *schema.incident_row(incident))) != 1:
        raise _Refused  # an id outside the counter's pattern, taken
    await _append(conn, events, notes)


async def _append(conn: asyncpg.Connection, events: Sequence[IncidentEvent], notes: Sequence[Notification]) -> None:
    if events:
        await conn.executemany(_SQL_EVENT, [schema.event_row(e) for e in events])
    if notes:
        # A replayed write of the same change finds its notifications there already: they are not queued twice.
        await conn.executemany(_SQL_NOTE, [schema.notification_row(n) for n in notes])


# ---------------------------------------------------------------- the console's accounts, the agents' leases


_USER_SETS = [n for n in USER.names if n not in ("name", "created_ms")]
_SQL_USER_UPDATE = (f"UPDATE {USER.name} SET {', '.join(f'{n} = ${i}' for i, n in enumerate(_USER_SETS, 1))} "
                    f"WHERE name = ${len(_USER_SETS) + 1}")


class PostgresUserStore:
    """Console accounts in `slawatch_user`; every write one statement."""

    def __init__(self, settings: PostgresSettings) -> None:
        self._pool = _Pool(settings)
        self.name = self._pool.name

    async def _fetch(self, sql: str, *args: Any) -> list[Any]:
        async def work(conn: asyncpg.Connection) -> list[Any]:
            return list(await conn.fetch(sql, *args))
        return await self._pool.run("read users from", work, transaction=False)

    async def _execute(self, doing: str, sql: str, *args: Any) -> int:
        async def work(conn: asyncpg.Connection) -> int:
            return _count(await conn.execute(sql, *args))
        return await self._pool.run(doing, work, transaction=False)

    async def users(self) -> list[User]:
        return [schema.user(r) for r in await self._fetch(f'{_select(USER)} ORDER BY name COLLATE "C"')]

    async def get(self, name: str) -> User | None:
        rows = await self._fetch(f"{_select(USER)} WHERE name = $1", name)
        return schema.user(rows[0]) if rows else None

    async def count(self) -> int:
        return int((await self._fetch(f"SELECT COUNT(*) FROM {USER.name}"))[0][0])

    async def add(self, user: User) -> bool:
        return await self._execute("add a user to", _insert_sql(USER, " ON CONFLICT DO NOTHING"),
                                   *schema.user_row(user)) == 1

    async def replace(self, user: User) -> bool:
        row = dict(zip(USER.names, schema.user_row(user), strict=True))
        return await self._execute("update a user in", _SQL_USER_UPDATE, *[row[n] for n in _USER_SETS],
                                   user.name) == 1

    async def remove(self, name: str) -> bool:
        return await self._execute("remove a user from", f"DELETE FROM {USER.name} WHERE name = $1", name) == 1

    async def close(self) -> None:
        await self._pool.close()


class PostgresMemberStore:
    """The agents' leases in `slawatch_agent`, stamped with PostgreSQL's clock."""

    def __init__(self, settings: PostgresSettings) -> None:
        self._pool = _Pool(settings)
        self.name = self._pool.name

    async def renew(self, lease: AgentLease) -> None:
        row = list(schema.agent_lease_row(lease))
        del row[AGENT.index("seen_ms")]  # the store's clock, not the agent's

        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(_SQL_RENEW, *row)
        await self._pool.run("renew the agent lease in", work, transaction=False)

    async def members(self) -> tuple[int, list[AgentLease]]:
        async def work(conn: asyncpg.Connection) -> tuple[int, list[Any]]:
            now = await conn.fetchval(f"SELECT {_SQL_NOW_MS}")
            rows = await conn.fetch(f'{_select(AGENT)} ORDER BY agent COLLATE "C"')
            return int(now), list(rows)
        now, rows = await self._pool.run("read the agent leases in", work, transaction=False)
        return now, [schema.agent_lease(r) for r in rows]

    async def leave(self, agent: str) -> None:
        async def work(conn: asyncpg.Connection) -> None:
            await conn.execute(f"DELETE FROM {AGENT.name} WHERE agent = $1", agent)
        await self._pool.run("remove the agent lease from", work, transaction=False)

    async def close(self) -> None:
        await self._pool.close()


def _renew_sql() -> str:
    """The lease upsert, its seen_ms the store's clock (the other columns numbered $1, $2, ... in order)."""
    values, i = [], 0
    for n in AGENT.names:
        if n == "seen_ms":
            values.append(_SQL_NOW_MS)
        else:
            i += 1
            values.append(f"${i}")
    sets = ", ".join(f"{n} = EXCLUDED.{n}" for n in AGENT.names if n != "agent")
    return (f"INSERT INTO {AGENT.name} ({', '.join(AGENT.names)}) VALUES ({', '.join(values)}) "
            f"ON CONFLICT (agent) DO UPDATE SET {sets}")


_SQL_RENEW = _renew_sql()


__all__ = [
    "NOTIFY_CHANNEL", "PostgresDeskStore", "PostgresMemberStore", "PostgresSink", "PostgresSource",
    "PostgresUserStore", "notify_payloads", "parse_payload", "retryable", "set_up_schema",
]

"""The embedded default store: SQLite in WAL mode through aiosqlite (its own thread), schema in docs/schema.md."""

from __future__ import annotations

import asyncio
import logging
import math
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import aiosqlite

from slawatch.config.settings import SqliteSettings
from slawatch.model import Heartbeat, Point, Sample, StateChange
from slawatch.store import SinkError
from slawatch.store.lineprotocol import HEARTBEAT, PROBE, STATE, FieldValue, clean_text

log = logging.getLogger(__name__)

SCHEMA_VERSION = 1

# Every data table's primary key is the point's identity + ts_ms, so INSERT OR REPLACE makes a replayed
# batch overwrite instead of duplicate. WITHOUT ROWID: the key is the storage order, so the reporter's
# reads (one component or agent over a time range) are range scans of the primary key itself.
SCHEMA = """
CREATE TABLE IF NOT EXISTS slawatch_probe (
    component  TEXT    NOT NULL,
    ts_ms      INTEGER NOT NULL,
    agent      TEXT    NOT NULL,
    probe      TEXT    NOT NULL,
    class      TEXT    NOT NULL,
    tier       TEXT    NOT NULL,
    customer   TEXT    NOT NULL,
    kind       TEXT    NOT NULL,
    up         INTEGER NOT NULL CHECK (up IN (0, 1)),
    latency_ms REAL,
    outcome    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    PRIMARY KEY (component, ts_ms, agent, probe)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS slawatch_probe_ts ON slawatch_probe (ts_ms);

CREATE TABLE IF NOT EXISTS slawatch_state (
    component TEXT    NOT NULL,
    ts_ms     INTEGER NOT NULL,
    agent     TEXT    NOT NULL,
    class     TEXT    NOT NULL,
    tier      TEXT    NOT NULL,
    customer  TEXT    NOT NULL,
    up        INTEGER NOT NULL CHECK (up IN (0, 1)),
    reason    TEXT    NOT NULL,
    PRIMARY KEY (component, ts_ms, agent)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS slawatch_state_ts ON slawatch_state (ts_ms);

CREATE TABLE IF NOT EXISTS slawatch_heartbeat (
    agent    TEXT    NOT NULL,
    ts_ms    INTEGER NOT NULL,
    period_s REAL    NOT NULL,
    PRIMARY KEY (agent, ts_ms)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS slawatch_heartbeat_ts ON slawatch_heartbeat (ts_ms);

CREATE TABLE IF NOT EXISTS slawatch_maintenance (
    id           TEXT    NOT NULL PRIMARY KEY,
    scope        TEXT    NOT NULL CHECK (scope IN ('component', 'class', 'customer')),
    value        TEXT    NOT NULL,
    start_ms     INTEGER NOT NULL,
    end_ms       INTEGER NOT NULL CHECK (end_ms > start_ms),
    announced_ms INTEGER NOT NULL,
    reason       TEXT    NOT NULL DEFAULT '',
    created_ms   INTEGER NOT NULL,
    removed      INTEGER NOT NULL DEFAULT 0 CHECK (removed IN (0, 1))
);
CREATE INDEX IF NOT EXISTS slawatch_maintenance_time ON slawatch_maintenance (start_ms, end_ms);

CREATE TABLE IF NOT EXISTS slawatch_ack (
    component TEXT    NOT NULL,
    agent     TEXT    NOT NULL,
    raised_ms INTEGER NOT NULL,
    acked_ms  INTEGER NOT NULL,
    acked_by  TEXT    NOT NULL,
    note      TEXT    NOT NULL DEFAULT '',
    PRIMARY KEY (component, agent, raised_ms)
);

CREATE TABLE IF NOT EXISTS slawatch_report_sent (
    period   TEXT    NOT NULL,
    customer TEXT    NOT NULL,
    sent_ms  INTEGER NOT NULL,
    sha256   TEXT    NOT NULL,
    PRIMARY KEY (period, customer)
);
"""

# Column order of each data table's INSERT; the names are the record's tag and field names.
COLUMNS: dict[str, tuple[str, ...]] = {
    PROBE: ("component", "class", "tier", "customer", "probe", "kind", "agent", "ts_ms",
            "up", "latency_ms", "outcome", "reason"),
    STATE: ("component", "class", "tier", "customer", "agent", "ts_ms", "up", "reason"),
    HEARTBEAT: ("agent", "ts_ms", "period_s"),
}
_INSERT = {table: f"INSERT OR REPLACE INTO {table} ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})"
           for table, cols in COLUMNS.items()}
_PRUNE: tuple[tuple[str, str], ...] = (
    (PROBE, "ts_ms"), (STATE, "ts_ms"), (HEARTBEAT, "ts_ms"),
    ("slawatch_maintenance", "end_ms"), ("slawatch_ack", "raised_ms"),
)

Row = tuple[FieldValue | None, ...]


def rows(batch: Sequence[Point]) -> dict[str, list[Row]]:
    """The batch as INSERT parameters per table, in COLUMNS order (a missing latency_ms becomes NULL).

    The same values as `lineprotocol.record` gives InfluxDB, built directly: this runs for every point.
    """
    c = clean_text
    probe: list[Row] = []
    state: list[Row] = []
    beat: list[Row] = []
    for p in batch:
        if isinstance(p, Sample):
            r, lat = p.ref, p.latency_ms
            probe.append((c(r.component), c(r.klass), c(r.tier), c(r.customer), c(p.probe), c(p.kind), c(p.agent),
                          p.ts_ms, int(p.up), float(lat) if lat is not None and math.isfinite(lat) else None,
                          c(str(p.outcome)), c(p.reason)))
        elif isinstance(p, StateChange):
            r = p.ref
            state.append((c(r.component), c(r.klass), c(r.tier), c(r.customer), c(p.agent), p.ts_ms, int(p.up),
                          c(p.reason)))
        elif isinstance(p, Heartbeat):
            beat.append((c(p.agent), p.ts_ms, float(p.period_s)))
        else:
            raise TypeError(f"not a point: {p!r}")
    return {PROBE: probe, STATE: state, HEARTBEAT: beat}


class SqliteSink:
    """SQLite store. One connection on aiosqlite's thread; one transaction per batch."""

    def __init__(self, settings: SqliteSettings) -> None:
        self.settings = settings
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
            db = await aiosqlite.connect(self.path, timeout=10.0, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._error("cannot open", exc) from exc
        try:
            await db.execute("PRAGMA journal_mode=WAL")
            # FULL: a batch is on disk when write() returns, because the spool then forgets it.
            await db.execute("PRAGMA synchronous=FULL")
            await db.execute("PRAGMA busy_timeout=10000")
            await db.executescript(SCHEMA)
            await db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            await db.commit()
        except sqlite3.Error as exc:
            await db.close()
            raise self._error("cannot set up", exc) from exc
        self._db = db
        return db

    async def write(self, batch: Sequence[Point]) -> None:
        if not batch:
            return
        per_table = await asyncio.to_thread(rows, batch)  # ~100 ms for 40 000 points: not on the loop
        async with self._lock:
            await self._write(per_table, len(batch))

    async def _write(self, per_table: dict[str, list[Row]], n: int) -> None:
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

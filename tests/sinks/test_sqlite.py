"""What is particular to the SQLite sink: WAL, the schema and its indexes, pruning, errors."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest
from hypothesis import given
from hypothesis import strategies as st

from slawatch import schema
from slawatch.config.settings import SqliteSettings
from slawatch.model import ComponentRef, Heartbeat, Outcome, Point, Sample, StateChange
from slawatch.store import SinkError
from slawatch.store import sqlite as sqlite_module
from slawatch.store.lineprotocol import record
from slawatch.store.sqlite import (
    COLUMNS,
    SCHEMA_VERSION,
    SqliteSink,
    SqliteSource,
    decode_rows,
    encode_rows,
    rows,
)

pytestmark = pytest.mark.timeout(60)

REF = ComponentRef("sip-core", "sip", "Gold", "acme")
T0 = 1_700_000_000_000


def batch(n: int, start_ms: int = T0) -> list[Point]:
    out: list[Point] = []
    for i in range(n):
        out.append(Sample(REF, "options", "sip", "a1", start_ms + i * 1000, Outcome.UP, "", 1.0))
        out.append(Heartbeat("a1", start_ms + i * 1000, 60.0))
    out.append(StateChange(REF, "a1", start_ms, False, "down"))
    return out


@pytest.fixture
async def sink(tmp_path: Path) -> AsyncIterator[SqliteSink]:
    s = SqliteSink(SqliteSettings(path=tmp_path / "sub" / "slawatch.db"))
    yield s
    await s.close()


def plan(db: sqlite3.Connection, sql: str, *args: object) -> str:
    return " | ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + sql, args))


async def test_wal_schema_and_version(sink: SqliteSink) -> None:
    await sink.write(batch(1))
    with sqlite3.connect(sink.path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
    assert tables == {"slawatch_probe", "slawatch_state", "slawatch_heartbeat", "slawatch_maintenance",
                      "slawatch_ack", "slawatch_report_sent", "slawatch_incident", "slawatch_incident_fault",
                      "slawatch_incident_event", "slawatch_agent", "slawatch_notification", "slawatch_user"}


async def test_reporter_reads_use_the_keys(sink: SqliteSink) -> None:
    await sink.write(batch(3))
    with sqlite3.connect(sink.path) as db:
        for sql in ("SELECT * FROM slawatch_probe WHERE component = ? AND ts_ms >= ? AND ts_ms < ?",
                    "SELECT * FROM slawatch_state WHERE component = ? AND ts_ms >= ? AND ts_ms < ?"):
            assert "USING PRIMARY KEY (component=? AND ts_ms>? AND ts_ms<?)" in plan(db, sql, "c", 0, 1)
        sql = "SELECT * FROM slawatch_heartbeat WHERE agent = ? AND ts_ms >= ? AND ts_ms < ?"
        assert "USING PRIMARY KEY (agent=? AND ts_ms>? AND ts_ms<?)" in plan(db, sql, "a", 0, 1)
        assert "slawatch_probe_ts" in plan(db, "DELETE FROM slawatch_probe WHERE ts_ms < ?", 5)


async def test_prune_deletes_only_older_rows(sink: SqliteSink) -> None:
    await sink.write(batch(10))
    removed = await sink.prune(T0 + 5_000)
    assert removed == 5 + 5 + 1  # probes and heartbeats at T0..T0+4s, the state change at T0
    assert await sink.prune(T0 + 5_000) == 0
    with sqlite3.connect(sink.path) as db:
        assert db.execute("SELECT min(ts_ms), count(*) FROM slawatch_probe").fetchone() == (T0 + 5_000, 5)


async def test_maintenance_ack_and_report_tables_accept_documented_rows(sink: SqliteSink) -> None:
    await sink.connect()
    with sqlite3.connect(sink.path) as db:
        db.execute("INSERT INTO slawatch_maintenance (id, scope, value, start_ms, end_ms, announced_ms, reason, "
                   "created_ms) VALUES ('mw-1', 'component', 'sip-core', 10, 20, 1, 'firmware', 2)")
        db.execute("INSERT INTO slawatch_ack VALUES ('sip-core', 'a1', 100, 160, 'ops@example.net', 'on it')")
        db.execute("INSERT INTO slawatch_report_sent VALUES ('2024-05', 'acme', 99, 'ab' || '00')")
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO slawatch_maintenance (id, scope, value, start_ms, end_ms, announced_ms, "
                       "created_ms) VALUES ('mw-2', 'planet', 'x', 10, 20, 1, 2)")
        assert db.execute("SELECT removed FROM slawatch_maintenance").fetchone() == (0,)
    await sink.prune(50)  # ended windows and old acks go with the retention
    with sqlite3.connect(sink.path) as db:
        assert db.execute("SELECT count(*) FROM slawatch_maintenance").fetchone() == (0,)
        assert db.execute("SELECT count(*) FROM slawatch_ack").fetchone() == (1,)


async def test_survives_reopen(tmp_path: Path) -> None:
    settings = SqliteSettings(path=tmp_path / "x.db")
    first = SqliteSink(settings)
    await first.write(batch(2))
    await first.close()
    second = SqliteSink(settings)
    await second.write(batch(2))  # replay after a restart
    await second.close()
    with sqlite3.connect(settings.path) as db:
        assert db.execute("SELECT count(*) FROM slawatch_probe").fetchone() == (2,)


async def test_two_writers_on_one_file(tmp_path: Path) -> None:
    settings = SqliteSettings(path=tmp_path / "x.db")
    a, b = SqliteSink(settings), SqliteSink(settings)
    await a.connect()
    await asyncio.gather(*(s.write(batch(200, T0 + k * 1_000_000)) for k, s in enumerate((a, b, a, b))))
    await a.close()
    await b.close()
    with sqlite3.connect(settings.path) as db:
        assert db.execute("SELECT count(*) FROM slawatch_probe").fetchone() == (800,)


async def test_unopenable_path_is_a_sink_error(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    s = SqliteSink(SqliteSettings(path=tmp_path / "dir.db"))
    with pytest.raises(SinkError) as err:
        await s.write(batch(1))
    await s.close()
    assert "dir.db" in str(err.value) and s.write_errors == 1


async def test_a_failed_batch_is_rolled_back_whole(sink: SqliteSink) -> None:
    await sink.connect()
    with sqlite3.connect(sink.path) as db:  # a trigger that refuses one row in the middle of the batch
        db.execute("CREATE TRIGGER no_bad BEFORE INSERT ON slawatch_heartbeat WHEN NEW.ts_ms = 1700000002000 "
                   "BEGIN SELECT RAISE(ABORT, 'refused'); END")
    with pytest.raises(SinkError) as err:
        await sink.write(batch(5))
    assert not err.value.retryable and "refused" in str(err.value)
    with sqlite3.connect(sink.path) as db:
        assert db.execute("SELECT count(*) FROM slawatch_probe").fetchone() == (0,)
    await sink.write(batch(1))  # the connection is usable afterwards
    assert sink.write_errors == 1


async def test_writes_do_not_block_the_event_loop(sink: SqliteSink) -> None:
    await sink.connect()
    big = batch(20_000)
    gaps: list[float] = []

    async def ticker() -> None:
        last = time.perf_counter()
        while True:
            await asyncio.sleep(0.005)
            now = time.perf_counter()
            gaps.append(now - last)
            last = now

    task = asyncio.create_task(ticker())
    await sink.write(big)
    task.cancel()
    assert len(gaps) > 3 and max(gaps) < 0.25


names = st.text(min_size=0, max_size=12)
refs = st.builds(ComponentRef, component=names, klass=names, tier=names, customer=names)
points = st.one_of(
    st.builds(Sample, ref=refs, probe=names, kind=names, agent=names, ts_ms=st.integers(0, 2**53),
              outcome=st.sampled_from(Outcome), reason=st.text(max_size=30),
              latency_ms=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True))),
    st.builds(StateChange, ref=refs, agent=names, ts_ms=st.integers(0, 2**53), up=st.booleans(),
              reason=st.text(max_size=30)),
    st.builds(Heartbeat, agent=names, ts_ms=st.integers(0, 2**53), period_s=st.floats(0.001, 1e6)))


@given(st.lists(points, max_size=8))
def test_rows_are_the_records_every_sink_shares(batch: list[Point]) -> None:
    """SQLite builds its rows directly for speed; they must equal the shared `record` mapping."""
    got = rows(batch)
    want: dict[str, list[tuple[object, ...]]] = {table: [] for table in COLUMNS}
    for point in batch:
        rec = record(point)
        values = {**dict(rec.tags), **dict(rec.fields), "ts_ms": rec.ts_ms}
        want[rec.measurement].append(tuple(values.get(col) for col in COLUMNS[rec.measurement]))
    assert got == want


@given(st.lists(points, max_size=8))
def test_encoded_rows_are_the_rows(batch: list[Point]) -> None:
    """What the spool keeps for SQLite reads back as the very rows `write` would insert (NaN and text exact)."""
    items = encode_rows(batch)
    assert len(items) == len(batch)
    got, bad = decode_rows(items)
    assert bad == 0 and repr(got) == repr(rows(batch))


async def test_write_encoded_stores_what_write_stores_and_drops_only_unreadable_rows(tmp_path: Path) -> None:
    points_ = batch(30)
    by_points = SqliteSink(SqliteSettings(path=tmp_path / "points.db"))
    by_rows = SqliteSink(SqliteSettings(path=tmp_path / "rows.db"))
    await by_points.write(points_)
    items = by_rows.encode(points_)
    await by_rows.write_encoded(items)
    await by_rows.write_encoded(items)  # a replay: idempotent
    await by_rows.write_encoded([b"[0,", b"[9,1]", items[0]])  # two unreadable: dropped and counted
    await by_points.close()
    await by_rows.close()
    assert by_rows.bad_points == 2 and by_rows.write_errors == 0
    for table in COLUMNS:
        with sqlite3.connect(tmp_path / "points.db") as a, sqlite3.connect(tmp_path / "rows.db") as b:
            sql = f"SELECT * FROM {table} ORDER BY 1, 2, 3"
            assert a.execute(sql).fetchall() == b.execute(sql).fetchall()


# ---------------------------------------------------------------- a store made by schema version 1


def _version_1_store(path: Path) -> None:
    """A store as version 1 made it: slawatch_state without `degraded`, user_version 1, one change in it."""
    old_state = dataclasses.replace(schema.STATE, columns=tuple(c for c in schema.STATE.columns
                                                                if c.name not in ("degraded", "released")))
    with sqlite3.connect(path) as db:
        db.executescript("\n".join((old_state if m is schema.STATE else m).ddl() for m in schema.MEASUREMENTS))
        db.execute("INSERT INTO slawatch_state VALUES ('ups-1', 1000, 'a1', 'power', 'gold', 'acme', 0, 'dead')")
        db.execute("PRAGMA user_version=1")


async def test_a_version_1_store_is_read_by_the_reporter_after_gaining_the_column(tmp_path: Path) -> None:
    _version_1_store(tmp_path / "old.db")
    source = SqliteSource(SqliteSettings(path=tmp_path / "old.db"))
    try:
        (change,) = await source.changes(0, 10_000)
    finally:
        await source.close()
    assert change == StateChange(ComponentRef("ups-1", "power", "gold", "acme"), "a1", 1000, False, "dead", False)
    with sqlite3.connect(tmp_path / "old.db") as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3
        assert {"degraded", "released"} <= {r[1] for r in db.execute("PRAGMA table_info(slawatch_state)")}


async def test_the_agent_writes_degraded_changes_into_a_version_1_store(tmp_path: Path) -> None:
    _version_1_store(tmp_path / "old.db")
    sink = SqliteSink(SqliteSettings(path=tmp_path / "old.db"))
    ref = ComponentRef("ups-1", "power", "gold", "acme")
    try:
        await sink.write([StateChange(ref, "a1", 2000, True, "on battery", True),
                          StateChange(ref, "a1", 3000, True, ""),
                          StateChange(ref, "a1", 4000, True, "", released=True)])
    finally:
        await sink.close()
    with sqlite3.connect(tmp_path / "old.db") as db:
        got = db.execute("SELECT ts_ms, up, degraded, released FROM slawatch_state ORDER BY ts_ms").fetchall()
    assert got == [(1000, 0, None, None), (2000, 1, 1, None), (3000, 1, None, None), (4000, 1, None, 1)]


def test_a_failed_open_ends_its_thread_before_returning(tmp_path: Path) -> None:
    # aiosqlite ends its worker thread after a failed open without waiting for it; the thread then posts to the
    # event loop, which a CLI closes as soon as the error comes back.
    (tmp_path / "dir.db").mkdir()
    raised: list[threading.ExceptHookArgs] = []
    previous, threading.excepthook = threading.excepthook, raised.append
    try:
        for _ in range(20):
            with pytest.raises(SinkError):
                asyncio.run(SqliteSink(SqliteSettings(path=tmp_path / "dir.db")).connect())
        time.sleep(0.05)
    finally:
        threading.excepthook = previous
    assert [str(r.exc_value) for r in raised] == []


async def test_a_set_up_cancelled_half_way_closes_its_connection(tmp_path: Path,
                                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    # An agent stopping while its store is being set up: the connection is closed, not left to the collector (whose
    # aiosqlite warning then lands in whatever runs next).
    opened: list[aiosqlite.Connection] = []
    real_open = sqlite_module.open_sqlite

    async def recording(*args: object, **kwargs: object) -> aiosqlite.Connection:
        db = await real_open(*args, **kwargs)
        opened.append(db)
        return db

    async def cancelled(db: aiosqlite.Connection) -> None:
        raise asyncio.CancelledError

    monkeypatch.setattr(sqlite_module, "open_sqlite", recording)
    monkeypatch.setattr(sqlite_module, "_wal", cancelled)
    with pytest.raises(asyncio.CancelledError):
        await SqliteSink(SqliteSettings(path=tmp_path / "s.db")).connect()
    monkeypatch.setattr(sqlite_module, "schema_version", cancelled)
    path = tmp_path / "made.db"
    sqlite3.connect(path).close()
    with pytest.raises(asyncio.CancelledError):
        await SqliteSource(SqliteSettings(path=path)).changes(0, 1)
    assert len(opened) == 2
    assert [db._connection for db in opened] == [None, None]  # closed

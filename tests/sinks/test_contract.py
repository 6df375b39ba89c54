"""One contract, every sink: what is written reads back exactly, and a replay duplicates nothing."""

from __future__ import annotations

import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from slawatch.config.settings import InfluxSettings, SqliteSettings, StorageSettings
from slawatch.model import ComponentRef, Heartbeat, Outcome, Point, Sample, StateChange
from slawatch.store import Sink, open_sinks
from slawatch.store.influxdb import RETENTION_POLICY, InfluxSink
from slawatch.store.lineprotocol import HEARTBEAT, PROBE, STATE, record
from slawatch.store.sqlite import COLUMNS, SqliteSink
from slawatch.testing.influxd import Influxd
from tests.sinks.pg import pg_settings, read_rows

pytestmark = pytest.mark.timeout(60)

# Recent enough for a 180-day retention policy; odd milliseconds to catch any rounding.
BASE_MS = (int(time.time()) - 3 * 86400) * 1000 + 7

Rows = list[dict[str, Any]]
TAGS = {"component", "class", "tier", "customer", "probe", "kind", "agent"}


@dataclass
class Store:
    """A sink under test and a way to read back one measurement/table as plain dicts."""

    sink: Sink
    read: Callable[[str], Rows]


def _sqlite_reader(path: Path) -> Callable[[str], Rows]:
    def read(table: str) -> Rows:
        with sqlite3.connect(path) as db:
            db.row_factory = sqlite3.Row
            return [dict(r) for r in db.execute(f"SELECT * FROM {table} ORDER BY ts_ms")]
    return read


def _influx_reader(server: Influxd, db: str, rp: str) -> Callable[[str], Rows]:
    def read(measurement: str) -> Rows:
        rows = server.rows(f'SELECT * FROM "{db}"."{rp}"."{measurement}"', db)
        for row in rows:
            row["ts_ms"] = row.pop("time")
            # InfluxDB has no NULL: a field never written is absent, an empty tag is not stored.
            for column in COLUMNS[measurement]:
                if row.get(column) is None:
                    row[column] = "" if column in TAGS else None
        return sorted(rows, key=lambda r: r["ts_ms"])
    return read


@pytest.fixture(params=["sqlite", pytest.param("influxdb-v1", marks=pytest.mark.peer("influxd")),
                        pytest.param("postgres", marks=pytest.mark.peer("postgresql"))])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    sink: Sink
    if request.param == "sqlite":
        path = tmp_path / "slawatch.db"
        sink = SqliteSink(SqliteSettings(path=path))
        read = _sqlite_reader(path)
    elif request.param == "postgres":
        from slawatch.store.postgres import PostgresSink

        dsn: str = request.getfixturevalue("pg_dsn")
        sink = PostgresSink(pg_settings(dsn))

        def read(table: str) -> Rows:
            return read_rows(dsn, f"SELECT * FROM {table} ORDER BY ts_ms")
    else:
        server: Influxd = request.getfixturevalue("influxd")
        db = f"t_{uuid.uuid4().hex[:10]}"
        sink = InfluxSink(InfluxSettings(url=server.url, database=db))
        read = _influx_reader(server, db, RETENTION_POLICY)
    try:
        yield Store(sink, read)
    finally:
        await sink.close()


REF = ComponentRef(component="sip-core", klass="sip", tier="Gold", customer="acme")
REF2 = ComponentRef(component="san-1", klass="san", tier="Platinum", customer="globex")


def mixed_batch() -> list[Point]:
    return [
        Sample(REF, "options", "sip", "agent-a", BASE_MS, Outcome.UP, "", 1.25),
        Sample(REF, "options", "sip", "agent-a", BASE_MS + 30_001, Outcome.TIMEOUT, "no answer within 5s", None),
        Sample(REF, "register", "sip", "agent-b", BASE_MS + 30_001, Outcome.BAD_RESPONSE,
               "SIP 503 Service Unavailable", 12.5),
        Sample(REF2, "ping", "icmp", "agent-a", BASE_MS + 1, Outcome.DEGRADED, "loss 20%", 0.061),
        StateChange(REF, "agent-a", BASE_MS + 30_001, False, "no answer within 5s"),
        StateChange(REF, "agent-a", BASE_MS + 90_000, True, ""),
        StateChange(REF, "agent-a", BASE_MS + 95_000, True, "", released=True),
        Heartbeat("agent-a", BASE_MS, 60.0),
        Heartbeat("agent-b", BASE_MS + 999, 30.5),
    ]


def expected(points: list[Point], measurement: str) -> Rows:
    """What the contract promises to read back: tags + fields by name, ts_ms; missing fields are None."""
    columns = {PROBE: ("latency_ms",), STATE: ("degraded", "released"), HEARTBEAT: ()}[measurement]
    rows = []
    for p in points:
        rec = record(p)
        if rec.measurement != measurement:
            continue
        row: dict[str, Any] = {c: None for c in columns}
        row.update(rec.tags)
        row.update(rec.fields)
        row["ts_ms"] = rec.ts_ms
        rows.append(row)
    return rows


def canon(rows: Rows) -> list[tuple[tuple[str, Any], ...]]:
    return sorted((tuple(sorted(r.items())) for r in rows), key=repr)


def assert_stored(store: Store, points: list[Point]) -> None:
    for m in (PROBE, STATE, HEARTBEAT):
        assert canon(store.read(m)) == canon(expected(points, m)), m


async def test_mixed_batch_reads_back_exactly(store: Store) -> None:
    batch = mixed_batch()
    await store.sink.write(batch)
    assert_stored(store, batch)
    probe = {(r["probe"], r["ts_ms"]): r for r in store.read(PROBE)}
    assert probe[("options", BASE_MS)]["up"] == 1 and isinstance(probe[("options", BASE_MS)]["up"], int)
    assert probe[("register", BASE_MS + 30_001)]["up"] == 0
    assert probe[("register", BASE_MS + 30_001)]["outcome"] == "bad_response"
    assert probe[("ping", BASE_MS + 1)]["up"] == 1  # degraded counts as available
    assert store.sink.write_errors == 0 and store.sink.bad_points == 0


async def test_replay_duplicates_nothing(store: Store) -> None:
    batch = mixed_batch()
    await store.sink.write(batch)
    await store.sink.write(batch)
    await store.sink.write(list(reversed(batch[:5])))  # a partial replay in another order
    for m in (PROBE, STATE, HEARTBEAT):
        assert len(store.read(m)) == len(expected(batch, m))
    assert_stored(store, batch)


async def test_same_series_and_time_overwrites(store: Store) -> None:
    first = Sample(REF, "options", "sip", "agent-a", BASE_MS, Outcome.TIMEOUT, "first", None)
    second = Sample(REF, "options", "sip", "agent-a", BASE_MS, Outcome.TIMEOUT, "second", None)
    await store.sink.write([first])
    await store.sink.write([second])
    rows = store.read(PROBE)
    assert [r["reason"] for r in rows] == ["second"]


REASONS = [
    'SIP 503 "Service Unavailable"',
    "C:\\path\\to\\file\\",
    "line one\nline two\r\nline three",
    "a,b=c d\ttab",
    "ünïcödé — 日本語 — 🚀",
    "trailing backslash \\",
    '\\"',
    "",
]


async def test_unicode_and_quoting(store: Store) -> None:
    ref = ComponentRef(component="vlan:42.a_b-c", klass="vlan class, with=odd chars", tier="Gold plus",
                       customer="Müller & Söhne")
    batch: list[Point] = []
    for i, reason in enumerate(REASONS):
        batch.append(Sample(ref, "trunk", "snmp", "agent.é", BASE_MS + i, Outcome.BAD_RESPONSE, reason, None))
        batch.append(StateChange(ref, "agent.é", BASE_MS + i, False, reason))
    await store.sink.write(batch)
    assert_stored(store, batch)
    assert sorted(r["reason"] for r in store.read(STATE)) == sorted(REASONS)


async def test_latency_none_is_absent_not_zero(store: Store) -> None:
    batch: list[Point] = [
        Sample(REF, "options", "sip", "agent-a", BASE_MS, Outcome.REFUSED, "connection refused", None),
        Sample(REF, "options", "sip", "agent-a", BASE_MS + 1, Outcome.UP, "", 0.0),
        Sample(REF, "options", "sip", "agent-a", BASE_MS + 2, Outcome.UP, "", 1e-05),
        Sample(REF, "options", "sip", "agent-a", BASE_MS + 3, Outcome.UP, "", 123456.789),
    ]
    await store.sink.write(batch)
    assert [r["latency_ms"] for r in store.read(PROBE)] == [None, 0.0, 1e-05, 123456.789]


async def test_millisecond_timestamps_exact(store: Store) -> None:
    stamps = [BASE_MS, BASE_MS + 1, BASE_MS + 2, BASE_MS + 86_400_000 - 1, BASE_MS + 999]
    batch: list[Point] = [Heartbeat("agent-a", ts, 60.0) for ts in stamps]
    await store.sink.write(batch)
    assert [r["ts_ms"] for r in store.read(HEARTBEAT)] == sorted(stamps)


async def test_empty_batch_is_a_no_op(store: Store) -> None:
    await store.sink.write([])
    await store.sink.write(mixed_batch())
    assert store.sink.write_errors == 0


async def test_prune_is_safe_to_call(store: Store) -> None:
    await store.sink.write(mixed_batch())
    removed = await store.sink.prune(BASE_MS + 30_000)
    remaining = len(store.read(PROBE))
    # SQLite deletes what is older; InfluxDB leaves it to the retention policy.
    assert (removed, remaining) in ((4, 2), (0, 4))


def test_open_sinks_from_settings(tmp_path: Path) -> None:
    default = open_sinks(StorageSettings())
    assert [type(s) for s in default] == [SqliteSink]
    both = open_sinks(StorageSettings(sqlite=SqliteSettings(path=tmp_path / "x.db"),
                                      influxdb=InfluxSettings(url="http://127.0.0.1:1", database="d")),
                      retention_s=30 * 86400)
    assert [type(s) for s in both] == [SqliteSink, InfluxSink]
    assert all(isinstance(s, Sink) for s in both)
    assert both[1].name == "influxdb:http://127.0.0.1:1/d.slawatch"

"""The stores read back for reports (Source), against real stores: SQLite written by SqliteSink, influxd 1.6
written by InfluxSink."""

from __future__ import annotations

import asyncio
import contextlib
import json
import sqlite3
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slawatch.config.settings import InfluxSettings, SqliteSettings, StorageSettings
from slawatch.model import (
    AgentHeartbeats,
    ComponentRef,
    Heartbeat,
    MaintenanceWindow,
    Outcome,
    Point,
    Sample,
    StateChange,
)
from slawatch.store import Sink, Source, SourceError, StoreUnavailable, open_source
from slawatch.store import sqlite as sqlite_store
from slawatch.store.influxdb import RETENTION_POLICY, InfluxSink, InfluxSource, quote_string
from slawatch.store.sqlite import SqliteSink, SqliteSource
from slawatch.testing.influxd import Influxd
from tests.sinks.pg import pg_settings

pytestmark = pytest.mark.timeout(90)

H = 3_600_000
DAY = 24 * H
# Recent enough for the 180-day retention policy, on a whole minute.
START = (int(time.time()) // 60 - 20 * 24 * 60) * 60_000
END = START + 7 * DAY

HOSTILE = [
    "a' OR '1'='1",
    "' OR 1=1 --",
    'say "hi"',
    "back\\slash",
    "x\\'y",
    "with space",
    "ünïcödé ✓ 中文 🚀",
    "semi;colon/*",
    "comma,eq=sign",
    "a",
]
"""Component names that must each match exactly themselves ("a" is the decoy the injection would hit)."""


@dataclass
class Store:
    sink: Sink
    source: Source
    kind: str
    influxd: Influxd | None = None
    database: str = ""

    async def write(self, points: list[Point]) -> None:
        await self.sink.write(points)


@pytest.fixture(params=["sqlite", pytest.param("influxdb", marks=pytest.mark.peer("influxd")),
                        pytest.param("postgres", marks=pytest.mark.peer("postgresql"))])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        settings = SqliteSettings(path=tmp_path / "slawatch.db")
        st = Store(SqliteSink(settings), SqliteSource(settings), "sqlite")
    elif request.param == "postgres":
        from slawatch.store.postgres import PostgresSink, PostgresSource

        pg = pg_settings(request.getfixturevalue("pg_dsn"))
        st = Store(PostgresSink(pg), PostgresSource(pg), "postgres")
    else:
        server: Influxd = request.getfixturevalue("influxd")
        db = f"t_{uuid.uuid4().hex[:10]}"
        influx = InfluxSettings(url=server.url, database=db)
        st = Store(InfluxSink(influx), InfluxSource(influx), "influxdb", server, db)
    try:
        yield st
    finally:
        await st.source.close()
        await st.sink.close()


def change(component: str, agent: str, ts_ms: int, up: bool, reason: str = "") -> StateChange:
    return StateChange(ComponentRef(component, "sip", "gold", "acme"), agent, ts_ms, up, reason)


def key(c: StateChange) -> tuple[str, int, str]:
    return c.ref.component, c.ts_ms, c.agent


# ---------------------------------------------------------------- state changes


async def test_changes_in_period_plus_the_last_one_before_it_per_component_and_agent(store: Store) -> None:
    before_old = change("sip-1", "mon-a", START - 5 * DAY, False, "503 Service Unavailable")
    before_last = change("sip-1", "mon-a", START - 2 * DAY, True)
    b_last = change("sip-1", "mon-b", START - 1 * DAY, True, "")
    inside = [change("sip-1", "mon-a", START, False, "timeout after 5s"),  # at start: in the period
              change("sip-1", "mon-a", START + 2 * H, True),
              change("sip-1", "mon-b", START + 3 * H, False, "refused")]
    quiet_old = change("core-router", "mon-a", START - 3 * DAY, False, "100% loss")
    quiet_last = change("core-router", "mon-a", START - 10 * DAY, True)
    after = [change("sip-1", "mon-a", END, True), change("late-comer", "mon-a", END + H, False)]
    await store.write([before_old, before_last, b_last, *inside, quiet_old, quiet_last, *after])

    got = await store.source.changes(START, END)

    expected = [before_last, b_last, *inside, quiet_old]
    assert sorted(got, key=key) == sorted(expected, key=key)
    assert got == sorted(got, key=key)


async def test_changes_filtered_by_component(store: Store) -> None:
    await store.write([change("sip-1", "mon-a", START + H, False, "x"), change("sip-2", "mon-a", START + H, True),
                       change("sip-2", "mon-a", START - H, False, "y"), change("sip-3", "mon-a", START - H, True)])
    got = await store.source.changes(START, END, components=["sip-2", "not-there"])
    assert got == [change("sip-2", "mon-a", START - H, False, "y"), change("sip-2", "mon-a", START + H, True, "")]
    assert await store.source.changes(START, END, components=[]) == []


async def test_a_component_s_tags_read_back_as_written_when_they_change_and_when_they_are_odd(store: Store) -> None:
    """A slice's read gives each change the class, tier and customer stored with it: a component moved to another
    tier and customer in the period, and tags no config would take (the separator PostgreSQL's read joins them
    with, an empty customer)."""
    def tagged(component: str, ts_ms: int, klass: str, tier: str, customer: str) -> StateChange:
        return StateChange(ComponentRef(component, klass, tier, customer), "mon-a", ts_ms, ts_ms % 2 == 0, "")

    moved = [tagged("sip-1", START - H, "sip", "gold", "acme"), tagged("sip-1", START + H, "sip", "gold", "acme"),
             tagged("sip-1", START + 3 * H, "sip", "platinum", "globex")]
    plain = [tagged("sip-2", START + 2 * H, "sip", "base", "")]
    odd = [tagged("odd", START - 2 * H, "a\x1fb", "gold", ""), tagged("odd", START + 5 * H, "san", "x\x1f", "c")]
    await store.write([*moved, *plain, *odd])
    assert await store.source.changes(START, END, components=["sip-1", "sip-2"]) == [*moved, *plain]
    assert await store.source.changes(START, END, components=["sip-1", "odd"]) == [*odd, *moved]


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_component_names_match_exactly_themselves(store: Store, name: str) -> None:
    points: list[Point] = []
    for i, n in enumerate(HOSTILE):
        points.append(change(n, "mon-a", START + i * H, bool(i % 2), f"reason of {n}"))
        points.append(change(n, "mon-a", START - DAY - i * H, not i % 2, f"before {n}"))
    await store.write(points)

    got = await store.source.changes(START, END, components=[name])

    i = HOSTILE.index(name)
    assert got == [change(name, "mon-a", START - DAY - i * H, not i % 2, f"before {name}"),
                   change(name, "mon-a", START + i * H, bool(i % 2), f"reason of {name}")]
    everything = await store.source.changes(START, END)
    assert {c.ref.component for c in everything} == set(HOSTILE)


async def test_a_long_component_list_filters_the_answer(store: Store) -> None:
    names = [f"comp-{i:04d}" for i in range(300)]
    await store.write([change(n, "mon-a", START + i * 1000, True) for i, n in enumerate(names)])
    wanted = [*names[::7], "a' OR '1'='1"]
    got = await store.source.changes(START, END, components=wanted)
    assert [c.ref.component for c in got] == sorted(names[::7])


async def test_empty_reason_and_agents_with_odd_names(store: Store) -> None:
    await store.write([change("sip-1", "mon 'a'", START + 1, False, ""),
                       change("sip-1", 'mon "b"', START + 2, False, "line 1\nline 2 \\ end")])
    got = await store.source.changes(START, END)
    assert got == [change("sip-1", "mon 'a'", START + 1, False, ""),
                   change("sip-1", 'mon "b"', START + 2, False, "line 1\nline 2 \\ end")]


# ---------------------------------------------------------------- samples (the console's latency charts)


def probe_run(component: str, ts_ms: int, latency_ms: float | None, *, agent: str = "mon-a", probe: str = "options",
              outcome: Outcome = Outcome.UP, reason: str = "") -> Sample:
    return Sample(ComponentRef(component, "sip", "gold", "acme"), probe, "sip", agent, ts_ms, outcome, reason,
                  latency_ms)


async def test_samples_in_period_sorted_by_component_time_agent_probe(store: Store) -> None:
    runs = [probe_run("sip-2", START + 2000, 4.5), probe_run("sip-1", START + 1000, 1.25, agent="mon-b"),
            probe_run("sip-1", START + 1000, 2.5, probe="a-register"),
            probe_run("sip-1", START + 1000, None, outcome=Outcome.TIMEOUT, reason="no answer in 2 s"),
            probe_run("sip-1", START - 1, 9.0), probe_run("sip-1", END, 9.0)]
    await store.write(list(runs))
    got = await store.source.samples(START, END)
    assert got == [runs[2], runs[3], runs[1], runs[0]]
    assert got[1].latency_ms is None and got[1].outcome is Outcome.TIMEOUT and got[1].reason == "no answer in 2 s"


@pytest.mark.parametrize("name", HOSTILE[:5])
async def test_samples_filtered_by_hostile_component_names(store: Store, name: str) -> None:
    await store.write([probe_run(n, START + i * 1000, float(i)) for i, n in enumerate(HOSTILE)])
    got = await store.source.samples(START, END, components=[name, "not-there"])
    assert got == [probe_run(name, START + HOSTILE.index(name) * 1000, float(HOSTILE.index(name)))]
    assert await store.source.samples(START, END, components=[]) == []


async def test_mean_latency_per_component_and_step(store: Store) -> None:
    step = 60_000
    t0 = START  # on a whole minute: steps line up with the epoch's
    await store.write([probe_run("sip-1", t0 + 1000, 2.0), probe_run("sip-1", t0 + 59_999, 4.0, probe="b"),
                       probe_run("sip-1", t0 + 60_000, 10.0), probe_run("sip-1", t0 + 61_000, None,
                                                                        outcome=Outcome.TIMEOUT),
                       probe_run("sip-1", t0 + 5 * step, 1.5, agent="mon-b"),
                       probe_run("sip-2", t0 + 2 * step + 5, 7.0), probe_run("sip-2", t0 - 1, 99.0),
                       probe_run("sip-3", t0 + step, None, outcome=Outcome.REFUSED),
                       probe_run(HOSTILE[0], t0 + 3 * step, 0.25)])
    got = await store.source.latency(t0, t0 + 10 * step, step)
    assert got == {"sip-1": [(t0, 3.0), (t0 + step, 10.0), (t0 + 5 * step, 1.5)], "sip-2": [(t0 + 2 * step, 7.0)],
                   HOSTILE[0]: [(t0 + 3 * step, 0.25)]}
    assert await store.source.latency(t0 + 20 * step, t0 + 30 * step, step) == {}


async def test_no_samples(store: Store) -> None:
    await store.write([change("sip-1", "mon-a", START, True)])
    assert await store.source.samples(START, END) == []
    assert await store.source.latency(START, END, 60_000) == {}


# ---------------------------------------------------------------- heartbeats


async def test_heartbeats_with_three_periods_of_margin_before_the_period(store: Store) -> None:
    beats: list[Point] = []
    beats += [Heartbeat("mon-a", START + i * 60_000, 60.0) for i in range(-10, 30)]  # 60 s, crosses start
    beats += [Heartbeat("mon-b", START + i * 300_000, 300.0) for i in range(-12, 4)]  # 5 min
    beats += [Heartbeat("mon-gone", START - DAY + i * 60_000, 60.0) for i in range(5)]  # stopped long before
    beats += [Heartbeat("mon-new", START + H + i * 30_000, 30.0) for i in range(4)]  # started inside
    beats += [Heartbeat("mon-a", END + i * 60_000, 60.0) for i in range(3)]  # after the end
    await store.write(beats)

    got = await store.source.heartbeats(START, END)

    assert got == {
        "mon-a": AgentHeartbeats("mon-a", [START + i * 60_000 for i in range(-3, 30)], 60.0),
        "mon-b": AgentHeartbeats("mon-b", [START + i * 300_000 for i in range(-3, 4)], 300.0),
        "mon-new": AgentHeartbeats("mon-new", [START + H + i * 30_000 for i in range(4)], 30.0),
    }


async def test_no_heartbeats(store: Store) -> None:
    await store.write([change("sip-1", "mon-a", START, True)])
    assert await store.source.heartbeats(START, END) == {}


# ---------------------------------------------------------------- maintenance windows


def window(id: str, start: int, end: int, scope: Any = "component", value: str = "sip-1",
           reason: str = "firmware upgrade") -> MaintenanceWindow:
    return MaintenanceWindow(id, scope, value, start, end, start - 96 * H, reason, start - 97 * H)


async def test_windows_add_list_overlap_remove(store: Store) -> None:
    src = store.source
    assert await src.windows() == []
    w1 = window("mw-00000001", START + H, START + 2 * H)
    w2 = window("mw-00000002", START + 3 * DAY, START + 3 * DAY + H, "class", "san", "array firmware")
    w3 = window("mw-00000003", END + DAY, END + DAY + H, "customer", "acme", "datacentre power work")
    for w in (w3, w1, w2):
        await src.add_window(w)

    assert await src.windows() == [w1, w2, w3]
    assert await src.windows(START, END) == [w1, w2]
    assert await src.windows(START + 2 * H, START + 3 * DAY) == []  # half-open on both sides
    assert await src.windows(START + 2 * H - 1, START + 3 * DAY + 1) == [w1, w2]
    assert await src.windows(start_ms=END) == [w3]
    assert await src.windows(end_ms=START + 2 * H) == [w1]

    assert await src.remove_window("mw-00000002") is True
    assert await src.remove_window("mw-00000002") is False
    assert await src.remove_window("mw-nope") is False
    assert await src.windows() == [w1, w3]
    assert await src.windows(START, END) == [w1]


async def test_window_ids_are_unique(store: Store) -> None:
    await store.source.add_window(window("mw-dup", START, START + H))
    with pytest.raises(SourceError):
        await store.source.add_window(window("mw-dup", START + DAY, START + DAY + H))
    assert await store.source.windows() == [window("mw-dup", START, START + H)]


async def test_window_with_an_empty_or_reversed_range_is_refused(store: Store) -> None:
    with pytest.raises(ValueError, match="end after"):
        await store.source.add_window(window("mw-bad", START, START))


@pytest.mark.parametrize("name", HOSTILE)
async def test_hostile_window_values_and_ids_round_trip(store: Store, name: str) -> None:
    windows = [window(f"mw-{i}-{n}", START + i * H, START + i * H + 1000, "component", n, f"why: {n}\nsecond line")
               for i, n in enumerate(HOSTILE)]
    for w in windows:
        await store.source.add_window(w)
    assert await store.source.windows() == windows
    assert await store.source.remove_window(f"mw-{HOSTILE.index(name)}-{name}") is True
    assert await store.source.windows() == [w for w in windows if w.value != name]


def test_applies_to() -> None:
    def ref(component: str, klass: str, customer: str) -> ComponentRef:
        return ComponentRef(component, klass, "gold", customer)

    assert window("w", 0, 1, "component", "sip-1").applies_to(ref("sip-1", "sip", "acme"))
    assert not window("w", 0, 1, "component", "sip-1").applies_to(ref("sip-10", "sip", "acme"))
    assert window("w", 0, 1, "class", "san").applies_to(ref("x", "san", "acme"))
    assert not window("w", 0, 1, "class", "san").applies_to(ref("san", "sip", "san-corp"))
    assert window("w", 0, 1, "customer", "acme").applies_to(ref("x", "sip", "acme"))
    assert not window("w", 0, 1, "customer", "acme").applies_to(ref("acme", "acme", "other"))


# ---------------------------------------------------------------- reports sent


async def test_report_sent_round_trip(store: Store) -> None:
    src = store.source
    assert await src.report_sent("2024-05", "acme") is False
    await src.record_report_sent("2024-05", "acme", START, "ab" * 32)
    assert await src.report_sent("2024-05", "acme") is True
    assert await src.report_sent("2024-06", "acme") is False
    assert await src.report_sent("2024-05", "acme-2") is False
    await src.record_report_sent("2024-05", "acme", START + 1000, "cd" * 32)  # a resend is fine
    assert await src.report_sent("2024-05", "acme") is True


@pytest.mark.parametrize("name", HOSTILE)
async def test_report_sent_with_hostile_customer(store: Store, name: str) -> None:
    for i, n in enumerate(HOSTILE):
        if n != name:
            await store.source.record_report_sent("2024-05", n, START + i, "00" * 32)
    assert await store.source.report_sent("2024-05", name) is False
    await store.source.record_report_sent("2024-05", name, START + 99, "11" * 32)
    assert await store.source.report_sent("2024-05", name) is True


# ---------------------------------------------------------------- store-specific behaviour


async def test_sqlite_reads_while_the_agent_writes(tmp_path: Path) -> None:
    settings = SqliteSettings(path=tmp_path / "live.db")
    sink, source = SqliteSink(settings), SqliteSource(settings)
    try:
        await sink.write([change("sip-1", "mon-a", START + i, bool(i % 2)) for i in range(10)])
        assert len(await source.changes(START, END)) == 10
        # The writer keeps its connection (and WAL) open and goes on writing; the read-only reader sees it.
        for batch in range(5):
            await asyncio.gather(
                sink.write([change("sip-1", "mon-a", START + 1000 + batch * 100 + i, True) for i in range(100)]),
                source.changes(START, END))
        assert len(await source.changes(START, END)) == 510
        assert (tmp_path / "live.db-wal").exists()
    finally:
        await source.close()
        await sink.close()


async def test_sqlite_missing_store_is_a_clear_error(tmp_path: Path) -> None:
    source = SqliteSource(SqliteSettings(path=tmp_path / "nope.db"))
    with pytest.raises(SourceError, match="does not exist"):
        await source.changes(START, END)
    assert not (tmp_path / "nope.db").exists()  # a read never creates the store
    await source.close()


async def test_sqlite_windows_before_the_agent_ever_wrote(tmp_path: Path) -> None:
    settings = SqliteSettings(path=tmp_path / "new.db")
    source = SqliteSource(settings)
    try:
        await source.add_window(window("mw-1", START, START + H))  # creates the store with the sink's schema
        assert await source.windows() == [window("mw-1", START, START + H)]
        assert await source.changes(START, END) == []
    finally:
        await source.close()


@pytest.mark.peer("influxd")
async def test_influx_names_the_retention_policy(influxd: Influxd) -> None:
    """Another retention policy made DEFAULT holds decoys; the source reads only slawatch's."""
    db = f"t_{uuid.uuid4().hex[:10]}"
    settings = InfluxSettings(url=influxd.url, database=db)
    sink, source = InfluxSink(settings), InfluxSource(settings)
    try:
        await sink.write([change("sip-1", "mon-a", START + H, False, "real")])
        influxd.query(f'CREATE RETENTION POLICY "other" ON "{db}" DURATION 0s REPLICATION 1 DEFAULT', method="POST")
        body = f"slawatch_state,agent=mon-a,component=sip-1 up=1i,reason=\"decoy\" {START + 2 * H}\n".encode()
        req = urllib.request.Request(f"{influxd.url}/write?" + urllib.parse.urlencode(
            {"db": db, "precision": "ms"}), data=body, method="POST")
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 204
        assert influxd.rows('SELECT "reason" FROM "slawatch_state"', db)[0]["reason"] == "decoy"
        assert await source.changes(START, END) == [change("sip-1", "mon-a", START + H, False, "real")]
    finally:
        await source.close()
        await sink.close()


@pytest.mark.peer("influxd")
async def test_influx_errors_are_source_errors(influxd: Influxd) -> None:
    closed = InfluxSource(InfluxSettings(url="http://127.0.0.1:9", database="x"))
    try:
        with pytest.raises(SourceError, match="cannot reach"):
            await closed.windows()
    finally:
        await closed.close()


@contextlib.asynccontextmanager
async def influx_store(influxd: Influxd) -> AsyncIterator[tuple[InfluxSink, InfluxSource]]:
    """A sink and a source on a database of their own."""
    settings = InfluxSettings(url=influxd.url, database=f"t_{uuid.uuid4().hex[:10]}")
    sink, source = InfluxSink(settings), InfluxSource(settings)
    try:
        yield sink, source
    finally:
        await source.close()
        await sink.close()


def watch_queries(source: InfluxSource) -> list[list[Any]]:
    """Each query `source` runs from now on, as [query, rows answered so far]."""
    log: list[list[Any]] = []
    series = source.client.series

    async def watched(q: str, *, missing_ok: bool = False) -> AsyncIterator[tuple[dict[str, str], list[str],
                                                                               list[list[Any]]]]:
        entry: list[Any] = [q, 0]
        log.append(entry)
        async for tags, columns, values in series(q, missing_ok=missing_ok):
            entry[1] += len(values)
            yield tags, columns, values

    source.client.series = watched  # type: ignore[method-assign]
    return log


def changes_of(points: list[Point], wanted: list[str] | None = None) -> list[StateChange]:
    return sorted((p for p in points if isinstance(p, StateChange) and (wanted is None or p.ref.component in wanted)),
                  key=key)


@pytest.mark.peer("influxd")
async def test_influx_chunks_are_streamed(influxd: Influxd, monkeypatch: pytest.MonkeyPatch) -> None:
    import slawatch.store.influxdb

    monkeypatch.setattr(slawatch.store.influxdb, "CHUNK_SIZE", 7)
    async with influx_store(influxd) as (sink, source):
        points: list[Point] = [change(f"c{i % 5}", "mon-a", START + i * 1000, bool(i % 2), "r" * (i % 3))
                               for i in range(100)]
        await sink.write(points)
        assert sorted(await source.changes(START, END), key=key) == changes_of(points)


@pytest.mark.peer("influxd")
async def test_influx_a_chunk_longer_than_a_read_arrives_whole(influxd: Influxd) -> None:
    """A chunk of thousands of rows (hundreds of KB of JSON on one line) comes in many reads of the socket."""
    async with influx_store(influxd) as (sink, source):
        points: list[Point] = [change(f"c{i % 3}", "mon-a", START + i * 1000, bool(i % 2), f"{i:05d}" + "r" * 200)
                               for i in range(3000)]
        await sink.write(points)
        longest = 0
        async for doc in source.client._query(f'SELECT "reason" FROM {source.client.source("slawatch_state")}'):
            longest = max(longest, len(json.dumps(doc)))
        assert longest > 256 * 1024
        assert sorted(await source.changes(START, END), key=key) == changes_of(points)


@pytest.mark.peer("influxd")
async def test_influx_serves_only_the_wanted_components_rows(influxd: Influxd) -> None:
    """The filter is in the query, however long the list: the server answers only the wanted components' rows (a
    report's slice of 2 000 components is not served the whole month's)."""
    async with influx_store(influxd) as (sink, source):
        names = [f"comp.{i:04d}" for i in range(600)]
        points: list[Point] = [change(n, "mon-a", START + i * 1000, bool(i % 2)) for i, n in enumerate(names)]
        points += [change(n, "mon-a", START - DAY, True) for n in names]
        await sink.write(points)
        queries = watch_queries(source)
        wanted = names[::2]
        assert sorted(await source.changes(START, END, components=wanted), key=key) == changes_of(points, wanted)
        assert sum(rows for q, rows in queries if q.startswith("SELECT")) == 2 * len(wanted)


@pytest.mark.peer("influxd")
async def test_influx_a_list_longer_than_a_query_takes_is_read_in_several(influxd: Influxd,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    import slawatch.store.influxdb

    monkeypatch.setattr(slawatch.store.influxdb, "FILTER_NAMES", 7)
    async with influx_store(influxd) as (sink, source):
        names = [f"c{i}" for i in range(40)]
        points: list[Point] = [change(n, "mon-a", START + i * 1000, bool(i % 2)) for i, n in enumerate(names)]
        points += [change(n, "mon-b", START - DAY - i, True) for i, n in enumerate(names)]
        runs = [probe_run(n, START + i, 1.5) for i, n in enumerate(names)]
        await sink.write([*points, *runs])
        wanted = [*names[3:33], "not-there"]  # 31 names: four queries of 7 and one of 3, each before and inside
        queries = watch_queries(source)
        assert sorted(await source.changes(START, END, components=wanted), key=key) == changes_of(points, wanted)
        assert len([q for q, _ in queries if f"time >= {START}ms AND time < {END}ms" in q]) == 5  # the period's rows
        queries.clear()
        assert await source.samples(START, END, components=wanted) == sorted(runs[3:33], key=lambda r: r.ref.component)
        assert len(queries) == 5
        assert all(q.count("|") < 7 for q, _ in queries)
        assert await source.samples(START, END, components=[]) == []
        assert await source.changes(START, END, components=[]) == []


@pytest.mark.peer("influxd")
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(names=st.lists(st.text(st.sampled_from("ab.*+?()[]{}|^$/ 'é中-:="), min_size=1, max_size=4), min_size=1,
                      max_size=8, unique=True),
       pick=st.lists(st.booleans(), min_size=8, max_size=8))
def test_influx_component_names_with_regex_characters_match_exactly_themselves(
        influxd: Influxd, names: list[str], pick: list[bool]) -> None:
    """Names that are each other's prefixes, or full of the regex's own characters, in the filter's regex."""
    wanted = [n for n, p in zip(names, pick, strict=False) if p]
    points: list[Point] = [change(n, "mon-a", START + i * 1000, True, n) for i, n in enumerate(names)]

    async def read() -> list[StateChange]:
        async with influx_store(influxd) as (sink, source):
            await sink.write(points)
            return await source.changes(START, END, components=wanted)

    got = asyncio.run(read())
    assert sorted(c.ref.component for c in got) == sorted(wanted)
    assert all(c.reason == c.ref.component for c in got)


@pytest.mark.peer("influxd")
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(history=st.lists(st.tuples(st.sampled_from(["c1", "c2", "c3", "c.4"]), st.sampled_from(["mon-a", "mon-b"]),
                                  st.integers(min_value=1, max_value=120 * 24 * 60), st.sampled_from(["gold", "base"])),
                        min_size=1, max_size=30, unique_by=lambda t: t[:3]),
       wanted=st.sampled_from([None, ["c1"], ["c2", "c.4"], ["c1", "c2", "c3", "c.4", "c5"]]))
def test_influx_the_last_change_before_a_period_is_found_however_far_back(
        influxd: Influxd, history: list[tuple[str, str, int, str]], wanted: list[str] | None) -> None:
    """Changes from a minute to 120 days before the period, some pairs' tier changing: the last of each (component,
    agent) before it, whichever of the lookback's steps finds it."""
    points: list[Point] = [StateChange(ComponentRef(c, "sip", tier, "acme"), agent, START - minutes * 60_000,
                                       minutes % 2 == 0, f"{minutes} min before")
                           for c, agent, minutes, tier in history]
    expected: dict[tuple[str, str], StateChange] = {}
    for p in sorted((p for p in points if isinstance(p, StateChange)), key=lambda p: p.ts_ms):
        if wanted is None or p.ref.component in wanted:
            expected[(p.ref.component, p.agent)] = p

    async def read() -> list[StateChange]:
        async with influx_store(influxd) as (sink, source):
            await sink.write(points)
            return await source.changes(START, END, components=wanted)

    assert sorted(asyncio.run(read()), key=key) == sorted(expected.values(), key=key)


@pytest.mark.peer("influxd")
async def test_influx_a_day_of_history_is_read_when_every_last_change_is_in_it(influxd: Influxd) -> None:
    """The last change before the period is looked for in the day before it first: the older history is not read
    for a component whose every agent changed in that day."""
    async with influx_store(influxd) as (sink, source):
        old = [change(f"c{i}", "mon-a", START - 60 * DAY + k * H, bool(k % 2)) for i in range(3) for k in range(50)]
        recent = [change(f"c{i}", "mon-a", START - H, True, "recent") for i in range(2)]  # c2's last is 50 days back
        await sink.write([*old, *recent])
        queries = watch_queries(source)
        got = await source.changes(START, END)
        assert sorted(got, key=key) == sorted([*recent, old[-1]], key=key)
        before = [(q, rows) for q, rows in queries if q.startswith("SELECT LAST")]
        assert sum(rows for _, rows in before) == 3  # one row for each component
        assert len(before) == 4 and all('"component" =~ /^(?:c2)$/' in q for q, _ in before[1:])  # c2 alone, further


@pytest.mark.peer("influxd")
async def test_influx_without_a_list_of_series_all_of_history_is_read(influxd: Influxd) -> None:
    """A server that cannot list series (the v1 API of InfluxDB 2): the last changes come from one read of it all."""
    async with influx_store(influxd) as (sink, source):
        points: list[Point] = [change("c1", "mon-a", START - 90 * DAY, False, "old"),
                               change("c2", "mon-a", START - H, True)]
        await sink.write(points)
        series = source.client.series

        def failing_show_series(error: SourceError) -> Any:
            def answer(q: str, *, missing_ok: bool = False) -> AsyncIterator[tuple[dict[str, str], list[str],
                                                                                 list[list[Any]]]]:
                if q.startswith("SHOW SERIES"):
                    raise error
                return series(q, missing_ok=missing_ok)
            return answer

        source.client.series = failing_show_series(SourceError("not supported"))  # type: ignore[method-assign]
        queries = watch_queries(source)
        assert sorted(await source.changes(START, END), key=key) == changes_of(points)
        assert [q for q, _ in queries if q.startswith("SELECT LAST") and "time >=" not in q]

        source.client.series = failing_show_series(StoreUnavailable("cannot reach the server"))  # type: ignore[method-assign]
        with pytest.raises(StoreUnavailable):  # not taken for a server without SHOW SERIES
            await source.changes(START, END)


def test_open_source_prefers_influxdb(tmp_path: Path) -> None:
    assert isinstance(open_source(StorageSettings(sqlite=SqliteSettings(path=tmp_path / "x.db"))), SqliteSource)
    assert isinstance(open_source(StorageSettings()), SqliteSource)
    both = StorageSettings(sqlite=SqliteSettings(path=tmp_path / "x.db"),
                           influxdb=InfluxSettings(url="http://127.0.0.1:8086", database="d"))
    src = open_source(both)
    assert isinstance(src, InfluxSource)
    assert src.retention_policy == RETENTION_POLICY


@pytest.mark.parametrize(("text", "literal"), [
    ("plain", "'plain'"),
    ("a' OR '1'='1", r"'a\' OR \'1\'=\'1'"),
    ("back\\slash", r"'back\\slash'"),
    ("x\\'", r"'x\\\''"),
    ("two\nlines", r"'two\nlines'"),
    ('double "q"', "'double \"q\"'"),
])
def test_quote_string(text: str, literal: str) -> None:
    assert quote_string(text) == literal


# ---------------------------------------------------------------- tags as stored at the time


async def test_each_change_carries_the_tags_stored_with_it(store: Store) -> None:
    """The tier changed mid-period (and the class before it): each change reads back with its own tags, and
    the last change before the period is the latest one whatever its tags."""
    old = ComponentRef("sip-1", "voice", "silver", "acme")
    gold = ComponentRef("sip-1", "sip", "gold", "acme")
    platinum = ComponentRef("sip-1", "sip", "platinum", "acme")
    await store.write([StateChange(old, "mon-a", START - 2 * DAY, False, "old class"),
                       StateChange(gold, "mon-a", START - DAY, True, ""),
                       StateChange(gold, "mon-a", START + H, False, "timeout"),
                       StateChange(platinum, "mon-a", START + 2 * H, True, "")])

    got = await store.source.changes(START, END)

    assert got == [StateChange(gold, "mon-a", START - DAY, True, ""),
                   StateChange(gold, "mon-a", START + H, False, "timeout"),
                   StateChange(platinum, "mon-a", START + 2 * H, True, "")]
    assert got[0].ref is got[1].ref  # one ComponentRef per tag set, not one per change


async def test_sqlite_last_change_before_the_period_is_a_seek(tmp_path: Path) -> None:
    settings = SqliteSettings(path=tmp_path / "s.db")
    sink = SqliteSink(settings)
    await sink.write([change(f"c{i % 20}", f"mon-{i % 2}", START - DAY - i * 1000, bool(i % 3), "")
                      for i in range(400)])
    await sink.close()
    with sqlite3.connect(settings.path) as db:
        sql = sqlite_store._SQL_LAST_CHANGES.format(filter="")
        plan = " | ".join(r[3] for r in db.execute("EXPLAIN QUERY PLAN " + sql, [START]))
    assert "slawatch_state_last" in plan
    assert " SCAN slawatch_state" not in f" {plan}" and "SCAN s " not in plan, plan  # seeks only


async def test_sqlite_without_the_last_change_index_reads_the_same(tmp_path: Path) -> None:
    """A store whose agent predates the index: the reader scans instead, with the same answer."""
    settings = SqliteSettings(path=tmp_path / "s.db")
    sink = SqliteSink(settings)
    points: list[Point] = [change(f"c{i % 7}", f"mon-{i % 3}", START - DAY + i * 60_000 - 50 * 60_000, bool(i % 2),
                                  f"r{i}") for i in range(100)]
    await sink.write(points)
    await sink.close()
    with_index = SqliteSource(settings)
    try:
        expected = await with_index.changes(START, END)
        expected_some = await with_index.changes(START, END, components=["c1", "c5"])
    finally:
        await with_index.close()
    with sqlite3.connect(settings.path) as db:
        db.execute("DROP INDEX slawatch_state_last")
    without = SqliteSource(settings)
    try:
        assert await without.changes(START, END) == expected
        assert await without.changes(START, END, components=["c1", "c5"]) == expected_some
    finally:
        await without.close()
    assert {c.ref.component for c in expected_some} == {"c1", "c5"}
    assert len({(c.ref.component, c.agent) for c in expected if c.ts_ms < START}) == 21  # 7 components x 3 agents

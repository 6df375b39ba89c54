"""What is particular to the PostgreSQL store, on a real server: the schema and its migrations under concurrent
starts, monthly sample partitions and their pruning, NOTIFY of state changes, bad points, a lost connection, ids
and claims of the incident desk across processes, accounts and agent leases, the factories."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slawatch import schema
from slawatch.config.settings import InfluxSettings, SqliteSettings, StorageSettings
from slawatch.model import (
    AgentLease,
    ComponentRef,
    Heartbeat,
    Incident,
    IncidentEvent,
    IncidentState,
    Notification,
    NotificationState,
    Outcome,
    Point,
    Sample,
    StateChange,
    User,
)
from slawatch.store import SinkError, StoreUnavailable, open_desk_store, open_sinks, open_source, open_user_store
from slawatch.store.influxdb import InfluxSink, InfluxSource
from slawatch.store.postgres import (
    CLAIM_MS,
    NOTIFY_MAX_BYTES,
    NOTIFY_MAX_CHUNKS,
    PostgresDeskStore,
    PostgresMemberStore,
    PostgresSink,
    PostgresSource,
    PostgresUserStore,
    month_bounds,
    notify_payloads,
    parse_payload,
    partition_name,
)
from slawatch.store.sqlite import SqliteSink, SqliteSource
from slawatch.testing import free_port
from tests.sinks.histories import months_of_agents, read_of
from tests.sinks.pg import execute, fetch, pg_settings

pytestmark = pytest.mark.timeout(60)
peer = pytest.mark.peer("postgresql")

REF = ComponentRef("sip-core", "sip", "Gold", "acme")
NOW = int(time.time() * 1000)
DAY = 86_400_000


def sample(ts_ms: int, component: str = "sip-core", reason: str = "") -> Sample:
    return Sample(dataclasses.replace(REF, component=component), "options", "sip", "a1", ts_ms, Outcome.UP, reason,
                  1.5)


def change(component: str, ts_ms: int, up: bool = False, reason: str = "down") -> StateChange:
    return StateChange(dataclasses.replace(REF, component=component), "a1", ts_ms, up, reason)


# ---------------------------------------------------------------- NOTIFY payloads (pure)


@given(st.lists(st.text(min_size=1, max_size=300), max_size=400))
def test_notify_payloads_are_small_and_name_every_component_or_say_all(names: list[str]) -> None:
    payloads = notify_payloads(names)
    if payloads == ["*"]:
        return
    assert len(payloads) <= NOTIFY_MAX_CHUNKS
    assert all(len(p.encode()) < NOTIFY_MAX_BYTES for p in payloads)
    seen = [n for p in payloads for n in (parse_payload(p) or [])]
    assert sorted(seen) == sorted(set(names))


def test_notify_payloads_chunk_and_give_up_on_too_many() -> None:
    assert notify_payloads([]) == []
    two = notify_payloads([f"component-{i:05d}" for i in range(600)])  # ~10 KB of names: two payloads
    assert len(two) == 2 and all(len(p.encode()) < NOTIFY_MAX_BYTES for p in two)
    assert notify_payloads([f"component-{i:05d}" for i in range(10_000)]) == ["*"]
    assert notify_payloads(["x" * 8000]) == ["*"]
    assert parse_payload("*") is None and parse_payload("{") is None and parse_payload('["a",1]') is None


def test_month_partitions_cover_the_month() -> None:
    low, high = month_bounds(datetime(2026, 12, 1, tzinfo=UTC))
    assert (low, high) == (int(datetime(2026, 12, 1, tzinfo=UTC).timestamp() * 1000),
                           int(datetime(2027, 1, 1, tzinfo=UTC).timestamp() * 1000))
    assert partition_name(datetime(2026, 2, 1, tzinfo=UTC)) == "slawatch_probe_y2026m02"


# ---------------------------------------------------------------- schema and migrations


async def tables(dsn: str) -> set[str]:
    rows = await fetch(dsn, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return {r["tablename"] for r in rows if not r["tablename"].startswith("slawatch_probe_y")}


async def columns(dsn: str, table: str) -> list[str]:
    rows = await fetch(dsn, "SELECT column_name FROM information_schema.columns WHERE table_name = $1 "
                            "ORDER BY ordinal_position", table)
    return [r["column_name"] for r in rows]


@peer
async def test_a_fresh_database_gets_every_table_and_the_version_even_when_processes_start_together(
        pg_dsn: str) -> None:
    sources = [PostgresSource(pg_settings(pg_dsn)) for _ in range(4)]
    try:
        assert await asyncio.gather(*(s.windows() for s in sources)) == [[]] * 4
    finally:
        for s in sources:
            await s.close()
    assert await tables(pg_dsn) == {m.name for m in schema.MEASUREMENTS} | {
        "slawatch_schema", "slawatch_incident_counter", "slawatch_notification_claim"}
    for m in schema.MEASUREMENTS:
        assert await columns(pg_dsn, m.name) == list(m.names), m.name
    assert await fetch(pg_dsn, "SELECT version FROM slawatch_schema") == [{"version": schema.SCHEMA_VERSION}]


@peer
async def test_a_database_of_schema_version_2_gets_the_new_columns_and_tables_and_keeps_its_rows(
        pg_dsn: str) -> None:
    # What the previous release made: the version-2 columns (no slawatch_state.released), no slawatch_agent.
    old = [m.pg_ddl(partition_by_time=m in schema.PARTITIONED, omit=("released",))
           for m in schema.MEASUREMENTS if m is not schema.AGENT]
    await execute(pg_dsn, "\n".join(old) + "CREATE TABLE slawatch_schema (id BIGINT PRIMARY KEY, version BIGINT);"
                                           "INSERT INTO slawatch_schema VALUES (1, 2);")
    await execute(pg_dsn, "INSERT INTO slawatch_state (component, ts_ms, agent, class, tier, customer, up, reason, "
                          "degraded) VALUES ('sip-core', $1, 'a1', 'sip', 'Gold', 'acme', 1, '', 1)", NOW - DAY)
    assert "released" not in await columns(pg_dsn, "slawatch_state")

    sink, source = PostgresSink(pg_settings(pg_dsn)), PostgresSource(pg_settings(pg_dsn))
    try:
        await sink.write([change("sip-core", NOW)._replace(released=True)])
        got = await source.changes(NOW - 2 * DAY, NOW + 1)
    finally:
        await sink.close()
        await source.close()
    assert [(c.ts_ms, c.up, c.degraded, c.released) for c in got] == [(NOW - DAY, True, True, False),
                                                                      (NOW, False, False, True)]
    assert await columns(pg_dsn, "slawatch_state") == list(schema.STATE.names)
    assert "slawatch_agent" in await tables(pg_dsn)
    assert await fetch(pg_dsn, "SELECT version FROM slawatch_schema") == [{"version": schema.SCHEMA_VERSION}]


@peer
async def test_a_database_of_a_newer_version_is_refused(pg_dsn: str) -> None:
    await execute(pg_dsn, "CREATE TABLE slawatch_schema (id BIGINT PRIMARY KEY, version BIGINT);"
                          "INSERT INTO slawatch_schema VALUES (1, 99);")
    source = PostgresSource(pg_settings(pg_dsn))
    with pytest.raises(StoreUnavailable, match="newer than this slawatch"):
        await source.windows()
    await source.close()


# ---------------------------------------------------------------- writes: partitions, samples, bad points


@peer
async def test_samples_go_to_month_partitions_and_prune_drops_whole_old_months(pg_dsn: str) -> None:
    sink, source = PostgresSink(pg_settings(pg_dsn)), PostgresSource(pg_settings(pg_dsn))
    months = [datetime(2025, m, 1, tzinfo=UTC) for m in (1, 2, 3)]
    starts = [month_bounds(m)[0] for m in months]
    try:
        await sink.write([sample(s + k * 1000) for s in starts for k in range(3)] + [change("sip-core", starts[0])])
        assert {partition_name(m) for m in months} <= set(await sink.partitions())
        cut = starts[1] + 1500  # inside February: January goes whole, February's first two runs by rows
        removed = await sink.prune(cut)
        assert partition_name(months[0]) not in await sink.partitions()
        assert partition_name(months[1]) in await sink.partitions()
        assert [s.ts_ms for s in await source.samples(0, starts[2] + DAY)] == (
            [starts[1] + 2000] + [starts[2] + k * 1000 for k in range(3)])
        assert removed >= 2 + 1  # February's two rows and the state change (January's rows are estimated)
        await sink.write([sample(starts[0])])  # a late point for a month dropped: its partition comes back
        assert partition_name(months[0]) in await sink.partitions()
    finally:
        await sink.close()
        await source.close()


@peer
async def test_a_month_another_process_pruned_is_made_again_for_a_late_point(pg_dsn: str) -> None:
    a, b = PostgresSink(pg_settings(pg_dsn)), PostgresSink(pg_settings(pg_dsn))
    low, high = month_bounds(datetime(2025, 1, 1, tzinfo=UTC))
    try:
        await a.write([sample(low)])
        await b.write([sample(low + 1)])  # b knows January's partition
        await a.prune(high)  # a drops it
        await b.write([sample(low + 2)])
        assert b.bad_points == 0 and b.write_errors == 0
        rows = await fetch(pg_dsn, "SELECT ts_ms FROM slawatch_probe")
        assert rows == [{"ts_ms": low + 2}]
    finally:
        await a.close()
        await b.close()


@peer
async def test_agents_pruning_at_once_do_not_fail(pg_dsn: str) -> None:
    sinks = [PostgresSink(pg_settings(pg_dsn)) for _ in range(3)]
    low, high = month_bounds(datetime(2025, 1, 1, tzinfo=UTC))
    try:
        await sinks[0].write([sample(low), sample(high), change("sip-core", low)])
        await asyncio.gather(*(s.prune(high + 1) for s in sinks))
        assert await fetch(pg_dsn, "SELECT count(*) AS n FROM slawatch_probe") == [{"n": 0}]
        assert partition_name(datetime(2025, 1, 1, tzinfo=UTC)) not in await sinks[1].partitions()
    finally:
        for s in sinks:
            await s.close()


@peer
async def test_a_sink_that_takes_no_samples_skips_them_and_keeps_the_events(pg_dsn: str) -> None:
    sink, source = PostgresSink(pg_settings(pg_dsn), takes_samples=False), PostgresSource(pg_settings(pg_dsn))
    try:
        await sink.write([sample(NOW), change("sip-core", NOW), Heartbeat("a1", NOW, 60.0)])
        await sink.write([sample(NOW + 1)])
        assert await source.samples(NOW - DAY, NOW + DAY) == []
        assert len(await source.changes(NOW - DAY, NOW + DAY)) == 1
        assert list(await source.heartbeats(NOW - DAY, NOW + DAY)) == ["a1"]
        assert sink.bad_points == 0 and sink.write_errors == 0
    finally:
        await sink.close()
        await source.close()


@pytest.mark.parametrize("kind", ["sqlite", pytest.param("influxdb", marks=pytest.mark.peer("influxd"))])
async def test_the_other_sinks_take_no_samples_when_told(kind: str, tmp_path: Path,
                                                         request: pytest.FixtureRequest) -> None:
    if kind == "sqlite":
        settings = SqliteSettings(path=tmp_path / "s.db")
        sink: SqliteSink | InfluxSink = SqliteSink(settings, takes_samples=False)
        source: SqliteSource | InfluxSource = SqliteSource(settings)
    else:
        influx = InfluxSettings(url=request.getfixturevalue("influxd").url, database="nosamples")
        sink, source = InfluxSink(influx, takes_samples=False), InfluxSource(influx)
    try:
        await sink.write([sample(NOW - DAY)])  # only samples: nothing to write
        await sink.write([sample(NOW), change("sip-core", NOW)])
        # The spool's path: one item per point, an empty one for a sample, so the drain posts only the change.
        items = sink.encode([sample(NOW + 1), change("pbx", NOW + 1)])
        assert len(items) == 2 and items[0] == b"" and items[1]
        await sink.write_encoded(items)
        await sink.write_encoded(sink.encode([sample(NOW + 2)]))
        assert await source.samples(NOW - 2 * DAY, NOW + DAY) == []
        assert len(await source.changes(NOW - 2 * DAY, NOW + DAY)) == 2
        assert sink.bad_points == 0
    finally:
        await sink.close()
        await source.close()


@peer
async def test_bad_points_are_dropped_and_counted_and_nul_characters_replaced(pg_dsn: str) -> None:
    sink, source = PostgresSink(pg_settings(pg_dsn)), PostgresSource(pg_settings(pg_dsn))
    try:
        await sink.write([change("sip-core", NOW, reason="nul\x00inside"), change("sip-core", 2**63),
                          change("pbx", NOW), sample(NOW, reason="x\x00")])
        got = await source.changes(NOW - DAY, NOW + DAY)
        assert [(c.ref.component, c.reason) for c in got] == [("pbx", "down"), ("sip-core", "nul\ufffdinside")]
        assert [s.reason for s in await source.samples(NOW - DAY, NOW + DAY)] == ["x\ufffd"]
        assert sink.bad_points == 1 and sink.write_errors == 0
    finally:
        await sink.close()
        await source.close()


@peer
async def test_the_same_key_twice_in_one_batch_keeps_the_last(pg_dsn: str) -> None:
    sink, source = PostgresSink(pg_settings(pg_dsn)), PostgresSource(pg_settings(pg_dsn))
    try:
        await sink.write([change("sip-core", NOW, reason="first"), change("sip-core", NOW, reason="second")])
        assert [c.reason for c in await source.changes(NOW - DAY, NOW + DAY)] == ["second"]
    finally:
        await sink.close()
        await source.close()


@peer
@pytest.mark.parametrize("method", ["unnest", "copy", "executemany"])
async def test_every_write_method_stores_the_same(pg_dsn: str, method: str) -> None:
    sink, source = PostgresSink(pg_settings(pg_dsn)), PostgresSource(pg_settings(pg_dsn))
    sink.method = method  # type: ignore[assignment]
    points: list[Point] = [sample(NOW + k) for k in range(5)] + [change("sip-core", NOW), Heartbeat("a1", NOW, 6)]
    try:
        await sink.write(points)
        await sink.write(points)  # a replay overwrites
        assert [s.ts_ms for s in await source.samples(NOW, NOW + 10)] == [NOW + k for k in range(5)]
        assert len(await source.changes(NOW, NOW + 10)) == 1
    finally:
        await sink.close()
        await source.close()


async def test_an_unreachable_server_is_a_retryable_sink_error_and_a_store_unavailable() -> None:
    settings = pg_settings(f"postgresql://nobody@127.0.0.1:{free_port()}/none", timeout_s=2.0)
    sink, source = PostgresSink(settings), PostgresSource(settings)
    with pytest.raises(SinkError) as caught:
        await sink.write([change("sip-core", NOW)])
    assert caught.value.retryable and sink.write_errors == 1
    with pytest.raises(StoreUnavailable, match=r"postgres:postgresql://nobody@127\.0\.0\.1"):
        await source.windows()
    await sink.close()
    await source.close()


@peer
async def test_a_lost_connection_fails_one_write_retryably_and_the_next_one_works(pg_dsn: str) -> None:
    sink, source = PostgresSink(pg_settings(pg_dsn)), PostgresSource(pg_settings(pg_dsn))
    try:
        await sink.write([change("sip-core", NOW)])
        await execute(pg_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND pid != pg_backend_pid()")
        try:
            await sink.write([change("sip-core", NOW + 1)])
        except SinkError as exc:  # the pool handed out the connection the server had just closed
            assert exc.retryable
            await sink.write([change("sip-core", NOW + 1)])
        assert len(await source.changes(NOW, NOW + 10)) == 2
    finally:
        await sink.close()
        await source.close()


# ---------------------------------------------------------------- NOTIFY of state changes


@peer
async def test_watch_changes_hears_the_components_of_each_batch_and_re_reads_all_after_a_reconnect(
        pg_dsn: str) -> None:
    sink = PostgresSink(pg_settings(pg_dsn))
    source = PostgresSource(pg_settings(pg_dsn), reconnect_s=0.05)
    heard: asyncio.Queue[list[str] | None] = asyncio.Queue()
    stop = asyncio.Event()
    await sink.write([Heartbeat("a1", NOW, 60.0)])  # the schema is there before the listener starts
    watcher = asyncio.create_task(source.watch_changes(heard.put_nowait, stop))
    try:
        await wait_listening(pg_dsn)
        await sink.write([sample(NOW), Heartbeat("a1", NOW + 1, 60.0)])  # no state change: nothing said
        await sink.write([change("b", NOW), change("a", NOW), change("a", NOW + 1)])
        assert await asyncio.wait_for(heard.get(), 10) == ["a", "b"]
        assert heard.empty()
        await sink.write([change(f"component-{i:05d}", NOW) for i in range(5000)])
        assert await asyncio.wait_for(heard.get(), 10) is None  # too many to name: re-read all

        await execute(pg_dsn, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                              "WHERE datname = current_database() AND query LIKE 'LISTEN%'")
        assert await asyncio.wait_for(heard.get(), 10) is None  # what was said meanwhile is lost: re-read all
        await wait_listening(pg_dsn)
        await sink.write([change("c", NOW)])
        assert await asyncio.wait_for(heard.get(), 10) == ["c"]
    finally:
        stop.set()
        await asyncio.wait_for(watcher, 10)
        await sink.close()
        await source.close()


async def wait_listening(dsn: str) -> None:
    for _ in range(200):
        if await fetch(dsn, "SELECT 1 FROM pg_stat_activity WHERE datname = current_database() "
                            "AND query LIKE 'LISTEN%'"):
            return
        await asyncio.sleep(0.05)
    raise AssertionError("nobody is listening")


# ---------------------------------------------------------------- the incident desk across processes


def incident(number: int, start_ms: int) -> Incident:
    return Incident(f"INC-2026-{number:06d}", REF, "down", start_ms, start_ms + 60_000, "P1", IncidentState.OPEN,
                    "SIP 503", ("a1",), updated_ms=start_ms + 60_000, version=1)


@peer
async def test_desks_opening_incidents_at_once_number_them_without_gap_or_duplicate(pg_dsn: str) -> None:
    stores = [PostgresDeskStore(pg_settings(pg_dsn)) for _ in range(3)]

    async def raise_fault(store: PostgresDeskStore, start_ms: int) -> str:
        while True:  # as the desk does: draw, try, draw again when refused
            number = int((await store.next_id(2026))[-6:])
            i = incident(number, start_ms)
            if await store.open(i, [IncidentEvent(i.id, 1, start_ms, "opened", "slawatch")], []):
                return i.id

    try:
        ids = await asyncio.gather(*(raise_fault(stores[k % 3], 1000 + k) for k in range(24)))
        assert sorted(ids) == [f"INC-2026-{n:06d}" for n in range(1, 25)]
        assert await stores[0].next_id(2026) == "INC-2026-000025"
        assert not await stores[1].open(incident(30, 9999), [], [])  # not the next number: refused
        assert await stores[1].fault_known("sip-core", 9999) is None
    finally:
        for s in stores:
            await s.close()


@peer
async def test_a_due_notification_is_handed_to_one_sender_until_marked_or_its_claim_runs_out(pg_dsn: str) -> None:
    a, b = PostgresDeskStore(pg_settings(pg_dsn)), PostgresDeskStore(pg_settings(pg_dsn))
    i = incident(1, 1000)
    notes = [Notification(f"{i.id}.1.{n}", i.id, "open", f"r{n}@example.com", "s", "t", "", "{}", 1000, 10)
             for n in range(4)]
    try:
        assert await a.open(i, [IncidentEvent(i.id, 1, 1000, "opened", "slawatch")], notes)
        got_a, got_b = await asyncio.gather(a.due_notifications(100, 3), b.due_notifications(100, 3))
        assert sorted(n.id for n in got_a + got_b) == [n.id for n in notes]  # each to one of them
        again = await a.due_notifications(100, 10)  # its own claims it is handed again
        assert {n.id for n in again} == {n.id for n in got_a}
        await a.mark_many([dataclasses.replace(n, state=NotificationState.SENT, attempts=1, sent_ms=101)
                           for n in got_a])
        assert await a.due_notifications(100, 10) == []
        assert {n.id for n in await a.due_notifications(100 + CLAIM_MS, 10)} == {n.id for n in got_b}  # b died
        assert await a.pending_count() == len(got_b)
    finally:
        await a.close()
        await b.close()


# ---------------------------------------------------------------- accounts and leases


@peer
async def test_user_store(pg_dsn: str) -> None:
    users = PostgresUserStore(pg_settings(pg_dsn))
    ann = User("ann", "customer", "$argon2id$x", ("acme", "Müller"), 1, 1)
    try:
        assert await users.count() == 0 and await users.get("ann") is None
        assert await users.add(ann) and not await users.add(dataclasses.replace(ann, role="admin"))
        assert await users.replace(dataclasses.replace(ann, role="operator", customers=(), updated_ms=5))
        assert not await users.replace(dataclasses.replace(ann, name="bob"))
        assert await users.get("ann") == dataclasses.replace(ann, role="operator", customers=(), updated_ms=5)
        assert await users.add(dataclasses.replace(ann, name="Zed")) and await users.count() == 2
        assert [u.name for u in await users.users()] == ["Zed", "ann"]  # code-point order, as SQLite
        assert await users.remove("ann") and not await users.remove("ann")
    finally:
        await users.close()


@peer
async def test_member_store_stamps_leases_with_the_servers_clock(pg_dsn: str) -> None:
    members = PostgresMemberStore(pg_settings(pg_dsn))
    lease = AgentLease("mon-b", 0, 1000, 30.0, "eu", "auto", 2, 500, "host-b", "1.0")
    try:
        await members.renew(lease)
        await members.renew(dataclasses.replace(lease, agent="mon-a", zone="", assign="static", watching=7))
        await members.renew(dataclasses.replace(lease, watching=501))
        now, leases = await members.members()
        assert abs(now - time.time() * 1000) < 60_000
        assert [a.agent for a in leases] == ["mon-a", "mon-b"]
        assert leases[1] == dataclasses.replace(lease, watching=501, seen_ms=leases[1].seen_ms)
        assert now - 10_000 < leases[1].seen_ms <= now
        await members.leave("mon-a")
        assert [a.agent for a in (await members.members())[1]] == ["mon-b"]
    finally:
        await members.close()


# ---------------------------------------------------------------- factories


def test_factories_prefer_postgres_and_send_samples_where_storage_says(tmp_path: Path) -> None:
    pg = {"dsn": "postgresql://slawatch@127.0.0.1:5432/slawatch"}
    only = StorageSettings.model_validate({"postgres": pg})
    assert [type(s) for s in open_sinks(only)] == [PostgresSink]
    assert isinstance(open_desk_store(only), PostgresDeskStore)
    assert isinstance(open_user_store(only), PostgresUserStore)
    source = open_source(only)
    assert isinstance(source, PostgresSource) and source._samples is None

    split = StorageSettings.model_validate({"postgres": pg, "influxdb": {"url": "http://127.0.0.1:1",
                                                                         "database": "d"},
                                            "samples": ["influxdb"]})
    sinks = open_sinks(split)
    assert [(type(s), s.takes_samples) for s in sinks] == [(InfluxSink, True), (PostgresSink, False)]  # type: ignore[attr-defined]
    source = open_source(split)
    assert isinstance(source, PostgresSource) and isinstance(source._samples, InfluxSource)

    local = StorageSettings.model_validate({"postgres": pg, "sqlite": {"path": str(tmp_path / "s.db")},
                                            "samples": ["sqlite"]})
    assert isinstance(open_source(local)._samples, SqliteSource)  # type: ignore[attr-defined]
    assert [(type(s), s.takes_samples) for s in open_sinks(local)] == [  # type: ignore[attr-defined]
        (SqliteSink, True), (PostgresSink, False)]


@peer
async def test_a_source_reads_samples_from_the_store_that_takes_them(pg_dsn: str, tmp_path: Path) -> None:
    storage = StorageSettings.model_validate({"postgres": {"dsn": pg_dsn}, "sqlite": {"path": str(tmp_path / "s.db")},
                                              "samples": ["sqlite"]})
    sinks = open_sinks(storage)
    source = open_source(storage)
    try:
        for sink in sinks:
            await sink.write([sample(NOW), change("sip-core", NOW)])
        assert [s.ts_ms for s in await source.samples(NOW - DAY, NOW + DAY)] == [NOW]
        assert await source.latency(NOW - NOW % 60_000, NOW + DAY, 60_000) == {"sip-core": [(NOW - NOW % 60_000, 1.5)]}
        assert len(await source.changes(NOW - DAY, NOW + DAY)) == 1
        rows = await fetch(pg_dsn, "SELECT count(*) AS n FROM slawatch_probe")
        assert rows == [{"n": 0}]
    finally:
        for sink in sinks:
            await sink.close()
        await source.close()


def test_notify_payload_is_json_of_names() -> None:
    assert json.loads(notify_payloads(["b", "a", "a"])[0]) == ["a", "b"]


@peer
async def test_a_slice_s_last_changes_are_the_same_walked_along_the_index_or_read_in_full(pg_dsn: str) -> None:
    """The last change of each (component, agent) before a period and the changes in it: read in full while the
    history before the period is short, walked along the index once it is long (more than half a period); the same
    changes either way. Components with one to three agents, an agent that begins after the first period, one that
    stops before the second, a component without changes."""
    t0 = NOW - 120 * DAY
    points = months_of_agents(t0, DAY)
    sink, source = PostgresSink(pg_settings(pg_dsn)), PostgresSource(pg_settings(pg_dsn))
    used: list[str] = []
    snapshot = source._snapshot

    async def spied(before_sql: str, *args: object) -> tuple[list[object], list[object]]:
        used.append("walked" if "RECURSIVE" in before_sql else "in full")
        return await snapshot(before_sql, *args)  # type: ignore[arg-type]

    source._snapshot = spied  # type: ignore[method-assign]
    wanted = ["a", "b", "c", "d", "none"]
    try:
        await sink.write(points)
        for start, end in ((t0 + 3 * DAY, t0 + 33 * DAY), (t0 + 63 * DAY, t0 + 93 * DAY)):
            assert await source.changes(start, end, wanted) == read_of(points, start, end)
        assert used == ["in full", "walked"]
    finally:
        await sink.close()
        await source.close()

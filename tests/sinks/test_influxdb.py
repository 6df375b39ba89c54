"""The InfluxDB sink against real servers: influxd 1.6 (v1 API), VictoriaMetrics (v2 write path), and a
scripted aiohttp server for answers a real one will not give on demand."""

from __future__ import annotations

import asyncio
import gzip
import itertools
import json
import re
import subprocess
import time
import urllib.parse
import urllib.request
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr

from slawatch.config.settings import InfluxSettings
from slawatch.model import ComponentRef, Heartbeat, MaintenanceWindow, Outcome, Point, Sample, StateChange
from slawatch.store import SinkError, SourceError, StoreUnavailable
from slawatch.store.influxdb import RETENTION_POLICY, InfluxSink, InfluxSource, Lines, influxql_duration
from slawatch.store.lineprotocol import PROBE, STATE, encode, record
from slawatch.testing import free_port, need_binary
from slawatch.testing.influxd import ADMIN_USER, Influxd, start_influxd

pytestmark = pytest.mark.timeout(90)

NOW_MS = int(time.time() * 1000)
REF = ComponentRef("sip-core", "sip", "Gold", "acme")


def fresh_db() -> str:
    return f"t_{uuid.uuid4().hex[:10]}"


def samples(n: int, start_ms: int = NOW_MS - 3_600_000, ref: ComponentRef = REF) -> list[Point]:
    return [Sample(ref, "options", "sip", "agent-a", start_ms + i, Outcome.UP if i % 3 else Outcome.TIMEOUT,
                   "" if i % 3 else "no answer within 5s", None if i % 3 == 0 else 0.5 + i) for i in range(n)]


def v1(server: Influxd, db: str, **kw: Any) -> InfluxSettings:
    return InfluxSettings(url=server.url, database=db, **kw)


def count(server: Influxd, db: str, measurement: str, rp: str = RETENTION_POLICY) -> int:
    rows = server.rows(f'SELECT count("up") FROM "{db}"."{rp}"."{measurement}"', db)
    return int(rows[0]["count"]) if rows else 0


# ---------------------------------------------------------------- round trip of arbitrary text (real server)

_example = itertools.count()
text = st.text(max_size=40)  # any unicode, surrogates included (they are stored as U+FFFD)
names = st.text(min_size=0, max_size=20)


@pytest.mark.peer("influxd")
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(names, names, names, text), min_size=1, max_size=6))
def test_arbitrary_unicode_round_trips_through_influxd(influxd: Influxd,
                                                       items: list[tuple[str, str, str, str]]) -> None:
    db = "roundtrip"
    base = NOW_MS - 86_400_000 + next(_example) * 1000
    points: list[Point] = [
        Sample(ComponentRef(component or "c", klass, tier, "cust"), "p", "k", "a", base + i, Outcome.BAD_RESPONSE,
               reason, None)
        for i, (component, klass, tier, reason) in enumerate(items)]

    async def write() -> None:
        sink = InfluxSink(v1(influxd, db, gzip=bool(len(items) % 2)))
        try:
            await sink.write(points)
        finally:
            await sink.close()
        assert sink.bad_points == 0

    asyncio.run(write())
    got = influxd.rows(f'SELECT * FROM "{db}"."{RETENTION_POLICY}"."{PROBE}" '
                       f"WHERE time >= {base}ms AND time < {base + len(points)}ms", db)
    assert len(got) == len(points)
    for point, row in zip(points, sorted(got, key=lambda r: r["time"]), strict=True):
        rec = record(point)
        assert row["time"] == point.ts_ms
        assert row["reason"] == dict(rec.fields)["reason"]  # exactly, newlines and all
        for key, value in rec.tags:
            assert (row.get(key) or "") == tag_as_stored(value), key


def tag_as_stored(value: str) -> str:
    """Documented lossy cases of tag values: newlines become spaces, unreadable backslashes "/"."""
    value = value.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return re.sub(r"\\(?=[,= ]|$)", "/", value)


# ---------------------------------------------------------------- v1 behaviour against influxd


@pytest.mark.peer("influxd")
async def test_creates_database_and_retention_policy(influxd: Influxd) -> None:
    db = fresh_db()
    sink = InfluxSink(v1(influxd, db), retention_s=180 * 86400)
    await sink.write(samples(3))
    await sink.close()
    policies = {r["name"]: r for r in influxd.rows(f'SHOW RETENTION POLICIES ON "{db}"', db)}
    assert policies[RETENTION_POLICY]["duration"] == "4320h0m0s"
    assert policies[RETENTION_POLICY]["default"] is False  # unqualified queries keep reading autogen
    assert count(influxd, db, PROBE) == 3

    longer = InfluxSink(v1(influxd, db), retention_s=200 * 86400)
    await longer.write(samples(1))
    await longer.close()
    policies = {r["name"]: r for r in influxd.rows(f'SHOW RETENTION POLICIES ON "{db}"', db)}
    assert policies[RETENTION_POLICY]["duration"] == "4800h0m0s"


def test_influxql_durations() -> None:
    assert influxql_duration(180 * 86400) == "180d"
    assert influxql_duration(90_000.4) == "90000s"
    assert influxql_duration(60) == "3600s"


@pytest.mark.peer("influxd")
async def test_configured_retention_policy_is_used_as_is(influxd: Influxd) -> None:
    db = fresh_db()
    sink = InfluxSink(v1(influxd, db, retention_policy="autogen"))
    await sink.write(samples(2))
    await sink.close()
    names = [r["name"] for r in influxd.rows(f'SHOW RETENTION POLICIES ON "{db}"', db)]
    assert names == ["autogen"]
    assert count(influxd, db, PROBE, rp="autogen") == 2


@pytest.mark.peer("influxd")
async def test_gzip_off_writes_the_same(influxd: Influxd) -> None:
    db = fresh_db()
    sink = InfluxSink(v1(influxd, db, gzip=False))
    await sink.write(samples(50))
    await sink.close()
    assert count(influxd, db, PROBE) == 50


@pytest.mark.peer("influxd")
async def test_database_dropped_while_running_is_recreated(influxd: Influxd) -> None:
    db = fresh_db()
    sink = InfluxSink(v1(influxd, db))
    await sink.write(samples(2))
    influxd.query(f'DROP DATABASE "{db}"', method="POST")
    await sink.write(samples(4, start_ms=NOW_MS - 60_000))
    await sink.close()
    assert count(influxd, db, PROBE) == 4
    assert sink.write_errors == 0


@pytest.mark.peer("influxd")
async def test_partial_write_counts_bad_points_and_moves_on(influxd: Influxd) -> None:
    db = fresh_db()
    sink = InfluxSink(v1(influxd, db))
    await sink.set_up()
    # `up` first arrives as a string: every later integer `up` in this shard conflicts.
    body = f'{PROBE},component=other up="yes" {NOW_MS - 7_200_000}\n'.encode()
    async with aiohttp.ClientSession() as http, http.post(
            f"{influxd.url}/write", params={"db": db, "rp": RETENTION_POLICY, "precision": "ms"}, data=body) as resp:
        assert resp.status == 204
    batch = [*samples(3), StateChange(REF, "agent-a", NOW_MS - 3_600_000, False, "down")]
    await sink.write(batch)  # no exception: the bad points are not retryable, the good ones are stored
    await sink.close()
    assert sink.bad_points == 3
    assert sink.write_errors == 0
    assert count(influxd, db, STATE) == 1


@pytest.mark.peer("influxd")
async def test_encoded_lines_are_stored_like_points_and_a_partial_refusal_counts_the_same(influxd: Influxd) -> None:
    db = fresh_db()
    sink = InfluxSink(v1(influxd, db))
    await sink.set_up()
    body = f'{PROBE},component=other up="yes" {NOW_MS - 7_200_000}\n'.encode()  # later integer `up`s conflict
    async with aiohttp.ClientSession() as http, http.post(
            f"{influxd.url}/write", params={"db": db, "rp": RETENTION_POLICY, "precision": "ms"}, data=body) as resp:
        assert resp.status == 204
    batch = [*samples(3), StateChange(REF, "agent-a", NOW_MS - 3_600_000, False, "down")]
    items = sink.encode(batch)
    assert len(items) == 4 and b"".join(items) == encode(batch)
    await sink.write_encoded(items)
    await sink.write_encoded(items)  # a replay after a crash: idempotent
    await sink.close()
    assert sink.bad_points == 6 and sink.write_errors == 0
    assert count(influxd, db, STATE) == 1


async def test_too_large_encoded_batches_are_split(scripted: Scripted) -> None:
    scripted.max_body = 4000
    sink = InfluxSink(InfluxSettings(url=scripted.url, api="v2", org="o", bucket="b", token=SecretStr("t"),
                                     gzip=False))
    batch = samples(100)
    await sink.write_encoded(sink.encode(batch))
    await sink.close()
    accepted = b"".join(body for *_, body in scripted.requests if len(body) <= 4000)
    assert accepted == encode(batch)


@pytest.mark.peer("influxd")
@pytest.mark.parametrize("use_gzip", [True, False])
async def test_gzip_members_from_the_spool_are_stored_as_lines_and_a_partial_refusal_counts_the_same(
        influxd: Influxd, tmp_path: Path, use_gzip: bool) -> None:
    from agent.daemon import open_spool
    from slawatch.config.settings import SpoolSettings

    db, conflicting = fresh_db(), fresh_db()
    sink = InfluxSink(v1(influxd, db, gzip=use_gzip))
    refusing = InfluxSink(v1(influxd, conflicting, gzip=use_gzip))
    await refusing.set_up()
    body = f'{PROBE},component=other up="yes" {NOW_MS - 7_200_000}\n'.encode()  # later integer `up`s conflict
    async with aiohttp.ClientSession() as http, http.post(f"{influxd.url}/write", data=body, params={
            "db": conflicting, "rp": RETENTION_POLICY, "precision": "ms"}) as resp:
        assert resp.status == 204
    ok = samples(30)
    sp = open_spool(SpoolSettings(path=tmp_path / "spool"), [sink])
    try:
        sp.append(ok[:20])
        sp.append(ok[20:])
        whole = sp.read("influxdb")
        assert len(whole.gzip) == 2 and len(whole) == 20 + 10
        await sink.write_gzip(whole.gzip, len(whole))
        await sink.write_gzip(whole.gzip, len(whole))  # a replay after a crash: idempotent
        assert sink.bad_points == 0 and count(influxd, db, PROBE) == 30
        await refusing.write_gzip(whole.gzip, len(whole))  # 400: the lines again, as `write` sends them
        assert refusing.bad_points == 30 and refusing.write_errors == 0
    finally:
        sp.close()
        await sink.close()
        await refusing.close()


@pytest.mark.peer("influxd")
async def test_wrong_password_is_a_clear_non_retryable_error(influxd_auth: Influxd) -> None:
    db = fresh_db()
    influxd_auth.query(f'CREATE DATABASE "{db}"', method="POST")
    sink = InfluxSink(v1(influxd_auth, db, username=ADMIN_USER, password=SecretStr("wrong-password")))
    with pytest.raises(SinkError) as err:
        await sink.write(samples(2))
    await sink.close()
    assert not err.value.retryable
    message = str(err.value)
    assert "401" in message and f"user {ADMIN_USER!r}" in message and repr(db) in message
    assert "wrong-password" not in message
    assert sink.write_errors == 1


@pytest.mark.peer("influxd")
async def test_user_without_write_privilege_gets_403(influxd_auth: Influxd) -> None:
    db = fresh_db()
    influxd_auth.query(f'CREATE DATABASE "{db}"; CREATE RETENTION POLICY "{RETENTION_POLICY}" ON "{db}" '
                       f"DURATION 180d REPLICATION 1; CREATE USER reader WITH PASSWORD 'reader-pw'; "
                       f'GRANT READ ON "{db}" TO reader', method="POST", ignore_errors=("user already exists",))
    sink = InfluxSink(v1(influxd_auth, db, username="reader", password=SecretStr("reader-pw")))
    with pytest.raises(SinkError) as err:
        await sink.write(samples(1))
    await sink.close()
    assert not err.value.retryable
    assert "403" in str(err.value) and "user 'reader'" in str(err.value)


@pytest.mark.peer("influxd")
async def test_missing_policy_and_no_right_to_create_it(influxd_auth: Influxd) -> None:
    """A non-admin writer cannot create the database or policy: not fatal by itself, and the write then
    names what is missing and how to fix it."""
    db = fresh_db()
    influxd_auth.query(f'CREATE DATABASE "{db}"; CREATE USER writer WITH PASSWORD \'writer-pw\'; '
                       f'GRANT WRITE ON "{db}" TO writer', method="POST", ignore_errors=("user already exists",))
    sink = InfluxSink(v1(influxd_auth, db, username="writer", password=SecretStr("writer-pw")))
    with pytest.raises(SinkError) as err:
        await sink.write(samples(1))
    await sink.close()
    assert not err.value.retryable
    assert "retention policy not found" in str(err.value) and "retention_policy" in str(err.value)

    ok = InfluxSink(v1(influxd_auth, db, username="writer", password=SecretStr("writer-pw"),
                       retention_policy="autogen"))
    await ok.write(samples(2))
    await ok.close()
    assert ok.write_errors == 0


async def test_server_down_is_retryable() -> None:
    sink = InfluxSink(InfluxSettings(url=f"http://127.0.0.1:{free_port()}", database="d", timeout_s=2))
    with pytest.raises(SinkError) as err:
        await sink.write(samples(1))
    await sink.close()
    assert err.value.retryable and "cannot reach" in str(err.value)
    assert sink.write_errors == 1


@pytest.mark.peer("influxd")
async def test_crash_and_restart_loses_nothing_written(tmp_path: Path) -> None:
    server = start_influxd(tmp_path)
    db = fresh_db()
    sink = InfluxSink(v1(server, db, timeout_s=2))
    try:
        await sink.write(samples(5))
        server.kill()
        with pytest.raises(SinkError) as err:
            await sink.write(samples(5, start_ms=NOW_MS - 60_000))
        assert err.value.retryable
        server.start()
        await sink.write(samples(5, start_ms=NOW_MS - 60_000))  # the spool's retry
        assert count(server, db, PROBE) == 10
    finally:
        await sink.close()
        server.stop()


# ---------------------------------------------------------------- a scripted server: headers, status codes


class Scripted:
    """An aiohttp server that records requests and answers with the next scripted (status, body)."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, str], dict[str, str], bytes]] = []
        self.answers: list[tuple[int, str]] = []
        self.delay_s = 0.0
        self.max_body = 0
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        raw = await request.read()
        body = gzip.decompress(raw) if request.headers.get("Content-Encoding") == "gzip" else raw
        self.requests.append((request.path, dict(request.query), dict(request.headers), body))
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if request.path == "/query":
            return web.json_response({"results": [{"statement_id": 0}]})
        if self.max_body and len(raw) > self.max_body:
            return web.Response(status=413, text='{"error":"Request Entity Too Large"}')
        status, text = self.answers.pop(0) if self.answers else (204, "")
        return web.Response(status=status, text=text)


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    server = Scripted()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", server.handle)
    runner = web.AppRunner(app, auto_decompress=False)  # see the bytes as sent
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    server.url = f"http://127.0.0.1:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


async def test_v1_request_shape(scripted: Scripted) -> None:
    sink = InfluxSink(InfluxSettings(url=scripted.url + "/", database="slawatch", username="agent",
                                     password=SecretStr("pw")))
    batch = samples(3)
    await sink.write(batch)
    await sink.close()
    queries = [r for r in scripted.requests if r[0] == "/query"]
    writes = [r for r in scripted.requests if r[0] == "/write"]
    assert len(queries) == 2 and len(writes) == 1  # CREATE DATABASE, CREATE RETENTION POLICY, then the write
    _, params, headers, body = writes[0]
    assert params == {"db": "slawatch", "rp": RETENTION_POLICY, "precision": "ms"}
    assert headers["Content-Encoding"] == "gzip"
    assert headers["Authorization"] == "Basic YWdlbnQ6cHc="  # agent:pw, never in the URL
    assert body == encode(batch)


async def test_v2_request_shape(scripted: Scripted) -> None:
    sink = InfluxSink(InfluxSettings(url=scripted.url, api="v2", org="acme org", bucket="sla",
                                     token=SecretStr("tok"), gzip=False))
    await sink.write(samples(2))
    await sink.close()
    assert len(scripted.requests) == 1  # no set-up on v2
    path, params, headers, body = scripted.requests[0]
    assert path == "/api/v2/write"
    assert params == {"org": "acme org", "bucket": "sla", "precision": "ms"}
    assert headers["Authorization"] == "Token tok" and "Content-Encoding" not in headers
    assert body == encode(samples(2))


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (502, True), (503, True), (429, True),
                                                   (401, False), (403, False), (422, False)])
async def test_status_codes(scripted: Scripted, status: int, retryable: bool) -> None:
    sink = InfluxSink(InfluxSettings(url=scripted.url, api="v2", org="o", bucket="b", token=SecretStr("t")))
    scripted.answers = [(status, '{"code":"x","message":"scripted"}')]
    with pytest.raises(SinkError) as err:
        await sink.write(samples(1))
    await sink.close()
    assert err.value.retryable is retryable and str(status) in str(err.value)
    assert sink.write_errors == 1


async def test_v2_partial_write(scripted: Scripted) -> None:
    sink = InfluxSink(InfluxSettings(url=scripted.url, api="v2", org="o", bucket="b", token=SecretStr("t")))
    scripted.answers = [(400, '{"code":"invalid","message":"partial write: field type conflict dropped=2"}')]
    await sink.write(samples(5))
    await sink.close()
    assert sink.bad_points == 2 and sink.write_errors == 0


async def test_timeout_is_retryable(scripted: Scripted) -> None:
    scripted.delay_s = 2.0
    sink = InfluxSink(InfluxSettings(url=scripted.url, api="v2", org="o", bucket="b", token=SecretStr("t"),
                                     timeout_s=0.3))
    with pytest.raises(SinkError) as err:
        await sink.write(samples(1))
    await sink.close()
    assert err.value.retryable and "no answer within 0.3s" in str(err.value)


async def test_too_large_batches_are_split(scripted: Scripted) -> None:
    scripted.max_body = 4000
    sink = InfluxSink(InfluxSettings(url=scripted.url, api="v2", org="o", bucket="b", token=SecretStr("t"),
                                     gzip=False))
    batch = samples(100)
    await sink.write(batch)
    await sink.close()
    accepted = b"".join(body for *_, body in scripted.requests if len(body) <= 4000)
    assert accepted == encode(batch)


# ---------------------------------------------------------------- v2 write path against VictoriaMetrics


@pytest.fixture(scope="module")
def victoria(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    binary = need_binary("victoria-metrics", "victoria-metrics")
    port = free_port()
    data = tmp_path_factory.mktemp("vm")
    log = (data / "vm.log").open("wb")
    proc = subprocess.Popen([binary, f"-httpListenAddr=127.0.0.1:{port}", f"-storageDataPath={data}",
                             "-retentionPeriod=180d", "-selfScrapeInterval=0",
                             # without it VictoriaMetrics keeps a replayed point twice
                             "-dedup.minScrapeInterval=1ms"], stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 15
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=1) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, "victoria-metrics did not start"
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(10)
        log.close()


def vm_export(url: str, match: str, expect: int) -> list[dict[str, Any]]:
    deadline = time.monotonic() + 10
    while True:
        urllib.request.urlopen(f"{url}/internal/force_flush", timeout=5).close()
        query = urllib.parse.urlencode({"match[]": match})
        with urllib.request.urlopen(f"{url}/api/v1/export?{query}", timeout=5) as resp:
            series = [json.loads(line) for line in resp.read().splitlines() if line.strip()]
        if sum(len(s["timestamps"]) for s in series) >= expect or time.monotonic() > deadline:
            return series
        time.sleep(0.2)


@pytest.mark.peer("victoria-metrics")
@pytest.mark.parametrize("use_gzip", [True, False])
async def test_v2_write_path_against_victoria_metrics(victoria: str, use_gzip: bool) -> None:
    component = f"vm-{use_gzip}"
    ref = ComponentRef(component, "network", "Gold plus", "Müller, Söhne")
    batch: list[Point] = [*samples(20, ref=ref), Heartbeat(f"agent-{use_gzip}", NOW_MS - 1, 60.0)]
    sink = InfluxSink(InfluxSettings(url=victoria, api="v2", org="o", bucket="b", token=SecretStr("t"),
                                     gzip=use_gzip))
    await sink.write(batch)
    await sink.write(batch)  # a replay: same series and timestamps
    await sink.close()
    series = vm_export(victoria, f'{{__name__="slawatch_probe_up",component="{component}"}}', 20)
    assert len(series) == 1
    labels = series[0]["metric"]
    assert labels["tier"] == "Gold plus" and labels["customer"] == "Müller, Söhne" and labels["probe"] == "options"
    assert series[0]["timestamps"] == [p.ts_ms for p in batch[:20]]  # ms exact, no duplicates
    assert series[0]["values"] == [int(isinstance(p, Sample) and p.up) for p in batch[:20]]
    latency = vm_export(victoria, f'{{__name__="slawatch_probe_latency_ms",component="{component}"}}', 13)
    assert len(latency[0]["timestamps"]) == sum(1 for p in batch[:20] if isinstance(p, Sample) and p.latency_ms)
    beats = vm_export(victoria, f'{{__name__="slawatch_heartbeat_period_s",agent="agent-{use_gzip}"}}', 1)
    assert beats[0]["values"] == [60]


# ---------------------------------------------------------------- the reporter's side: the same client


def window(id: str) -> MaintenanceWindow:
    return MaintenanceWindow(id, "component", "sip-core", NOW_MS - 3_600_000, NOW_MS, NOW_MS - 7_200_000, "fw",
                             NOW_MS - 7_200_000)


@pytest.mark.peer("influxd")
async def test_the_source_sets_up_a_new_store_as_the_sink_does(influxd: Influxd) -> None:
    """A window added before the agent ever wrote creates the database and the slawatch retention policy of the
    contract's retention; the agent's sink then writes beside it, and a dropped database is made again."""
    db = fresh_db()
    source = InfluxSource(v1(influxd, db), retention_s=200 * 86400)
    try:
        await source.add_window(window("mw-1"))
        policies = {r["name"]: r for r in influxd.rows(f'SHOW RETENTION POLICIES ON "{db}"', db)}
        assert policies[RETENTION_POLICY]["duration"] == "4800h0m0s" and not policies[RETENTION_POLICY]["default"]
        influxd.query(f'DROP DATABASE "{db}"', method="POST")
        await source.record_report_sent("2026-04", "acme", NOW_MS, "ab" * 32)  # set up again, then written
        assert await source.report_sent("2026-04", "acme")
    finally:
        await source.close()


@pytest.mark.parametrize(("status", "error"), [(503, StoreUnavailable), (400, SourceError), (403, SourceError)])
async def test_source_writes_fail_as_source_errors(scripted: Scripted, status: int, error: type[Exception]) -> None:
    """The sink's write rules (a 5xx is worth retrying, a 400 drops the point) as the reporter must see them: a
    window the server dropped is an error, not silently gone."""
    source = InfluxSource(InfluxSettings(url=scripted.url, api="v2", org="o", bucket="b", token=SecretStr("t")))
    scripted.answers = [(status, '{"code":"x","message":"partial write: field type conflict dropped=1"}')]
    try:
        with pytest.raises(error) as err:
            await source.add_window(window("mw-2"))
    finally:
        await source.close()
    assert str(status) in str(err.value) or status == 400
    assert error is StoreUnavailable or not isinstance(err.value, StoreUnavailable)
    writes = [r for r in scripted.requests if r[0] == "/api/v2/write"]
    assert len(writes) == 1 and writes[0][2]["Authorization"] == "Token t"  # no set-up on v2; one client's auth


@given(docs=st.lists(st.binary(max_size=40).map(lambda b: b.replace(b"\n", b"")), max_size=12),
       cuts=st.lists(st.integers(min_value=0, max_value=600), max_size=20), last_newline=st.booleans())
def test_lines_of_a_stream_cut_anywhere_are_its_lines(docs: list[bytes], cuts: list[int], last_newline: bool) -> None:
    stream = b"\n".join(docs) + (b"\n" if last_newline else b"")
    bounds = sorted({0, len(stream), *(c for c in cuts if c < len(stream))})
    lines = Lines()
    got = [line for start, end in itertools.pairwise(bounds) for line in lines.feed(stream[start:end])]
    assert got + lines.end() == [d for d in docs if d.strip()]

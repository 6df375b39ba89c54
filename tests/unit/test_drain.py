"""The drain's pipeline: a batch read after one not yet acknowledged, at most two in flight, acks in order; a store
failing mid-pipeline loses nothing and the spool's offset never passes a batch the store has not taken. And the
back-off after an outage: it ends when the InfluxDB sink sees the store answer again (a real local server)."""

from __future__ import annotations

import asyncio
import contextlib
import tempfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from aiohttp import web
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.drain import Drain, back_off
from agent.spool import Encoding, Spool
from slawatch.config.settings import InfluxSettings
from slawatch.model import ComponentRef, Outcome, Point, Sample, StateChange
from slawatch.store import SinkError
from slawatch.store.influxdb import InfluxSink
from slawatch.store.lineprotocol import ENCODING, encode_lines
from slawatch.testing import free_port

REF = ComponentRef("core-1", "tcp", "gold", "acme")


def samples(start: int, n: int) -> list[Point]:
    return [Sample(REF, "tcp", "tcp", "agent-1", ts, Outcome.UP, "", 0.5) for ts in range(start, start + n)]


def ts_of(line: bytes) -> int:
    return int(line.rsplit(b" ", 1)[1])


class ScriptedSink:
    """An in-memory store whose writes end when the test says, stored or failed, in any order."""

    name = "scripted"
    spool_encoding = ENCODING

    def __init__(self, concurrent: bool) -> None:
        self.concurrent_writes = concurrent
        self.write_errors = 0
        self.bad_points = 0
        self.stored: dict[int, int] = {}  # timestamp -> times written
        self.calls: list[tuple[list[int], asyncio.Future[bool]]] = []  # each write: its points, True = store it
        self.started = asyncio.Event()
        self.busy = 0
        self.max_busy = 0

    def encode(self, batch: Sequence[Point]) -> list[bytes]:
        return encode_lines(batch)

    async def write(self, batch: Sequence[Point]) -> None:
        await self._write([p.ts_ms for p in batch])

    async def write_encoded(self, items: Sequence[bytes]) -> None:
        await self._write([ts_of(i) for i in items])

    async def _write(self, ts: list[int]) -> None:
        outcome: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self.calls.append((ts, outcome))
        self.started.set()
        self.busy += 1
        self.max_busy = max(self.max_busy, self.busy)
        try:
            if not await outcome:
                raise SinkError("scripted: down", retryable=True)
            for t in ts:
                self.stored[t] = self.stored.get(t, 0) + 1
        finally:
            self.busy -= 1

    async def prune(self, older_than_ms: int) -> int:
        return 0

    async def close(self) -> None:
        pass


def open_spool(root: Path, sink: ScriptedSink) -> Spool:
    return Spool(root, 1 << 30, consumers=("s",), encodings={"s": Encoding(ENCODING, sink.encode)})


def acked(sp: Spool, total: int) -> int:
    return total - sp.pending("s")


def stored_prefix(sink: ScriptedSink, total: int) -> int:
    n = 0
    while n < total and n in sink.stored:
        n += 1
    return n


async def next_call(sink: ScriptedSink, k: int) -> tuple[list[int], asyncio.Future[bool]]:
    while len(sink.calls) <= k:
        sink.started.clear()
        await sink.started.wait()
    return sink.calls[k]


def test_a_read_after_an_unacknowledged_batch_gets_the_points_that_follow(tmp_path: Path) -> None:
    with Spool(tmp_path / "s", 1 << 30) as sp:
        for start in range(0, 250, 50):
            sp.append(samples(start, 50))
        first = sp.read("store", 100)
        second = sp.read("store", 100, after=first)
        assert [p.ts_ms for p in second.points] == list(range(100, 200))
        assert [p.ts_ms for p in sp.read("store", 100).points] == list(range(100))  # nothing acked: from the start
        sp.ack("store", first)
        assert sp.pending("store") == 150
        third = sp.read("store", 100, after=second)
        assert [p.ts_ms for p in third.points] == list(range(200, 250))
        assert not sp.read("store", 100, after=third)
        sp.ack("store", second)
        sp.ack("store", third)
        assert sp.pending("store") == 0


def test_a_read_after_a_batch_from_before_a_compaction_starts_at_the_offset_or_not_at_all(tmp_path: Path) -> None:
    def with_change(start: int) -> list[Point]:  # a compacted segment keeps its state change, and stays
        return [*samples(start, 19), StateChange(REF, "agent-1", start + 19, True, "")]

    with Spool(tmp_path / "s", 64 << 10, segment_bytes=4096) as sp:
        sp.append(with_change(0))
        first = sp.read("store", 10)
        for start in range(20, 2000, 20):  # over max_bytes: the oldest segments lose their samples
            sp.append(with_change(start))
        assert sp.dropped_samples > 0
        assert not sp.read("store", 10, after=first)  # its position means nothing now: wait for its ack
        assert sp.read("store", 10)  # from the consumer's offset it goes on
        sp.ack("store", first)  # maps to its segment's start, as any batch read before a compaction
        assert [p.ts_ms for p in sp.read("store", 1).points] == [19]

    with Spool(tmp_path / "t", 64 << 10, segment_bytes=4096) as sp:
        sp.append(samples(0, 20))
        first = sp.read("store", 10)
        for start in range(20, 2000, 20):  # samples only: the compacted segments go, the offset moves on
            sp.append(samples(start, 20))
        assert sp.read("store", 10, after=first) == sp.read("store", 10)


async def test_two_writes_in_flight_and_the_first_failing_loses_nothing_and_acks_nothing(tmp_path: Path) -> None:
    sink = ScriptedSink(concurrent=True)
    with open_spool(tmp_path / "s", sink) as sp:
        for start in range(0, 300, 50):
            sp.append(samples(start, 50))
        drain = Drain(sp, "s", sink, batch=100)
        pump = asyncio.create_task(drain.pump())
        (ts1, first), (ts2, second) = await next_call(sink, 0), await next_call(sink, 1)
        assert (ts1, ts2) == (list(range(100)), list(range(100, 200)))
        assert sink.busy == 2  # both sent before either is stored
        second.set_result(True)  # the later one is stored...
        await asyncio.sleep(0)
        assert acked(sp, 300) == 0  # ...but not acknowledged before the earlier one
        first.set_result(False)
        with pytest.raises(SinkError):
            await pump
        assert acked(sp, 300) == 0
        pump = asyncio.create_task(drain.pump())  # again from the last ack: the first batch is sent again
        (ts3, third), (ts4, fourth) = await next_call(sink, 2), await next_call(sink, 3)
        assert (ts3, ts4) == (list(range(100)), list(range(100, 200)))
        fourth.set_result(True)
        third.set_result(True)
        assert await pump == 200  # both done: one ack covers them
        assert acked(sp, 300) == 200
        pump = asyncio.create_task(drain.pump())
        ts5, fifth = await next_call(sink, 4)
        assert ts5 == list(range(200, 300))
        fifth.set_result(True)
        assert await pump == 100
        assert await drain.pump() == 0
        assert sorted(sink.stored) == list(range(300))
        assert {t for t, n in sink.stored.items() if n > 1} == set(range(100, 200))  # the idempotent rewrite
        await drain.abandon()


async def test_a_sink_without_concurrent_writes_gets_one_at_a_time_read_ahead(tmp_path: Path) -> None:
    sink = ScriptedSink(concurrent=False)
    with open_spool(tmp_path / "s", sink) as sp:
        sp.append(samples(0, 200))
        drain = Drain(sp, "s", sink, batch=100)
        pump = asyncio.create_task(drain.pump())
        _, first = await next_call(sink, 0)
        await asyncio.sleep(0.05)
        assert len(sink.calls) == 1
        first.set_result(True)
        assert await pump == 100
        _, second = await next_call(sink, 1)  # already read: sent at once
        second.set_result(True)
        assert await drain.pump() == 100
        assert sink.max_busy == 1
        assert sorted(sink.stored) == list(range(200))


@settings(max_examples=25, deadline=None)
@given(sizes=st.lists(st.integers(1, 60), min_size=1, max_size=8), batch=st.integers(1, 70),
       script=st.lists(st.tuples(st.booleans(), st.booleans()), min_size=1, max_size=30),
       concurrent=st.booleans())
def test_whatever_writes_fail_and_in_whatever_order_they_end_the_offset_never_passes_an_unstored_point(
        sizes: list[int], batch: int, script: list[tuple[bool, bool]], concurrent: bool) -> None:
    total = sum(sizes)

    async def run(root: Path) -> None:
        sink = ScriptedSink(concurrent)
        with open_spool(root, sink) as sp:
            start = 0
            for n in sizes:
                sp.append(samples(start, n))
                start += n
            drain = Drain(sp, "s", sink, batch=batch)
            steps = iter(script)
            while acked(sp, total) < total:
                pump = asyncio.create_task(drain.pump())
                while not pump.done():
                    open_calls = [f for _, f in sink.calls if not f.done()]
                    if not open_calls:
                        sink.started.clear()
                        waiter = asyncio.create_task(sink.started.wait())
                        await asyncio.wait([pump, waiter], return_when=asyncio.FIRST_COMPLETED)
                        waiter.cancel()
                        continue
                    store, newest_first = next(steps, (True, False))
                    (open_calls[-1] if newest_first else open_calls[0]).set_result(store)
                    await asyncio.sleep(0)
                    assert acked(sp, total) <= stored_prefix(sink, total)
                with pytest.raises(SinkError) if pump.exception() else contextlib.nullcontext():
                    await pump
                assert acked(sp, total) <= stored_prefix(sink, total)
            await drain.abandon()
            assert sorted(sink.stored) == list(range(total))

    with tempfile.TemporaryDirectory() as tmp:
        asyncio.run(run(Path(tmp)))


async def test_the_back_off_after_an_outage_ends_when_influxdb_answers_again() -> None:
    port = free_port()
    sink = InfluxSink(InfluxSettings(url=f"http://127.0.0.1:{port}", database="d", timeout_s=2.0))
    runner: web.AppRunner | None = None
    try:
        with pytest.raises(SinkError):
            await sink.write(samples(0, 1))  # nothing listens
        assert not await sink.back()

        async def ping(request: web.Request) -> web.Response:
            return web.Response(status=204)

        async def write(request: web.Request) -> web.Response:
            return web.Response(status=500, text='{"error":"overloaded"}')

        app = web.Application()
        app.router.add_get("/ping", ping)
        app.router.add_post("/write", write)
        app.router.add_post("/query", write)
        runner = web.AppRunner(app)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        assert await back_off(sink, 60.0)  # back: the wait ends within a poll, not after 30-60 s
        assert loop.time() - t0 < 5
        with pytest.raises(SinkError):
            await sink.write(samples(0, 1))  # answered with an error: an overloaded store keeps its back-off
        assert not await sink.back()
    finally:
        await sink.close()
        if runner is not None:
            await runner.cleanup()

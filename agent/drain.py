"""Moving one sink's backlog from the spool to its store: the next batch read while one is written, acks in order."""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections import deque

from agent.spool import Batch, Spool
from slawatch.store import EncodingSink, GzipSink, ReturningSink, RowSink, Sink, SinkError

DRAIN_BATCH = 5000
DRAIN_IN_FLIGHT = 2  # batches sent and not yet acknowledged: the store stores one while the next is read and sent
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0  # a store back from an outage waits at most this long for the next try
RETURN_POLL_S = 0.5  # while backing off from a store that did not answer, ask this often whether it is back


class Drain:
    """Writes one consumer's batches to its sink with up to `in_flight` of them sent and not yet acknowledged.

    Each batch is read while the one before is being written (so reading, preparing and the store's own work
    overlap), but acknowledged only once it and every batch read before it are stored: the spool's offset never
    passes a batch the store has not taken. When a write fails, the batches after it are abandoned (cancelled, or
    stored already and sent again later: writes are idempotent) and the next `pump` reads again from the last
    ack. A sink whose `concurrent_writes` is true gets the writes themselves at once; any other gets them one
    after the other, each sent as soon as the one before is stored.
    """

    def __init__(self, spool: Spool, consumer: str, sink: Sink, *, batch: int = DRAIN_BATCH,
                 in_flight: int = DRAIN_IN_FLIGHT) -> None:
        if batch <= 0 or in_flight <= 0:
            raise ValueError("batch and in_flight must be positive")
        self.spool = spool
        self.consumer = consumer
        self.sink = sink
        self.batch = batch
        self.in_flight = in_flight
        self.concurrent = bool(getattr(sink, "concurrent_writes", False))
        self.rows = isinstance(sink, RowSink)  # read as rows made from the points' records (open_spool's choice)
        self._sent: deque[tuple[Batch, asyncio.Task[None]]] = deque()
        self.caught_up = False  # the last pump's last read found nothing: it has read all there was

    async def pump(self) -> int:
        """Fill the pipeline, wait for the oldest write and acknowledge what is stored in order; return the
        points acknowledged, 0 when the spool holds nothing for this consumer. Raises SinkError when the oldest
        write failed (the rest abandoned: the next call starts again from the last ack)."""
        self.caught_up = False
        while len(self._sent) < self.in_flight:
            after = self._sent[-1][0] if self._sent else None
            batch = await asyncio.to_thread(self.spool.read, self.consumer, self.batch, after=after, rows=self.rows)
            if not batch:  # (a batch short of `batch` points is no sign of the end: reads stop at gzip blocks)
                self.caught_up = True
                break
            prev = self._sent[-1][1] if self._sent and not self.concurrent else None
            self._sent.append((batch, asyncio.create_task(self._write(batch, prev))))
        if not self._sent:
            return 0
        return await self._ack_oldest()

    async def finish(self) -> int:
        """Wait for the writes in flight and acknowledge them (at stop, and before a caught-up drain waits); read
        nothing more."""
        acked = 0
        while self._sent:
            acked += await self._ack_oldest()
        return acked

    async def abandon(self) -> None:
        """Cancel the writes in flight, unacknowledged (they are read and sent again)."""
        sent, self._sent = list(self._sent), deque()
        for _, task in sent:
            task.cancel()
        for _, task in sent:
            with contextlib.suppress(BaseException):
                await task

    async def _ack_oldest(self) -> int:
        batch, task = self._sent[0]
        try:
            await asyncio.shield(task)
        except SinkError:
            await self.abandon()
            raise
        except asyncio.CancelledError:
            if task.cancelled():  # not by us: the write itself (cannot happen) counts as failed
                await self.abandon()
                raise SinkError(f"{self.sink.name}: write cancelled", retryable=True) from None
            raise
        self._sent.popleft()
        acked = len(batch)
        # Writes after it that are stored already go with the same ack (one offset fsync for all of them).
        while self._sent and self._sent[0][1].done() and not self._sent[0][1].cancelled() \
                and self._sent[0][1].exception() is None:
            batch = self._sent.popleft()[0]
            acked += len(batch)
        await asyncio.to_thread(self.spool.ack, self.consumer, batch)
        return acked

    async def _write(self, batch: Batch, prev: asyncio.Task[None] | None) -> None:
        if prev is not None:
            await asyncio.wait([prev])
            if prev.cancelled() or prev.exception() is not None:
                raise SinkError(f"{self.sink.name}: an earlier write failed", retryable=True)
        if batch.rows is not None:
            assert isinstance(self.sink, RowSink)
            await self.sink.write_rows(batch.rows, len(batch))
        elif batch.gzip:
            assert isinstance(self.sink, GzipSink)  # open_spool gave only such sinks a gzip encoding
            await self.sink.write_gzip(batch.gzip, len(batch))
        elif batch.encoded:
            assert isinstance(self.sink, EncodingSink)  # open_spool gave the spool only such sinks' encodings
            await self.sink.write_encoded(batch.encoded)
        else:
            await self.sink.write(batch.points)


def next_backoff(backoff: float, exc: SinkError) -> float:
    """The back-off after `backoff` failed again: doubled, capped (much longer for a store refusing for good)."""
    return min(backoff * 2, BACKOFF_MAX_S if exc.retryable else BACKOFF_MAX_S * 10)


async def back_off(sink: Sink, backoff: float) -> bool:
    """Wait `backoff` × 0.5–1 (jitter), less when the sink can tell that its store, gone at the last write, is
    back: the first write after an outage then comes within ~RETURN_POLL_S of the store's return. True when the
    wait ended so (the store is back: a failure after that starts the back-off over)."""
    delay = backoff * random.uniform(0.5, 1.0)
    if not isinstance(sink, ReturningSink):
        await asyncio.sleep(delay)
        return False
    loop = asyncio.get_running_loop()
    until = loop.time() + delay
    while (left := until - loop.time()) > 0:
        await asyncio.sleep(min(RETURN_POLL_S, left))
        if loop.time() < until and await sink.back():
            return True
    return False

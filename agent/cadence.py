"""Probe cadence: one timer heap for every probe, a stable phase per probe, no overlap, a concurrency bound.

Measured with bench/schedule.py (10 000 empty jobs every 10 s): APScheduler 3's AsyncIOScheduler costs
41-65 us of CPU per run, this heap 33 us with its 20 ms tick (69-79 us with a 5 ms tick: each dispatcher
wake-up costs ~0.2 ms, so wake-ups are batched). The heap is kept for what the agent needs beyond cost: the
same phase for a probe on every start (crc32 of its key), switching a probe between its interval and its
retry interval after each run without rescheduling a job, lateness measured against the grid, and reloads
that diff the job set by key. APScheduler drives the cron work (the monthly report).
"""

from __future__ import annotations

import asyncio
import functools
import heapq
import logging
import math
import random
import time
import zlib
from collections.abc import Awaitable, Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Generic, Protocol, TypeVar

log = logging.getLogger(__name__)

TICK_S = 0.05
"""The dispatcher wakes only on this grid of the monotonic clock, at most 20 times a second, and starts every probe
due since at once: a probe starts at most this much after its slot. Each wake-up of the event loop costs ~0.1-0.2 ms
of CPU on a virtual machine (the timer, the switch, cold caches), more than a connect probe's own work; the outer
deadlines (agent.probes) tick on the same grid, so their timer fires in the same wake-up."""

T = TypeVar("T")


class Handle(Protocol):
    def cancel(self) -> None: ...


class CadenceClock(Protocol):
    """Where the scheduler reads the time and sets its timers: the event loop's clock, or a fake one in tests."""

    def monotonic(self) -> float:
        """Seconds on a clock that never steps; timers run on it."""
        ...

    def wall(self) -> float:
        """UTC epoch seconds now: a probe's phase grid is aligned to the wall clock."""
        ...

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Handle:
        """Call `callback` once `delay_s` has passed on the monotonic clock."""
        ...


class LoopClock:
    """The running event loop's timers on time.monotonic (the loop's own clock), and time.time."""

    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> Handle:
        return asyncio.get_running_loop().call_later(delay_s, callback)


@dataclass(eq=False, slots=True)
class Job(Generic[T]):
    """One probe to run every `interval_s` (or `retry_interval_s` while its component is unconfirmed)."""

    key: Hashable
    interval_s: float
    payload: T
    retry_interval_s: float | None = None
    phase_s: float = 0.0
    running: bool = field(default=False, repr=False)
    generation: int = field(default=0, repr=False)


def stable_phase(key: str, interval_s: float) -> float:
    """The same offset in [0, interval) for the same probe on every agent start, spread evenly over keys."""
    return (zlib.crc32(key.encode()) / 2**32) * interval_s


def on_tick(now: float, delay: float) -> float:
    """`delay` stretched to the next instant of the TICK_S grid (at most TICK_S more); an instant on the grid, up to
    rounding, stays where it is."""
    return max(delay, math.ceil((now + delay) / TICK_S - 1e-6) * TICK_S - now)


def _resolve(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _slot(job: Job[T], after: float, wall_offset: float) -> float:
    """The first instant of the job's grid (phase + k*interval on the wall clock) after `after` (monotonic)."""
    wall = after + wall_offset
    k = (wall - job.phase_s) // job.interval_s + 1
    return k * job.interval_s + job.phase_s - wall_offset


DIFF_SLICE = 2000  # jobs compared between two yields of Scheduler.diff (a few ms)


@dataclass(eq=False, slots=True)
class JobPlan(Generic[T]):
    """A new job set compared with the running one (`base`), for Scheduler.commit."""

    base: dict[Hashable, Job[T]]
    jobs: dict[Hashable, Job[T]] = field(default_factory=dict)  # the new set; a kept job is the running one
    started: list[Job[T]] = field(default_factory=list)  # new, or replacing a changed one
    stopped: list[Job[T]] = field(default_factory=list)  # removed, or replaced
    retry: list[tuple[Job[T], float | None]] = field(default_factory=list)  # kept, with a new retry interval


# `run` returns True when the job should come back after its retry interval instead of its interval.
Runner = Callable[[Job[T]], Awaitable[bool]]
LatenessObserver = Callable[[float], None]


class Scheduler(Generic[T]):
    """Runs jobs on a monotonic timeline; each job's next start is aligned to its phase grid."""

    def __init__(self, run: Runner[T], concurrency: int, *, jitter_s: float = 0.05,
                 on_lateness: LatenessObserver | None = None, clock: CadenceClock | None = None) -> None:
        self._run = run
        # The concurrency bound as a count and one waiter (only the dispatcher waits): asyncio.Semaphore's acquire
        # was a few per cent of a probe's CPU at 1 000 probes/s.
        self._free = concurrency
        self._slot: asyncio.Future[None] | None = None  # set while the dispatcher waits for a free slot
        self._jitter_s = jitter_s
        self._on_lateness = on_lateness
        self._clock = clock or LoopClock()
        self._jobs: dict[Hashable, Job[T]] = {}
        self._heap: list[tuple[float, int, Job[T], int]] = []
        self._seq = 0
        self._waiter: asyncio.Future[None] | None = None  # set while the dispatcher sleeps
        self._stopping = False
        self._inflight: set[asyncio.Task[None]] = set()

    @property
    def jobs(self) -> dict[Hashable, Job[T]]:
        return self._jobs

    def set_jobs(self, jobs: Iterable[Job[T]]) -> None:
        """Replace the job set: new jobs start at their phase, removed ones stop, unchanged ones go on."""
        plan = JobPlan(self._jobs)
        for _ in self.diff(jobs, plan):
            pass
        self.commit(plan)

    def diff(self, jobs: Iterable[Job[T]], plan: JobPlan[T]) -> Iterator[None]:
        """Fill `plan` with what replacing the running job set by `jobs` changes, yielding after each DIFF_SLICE jobs
        so that a caller on the event loop can let probes start in between; nothing running is touched until
        `commit(plan)`. An unchanged job (same key, interval and payload) is kept as it runs, on its grid."""
        running = plan.base
        fresh = plan.jobs
        for n, job in enumerate(jobs, 1):
            fresh[job.key] = job  # the last of a key, as a dict of them keeps
            if n % DIFF_SLICE == 0:
                yield
        for n, (key, job) in enumerate(list(fresh.items()), 1):
            if n % DIFF_SLICE == 0:
                yield
            previous = running.get(key)
            if previous is not None:
                if previous.interval_s == job.interval_s and previous.payload == job.payload:
                    if previous.retry_interval_s != job.retry_interval_s:
                        plan.retry.append((previous, job.retry_interval_s))
                    fresh[key] = previous
                    continue
                plan.stopped.append(previous)
            plan.started.append(job)
        for n, (key, gone) in enumerate(running.items(), 1):
            if n % DIFF_SLICE == 0:
                yield
            if key not in fresh:
                plan.stopped.append(gone)

    def commit(self, plan: JobPlan[T]) -> None:
        """Make the planned job set the running one, at once: its cost is the jobs that start or stop."""
        if plan.base is not self._jobs:  # the job set changed since the plan was made: diff again, at once
            again = JobPlan(self._jobs)
            for _ in self.diff(plan.jobs.values(), again):
                pass
            plan = again
        for gone in plan.stopped:
            gone.generation += 1  # heap entries of a removed or replaced job are skipped
        for job, retry_s in plan.retry:
            job.retry_interval_s = retry_s
        if plan.started:
            now = self._clock.monotonic()
            wall_offset = self._clock.wall() - now
            entries = []
            for job in plan.started:
                self._seq += 1
                entries.append((_slot(job, now, wall_offset), self._seq, job, job.generation))
            if len(entries) > len(self._heap) // 8:  # many at once (a start): one heapify, not a push each
                self._heap.extend(entries)
                heapq.heapify(self._heap)
            else:
                for entry in entries:
                    heapq.heappush(self._heap, entry)
        self._jobs = plan.jobs
        self._wake_up()

    def run_now(self, keys: Iterable[Hashable]) -> None:
        """Start these jobs as soon as a slot is free instead of at their phase (a component just taken over from
        another agent), then go on on their grid."""
        now = self._clock.monotonic()
        for key in keys:
            job = self._jobs.get(key)
            if job is not None:
                job.generation += 1  # its entry at its phase is skipped
                self._push(job, now)
        self._wake_up()

    def _next_slot(self, job: Job[T], after: float) -> float:
        """The first instant of the job's grid (phase + k*interval on the wall clock) after `after`."""
        return _slot(job, after, self._clock.wall() - self._clock.monotonic())

    def _push(self, job: Job[T], due: float) -> None:
        self._seq += 1
        heapq.heappush(self._heap, (due, self._seq, job, job.generation))

    async def run_forever(self) -> None:
        while not self._stopping:
            now = self._clock.monotonic()
            while self._heap and self._heap[0][0] <= now and not self._stopping:
                due, _, job, generation = heapq.heappop(self._heap)
                if generation != job.generation or job.running:
                    continue
                if self._free <= 0:
                    await self._slot_freed()
                self._free -= 1
                start = self._clock.monotonic()
                if self._on_lateness is not None:
                    self._on_lateness(start - due)
                job.running = True
                task = asyncio.create_task(self._one(job, due))
                self._inflight.add(task)
                task.add_done_callback(self._inflight.discard)
                now = start
            if self._stopping:
                break
            now = self._clock.monotonic()
            delay = self._heap[0][0] - now if self._heap else 3600.0
            if delay > 0:
                await self._sleep(on_tick(now, delay))

    async def _sleep(self, delay: float) -> None:
        """Until `delay` has passed or `_wake_up()` is called: a future and a timer handle, no task."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiter = waiter
        handle = self._clock.call_later(delay, functools.partial(_resolve, waiter))
        try:
            await waiter
        finally:
            handle.cancel()
            self._waiter = None

    async def _slot_freed(self) -> None:
        """Until a running job ends (every slot is taken)."""
        while self._free <= 0:
            waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self._slot = waiter
            try:
                await waiter
            finally:
                self._slot = None

    def _wake_up(self) -> None:
        """Make the dispatcher look at the heap again (a job was added or stop was asked)."""
        if self._waiter is not None:
            _resolve(self._waiter)

    async def _one(self, job: Job[T], due: float) -> None:
        retry = False
        try:
            retry = await self._run(job)
        except Exception:  # the runner must never take the scheduler down
            log.exception("job %s failed", job.key)
        finally:
            job.running = False
            self._free += 1
            if self._slot is not None:
                _resolve(self._slot)
        if self._stopping or self._jobs.get(job.key) is not job:
            return
        now = self._clock.monotonic()
        if retry and job.retry_interval_s:
            nxt = max(now, due + job.retry_interval_s)
        else:
            nxt = self._next_slot(job, max(now, due))
        if self._jitter_s:
            nxt += random.uniform(0, min(self._jitter_s, job.interval_s * 0.01))
        self._push(job, nxt)
        if self._heap[0][2] is job:
            self._wake_up()

    async def stop(self, grace_s: float) -> None:
        """Stop starting probes; wait up to `grace_s` for the ones in flight."""
        self._stopping = True
        self._wake_up()
        if self._inflight:
            pending = await self._wait(set(self._inflight), grace_s)
            for task in pending:
                task.cancel()
            if pending:
                await asyncio.wait(pending, timeout=1.0)  # a cancelled probe ends at its next await

    async def _wait(self, tasks: set[asyncio.Task[None]], timeout_s: float) -> set[asyncio.Task[None]]:
        """Wait until `tasks` are done or `timeout_s` has passed on the clock; return the ones still running."""
        expired: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        handle = self._clock.call_later(timeout_s, functools.partial(_resolve, expired))
        pending: set[asyncio.Future[None]] = set(tasks)
        try:
            while pending and not expired.done():
                _, pending = await asyncio.wait({*pending, expired}, return_when=asyncio.FIRST_COMPLETED)
                pending.discard(expired)
        finally:
            handle.cancel()
        return {t for t in tasks if t in pending}

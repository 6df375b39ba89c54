"""The probe cadence on a fake clock: phase grid, no overlap, concurrency bound, retry interval, reload, stop."""

from __future__ import annotations

import asyncio
import heapq
from collections.abc import Callable
from dataclasses import dataclass

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.cadence import DIFF_SLICE, TICK_S, Job, JobPlan, Scheduler, on_tick, stable_phase

WALL_OFFSET = 1_699_999_980.0  # the fake wall clock is the fake monotonic clock plus this (a multiple of 60 s)


@dataclass(eq=False)
class FakeHandle:
    callback: Callable[[], object]
    cancelled: bool = False

    def cancel(self) -> None:
        self.cancelled = True


class FakeClock:
    """Virtual time for the scheduler: nothing moves until `advance()`, which fires due timers in order and lets
    the tasks they wake run before the next one."""

    def __init__(self, now: float = 0.0, wall_offset: float = WALL_OFFSET) -> None:
        self.now = now
        self.wall_offset = wall_offset
        self._timers: list[tuple[float, int, FakeHandle]] = []
        self._seq = 0

    def monotonic(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.now + self.wall_offset

    def call_later(self, delay_s: float, callback: Callable[[], object]) -> FakeHandle:
        handle = FakeHandle(callback)
        self._seq += 1
        heapq.heappush(self._timers, (self.now + max(0.0, delay_s), self._seq, handle))
        return handle

    async def sleep(self, delay_s: float) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.call_later(delay_s, lambda: done.done() or done.set_result(None))
        await done

    async def advance(self, seconds: float) -> None:
        end = self.now + seconds
        await _settle()
        while self._timers and self._timers[0][0] <= end:
            due, _, handle = heapq.heappop(self._timers)
            if handle.cancelled:
                continue
            self.now = max(self.now, due)
            handle.callback()
            await _settle()
        self.now = end
        await _settle()


async def _settle() -> None:
    """Let every task that is ready run until all of them wait on the fake clock again."""
    for _ in range(50):
        await asyncio.sleep(0)


async def start(sched: Scheduler[str]) -> asyncio.Task[None]:
    task = asyncio.create_task(sched.run_forever())
    await _settle()
    return task


async def finish(sched: Scheduler[str], task: asyncio.Task[None], clock: FakeClock) -> None:
    stopping = asyncio.create_task(sched.stop(10.0))
    await clock.advance(10.0)
    await stopping
    await task


def test_stable_phase_is_stable_and_spread() -> None:
    phases = [stable_phase(f"comp-{i}/tcp", 10.0) for i in range(10_000)]
    assert phases[:3] == [stable_phase(f"comp-{i}/tcp", 10.0) for i in range(3)]
    assert all(0 <= p < 10 for p in phases)
    buckets = [0] * 10
    for p in phases:
        buckets[int(p)] += 1
    assert min(buckets) > 800 and max(buckets) < 1200  # roughly even per second


async def test_jobs_start_on_their_phase_grid() -> None:
    clock = FakeClock()
    starts: list[tuple[str, float]] = []

    async def run(job: Job[str]) -> bool:
        starts.append((job.payload, clock.now))
        return False

    sched = Scheduler(run, concurrency=10, jitter_s=0, clock=clock)
    sched.set_jobs([Job("a", 10.0, "a", phase_s=2.5), Job("b", 5.0, "b", phase_s=1.0)])
    task = await start(sched)
    await clock.advance(21.0)
    assert starts == [("b", 1.0), ("a", 2.5), ("b", 6.0), ("b", 11.0), ("a", 12.5), ("b", 16.0), ("b", 21.0)]
    await finish(sched, task, clock)


@given(st.floats(0, 1e7), st.floats(1e-6, 3600))
def test_a_wait_ends_on_the_tick_grid_never_early_and_at_most_a_tick_late(now: float, delay: float) -> None:
    wait = on_tick(now, delay)
    assert delay <= wait < delay + TICK_S + 1e-6
    ticks = (now + wait) / TICK_S
    assert abs(ticks - round(ticks)) < 1e-6 or wait == delay


async def test_jobs_due_within_one_tick_start_together_at_its_end() -> None:
    """The dispatcher wakes on the tick grid only: four probes due within one tick cost one wake-up, not four."""
    clock = FakeClock()
    starts: list[tuple[str, float]] = []
    lateness: list[float] = []

    async def run(job: Job[str]) -> bool:
        starts.append((job.payload, clock.now))
        return False

    sched = Scheduler(run, concurrency=10, jitter_s=0, on_lateness=lateness.append, clock=clock)
    sched.set_jobs([Job(n, 10.0, n, phase_s=1.0 + TICK_S * f) for n, f in (("a", 0.2), ("b", 0.4), ("c", 0.6),
                                                                         ("d", 1.0))])
    task = await start(sched)
    armed = len(clock._timers)
    await clock.advance(1.0 + TICK_S * 1.5)
    assert [n for n, _ in starts] == ["a", "b", "c", "d"]
    assert all(at == pytest.approx(1.0 + TICK_S) for _, at in starts)
    assert lateness == pytest.approx([TICK_S * 0.8, TICK_S * 0.6, TICK_S * 0.4, 0.0], abs=1e-6)
    assert armed == 1  # the dispatcher's one timer, set for the tick's end
    await finish(sched, task, clock)


async def test_the_grid_is_aligned_to_the_wall_clock_not_to_the_monotonic_one() -> None:
    clock = FakeClock(now=1000.75, wall_offset=WALL_OFFSET + 3.5)  # wall 1_699_999_980 + 1004.25 at the start
    walls: list[float] = []

    async def run(job: Job[str]) -> bool:
        walls.append(clock.wall() - WALL_OFFSET)
        return False

    sched = Scheduler(run, concurrency=1, jitter_s=0, clock=clock)
    sched.set_jobs([Job("w", 10.0, "w", phase_s=2.0)])
    task = await start(sched)
    await clock.advance(30.0)
    assert walls == [1012.0, 1022.0, 1032.0]  # phase 2 s past each 10 s of UTC, whatever the monotonic clock says
    await finish(sched, task, clock)


async def test_a_slow_job_never_overlaps_itself_and_resumes_on_its_grid() -> None:
    clock = FakeClock()
    starts: list[float] = []
    lateness: list[float] = []

    async def run(job: Job[str]) -> bool:
        starts.append(clock.now)
        await clock.sleep(25.0)  # longer than two intervals
        return False

    sched = Scheduler(run, concurrency=10, jitter_s=0, on_lateness=lateness.append, clock=clock)
    sched.set_jobs([Job("slow", 10.0, "slow", phase_s=0.0)])
    task = await start(sched)
    await clock.advance(95.0)
    assert starts == [10.0, 40.0, 70.0]  # ends at 35 and 65: the next grid instant after each end
    assert lateness == [0.0, 0.0, 0.0]  # skipped slots are not late starts
    await finish(sched, task, clock)


async def test_concurrency_bound_delays_the_second_job_and_measures_its_lateness() -> None:
    clock = FakeClock()
    starts: dict[str, list[float]] = {"x": [], "y": []}
    active = 0
    peak = 0
    lateness: list[float] = []

    async def run(job: Job[str]) -> bool:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        starts[job.payload].append(clock.now)
        await clock.sleep(3.0)
        active -= 1
        return False

    sched = Scheduler(run, concurrency=1, jitter_s=0, on_lateness=lateness.append, clock=clock)
    sched.set_jobs([Job("x", 10.0, "x", phase_s=1.0), Job("y", 10.0, "y", phase_s=2.0)])
    task = await start(sched)
    await clock.advance(20.0)
    assert peak == 1
    assert starts == {"x": [1.0, 11.0], "y": [4.0, 14.0]}  # y waits for x to free the only slot
    assert lateness == [0.0, 2.0, 0.0, 2.0]
    await finish(sched, task, clock)


async def test_retry_interval_applies_while_the_runner_asks_for_it() -> None:
    clock = FakeClock()
    starts: list[float] = []
    answers = iter([True, True, True, False])  # three runs in confirmation, then settled

    async def run(job: Job[str]) -> bool:
        starts.append(clock.now)
        return next(answers, False)

    sched = Scheduler(run, concurrency=1, jitter_s=0, clock=clock)
    sched.set_jobs([Job("r", 60.0, "r", retry_interval_s=2.0, phase_s=5.0)])
    task = await start(sched)
    await clock.advance(130.0)
    assert starts == [5.0, 7.0, 9.0, 11.0, 65.0, 125.0]  # every 2 s while pending, then back on the 60 s grid
    await finish(sched, task, clock)


async def test_reload_adds_removes_keeps_and_reschedules_jobs() -> None:
    clock = FakeClock()
    starts: list[tuple[str, float]] = []

    async def run(job: Job[str]) -> bool:
        starts.append((str(job.key), clock.now))
        return False

    sched = Scheduler(run, concurrency=10, jitter_s=0, clock=clock)
    kept = Job("kept", 10.0, "k", phase_s=3.0)
    sched.set_jobs([kept, Job("gone", 10.0, "g", phase_s=4.0), Job("changed", 10.0, "c1", phase_s=5.0)])
    task = await start(sched)
    await clock.advance(15.5)
    assert starts == [("kept", 3.0), ("gone", 4.0), ("changed", 5.0), ("kept", 13.0), ("gone", 14.0),
                      ("changed", 15.0)]
    starts.clear()
    # The same job again (a new object, equal payload) goes on unchanged; a new payload restarts at its phase.
    sched.set_jobs([Job("kept", 10.0, "k", phase_s=3.0), Job("changed", 10.0, "c2", phase_s=8.0),
                    Job("new", 10.0, "n", phase_s=6.0)])
    assert sched.jobs["kept"] is kept
    await clock.advance(12.0)  # to 27.5
    assert starts == [("new", 16.0), ("changed", 18.0), ("kept", 23.0), ("new", 26.0)]
    await finish(sched, task, clock)


async def test_stop_waits_for_probes_in_flight_within_the_grace_and_cancels_the_rest() -> None:
    clock = FakeClock()
    ended: list[str] = []
    cancelled: list[str] = []

    async def run(job: Job[str]) -> bool:
        try:
            await clock.sleep(4.0 if job.payload == "quick" else 100.0)
        except asyncio.CancelledError:
            cancelled.append(job.payload)
            raise
        ended.append(job.payload)
        return False

    sched = Scheduler(run, concurrency=10, jitter_s=0, clock=clock)
    sched.set_jobs([Job("quick", 60.0, "quick", phase_s=1.0), Job("stuck", 60.0, "stuck", phase_s=1.0)])
    task = await start(sched)
    await clock.advance(2.0)  # both started at 1.0
    stopping = asyncio.create_task(sched.stop(6.0))
    await clock.advance(3.5)  # quick ends at 5.0, inside the grace
    assert ended == ["quick"] and not stopping.done()
    await clock.advance(3.0)  # the grace ends at 8.0
    await stopping
    assert cancelled == ["stuck"]
    await task
    assert task.done() and not task.cancelled()


async def test_stop_returns_at_once_when_nothing_runs() -> None:
    clock = FakeClock()

    async def run(job: Job[str]) -> bool:
        raise AssertionError("no job is due before the stop")

    sched = Scheduler(run, concurrency=1, jitter_s=0, clock=clock)
    sched.set_jobs([Job("later", 60.0, "later", phase_s=30.0)])
    task = await start(sched)
    await asyncio.wait_for(sched.stop(5.0), timeout=1.0)  # no fake time passes: it must not wait for the grace
    await asyncio.wait_for(task, timeout=1.0)
    assert clock.now == 0.0


@pytest.mark.parametrize("failing", [True, False])
async def test_a_failing_runner_does_not_stop_the_cadence(failing: bool, caplog: pytest.LogCaptureFixture) -> None:
    clock = FakeClock()
    starts: list[float] = []

    async def run(job: Job[str]) -> bool:
        starts.append(clock.now)
        if failing:
            raise RuntimeError("probe bug")
        return False

    sched = Scheduler(run, concurrency=1, jitter_s=0, clock=clock)
    sched.set_jobs([Job("j", 10.0, "j", phase_s=0.0)])
    task = await start(sched)
    await clock.advance(35.0)
    assert starts == [10.0, 20.0, 30.0]
    assert ("job j failed" in caplog.text) is failing
    await finish(sched, task, clock)


async def test_a_gradual_diff_changes_nothing_until_its_commit_and_then_matches_set_jobs() -> None:
    clock = FakeClock()

    async def run(job: Job[str]) -> bool:
        return False

    n = DIFF_SLICE * 3 + 5
    old = [Job(f"j{i}", 10.0, f"p{i}", phase_s=i % 10) for i in range(n)]
    sched = Scheduler(run, concurrency=10, jitter_s=0, clock=clock)
    sched.set_jobs(old)
    running = sched.jobs
    # Half the jobs kept (new objects, equal payloads), a quarter changed, a quarter gone, some new.
    new = [Job(f"j{i}", 10.0, f"p{i}" if i % 4 < 2 else f"q{i}", phase_s=i % 10) for i in range(n) if i % 4 != 3]
    new += [Job(f"n{i}", 10.0, f"n{i}") for i in range(7)]
    plan = JobPlan(sched.jobs)
    yields = sum(1 for _ in sched.diff(new, plan))
    assert yields >= (len(new) * 2 + n) // DIFF_SLICE  # the loop gets a turn every DIFF_SLICE jobs
    assert sched.jobs is running and all(j.generation == 0 for j in old)  # nothing touched before the commit
    sched.commit(plan)
    assert [k for k in sched.jobs] == [j.key for j in new]
    assert all(sched.jobs[f"j{i}"] is old[i] for i in range(n) if i % 4 < 2)  # kept as they run
    assert all(old[i].generation == 1 for i in range(n) if i % 4 >= 2)  # changed and gone: their entries skipped
    assert len(plan.started) == sum(1 for i in range(n) if i % 4 == 2) + 7  # only the changed and new ones


async def test_a_commit_of_a_plan_made_before_another_change_diffs_again() -> None:
    clock = FakeClock()
    starts: list[str] = []

    async def run(job: Job[str]) -> bool:
        starts.append(str(job.key))
        return False

    sched = Scheduler(run, concurrency=10, jitter_s=0, clock=clock)
    sched.set_jobs([Job("a", 10.0, "a", phase_s=1.0)])
    plan = JobPlan(sched.jobs)
    for _ in sched.diff([Job("a", 10.0, "a", phase_s=1.0), Job("b", 10.0, "b", phase_s=2.0)], plan):
        pass
    sched.set_jobs([Job("c", 10.0, "c", phase_s=3.0)])  # the running set changed meanwhile
    sched.commit(plan)
    assert sorted(sched.jobs) == ["a", "b"]
    task = await start(sched)
    await clock.advance(5.0)
    assert starts == ["a", "b"]  # c was stopped by the commit, a and b started once each
    await finish(sched, task, clock)

"""The probe scheduler: cadence, phase, no overlap, concurrency bound, reload."""

from __future__ import annotations

import asyncio
import itertools
import time

from agent.schedule import Job, Scheduler, stable_phase


def test_stable_phase_is_stable_and_spread() -> None:
    phases = [stable_phase(f"comp-{i}/tcp", 10.0) for i in range(10_000)]
    assert phases[:3] == [stable_phase(f"comp-{i}/tcp", 10.0) for i in range(3)]
    assert all(0 <= p < 10 for p in phases)
    buckets = [0] * 10
    for p in phases:
        buckets[int(p)] += 1
    assert min(buckets) > 800 and max(buckets) < 1200  # roughly even per second


async def test_runs_on_cadence_without_overlap_and_respects_concurrency() -> None:
    starts: dict[str, list[float]] = {"fast": [], "slow": []}
    active = 0
    peak = 0
    lateness: list[float] = []

    async def run(job: Job) -> bool:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        starts[job.key].append(time.monotonic())  # type: ignore[index]
        await asyncio.sleep(0.5 if job.key == "slow" else 0.01)
        active -= 1
        return False

    sched = Scheduler(run, concurrency=1, jitter_s=0, on_lateness=lateness.append)
    sched.set_jobs([Job("fast", 0.2, "f"), Job("slow", 0.2, "s")])
    task = asyncio.create_task(sched.run_forever())
    await asyncio.sleep(2.0)
    await sched.stop(1.0)
    await task
    assert peak == 1
    slow = starts["slow"]
    assert len(slow) >= 2
    assert all(b - a >= 0.5 for a, b in itertools.pairwise(slow))  # never overlaps itself
    assert lateness and max(lateness) < 1.0


async def test_reload_adds_and_removes_jobs_and_retry_interval_applies() -> None:
    seen: list[str] = []

    async def run(job: Job) -> bool:
        seen.append(job.key)  # type: ignore[arg-type]
        return job.key == "retrying"

    sched = Scheduler(run, concurrency=10, jitter_s=0)
    sched.set_jobs([Job("a", 0.1, 1), Job("retrying", 5.0, 2, retry_interval_s=0.1)])
    task = asyncio.create_task(sched.run_forever())
    await asyncio.sleep(0.6)
    sched.set_jobs([Job("b", 0.1, 3)])
    n_a = seen.count("a")
    await asyncio.sleep(0.6)
    await sched.stop(1.0)
    await task
    assert n_a >= 3
    assert seen.count("a") <= n_a + 1
    assert seen.count("b") >= 3
    # the 5 s job ran once at its phase (if that fell inside the window) and then every 0.1 s while pending
    assert seen.count("retrying") in (0,) or seen.count("retrying") >= 2

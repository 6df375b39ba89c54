"""Scheduling cost alone: the agent's timer heap against APScheduler 3's AsyncIOScheduler.

    .venv/bin/python bench/schedule.py [--jobs 10000] [--interval 10] [--seconds 20]

Each job is an empty coroutine, so the CPU per run is what the scheduler itself costs (dispatch, task, next
fire time). One interval of warm-up, then `--seconds` measured with time.process_time().
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

from agent.cadence import Job, Scheduler, stable_phase


class Counter:
    runs = 0


async def measure(interval: float, seconds: float) -> tuple[float, float]:
    await asyncio.sleep(interval)  # warm-up: every job has fired once
    r0, c0 = Counter.runs, time.process_time()
    await asyncio.sleep(seconds)
    runs, cpu = Counter.runs - r0, time.process_time() - c0
    return runs / seconds, 1e6 * cpu / max(runs, 1)


async def apscheduler(jobs: int, interval: float, seconds: float) -> tuple[float, float]:
    async def work() -> None:
        Counter.runs += 1

    sched = AsyncIOScheduler()
    for i in range(jobs):
        sched.add_job(work, IntervalTrigger(seconds=interval, jitter=0.05), id=f"j{i}", max_instances=1,
                      coalesce=True, misfire_grace_time=5)
    sched.start()
    try:
        return await measure(interval, seconds)
    finally:
        sched.shutdown(wait=False)


async def heap(jobs: int, interval: float, seconds: float) -> tuple[float, float]:
    async def run(job: Job) -> bool:
        Counter.runs += 1
        return False

    sched = Scheduler(run, 2000)
    sched.set_jobs([Job(f"j{i}", interval, i, phase_s=stable_phase(f"j{i}", interval)) for i in range(jobs)])
    task = asyncio.create_task(sched.run_forever())
    try:
        return await measure(interval, seconds)
    finally:
        await sched.stop(1.0)
        await task


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"{'scheduler':<22} {'runs/s':>8} {'CPU us/run':>11}")
    for name, fn in (("APScheduler 3", apscheduler), ("slawatch timer heap", heap)):
        rate, cpu = asyncio.run(fn(args.jobs, args.interval, args.seconds))
        print(f"{name:<22} {rate:>8.0f} {cpu:>11.0f}", flush=True)


if __name__ == "__main__":
    main()

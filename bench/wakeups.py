"""What one wake-up of an idle event loop costs on this machine: the loop sleeps on a timer and wakes, N times a
second, doing nothing else; the CPU of its thread per wake-up is printed for each rate.

    python bench/wakeups.py [--rates 20,100,1000] [--seconds 5] [--loop asyncio|uvloop]

On a virtual machine this is the timer, the switches in and out of the idle vCPU and the caches gone cold in
between, much more than on bare metal; it is why the agent's dispatcher and the probes' outer deadlines wake on one
50 ms grid (agent.cadence.TICK_S) rather than for every probe.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slawatch.cli.usage import run_on  # noqa: E402


async def wake(rate: float, seconds: float) -> tuple[int, float, float]:
    """Sleep 1/rate s at a time for `seconds`: wake-ups, thread CPU s, wall s."""
    loop = asyncio.get_running_loop()
    end = loop.time() + seconds
    n = 0
    cpu0, wall0 = time.thread_time(), time.perf_counter()
    while loop.time() < end:
        await asyncio.sleep(1.0 / rate)
        n += 1
    return n, time.thread_time() - cpu0, time.perf_counter() - wall0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="20,100,1000", help="wake-ups a second asked for, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="per rate (at most 60)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio")
    args = parser.parse_args()
    seconds = min(max(args.seconds, 0.5), 60.0)
    print(f"event loop {args.loop}, {seconds:g} s per rate")
    print("| asked /s | wake-ups /s | CPU µs per wake-up | CPU % of a core |")
    print("|---:|---:|---:|---:|")
    for rate in (float(r) for r in args.rates.split(",")):
        n, cpu, wall = run_on(args.loop, functools.partial(wake, rate, seconds))
        print(f"| {rate:g} | {n / wall:,.0f} | {1e6 * cpu / max(n, 1):,.1f} | {100 * cpu / wall:.1f} |")


if __name__ == "__main__":
    main()

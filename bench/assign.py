"""Rendezvous assignment cost (agent/assign.py): shares of many components over several agents.

    .venv/bin/python bench/assign.py [--components 100000] [--agents 10] [--replicas 1 2]

Per replicas: the first shares (every agent's weights hashed), the same membership again (cached), one agent
joining (only its weights hashed), one leaving; the largest and smallest share against the mean, and how many
components moved on the join and the leave. Wall time with time.perf_counter(), CPU with time.process_time().
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.assign import Assigner, Member

T = TypeVar("T")


def timed(work: Callable[..., T], *args: object) -> tuple[T, float, float]:
    w0, c0 = time.perf_counter(), time.process_time()
    out = work(*args)
    return out, time.perf_counter() - w0, time.process_time() - c0


def moved(before: dict[str, frozenset[str]], after: dict[str, frozenset[str]]) -> int:
    """Component placements that changed (a component leaving one agent for another counts once)."""
    return sum(len(after[a] - before.get(a, frozenset())) for a in after)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    n, k = min(args.components, 1_000_000), min(args.agents, 100)
    components = {f"component-{i:07d}": None for i in range(n)}
    members = [Member(f"agent-{i:02d}", None) for i in range(k)]
    joined = [*members, Member("agent-new", None)]
    print(f"{n} components, {k} agents")
    print(f"{'replicas':>8} {'step':<14} {'wall s':>8} {'cpu s':>8} {'moved':>8} {'min/mean/max share':>22}")
    for replicas in args.replicas:
        assigner = Assigner(components)
        first, wall, cpu = timed(assigner.shares, members, replicas)
        sizes = sorted(len(s) for s in first.values())
        mean = n * min(replicas, k) / k
        print(f"{replicas:>8} {'first':<14} {wall:>8.2f} {cpu:>8.2f} {'':>8} "
              f"{f'{sizes[0]}/{mean:.0f}/{sizes[-1]}':>22}")
        _, wall, cpu = timed(assigner.shares, members, replicas)
        print(f"{replicas:>8} {'same (cached)':<14} {wall:>8.4f} {cpu:>8.4f}")
        after_join, wall, cpu = timed(assigner.shares, joined, replicas)
        print(f"{replicas:>8} {'one joins':<14} {wall:>8.2f} {cpu:>8.2f} {moved(first, after_join):>8}")
        after_leave, wall, cpu = timed(assigner.shares, members[1:], replicas)
        print(f"{replicas:>8} {'one leaves':<14} {wall:>8.2f} {cpu:>8.2f} {moved(first, after_leave):>8} "
              f"{f'(it had {len(first[members[0].agent])})':>22}")


if __name__ == "__main__":
    main()

"""One slice of a report, stage by stage: CPU of its store read, its inputs-hash rows, its engine and its JSON.

    python bench/report_slice.py --config DIR/slawatch.yaml [--month YYYY-MM] [--slice 2000] [--at 40000]
                                 [--repeat 7] [--tree DIR]

Reads the config (a store kept by `bench/report.py --workdir DIR`: DIR/sqlite/slawatch.yaml or
DIR/postgres/slawatch.yaml), takes the components [at, at + slice) as a report's worker does, and times each stage
`--repeat` times in this one process (CPU seconds, `time.process_time`; the smallest and the median are printed, a
stage's CPU being what other jobs on the machine disturb least):

- read: `Source.changes` of the slice over the month (the driver's decoding and the changes made of its rows);
- hash rows: the slice's rows for `inputs_sha256` (`change_texts`);
- engine: `compute_slice` (the availability of each component, the hash rows included);
- JSON: the slice's components as the report's JSON text.

With a PostgreSQL store it also times the query for the last change of each (component, agent) before the period
both ways the source can make it, read in full and walked along the index (when the tree has both), at the start of
the month and one and a half months later (the history before the period then a month and a half long): the wall
time of the query as the client sees it, its rows compared.

`--tree DIR` imports slawatch and reporter from another checkout (before/after pairs on one store).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any


def timed(repeat: int, work: Callable[[], Any]) -> tuple[float, float, Any]:
    """(smallest, median) CPU seconds of `work` over `repeat` runs, the collector off (as in a report's worker), and
    its last result."""
    times, result = [], None
    for _ in range(repeat):
        result = None
        gc.collect()
        gc.disable()
        try:
            start = time.process_time()
            result = work()
            times.append(time.process_time() - start)
        finally:
            gc.enable()
    return min(times), statistics.median(times), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--month", default=None, help="YYYY-MM (default: the last full month)")
    parser.add_argument("--slice", type=int, default=2000, help="components in the slice (1-10 000)")
    parser.add_argument("--at", type=int, default=40000, help="the slice's first component, in configured order")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each stage (1-50)")
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    args = parser.parse_args()
    if not 1 <= args.slice <= 10_000 or not 1 <= args.repeat <= 50 or args.at < 0:
        parser.error("--slice within 1-10 000, --repeat within 1-50, --at not negative")
    sys.path.insert(0, str(args.tree.resolve()))
    os.chdir(args.config.resolve().parent)  # the config names the store's files relative to itself

    from reporter.availability import AgentViews
    from reporter.periods import month_period
    from reporter.render import json_slice
    from reporter.report import ReportRun, SliceFrame, change_texts, compute_slice
    from slawatch.config.loader import load
    from slawatch.store import open_source

    loaded = load(args.config.name, for_good=True)
    now = time.gmtime()
    year, month = (int(x) for x in args.month.split("-")) if args.month else \
        ((now.tm_year, now.tm_mon - 1) if now.tm_mon > 1 else (now.tm_year - 1, 12))
    period = month_period(year, month, loaded.config.report.timezone)
    components = loaded.config.components[args.at:args.at + args.slice]
    names = [c.name for c in components]
    print(f"tree {args.tree}; {len(names)} components from #{args.at}; month {year}-{month:02d}; "
          f"load average {' '.join(f'{x:.2f}' for x in os.getloadavg())}")

    loop = asyncio.new_event_loop()
    source = open_source(loaded.config.storage)
    try:
        run = ReportRun(loaded, source, period, month=(year, month), incidents=[])
        heartbeats = loop.run_until_complete(source.heartbeats(period.start_ms, period.end_ms))
        windows = tuple(loop.run_until_complete(source.windows(period.start_ms, period.end_ms)))
        frame = SliceFrame(period, windows, heartbeats,
                           {**{name: c.policy for name, c in run.customers.items()}, None: run.policy}, True)
        coverage = AgentViews((), heartbeats)
        rows: list[tuple[str, float, float]] = []
        best, median, changes = timed(args.repeat, lambda: loop.run_until_complete(
            source.changes(period.start_ms, period.end_ms, names)))
        rows.append((f"read ({len(changes):,} changes)", best, median))
        best, median, _ = timed(args.repeat, lambda: change_texts(changes, ordered=True))
        rows.append(("hash rows", best, median))
        best, median, computed = timed(args.repeat, lambda: compute_slice(loaded, frame, coverage, components,
                                                                          changes))
        rows.append(("engine (hash rows included)", best, median))
        best, median, _ = timed(args.repeat, lambda: json_slice(run.head(), computed[0]))
        rows.append(("JSON", best, median))
        print(f"{'stage':32s} {'CPU min':>9s} {'median':>9s}")
        for name, low, mid in rows:
            print(f"{name:32s} {1000 * low:7.1f} ms {1000 * mid:7.1f} ms")
        if loaded.config.storage.postgres is not None:
            loop.run_until_complete(_last_changes(loaded, period, names, args.repeat))
    finally:
        loop.run_until_complete(source.close())
        loop.close()


async def _last_changes(loaded: Any, period: Any, names: list[str], repeat: int) -> None:
    """The last changes before the period, read in full and walked, as the client sees them (wall ms)."""
    import asyncpg

    from slawatch.store import postgres
    from slawatch.store.pgconnect import connect_kwargs

    ways = {way: getattr(postgres, sql) for way, sql in (("in full", "_SQL_SLICE_LAST_CHANGES"),
                                                         ("walked", "_SQL_SLICE_LAST_CHANGES_WALKED"))
            if hasattr(postgres, sql)}
    if not ways:
        return
    conn = await asyncpg.connect(**connect_kwargs(loaded.config.storage.postgres))
    try:
        await conn.execute("SET jit = off")
        for history, start in (("none", period.start_ms), ("1.5 months", period.end_ms + 15 * 86_400_000)):
            answers = {}
            for way, sql in ways.items():
                times = []
                for _ in range(repeat):
                    begun = time.perf_counter()
                    found = await conn.fetch(sql, start, names)
                    times.append(time.perf_counter() - begun)
                answers[way] = sorted(tuple(r) for r in found)
                print(f"last changes before the period, history before it {history:10s} {way:8s} "
                      f"{len(found):6,} rows: {1000 * min(times):6.1f} ms min, {1000 * statistics.median(times):6.1f} "
                      f"ms median (wall)")
            if len(answers) == 2 and answers["in full"] != answers["walked"]:
                raise SystemExit("the two ways gave different rows")
    finally:
        await conn.close()


if __name__ == "__main__":
    main()

"""PostgreSQL store write rate: points/s through PostgresSink into a real PostgreSQL, per write method and kind.

    python bench/pgstore.py [--points 100000] [--batch 5000] [--methods unnest,copy,executemany]
                            [--kinds samples,changes] [--max-seconds 60] [--repeat 1]

Starts Debian's PostgreSQL 15 in a temp dir (fsync and synchronous commit on, as a real server), then for every
(kind, method) writes `--points` points in batches of `--batch` through `PostgresSink.write` into a fresh database:
`samples` are probe runs (one partitioned table, 2 000 components × 1 probe, 10 s apart), `changes` are state
changes (each batch one transaction with its NOTIFY). Each cell stops after `--points` points or `--max-seconds`.
Prints points/s, ms per batch (p50, max) and the CPU seconds of this process per 100 000 points; the load
average is printed with the table (the machine is shared: compare cells of one run).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slawatch.config.settings import PostgresSettings  # noqa: E402
from slawatch.model import ComponentRef, Outcome, Point, Sample, StateChange  # noqa: E402
from slawatch.testing import PeerMissing  # noqa: E402
from slawatch.testing.postgres import PostgresServer, start_postgres  # noqa: E402

COMPONENTS = 2000
T0 = (int(time.time()) - 3 * 86400) * 1000


def refs() -> list[ComponentRef]:
    return [ComponentRef(f"comp-{i:05d}", "sip", "gold", f"cust-{i % 100:03d}") for i in range(COMPONENTS)]


def points(kind: str, n: int) -> list[Point]:
    rs = refs()
    out: list[Point] = []
    for k in range(n):
        ref, ts = rs[k % COMPONENTS], T0 + (k // COMPONENTS) * 10_000 + k % 1000
        if kind == "samples":
            out.append(Sample(ref, "options", "sip", "agent-a", ts, Outcome.UP, "", 1.25 + k % 7))
        else:
            out.append(StateChange(ref, "agent-a", ts, bool(k // COMPONENTS % 2), "" if k % 2 else "timeout"))
    return out


async def cell(server: PostgresServer, kind: str, method: str, n: int, batch: int, max_s: float
               ) -> tuple[int, float, list[float], float]:
    from slawatch.store.postgres import PostgresSink  # asyncpg only when run

    sink = PostgresSink(PostgresSettings(dsn=server.create_database()))
    sink.method = method  # type: ignore[assignment]
    data = points(kind, n)
    await sink.write(data[:1])  # connect, schema, partitions: not timed
    written, lat = 0, []
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    try:
        for i in range(1, n, batch):
            b0 = time.perf_counter()
            await sink.write(data[i:i + batch])
            lat.append(time.perf_counter() - b0)
            written += len(data[i:i + batch])
            if time.perf_counter() - t0 > max_s:
                break
    finally:
        elapsed = time.perf_counter() - t0
        cpu1 = resource.getrusage(resource.RUSAGE_SELF)
        await sink.close()
    if sink.bad_points or sink.write_errors:
        raise SystemExit(f"{kind}/{method}: {sink.bad_points} bad points, {sink.write_errors} write errors")
    cpu = (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime)
    return written, elapsed, lat, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--points", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=5000)
    parser.add_argument("--methods", default="unnest,copy,executemany")
    parser.add_argument("--kinds", default="samples,changes")
    parser.add_argument("--max-seconds", type=float, default=60.0)
    parser.add_argument("--repeat", type=int, default=1, help="run the cells this many times, interleaved")
    args = parser.parse_args()
    if not 1 <= args.points <= 5_000_000 or not 1 <= args.batch <= 100_000 or not 1 <= args.repeat <= 5:
        sys.exit("--points 1..5 000 000, --batch 1..100 000, --repeat 1..5")
    try:
        server = start_postgres(durable=True)
    except PeerMissing as exc:
        sys.exit(exc.reason)
    rows = []
    try:
        for run in range(args.repeat):
            for kind in args.kinds.split(","):
                for method in args.methods.split(","):
                    written, elapsed, lat, cpu = asyncio.run(cell(server, kind, method, args.points, args.batch,
                                                                  args.max_seconds))
                    rows.append((run + 1, kind, method, written, written / elapsed, statistics.median(lat) * 1000,
                                 max(lat) * 1000, cpu / written * 100_000))
                    print(f"run {run + 1} {kind} {method}: {written / elapsed:,.0f} points/s", flush=True)
    finally:
        server.remove()
    print(f"\nload average {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}; "
          f"batches of {args.batch}, PostgreSQL with fsync on")
    print("| run | kind | method | points | points/s | ms per batch p50 | max | CPU s per 100 000 points (client) |")
    print("|---|---|---|---|---|---|---|---|")
    for run, kind, method, written, rate, p50, worst, cpu in rows:
        print(f"| {run} | {kind} | {method} | {written:,} | {rate:,.0f} | {p50:.1f} | {worst:.1f} | {cpu:.2f} |")


if __name__ == "__main__":
    main()

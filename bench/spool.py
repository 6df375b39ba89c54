"""Spool throughput: append points/s (1 000-point batches, fdatasync each), replay samples/s, bytes per sample;
with --influx, a backlog of --backlog-s seconds replayed into a real influxd as the agent drains it.

Run: .venv/bin/python -m bench.spool [--samples 1000000] [--dir DIR] [--max-seconds 120]
     .venv/bin/python -m bench.spool --influx|--sqlite [--components 10000] [--interval 10] [--backlog-s 3600]
                                       [--drain-batch 5000] [--in-flight 2]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import shutil
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

from agent.daemon import SPOOL_BATCH, consumer_name, open_spool
from agent.drain import DRAIN_BATCH, DRAIN_IN_FLIGHT, Drain
from agent.spool import Spool
from slawatch.config.settings import InfluxSettings, SpoolSettings, SqliteSettings
from slawatch.model import ComponentRef, Outcome, Point, Sample
from slawatch.schema import RETENTION_POLICY
from slawatch.store import Sink
from slawatch.store.influxdb import InfluxSink
from slawatch.store.sqlite import SqliteSink
from slawatch.testing.influxd import start_influxd


def make_batch(start: int, size: int, refs: list[ComponentRef]) -> list[Point]:
    """Realistic samples: 2 000 components, mostly UP with a latency, some failures with a reason."""
    out: list[Point] = []
    for i in range(start, start + size):
        ref = refs[i % len(refs)]
        if i % 50 == 0:
            out.append(Sample(ref, "options", "sip", "agent-par-1", 1_718_000_000_000 + i, Outcome.TIMEOUT,
                              "no answer to OPTIONS within 5s", None))
        else:
            out.append(Sample(ref, "options", "sip", "agent-par-1", 1_718_000_000_000 + i, Outcome.UP, "",
                              3.0 + (i % 997) / 7))
    return out


def backlog_batch(start: int, size: int, refs: list[ComponentRef], interval_ms: int, t0_ms: int) -> list[Point]:
    """Points `start`..`start + size` of an agent's backlog: every component once per interval, spread over it."""
    out: list[Point] = []
    n = len(refs)
    for i in range(start, start + size):
        ref = refs[i % n]
        ts = t0_ms + (i // n) * interval_ms + (i % n) * interval_ms // n
        if i % 97 == 0:
            out.append(Sample(ref, "tcp", "tcp", "agent-par-1", ts, Outcome.REFUSED, "connection refused", None))
        else:
            out.append(Sample(ref, "tcp", "tcp", "agent-par-1", ts, Outcome.UP, "", 0.2 + (i % 991) / 1000))
    return out


async def replay_into_store(args: argparse.Namespace, root: Path) -> int:
    """Build a backlog as the agent spools it, then drain it into influxd (or SQLite) as the agent's drain does."""
    n_points = args.components * int(args.backlog_s) * 1000 // (args.interval * 1000)
    refs = [ComponentRef(f"c{i}", "san", "gold", f"cust-{i % 97}") for i in range(args.components)]
    influx = None if args.sqlite else start_influxd(root / "influxd")
    try:
        database = "bench_replay"
        sink: Sink = (SqliteSink(SqliteSettings(path=root / "store.db")) if influx is None
                      else InfluxSink(InfluxSettings(url=influx.url, api="v1", database=database)))
        consumer = consumer_name(sink)
        spool_settings = SpoolSettings(path=root / "spool", max_bytes=16 << 30)
        sp = open_spool(spool_settings, [sink])
        t0_ms = int(time.time() * 1000) - int(args.backlog_s * 1000) - 60_000
        interval_ms = args.interval * 1000
        t0 = time.perf_counter()
        for start in range(0, n_points, SPOOL_BATCH):
            sp.append(backlog_batch(start, min(SPOOL_BATCH, n_points - start), refs, interval_ms, t0_ms))
        append_s = time.perf_counter() - t0
        size = sp.bytes
        sp.close()
        print(f"backlog: {args.components} components every {args.interval} s for {args.backlog_s:g} s = "
              f"{n_points:,} points, appended in {SPOOL_BATCH}-point batches in {append_s:.1f} s "
              f"({n_points / append_s:,.0f} points/s), {size / 1e6:.0f} MB ({size / n_points:.0f} bytes/point)")

        t0 = time.perf_counter()
        sp = open_spool(spool_settings, [sink])
        open_s = time.perf_counter() - t0
        drain = Drain(sp, consumer, sink, batch=args.drain_batch, in_flight=args.in_flight)
        replayed, cpu0, t0 = 0, time.process_time(), time.perf_counter()
        while moved := await drain.pump():
            replayed += moved
            if time.perf_counter() - t0 > args.max_seconds:
                break
        await drain.abandon()
        replay_s, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        sp.close()
        await sink.close()
        if influx is None:
            q = "SELECT count(*) FROM slawatch_probe"
            with contextlib.closing(sqlite3.connect(root / "store.db")) as db:
                stored = db.execute(q).fetchone()[0]
        else:
            q = f'SELECT count("up") FROM "{database}"."{RETENTION_POLICY}"."slawatch_probe"'
            series = await asyncio.to_thread(influx.series, q, None, timeout_s=120.0)
            stored = int(series[0]["values"][0][1]) if series else 0
    finally:
        if influx is not None:
            influx.stop()
    print(f"open scan: {open_s:.2f} s")
    print(f"replay into {'SQLite' if influx is None else 'influxd'} (the agent's drain: batches of "
          f"{args.drain_batch}, {args.in_flight} in flight): {replayed:,} points in "
          f"{replay_s:.1f} s = {replayed / replay_s:,.0f} points/s; our CPU {cpu:.1f} s "
          f"({1e6 * cpu / max(replayed, 1):.1f} µs/point)")
    print(f"check: {stored:,} stored of {n_points:,} ({q})")
    return 0 if stored == n_points else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--batch", type=int, default=1000)
    parser.add_argument("--read-batch", type=int, default=5000)
    parser.add_argument("--dir", type=Path, default=None, help="where to put the spool (default: a temp dir)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="stop appending (replaying) after this long")
    parser.add_argument("--influx", action="store_true", help="replay a backlog into a real influxd")
    parser.add_argument("--sqlite", action="store_true", help="as --influx, into a SQLite file")
    parser.add_argument("--components", type=int, default=10_000, help="--influx: components in the backlog")
    parser.add_argument("--interval", type=int, default=10, help="--influx: seconds between a component's runs")
    parser.add_argument("--backlog-s", type=float, default=3600.0, help="--influx: seconds of backlog")
    parser.add_argument("--drain-batch", type=int, default=DRAIN_BATCH, help="--influx: points per write")
    parser.add_argument("--in-flight", type=int, default=DRAIN_IN_FLIGHT, help="--influx: batches sent, not acked")
    args = parser.parse_args(argv)

    root = Path(tempfile.mkdtemp(prefix="slawatch-bench-", dir=args.dir))
    if args.influx or args.sqlite:
        try:
            return asyncio.run(replay_into_store(args, root))
        finally:
            shutil.rmtree(root, ignore_errors=True)
    refs = [ComponentRef(f"sip-trunk-{i:04d}", "sip", ("base", "silver", "gold", "platinum")[i % 4], f"cust-{i % 97}")
            for i in range(2000)]
    try:
        sp = Spool(root / "spool", 4 << 30)
        batches = [make_batch(i, args.batch, refs) for i in range(0, min(args.samples, 100 * args.batch), args.batch)]
        appended = 0
        t0 = time.perf_counter()
        while appended < args.samples and time.perf_counter() - t0 < args.max_seconds:
            sp.append(batches[(appended // args.batch) % len(batches)])
            appended += args.batch
        append_s = time.perf_counter() - t0
        size = sp.bytes
        sp.close()

        t0 = time.perf_counter()
        sp = Spool(root / "spool", 4 << 30)  # includes the open scan (CRC check of every record)
        open_s = time.perf_counter() - t0
        replayed = 0
        t0 = time.perf_counter()
        while True:
            batch = sp.read("store", args.read_batch)
            if not batch.points:
                break
            replayed += len(batch.points)
            sp.ack("store", batch)
        replay_s = time.perf_counter() - t0
        sp.close()
    finally:
        shutil.rmtree(root, ignore_errors=True)

    print(f"append: {appended:,} samples in {args.batch}-point batches, fdatasync each: "
          f"{append_s:.2f} s = {appended / append_s:,.0f} points/s")
    print(f"open scan of {size / 1e6:.1f} MB: {open_s:.2f} s")
    print(f"replay (read {args.read_batch} + decode + ack): {replayed:,} samples in {replay_s:.2f} s = "
          f"{replayed / replay_s:,.0f} samples/s")
    print(f"size: {size / appended:.1f} bytes/sample")
    return 0 if replayed == appended else 1


if __name__ == "__main__":
    sys.exit(main())

"""The first write after a store outage: a backlog waits in the spool while influxd is stopped for --outage seconds,
then the time from influxd's return (GET /ping 204) to the drain's first ack, with the drain's back-off as the
agent runs it (asking InfluxDB whether it is back every 0.5 s) or, with --plain-sleep, sleeping the whole back-off.

Run: .venv/bin/python -m bench.first_ack [--outage 60] [--points 20000] [--plain-sleep]
"""

from __future__ import annotations

import argparse
import asyncio
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

from agent.daemon import open_spool
from agent.drain import BACKOFF_MIN_S, Drain, back_off, next_backoff
from bench.spool import backlog_batch
from slawatch.config.settings import InfluxSettings, SpoolSettings
from slawatch.model import ComponentRef
from slawatch.store import SinkError
from slawatch.store.influxdb import InfluxSink
from slawatch.testing.influxd import start_influxd


async def run(args: argparse.Namespace, root: Path) -> int:
    influx = start_influxd(root / "influxd")
    sink = InfluxSink(InfluxSettings(url=influx.url, api="v1", database="bench_first_ack"))
    sp = open_spool(SpoolSettings(path=root / "spool", max_bytes=1 << 30), [sink])
    refs = [ComponentRef(f"c{i}", "san", "gold", "cust") for i in range(1000)]
    t0_ms = int(time.time() * 1000) - 600_000
    for start in range(0, args.points, 2000):
        sp.append(backlog_batch(start, min(2000, args.points - start), refs, 10_000, t0_ms))
    influx.stop()
    drain = Drain(sp, "influxdb", sink)
    acks: list[float] = []

    async def drain_loop() -> None:  # the agent's drain loop (agent.daemon.Agent._drain) without its metrics
        backoff = BACKOFF_MIN_S
        while True:
            try:
                moved = await drain.pump()
            except SinkError as exc:
                if args.plain_sleep:
                    await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                    backoff = next_backoff(backoff, exc)
                else:
                    back = await back_off(sink, backoff)
                    backoff = BACKOFF_MIN_S if back else next_backoff(backoff, exc)
                continue
            if not moved:
                return
            acks.append(time.monotonic())
            backoff = BACKOFF_MIN_S

    try:
        task = asyncio.create_task(drain_loop())
        await asyncio.sleep(args.outage)
        await asyncio.to_thread(influx.start)
        t_up = time.monotonic()
        await asyncio.wait_for(task, 300)
    finally:
        await drain.abandon()
        sp.close()
        await sink.close()
        influx.stop()
    print(f"{'plain sleep' if args.plain_sleep else 'asking the store'}: outage {args.outage:g} s, {args.points:,} "
          f"points waiting; first ack {acks[0] - t_up:.2f} s after influxd answered /ping, "
          f"all stored {acks[-1] - t_up:.2f} s after")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--outage", type=float, default=60.0)
    parser.add_argument("--points", type=int, default=20_000)
    parser.add_argument("--plain-sleep", action="store_true", help="the back-off without asking the store")
    args = parser.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="slawatch-bench-"))
    try:
        return asyncio.run(run(args, root))
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

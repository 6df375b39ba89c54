"""`slawatch server` over a shared store: a confirmed fault stored by an agent → the incident raised on the leader →
its notification delivered (one fault at a time), and the time for a follower to lead once the leader is SIGKILLed.

    .venv/bin/python bench/server.py [--store sqlite|postgres] [--faults 20] [--takeovers 3] [--check 2]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

from slawatch.config.loader import load
from slawatch.store import open_desk_store, open_sinks
from slawatch.testing.serverproc import ServerProcess, down, write_config
from slawatch.testing.webhook import Webhook, start_webhook

MAX_WAIT_S = 30.0


def pcts(values: list[float]) -> str:
    if not values:
        return "—"
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    p50, worst = statistics.median(ordered), ordered[-1]
    return f"p50 {p50 * 1000:7.1f} ms  p95 {p95 * 1000:7.1f} ms  max {worst * 1000:7.1f} ms"


async def until(check: object, what: str) -> None:
    deadline = time.monotonic() + MAX_WAIT_S
    while not check():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        await asyncio.sleep(0.005)


def opened(hook: Webhook, component: str) -> float | None:
    for r in hook.received:
        data = r.json().get("data", {})
        if data.get("kind") == "open" and data.get("component") == component:
            return r.at
    return None


async def leader_of(servers: list[ServerProcess]) -> ServerProcess:
    await until(lambda: any(s.has(rf"server {s.id} leads") for s in servers), "a leader")
    return next(s for s in servers if s.has(rf"server {s.id} leads"))


async def faults(cfg: Path, hook: Webhook, n: int) -> None:
    loaded = load(cfg)
    sinks = open_sinks(loaded.config.storage)
    written: dict[str, float] = {}
    try:
        for k in range(1, n + 1):
            name = f"san-{k}"
            now_ms = time.time_ns() // 1_000_000
            for sink in sinks:
                await sink.write([down(now_ms - 1_000, component=name)])
            written[name] = time.time()
            await until(lambda name=name: opened(hook, name) is not None, f"{name}'s open notification")  # type: ignore[misc]
    finally:
        for sink in sinks:
            await sink.close()
    store = open_desk_store(loaded.config.storage)
    try:
        raised = {i.ref.component: i.raised_ms / 1000 for i in await store.incidents()}
    finally:
        await store.close()
    to_raised = [raised[name] - at for name, at in written.items()]
    to_sent = [(opened(hook, name) or 0.0) - at for name, at in written.items()]
    print(f"stored change -> incident raised     ({n} faults, one at a time): {pcts(to_raised)}")
    print(f"stored change -> webhook notified    ({n} faults, one at a time): {pcts(to_sent)}")


async def takeovers(cfg: Path, rounds: int) -> None:
    servers = [ServerProcess(cfg, "srv-a"), ServerProcess(cfg, "srv-b")]
    times: list[float] = []
    try:
        for _ in range(rounds):
            leader = await leader_of(servers)
            follower = next(s for s in servers if s is not leader)
            await asyncio.to_thread(follower.wait_for, rf"^server {follower.id} serving", MAX_WAIT_S)
            mark = len(follower.lines)
            killed = time.time()
            leader.kill()
            _, record = await asyncio.to_thread(follower.wait_for, rf"^server {follower.id} leads", MAX_WAIT_S,
                                                after=mark)
            led = datetime.fromisoformat(record["ts"].replace("Z", "+00:00")).timestamp()
            times.append(led - killed)
            servers[servers.index(leader)] = ServerProcess(cfg, leader.id)
    finally:
        for s in servers:
            if s.proc.poll() is None:
                s.kill()
    print(f"leader SIGKILLed -> the other leads  ({rounds} rounds): {pcts(times)}  (each: "
          + ", ".join(f"{t:.2f}s" for t in times) + ")")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    parser.add_argument("--store", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--faults", type=int, default=20, choices=range(1, 201), metavar="1..200")
    parser.add_argument("--takeovers", type=int, default=3, choices=range(0, 11), metavar="0..10")
    parser.add_argument("--check", type=float, default=2.0, help="server.leader_check_s (0.5..60)")
    args = parser.parse_args()
    hook = await start_webhook()
    pg = None
    with tempfile.TemporaryDirectory(prefix="slawatch-bench-server-") as tmp:
        try:
            storage = ""
            if args.store == "postgres":
                from slawatch.testing.postgres import start_postgres

                pg = start_postgres()
                storage = f"postgres: {{dsn: \"{pg.create_database()}\"}}, spool: {{path: {Path(tmp) / 'spool'}}}"
            cfg = write_config(Path(tmp), hook.port, storage=storage, every="1h", check_s=args.check,
                               components=args.faults)
            print(f"store {args.store}, leader_check_s {args.check}, desk.tick_s 0.2")
            first = ServerProcess(cfg, "srv-solo")
            try:
                await asyncio.to_thread(first.wait_for, r"^server srv-solo leads", MAX_WAIT_S)
                await faults(cfg, hook, args.faults)
            finally:
                first.stop()
            if args.takeovers:
                await takeovers(cfg, args.takeovers)
        finally:
            await hook.stop()
            if pg is not None:
                pg.remove()
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

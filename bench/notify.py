"""Notification throughput: deliveries per second through `desk.channels.Channels` to a local JSON webhook (Apprise
json://), to a local SMTP server (a plain address, aiosmtplib) and to the same server through Apprise (mailto://).

The receivers (an aiohttp webhook and aiosmtpd) run in their own process, so only the sending side's CPU is counted.
Each cell runs `concurrency` deliveries at a time until `--count` are done or `--max-seconds` have passed. Run from
the repository root:

    .venv/bin/python bench/notify.py [--concurrency 1,20] [--count 2000] [--max-seconds 20] [--channels json,smtp]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from desk.channels import Channels, Message
from slawatch.config.settings import SmtpSettings

ROOT = Path(__file__).resolve().parents[1]

# Prints "WEBHOOK_PORT SMTP_PORT", then serves until stdin closes; counts what it receives, keeps nothing.
PEERS = r"""
import asyncio, sys
from aiosmtpd.controller import Controller
from slawatch.testing import free_port
from slawatch.testing.webhook import start_webhook

class Counting:
    count = 0
    async def handle_DATA(self, server, session, envelope):
        Counting.count += 1
        return "250 OK"

async def main():
    hook = await start_webhook(keep=False)
    port = free_port()
    smtpd = Controller(Counting(), hostname="127.0.0.1", port=port)
    smtpd.start()
    print(hook.port, port, flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.read)
    smtpd.stop()
    await hook.stop()
    print(hook.count, Counting.count, flush=True)

asyncio.run(main())
"""

MESSAGE = Message(
    subject="INC-2026-000123 opened: P1 sip-core-1 DOWN",
    text="sip-core-1 (acme, sip, gold) is DOWN since 10:02 UTC\nreason: SIP timeout\nrespond by 10:17 UTC\n" * 3,
    html="<p><b>sip-core-1</b> is DOWN since 10:02 UTC</p>",
    message_id="<inc-2026-000123.open.3@slawatch>",
    data={"incident": "INC-2026-000123", "component": "sip-core-1", "priority": "P1", "customer": "acme"},
)


async def cell(channels: Channels, recipient: str, concurrency: int, count: int,
               max_seconds: float) -> tuple[int, float, float, list[float], collections.Counter[str]]:
    """(deliveries, seconds, CPU seconds, latencies, failures by reason) for one recipient at one concurrency."""
    latencies: list[float] = []
    failures: collections.Counter[str] = collections.Counter()
    started, cpu0 = time.monotonic(), time.process_time()
    deadline = started + max_seconds
    issued = 0

    async def worker() -> None:
        nonlocal issued
        while issued < count and time.monotonic() < deadline:
            issued += 1
            t0 = time.monotonic()
            got = await channels.deliver(recipient, MESSAGE)
            latencies.append(time.monotonic() - t0)
            if not got.ok:
                failures[got.error[:80]] += 1

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), time.monotonic() - started, time.process_time() - cpu0, latencies, failures


def quantile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def run(args: argparse.Namespace, hook_port: int, smtp_port: int) -> None:
    recipients = {
        "json": f"json://127.0.0.1:{hook_port}/incidents",
        "smtp": "noc@acme.example",
        "mailto": f"mailto://127.0.0.1:{smtp_port}/?from=desk@provider.example&to=noc@acme.example&mode=insecure",
    }
    channels = Channels(SmtpSettings(host="127.0.0.1", port=smtp_port, **{"from": "desk@provider.example"}),
                        timeout_s=args.timeout)
    try:
        print(f"{'channel':8} {'conc':>5} {'sent':>6} {'per s':>8} {'CPU ms/each':>12} {'p50 ms':>8} {'p99 ms':>8}  "
              "failures")
        for name in args.channels.split(","):
            assert channels.check(recipients[name]) is None
            await channels.deliver(recipients[name], MESSAGE)  # warm-up: connections, plugin loading
            for concurrency in (int(c) for c in args.concurrency.split(",")):
                n, seconds, cpu, latencies, failures = await cell(channels, recipients[name], concurrency,
                                                                  args.count, args.max_seconds)
                print(f"{name:8} {concurrency:>5} {n:>6} {n / seconds:>8.0f} {1e3 * cpu / max(n, 1):>12.2f} "
                      f"{1e3 * quantile(latencies, 0.5):>8.1f} {1e3 * quantile(latencies, 0.99):>8.1f}  "
                      f"{dict(failures) or '-'}", flush=True)
    finally:
        await channels.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n", 1)[0])
    parser.add_argument("--concurrency", default="1,20", help="comma-separated (default 1,20)")
    parser.add_argument("--count", type=int, default=2000, help="deliveries per cell at most (default 2000)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="seconds per cell at most (default 20)")
    parser.add_argument("--timeout", type=float, default=10.0, help="the channels' timeout_s (default 10)")
    parser.add_argument("--channels", default="json,smtp,mailto", help="comma-separated: json, smtp, mailto")
    args = parser.parse_args()
    peers = subprocess.Popen([sys.executable, "-c", PEERS], cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True)
    assert peers.stdin is not None and peers.stdout is not None
    try:
        hook_port, smtp_port = (int(p) for p in peers.stdout.readline().split())
        asyncio.run(run(args, hook_port, smtp_port))
    finally:
        peers.stdin.close()
        received = peers.stdout.readline().split()
        peers.wait(timeout=30)
    if received:
        print(f"received: webhook {received[0]}, smtp {received[1]} (warm-ups included)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Console load on the real agent: does a crowd polling the console delay probing?

    python bench/console_load.py [--components 2000] [--interval 10] [--clients 50] [--poll 2] [--seconds 60]
                                 [--warmup 30] [--workdir DIR] [--py-spy PATH]

Starts a TCP target farm (4 loopback listeners, its own process) and the real `slawatch agent` (its own process,
SQLite store, the console on its listener) watching `--components` TCP components every `--interval` seconds; adds
an operator account; waits `--warmup` seconds (one probe interval and the console's first month-to-date figures).
Then two windows of `--seconds` each:

    before   no console client
    polling  `--clients` aiohttp client sessions, each signed in through the login form with its own cookies,
             polling /api/overview every `--poll` seconds as the overview's script does (`since` and `figures`
             from the previous answer), after one GET / each (measured apart: `opening`)

The `opening` window between them: every client loads the overview page once (spread over one poll period),
then 2 probe intervals more.

Prints per window: the agent's schedule lateness p50/p99 (from its slawatch_schedule_lateness_seconds histogram,
/metrics scraped at the window's start and end; interpolated within a bucket as PromQL's histogram_quantile does),
probe runs, the agent process's CPU, and for `during` the poll's round trip p50/p95/max, answers, errors and bytes.
Every wait is bounded; everything listens on 127.0.0.1.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, ClientTimeout, CookieJar  # noqa: E402

from slawatch.config.loader import bundled_contract  # noqa: E402
from slawatch.testing import free_port  # noqa: E402

PASSWORD = "bench console password"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
BUCKET = re.compile(r'^slawatch_schedule_lateness_seconds_bucket\{le="([^"]+)"\} ([0-9.e+]+)$', re.M)
RUNS = re.compile(r"^slawatch_probe_runs_total\{[^}]*\} ([0-9.e+]+)$", re.M)

FARM = r'''
import asyncio

async def tcp(reader, writer):
    writer.close()

async def main():
    ports = []
    for _ in range(4):
        s = await asyncio.start_server(tcp, "127.0.0.1", 0, backlog=4096)
        ports.append(s.sockets[0].getsockname()[1])
    print(" ".join(map(str, ports)), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''


def write_config(work: Path, n: int, interval: float, ports: list[int], listen: str, poll_s: float) -> Path:
    customers = 20
    lines = [f"agent: {{id: bench-agent, listen: '{listen}', heartbeat_s: 10, max_connections: 256}}",
             f"storage: {{sqlite: {{path: {work / 'store.db'}}}, spool: {{path: {work / 'spool'}}}}}",
             f"contract: {bundled_contract()}",
             f"defaults: {{interval_s: {interval:g}, timeout_s: {min(2.0, interval / 2):g}}}",
             f"console: {{refresh_s: {poll_s:g}}}",
             "customers:"]
    lines += [f"  - {{name: cust-{c:02d}, tier: {'gold' if c % 2 else 'silver'}}}" for c in range(customers)]
    lines.append("components:")
    for i in range(n):
        lines.append(f"  - {{name: comp-{i:05d}, class: network, customer: cust-{i % customers:02d}, "
                     f"probes: [{{kind: tcp, target: '127.0.0.1:{ports[i % len(ports)]}'}}]}}")
    cfg = work / "agent.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def proc_cpu_s(pid: int) -> float:
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def buckets(metrics: str) -> list[tuple[float, float]]:
    return [(float(le), float(n)) for le, n in BUCKET.findall(metrics)]


def quantile(q: float, start: list[tuple[float, float]], end: list[tuple[float, float]]) -> float | None:
    """histogram_quantile over the increase of a cumulative histogram between two scrapes."""
    inc = [(le, e - s) for (le, e), (_, s) in zip(end, start, strict=True)]
    total = inc[-1][1]
    if total <= 0:
        return None
    rank = q * total
    prev_le, prev_n = 0.0, 0.0
    for le, n in inc:
        if n >= rank:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * ((rank - prev_n) / (n - prev_n) if n > prev_n else 1.0)
        prev_le, prev_n = le, n
    return None


async def scrape(session: ClientSession, base: str) -> tuple[list[tuple[float, float]], float]:
    async with session.get(base + "/metrics") as resp:
        text = await resp.text()
    return buckets(text), sum(float(n) for n in RUNS.findall(text))


async def sign_in(base: str, session: ClientSession) -> None:
    async with session.get(base + "/login") as resp:
        token = CSRF.search(await resp.text())
    if token is None:
        raise SystemExit("no CSRF token on the login form")
    async with session.post(base + "/login", data={"name": "bench", "password": PASSWORD, "csrf": token.group(1)},
                            allow_redirects=False) as resp:
        if resp.status != 303:
            raise SystemExit(f"sign-in failed: HTTP {resp.status}")


class Poller:
    """One browser tab's worth of polling: GET / once, then /api/overview every `poll_s` with the last seq."""

    def __init__(self, base: str, session: ClientSession, poll_s: float) -> None:
        self.base, self.session, self.poll_s = base, session, poll_s
        self.times: list[float] = []
        self.errors = 0
        self.bytes = 0
        self.page_bytes = 0
        self.page_s = 0.0

    async def load(self, offset_s: float) -> None:
        """Open the overview page, as a tab does before it polls."""
        await asyncio.sleep(offset_s)  # tabs are not opened in the same millisecond
        t0 = time.perf_counter()
        async with self.session.get(self.base + "/") as resp:
            self.page_bytes = len(await resp.read())
        self.page_s = time.perf_counter() - t0

    async def run(self, until: float, offset_s: float) -> None:
        await asyncio.sleep(offset_s)
        seq, figures = -1, 0
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while loop.time() < until:
            t0 = time.perf_counter()
            try:
                async with self.session.get(self.base + "/api/overview",
                                            params={"since": str(seq), "figures": str(figures)}) as resp:
                    body = await resp.read()
                    if resp.status != 200:
                        self.errors += 1
                    else:
                        doc = json.loads(body)
                        seq, figures = doc["seq"], doc.get("figures_ms", figures)
                    self.bytes += len(body)
            except (OSError, TimeoutError):
                self.errors += 1
            self.times.append(time.perf_counter() - t0)
            next_at += self.poll_s
            await asyncio.sleep(max(0.0, next_at - loop.time()))


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


async def window(base: str, pid: int, seconds: float, pollers: list[Poller] | None, *, load: bool = False
                 ) -> dict[str, float | None]:
    """One measured window: idle for `seconds`; or the pollers opening their pages (`load`, spread over one poll
    period, then `seconds` more); or the pollers polling for `seconds`."""
    async with ClientSession(timeout=ClientTimeout(total=30)) as s:
        b0, r0 = await scrape(s, base)
        c0, t0 = proc_cpu_s(pid), time.monotonic()
        if pollers and load:
            spread = pollers[0].poll_s
            await asyncio.wait_for(asyncio.gather(*(p.load(spread * i / len(pollers))
                                                    for i, p in enumerate(pollers))), 120)
            await asyncio.sleep(seconds)
        elif pollers:
            until = asyncio.get_running_loop().time() + seconds
            spread = pollers[0].poll_s
            await asyncio.wait_for(asyncio.gather(*(p.run(until, spread * i / len(pollers))
                                                    for i, p in enumerate(pollers))), seconds + 60)
        else:
            await asyncio.sleep(seconds)
        b1, r1 = await scrape(s, base)
        c1, t1 = proc_cpu_s(pid), time.monotonic()
    return {"p50": quantile(0.5, b0, b1), "p99": quantile(0.99, b0, b1), "runs": r1 - r0,
            "cpu": (c1 - c0) / (t1 - t0)}


def fmt_s(v: float | None) -> str:
    return "—" if v is None else f"{v * 1000:.1f} ms"


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--components", type=int, default=2000)
    ap.add_argument("--interval", type=float, default=10.0)
    ap.add_argument("--clients", type=int, default=50)
    ap.add_argument("--poll", type=float, default=2.0)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--warmup", type=float, default=30.0)
    ap.add_argument("--workdir", type=Path)
    ap.add_argument("--py-spy", metavar="PATH", help="record the agent's stacks during the polling (py-spy binary)")
    args = ap.parse_args()
    if not (1 <= args.components <= 20_000 and 1 <= args.clients <= 500 and 0.5 <= args.poll <= 60
            and 5 <= args.seconds <= 600 and 0 <= args.warmup <= 600):
        ap.error("out of bounds: components 1..20000, clients 1..500, poll 0.5..60, seconds 5..600, warmup 0..600")
    work = args.workdir or Path(tempfile.mkdtemp(prefix="slawatch-console-load-"))
    work.mkdir(parents=True, exist_ok=True)
    farm = subprocess.Popen([sys.executable, "-c", FARM], stdout=subprocess.PIPE, text=True)
    agent: subprocess.Popen[bytes] | None = None
    try:
        assert farm.stdout is not None
        ports = [int(p) for p in farm.stdout.readline().split()]
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        cfg = write_config(work, args.components, args.interval, ports, f"127.0.0.1:{port}", args.poll)
        pw = work / "pw"
        pw.write_text(PASSWORD + "\n")
        subprocess.run([sys.executable, "-m", "slawatch.cli", "user", "add", "bench", "--role", "operator",
                        "--config", str(cfg), "--password-file", str(pw)], cwd=ROOT, check=True, timeout=60,
                       stdout=subprocess.DEVNULL)
        log = open(work / "agent.log", "wb")  # noqa: SIM115 - open for the agent's whole life
        agent = subprocess.Popen([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg)], cwd=ROOT,
                                 stdout=subprocess.DEVNULL, stderr=log)
        deadline = time.monotonic() + 60
        async with ClientSession(timeout=ClientTimeout(total=5)) as s:
            while True:
                try:
                    async with s.get(base + "/healthz") as resp:
                        if resp.status in (200, 503):
                            break
                except OSError:
                    pass
                if time.monotonic() > deadline or agent.poll() is not None:
                    raise SystemExit(f"the agent did not start; see {work / 'agent.log'}")
                await asyncio.sleep(0.2)
        print(f"agent up: {args.components} tcp components every {args.interval:g} s; warm-up {args.warmup:g} s",
              flush=True)
        await asyncio.sleep(args.warmup)
        before = await window(base, agent.pid, args.seconds, None)
        sessions = [ClientSession(cookie_jar=CookieJar(unsafe=True), timeout=ClientTimeout(total=30))
                    for _ in range(args.clients)]
        spy = None
        try:
            for session in sessions:  # one at a time: each sign-in is an Argon2 check
                await sign_in(base, session)
            pollers = [Poller(base, s, args.poll) for s in sessions]
            if args.py_spy is not None:
                spy = subprocess.Popen([args.py_spy, "record", "-p", str(agent.pid), "-d", f"{args.seconds:.0f}",
                                        "-r", "50", "--format", "raw", "-o", str(work / "during.txt")],
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            opening = await window(base, agent.pid, 2 * args.interval, pollers, load=True)
            during = await window(base, agent.pid, args.seconds, pollers)
        finally:
            await asyncio.gather(*(s.close() for s in sessions))
            if spy is not None:
                spy.wait(30)
                print(f"py-spy stacks of the agent while polled: {work / 'during.txt'}")
        times = [t for p in pollers for t in p.times]
        print(f"\n{args.components} components every {args.interval:g} s, {args.clients} clients polling "
              f"/api/overview every {args.poll:g} s, {args.seconds:g} s windows; 2 shared cores, clients in the "
              f"bench process\n")
        print(f"{'window':<8} {'lateness p50':>13} {'lateness p99':>13} {'probe runs':>11} {'agent CPU':>10}")
        for name, w in (("before", before), ("opening", opening), ("polling", during)):
            cpu = w["cpu"] or 0.0
            print(f"{name:<8} {fmt_s(w['p50']):>13} {fmt_s(w['p99']):>13} {w['runs'] or 0:>11.0f} {cpu:>9.0%}")
        pages = [p.page_s for p in pollers]
        print(f"\n'opening': the {args.clients} overview pages loaded within {args.poll:g} s, then "
              f"{2 * args.interval:g} s more; page load p50 {pct(pages, 0.5) * 1000:.0f} ms, max "
              f"{max(pages) * 1000:.0f} ms, {pollers[0].page_bytes / 1e6:.2f} MB each (uncompressed)")
        print(f"poll round trip: p50 {pct(times, 0.5) * 1000:.1f} ms, p95 {pct(times, 0.95) * 1000:.1f} ms, "
              f"max {max(times, default=0) * 1000:.1f} ms; {len(times)} answers "
              f"({statistics.fmean([len(p.times) for p in pollers]):.1f} per client), "
              f"{sum(p.errors for p in pollers)} errors, {sum(p.bytes for p in pollers) / 1e6:.1f} MB received")
    finally:
        if agent is not None and agent.poll() is None:
            agent.send_signal(signal.SIGTERM)
            try:
                agent.wait(30)
            except subprocess.TimeoutExpired:
                agent.kill()
        farm.kill()
        farm.wait(10)


if __name__ == "__main__":
    asyncio.run(main())

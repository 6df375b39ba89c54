"""Console overview time: the overview page of many components, rendered by the real console over HTTP.

    python bench/console.py [--components 10000] [--renders 30] [--customers 50] [--workdir DIR]
    python bench/console.py --pollers 50 [--probing 2000] [--interval 5] [--seconds 30]

Writes a month to date of history for N components into a SQLite store through the real sink (state changes with
a few outages and DEGRADED spells, one agent's heartbeats every 60 s, an hour of probe runs every 60 s for the
sparklines), starts the console (console.app.make_console) on a loopback port, lets its board read the states
and compute the month-to-date figures (timed: that is background work), signs in as an operator and then times

    GET /                 (the whole overview: every component)
    GET /?q=cust-007      (a search served by the server)
    GET /api/overview     (the poll: first answer with every component and figure, then an idle one)

Prints per request: server time per render (p50/p95, measured around the handler inside the server), the client's
round trip, bytes sent (and what gzip would make of them), and the goal (< 300 ms server time for the overview).

With --pollers N: the real agent (in this process, its console on its listener) probes --probing components (TCP,
a loopback target in another process) every --interval seconds; its schedule lateness is recorded for --seconds
with nobody on the console, then again while N browsers' worth of clients (in another process) each load the
overview once and poll it as the page's script does (every console.refresh_s). Prints lateness p50/p99 both times.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import subprocess
import sys
import tempfile
import time
import zlib
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from aiohttp import ClientSession, CookieJar, web  # noqa: E402

from console.app import make_console  # noqa: E402
from console.context import CONSOLE_KEY  # noqa: E402
from console.pages.overview import warm  # noqa: E402
from console.passwords import hash_password  # noqa: E402
from reporter.periods import month_of, month_period  # noqa: E402
from slawatch.config.loader import bundled_contract, load  # noqa: E402
from slawatch.config.settings import SqliteSettings  # noqa: E402
from slawatch.model import ComponentRef, Heartbeat, Outcome, Point, Sample, StateChange, User  # noqa: E402
from slawatch.store.sqlite import SqliteSink, SqliteSource  # noqa: E402
from slawatch.store.sqlite_desk import SqliteDeskStore  # noqa: E402
from slawatch.store.sqlite_users import SqliteUserStore  # noqa: E402
from slawatch.testing import free_port  # noqa: E402

GOAL_MS = 300.0
BATCH = 5000
CLASSES = (("sip", "gold"), ("network", "silver"), ("san", "gold"), ("power", "silver"), ("vlan", "gold"))


def write_config(work: Path, n: int, customers: int) -> Path:
    lines = [f"agent: {{id: a1, listen: '127.0.0.1:{free_port()}', heartbeat_s: 60}}",
             f"storage: {{sqlite: {{path: {work / 'store.db'}}}, spool: {{path: {work / 'spool'}}}}}",
             f"contract: {bundled_contract()}", "customers:"]
    lines += [f"  - {{name: cust-{c:03d}, tier: {'gold' if c % 2 else 'silver'}}}" for c in range(customers)]
    lines.append("components:")
    for i in range(n):
        klass, _ = CLASSES[i % len(CLASSES)]
        lines.append(f"  - {{name: comp-{i:05d}, class: {klass}, customer: cust-{i % customers:03d}, "
                     f"probes: [{{kind: tcp, target: '127.0.0.1:{1024 + i % 60000}'}}]}}")
    cfg = work / "console.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    return cfg


def history(cfg: Path, now_ms: int, seed: int) -> list[Point]:
    loaded = load(cfg)
    tz = loaded.config.report.timezone
    start = month_period(*month_of(now_ms, tz), tz).start_ms
    rnd = random.Random(seed)
    points: list[Point] = []
    for comp in loaded.config.components:
        ref = ComponentRef(comp.name, comp.klass, loaded.config.tier_of(comp) or "", comp.customer or "")
        points.append(StateChange(ref, "a1", start, True, ""))
        t = start
        for _ in range(rnd.randint(0, 4)):
            t += rnd.randint(3600_000, max(3600_001, (now_ms - t) // 3))
            if t >= now_ms - 600_000:
                break
            degraded = rnd.random() < 0.3
            points.append(StateChange(ref, "a1", t, degraded, "pool short of members" if degraded else
                                      "TCP connect refused", degraded))
            t += rnd.randint(60_000, 7200_000)
            if t >= now_ms:
                break
            points.append(StateChange(ref, "a1", t, True, ""))
        if rnd.random() < 0.01:  # a few are down right now
            points.append(StateChange(ref, "a1", now_ms - rnd.randint(60_000, 3600_000), False, "SIP 503"))
        for ts in range(now_ms - 3600_000, now_ms, 60_000):
            points.append(Sample(ref, "tcp", "tcp", "a1", ts + rnd.randint(0, 999), Outcome.UP, "",
                                 rnd.uniform(0.5, 40.0)))
    points += [Heartbeat("a1", ts, 60.0) for ts in range(start, now_ms, 60_000)]
    return points


async def write(cfg: Path, points: list[Point]) -> float:
    sink = SqliteSink(SqliteSettings(path=load(cfg).config.storage.sqlite.path))  # type: ignore[union-attr]
    t0 = time.perf_counter()
    try:
        for i in range(0, len(points), BATCH):
            await sink.write(points[i:i + BATCH])
    finally:
        await sink.close()
    return time.perf_counter() - t0


def sizes(encoding: str | None, body: bytes) -> tuple[int, int]:
    """(the page's own size, the bytes sent for it)."""
    if encoding in ("gzip", "deflate"):
        return len(zlib.decompress(body, 47)), len(body)  # 47: a zlib or a gzip header
    return len(body), len(body)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run(args: argparse.Namespace, work: Path) -> int:
    now = time.time_ns() // 1_000_000
    cfg = write_config(work, args.components, args.customers)
    points = history(cfg, now, args.seed)
    took = await write(cfg, points)
    print(f"store: {len(points)} points written in {took:.1f} s ({args.components} components)")

    loaded = load(cfg)
    storage = loaded.config.storage
    source = SqliteSource(storage.sqlite)  # type: ignore[arg-type]
    desk_store = SqliteDeskStore(storage.records_path)
    users = SqliteUserStore(storage.records_path)
    await users.add(User("ops", "operator", hash_password("bench password"), (), now, now))
    app = make_console(loaded, source, desk_store, users)
    server_ms: dict[str, list[float]] = {}
    cpu_ms: dict[str, list[float]] = {}

    @web.middleware
    async def timed(request: web.Request,
                    handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> web.StreamResponse:
        # Wall time, and this process's CPU time over the same span (the figure a loaded machine disturbs least;
        # nothing else runs in the process meanwhile: the board is stopped, the client waits).
        t0, c0 = time.perf_counter(), time.process_time()
        response = await handler(request)
        key = request.path_qs.split("&")[0]
        server_ms.setdefault(key, []).append((time.perf_counter() - t0) * 1000)
        cpu_ms.setdefault(key, []).append((time.process_time() - c0) * 1000)
        return response

    app.middlewares.insert(0, timed)
    board = app[CONSOLE_KEY].board
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    base = f"http://127.0.0.1:{port}"
    try:
        await board.stop()  # the bench drives the board itself: nothing else runs while it times
        t0 = time.perf_counter()
        await board.refresh()
        t1 = time.perf_counter()
        await board.refresh_figures()
        t2 = time.perf_counter()
        await warm(app[CONSOLE_KEY])
        t3 = time.perf_counter()
        print(f"board: states read in {(t1 - t0) * 1000:.0f} ms; month-to-date figures and sparklines in "
              f"{t2 - t1:.1f} s; rows rendered in {(t3 - t2) * 1000:.0f} ms, 200 at a time (all background work)")
        # unsafe: cookies of an IP address; no auto_decompress: `body` is what went over the wire.
        async with ClientSession(cookie_jar=CookieJar(unsafe=True), auto_decompress=False) as http:
            form = await (await http.get(base + "/login")).text()
            token = form.split('name="csrf" value="')[1].split('"')[0]
            resp = await http.post(base + "/login", data={"name": "ops", "password": "bench password",
                                                          "csrf": token}, allow_redirects=False)
            assert resp.status == 303, resp.status
            server_ms.clear()
            cpu_ms.clear()
            results: list[tuple[str, str, list[float], int, int]] = []
            for path, n in (("/", args.renders), (f"/?q=cust-{7:03d}", args.renders), ("/api/overview", 5)):
                rtts: list[float] = []
                for _ in range(n):
                    t0 = time.perf_counter()
                    r = await http.get(base + path)
                    body = await r.read()
                    rtts.append((time.perf_counter() - t0) * 1000)
                    assert r.status == 200, (path, r.status)
                results.append((path, path, rtts, *sizes(r.headers.get("Content-Encoding"), body)))
            seq = board.snapshot.seq
            idle = f"/api/overview?since={seq}&figures={board.figures_ms}"
            rtts = []
            for _ in range(args.renders):
                t0 = time.perf_counter()
                r = await http.get(base + idle)
                body = await r.read()
                rtts.append((time.perf_counter() - t0) * 1000)
            results.append(("/api/overview (idle poll)", idle.split("&")[0], rtts,
                            *sizes(r.headers.get("Content-Encoding"), body)))
        print(f"{'request':<36} {'server p50':>10} {'p95':>8} {'CPU p50':>8} {'round trip p50':>15} "
              f"{'page bytes':>11} {'bytes sent':>11}")
        verdict = 0
        for path, key, rtts, size, sent in results:
            server = server_ms[key]
            p50, p95 = pct(server, 0.5), pct(server, 0.95)
            cpu = pct(cpu_ms[key], 0.5)
            print(f"{path:<36} {p50:>8.1f}ms {p95:>6.1f}ms {cpu:>6.1f}ms {pct(rtts, 0.5):>13.1f}ms {size:>11,} "
                  f"{sent:>11,}")
            if path == "/" and p95 > GOAL_MS:
                verdict = 1
        print(f"goal: overview of {args.components} components in < {GOAL_MS:.0f} ms server time: "
              f"{'met' if verdict == 0 else 'MISSED'}")
        return verdict
    finally:
        await runner.cleanup()
        await source.close()
        await desk_store.close()
        await users.close()


TARGET = """
import asyncio
async def main():
    async def close(reader, writer):
        writer.close()
    server = await asyncio.start_server(close, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await asyncio.Event().wait()
asyncio.run(main())
"""

POLLERS = """
import asyncio, sys, time
from aiohttp import ClientSession, CookieJar
base, n, seconds, period = sys.argv[1], int(sys.argv[2]), float(sys.argv[3]), float(sys.argv[4])
async def browser(i, stats):
    async with ClientSession(cookie_jar=CookieJar(unsafe=True)) as http:
        form = await (await http.get(base + "/login")).text()
        token = form.split('name="csrf" value="')[1].split('"')[0]
        r = await http.post(base + "/login", data={"name": "ops", "password": "bench password", "csrf": token})
        page = await r.text()
        seq = page.split('data-seq="')[1].split('"')[0]
        figures = page.split('data-figures="')[1].split('"')[0]
        ready.append(i)
        if len(ready) == n:
            print("ready", flush=True)
            go.set()
        await go.wait()
        end = time.monotonic() + seconds
        await asyncio.sleep(period * i / n)  # spread out, as browsers opened at different times are
        while time.monotonic() < end:
            r = await http.get(f"{base}/api/overview?since={seq}&figures={figures}")
            doc = await r.json()
            seq, figures = doc["seq"], doc["figures_ms"]
            stats.append(r.status)
            await asyncio.sleep(period)
ready, go = [], asyncio.Event()
async def main():
    stats = []
    await asyncio.gather(*(browser(i, stats) for i in range(n)))
    print(len(stats), sum(1 for s in stats if s == 200), flush=True)
asyncio.run(main())
"""


async def pollers(args: argparse.Namespace, work: Path) -> int:
    """Schedule lateness of the real agent with its console: nobody polling, then --pollers clients."""
    from agent.daemon import Agent  # only for --pollers: the overview bench needs no agent
    from slawatch.cli.agent import build_agent, run_agent  # only for --pollers, as above

    target = subprocess.Popen([sys.executable, "-c", TARGET], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout is not None
        port = int(target.stdout.readline())
        listen = free_port()
        cfg = work / "agent.yaml"
        lines = [f"agent: {{id: bench, listen: '127.0.0.1:{listen}', heartbeat_s: 10, concurrency: 2000}}",
                 f"storage: {{sqlite: {{path: {work / 'agent.db'}}}, spool: {{path: {work / 'spool'}}}}}",
                 f"contract: {bundled_contract()}",
                 f"defaults: {{interval_s: {args.interval}, timeout_s: {min(5.0, args.interval / 2)}}}",
                 "customers: [{name: acme, tier: gold}, {name: globex, tier: silver}]", "components:"]
        lines += [f"  - {{name: c-{i:05d}, class: san, customer: {'acme' if i % 2 else 'globex'}, "
                  f"probes: [{{kind: tcp, target: '127.0.0.1:{port}'}}]}}" for i in range(args.probing)]
        cfg.write_text("\n".join(lines) + "\n")
        loaded = load(cfg)
        users = SqliteUserStore(loaded.config.storage.records_path)
        await users.add(User("ops", "operator", hash_password("bench password"), (), 1, 1))
        await users.close()
        agent: Agent = build_agent(loaded)
        lateness: list[float] = []
        observe = agent.metrics.lateness.observe

        def record(value: float) -> None:
            lateness.append(value)
            observe(value)

        agent.scheduler._on_lateness = record
        stop = asyncio.Event()
        task = asyncio.create_task(run_agent(agent, stop))
        try:
            await asyncio.sleep(args.interval + 2 * loaded.config.console.refresh_s)  # every probe ran once
            print(f"agent: {args.probing} components every {args.interval:g} s "
                  f"({args.probing / args.interval:.0f} probes/s); console refresh_s "
                  f"{loaded.config.console.refresh_s:g}")
            print(f"{'console clients':>15} {'polls':>7} {'p50 late':>9} {'p99 late':>9} {'max late':>9}")
            for n in (0, args.pollers):
                lateness.clear()
                polls = ok = 0
                if n:
                    proc = await asyncio.create_subprocess_exec(
                        sys.executable, "-c", POLLERS, f"http://127.0.0.1:{listen}", str(n), str(args.seconds),
                        str(loaded.config.console.refresh_s), stdout=asyncio.subprocess.PIPE)
                    assert proc.stdout is not None
                    assert await proc.stdout.readline() == b"ready\n"  # all signed in and the page loaded
                    lateness.clear()
                    out, _ = await proc.communicate()
                    polls, ok = map(int, out.split())
                else:
                    await asyncio.sleep(args.seconds)
                late = sorted(lateness)
                print(f"{n:>15} {polls:>7} {pct(late, 0.5) * 1000:>7.1f}ms {pct(late, 0.99) * 1000:>7.1f}ms "
                      f"{late[-1] * 1000:>7.1f}ms" + ("" if ok == polls else f"  ({polls - ok} polls failed)"))
        finally:
            stop.set()
            await task
    finally:
        target.kill()
        target.wait(5)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=10_000)
    parser.add_argument("--customers", type=int, default=50)
    parser.add_argument("--renders", type=int, default=30)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--pollers", type=int, default=0, help="measure probing lateness with this many clients")
    parser.add_argument("--probing", type=int, default=2000, help="with --pollers: components the agent probes")
    parser.add_argument("--interval", type=float, default=5.0, help="with --pollers: their probe interval (s)")
    parser.add_argument("--seconds", type=float, default=30.0, help="with --pollers: measured time per phase")
    args = parser.parse_args()
    if args.pollers:
        with tempfile.TemporaryDirectory(prefix="slawatch-bench-console-") as tmp:
            sys.exit(asyncio.run(pollers(args, Path(tmp))))
    if args.workdir is not None:
        args.workdir.mkdir(parents=True, exist_ok=True)
        sys.exit(asyncio.run(run(args, args.workdir)))
    with tempfile.TemporaryDirectory(prefix="slawatch-bench-console-") as tmp:
        sys.exit(asyncio.run(run(args, Path(tmp))))


if __name__ == "__main__":
    main()

"""Report time: a month of stored history for many components, then `slawatch report --month` end to end.

    python bench/report.py [--components 10000] [--store sqlite|influxdb|postgres|both] [--month YYYY-MM] [--seed 1]
                           [--timeout 600] [--profile | --no-profile] [--workdir DIR] [--tree DIR] [--runs 1]
                           [--workers N] [--history-months K]

Generates one calendar month (default: the last full month, inside InfluxDB's 6-month retention) of state
changes for N components (0-20 outages each, 1 min to 2 h, seen by two agents a few seconds apart) and the two
agents' heartbeats (every 60 s, with a few gaps), writes them through the real sinks (SqliteSink, InfluxSink,
PostgresSink; batches of 5 000) to SQLite and/or a fresh influxd, or a fresh PostgreSQL (fsync on), started in a temp
dir, adds a few maintenance windows through
slawatch.store's Source (timely and late notice), waits for influxd to be idle (it compacts what was written for a
while after; a report reads a store at rest), then times

    python -m slawatch.cli report --config CFG --month YYYY-MM --format json --out FILE

as a subprocess, start to exit (config load of N components included; `--workers` is passed on). Prints per store:
points written, write time, report wall time, CPU (with its worker processes'), the peak RSS of its largest process,
the peak RSS and PSS summed over its process tree (sampled every 0.2 s; PSS shares out the pages the forked workers
share with it), the load average, the goal, whether the report's
outage count matches the generated one, and the sha256 of the JSON (equal across trees: the figures did not move).
A missed goal (or --profile) reruns the report under cProfile and prints the top functions by cumulative time.

`--history-months K` writes K months of history before the report's month, as a store holds in use (the report then
reads each component's last change before the month from them).

`--workdir DIR` keeps the stores (SQLite files, the PostgreSQL cluster) and reuses a store already there for the
same --components, --month and --seed instead of generating and writing it again (100 000 components take
minutes to write). `--tree DIR` runs the report from another checkout (before/after pairs on one store).
"""

from __future__ import annotations

import argparse
import asyncio
import calendar
import contextlib
import hashlib
import io
import json
import os
import pstats
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.agent import proc_cpu_s  # noqa: E402
from reporter.periods import parse_month, previous_month  # noqa: E402
from slawatch.config.loader import bundled_contract  # noqa: E402
from slawatch.config.settings import InfluxSettings, PostgresSettings, SqliteSettings  # noqa: E402
from slawatch.model import (  # noqa: E402
    ComponentRef,
    Heartbeat,
    MaintenanceWindow,
    Point,
    StateChange,
)
from slawatch.store import Sink, Source  # noqa: E402
from slawatch.store.influxdb import InfluxSink, InfluxSource  # noqa: E402
from slawatch.store.sqlite import SqliteSink, SqliteSource  # noqa: E402
from slawatch.testing import PeerMissing  # noqa: E402
from slawatch.testing.influxd import Influxd  # noqa: E402
from slawatch.testing.postgres import PostgresServer, start_postgres  # noqa: E402

BATCH = 5000
AGENTS = ("agent-a", "agent-b")
HEARTBEAT_S = 60.0
CLASSES = ("network", "power", "sip", "load_balancer", "vlan", "san")
TIERS = ("base", "silver", "gold", "platinum")
CUSTOMERS = 100
GOAL_S = {"sqlite": 10.0, "influxdb": 30.0, "postgres": 30.0}  # a month of 10 000 components
GOAL_LARGE_S = 30.0  # a month of 100 000 components or more, from any store
LARGE = 100_000


def goal_s(store: str, components: int) -> float:
    """The report's wall-time goal for this store and size."""
    return GOAL_LARGE_S if components >= LARGE else GOAL_S[store]
HOUR_MS = 3_600_000
MINUTE_MS = 60_000


@dataclass
class History:
    points: list[Point]
    states: int
    heartbeats: int
    outages: int
    month: str
    start_ms: int
    end_ms: int


def last_full_month() -> str:
    now = datetime.now(UTC)
    year, month = (now.year, now.month - 1) if now.month > 1 else (now.year - 1, 12)
    return f"{year:04d}-{month:02d}"


def months_before(month: str, count: int) -> list[str]:
    """The `count` months before `month` (YYYY-MM), oldest first."""
    year_month = parse_month(month)
    out = []
    for _ in range(count):
        year_month = previous_month(*year_month)
        out.append(f"{year_month[0]:04d}-{year_month[1]:02d}")
    return out[::-1]


def month_bounds(month: str) -> tuple[int, int]:
    year, mon = (int(x) for x in month.split("-"))
    start = datetime(year, mon, 1, tzinfo=UTC)
    days = calendar.monthrange(year, mon)[1]
    return int(start.timestamp() * 1000), int(start.timestamp() * 1000) + days * 86_400_000


def component_name(i: int) -> str:
    return f"comp-{i:05d}"


def ref_of(i: int) -> ComponentRef:
    customer = i % CUSTOMERS
    return ComponentRef(component_name(i), CLASSES[i % len(CLASSES)], TIERS[customer % len(TIERS)],
                        f"cust-{customer:03d}")


def generate(n: int, month: str, rng: random.Random) -> History:
    """Every component up from a day before the month; k outages each, one per equal slot of the month so they
    never overlap; agent-b sees each a few seconds off agent-a. Heartbeats every 60 s with a few gaps.

    An outage is moved off the edges of a heartbeat gap: where one agent's coverage starts or stops between
    the two agents' skewed state changes, quorum rightly yields a sub-second extra outage, and then the
    reported outage count would no longer equal the generated one (the bench's check of the figures).
    """
    start_ms, end_ms = month_bounds(month)
    # Heartbeat gaps (start offset h, length h) per agent: an agent host rebooted, a network partition.
    gaps = {AGENTS[0]: [(100, 2.0), (400, 0.5)], AGENTS[1]: [(250, 6.0)]}
    cuts = {agent: [(start_ms + int(at * HOUR_MS), start_ms + int((at + length) * HOUR_MS)) for at, length in spec]
            for agent, spec in gaps.items()}
    edges = [edge for spans in cuts.values() for span in spans for edge in span]
    points: list[Point] = []
    outages = 0
    for i in range(n):
        ref = ref_of(i)
        for agent in AGENTS:
            points.append(StateChange(ref, agent, start_ms - 86_400_000 + rng.randrange(MINUTE_MS), True, ""))
        k = rng.randint(0, 20)
        outages += k
        if k == 0:
            continue
        slot = (end_ms - start_ms) // k
        for j in range(k):
            duration = rng.randint(MINUTE_MS, 2 * HOUR_MS)
            while True:
                begin = start_ms + j * slot + rng.randrange(10_000, slot - duration - 10_000)
                if not any(abs(begin - e) < 10_000 or abs(begin + duration - e) < 10_000 for e in edges):
                    break
            reason = rng.choice(("connection refused", "SIP 503 Service Unavailable", "ICMP 100 % loss",
                                 "no answer within 5s"))
            for agent in AGENTS:
                skew_down, skew_up = (0, 0) if agent == AGENTS[0] else (rng.randint(-5000, 5000),
                                                                         rng.randint(-5000, 5000))
                points.append(StateChange(ref, agent, begin + skew_down, False, reason))
                points.append(StateChange(ref, agent, begin + duration + skew_up, True, ""))
    states = len(points)
    period_ms = int(HEARTBEAT_S * 1000)
    for n_agent, agent in enumerate(AGENTS):
        ts = start_ms - 86_400_000 + n_agent * 7_000
        while ts < end_ms + HOUR_MS:
            if not any(a <= ts < b for a, b in cuts[agent]):
                points.append(Heartbeat(agent, ts, HEARTBEAT_S))
            ts += period_ms
    return History(points, states, len(points) - states, outages, month, start_ms, end_ms)


def windows(start_ms: int) -> list[MaintenanceWindow]:
    """A few maintenance windows: by class, customer and component; one announced too late (24 h < 72 h)."""
    day = 24 * HOUR_MS
    spec = [("w-san", "class", "san", 3 * day, 4 * HOUR_MS, 7 * day),
            ("w-network", "class", "network", 10 * day, 30 * MINUTE_MS, 4 * day),
            ("w-cust-007", "customer", "cust-007", 15 * day, 2 * HOUR_MS, 1 * day),
            ("w-comp-42", "component", component_name(42), 20 * day, HOUR_MS, 30 * day)]
    return [MaintenanceWindow(wid, scope, value, start_ms + at, start_ms + at + length,  # type: ignore[arg-type]
                         start_ms + at - notice, f"bench window {wid}", start_ms + at - notice)
            for wid, scope, value, at, length, notice in spec]


def config_text(n: int, storage: str) -> str:
    customers = "\n".join(f"  - {{name: cust-{c:03d}, tier: {TIERS[c % len(TIERS)]}}}" for c in range(CUSTOMERS))
    components = "\n".join(
        f"  - {{name: {component_name(i)}, class: {CLASSES[i % len(CLASSES)]}, customer: cust-{i % CUSTOMERS:03d}, "
        f'probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}' for i in range(n))
    return f"""agent: {{id: {AGENTS[0]}, heartbeat_s: {HEARTBEAT_S:g}}}
storage:
  {storage}
  spool: {{path: spool}}
contract: {bundled_contract()}
report: {{timezone: UTC}}
customers:
{customers}
components:
{components}
"""


async def write_store(store: str, history: History, work: Path, influx_url: str | None,
                      postgres_dsn: str | None = None, earlier: Sequence[History] = ()) -> tuple[float, str]:
    """Write every point through the store's sink (`earlier` months' first: then the month's own first states, a day
    before it, are left out), then the windows through its Source; (seconds, storage yaml)."""
    sink: Sink
    if store == "sqlite":
        path = work / "bench.db"
        sink = SqliteSink(SqliteSettings(path=path))
        source: Source = SqliteSource(SqliteSettings(path=path))
        storage = f"sqlite: {{path: {path}}}"
    elif store == "postgres":
        from slawatch.store.postgres import PostgresSink, PostgresSource  # asyncpg only for this store

        assert postgres_dsn is not None
        pg = PostgresSettings(dsn=postgres_dsn)
        sink, source = PostgresSink(pg), PostgresSource(pg)
        storage = f'postgres: {{dsn: "{postgres_dsn}"}}'
    else:
        assert influx_url is not None
        settings = InfluxSettings(url=influx_url, api="v1", database="slawatch")
        sink = InfluxSink(settings)
        source = InfluxSource(settings)
        storage = f'influxdb: {{url: "{influx_url}", api: v1, database: slawatch}}'
    t0 = time.perf_counter()
    try:
        for month in [*earlier, history]:
            points = month.points
            if earlier and month is history:  # its state a day before it is the earlier months' last, as in use
                points = [p for p in points if not (isinstance(p, StateChange) and p.ts_ms < history.start_ms)]
            for i in range(0, len(points), BATCH):
                await sink.write(points[i:i + BATCH])
    finally:
        await sink.close()
    elapsed = time.perf_counter() - t0
    if sink.bad_points:
        raise SystemExit(f"{store}: the store refused {sink.bad_points} points")
    try:
        for w in windows(history.start_ms):
            await source.add_window(w)
    finally:
        await source.close()
    return elapsed, storage


def wait_idle(pid: int, *, share: float = 0.05, window_s: float = 2.0, limit_s: float = 120.0) -> tuple[float, bool]:
    """Wait until process `pid` uses less than `share` of a core over `window_s`, at most `limit_s`: influxd compacts
    what was just written for a while after, and a report is timed on a store at rest, as it is a month on. (seconds
    waited, whether it was still busy)."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < limit_s:
        before = proc_cpu_s(pid)
        time.sleep(window_s)
        if proc_cpu_s(pid) - before < share * window_s:
            return time.monotonic() - t0, False
    return time.monotonic() - t0, True


def _tree(pid: int) -> list[int]:
    """`pid` and its descendants (the report's worker processes)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        with contextlib.suppress(OSError):
            for task in os.listdir(f"/proc/{p}/task"):
                todo += [int(c) for c in Path(f"/proc/{p}/task/{task}/children").read_text().split()]
    return out


def _tree_memory(pid: int) -> tuple[float, float, float]:
    """(RSS, PSS) summed over the process tree, and the largest process's peak RSS (VmHWM), MiB. PSS counts a page the
    forked workers share with the report's process once, shared out between them. (The report's rusage would not
    do for the peak: the kernel records the RSS of the forked bench process it was exec'd from, after the bench has
    read a report of 100 000 components.)"""
    rss = pss = hwm = 0
    for p in _tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/smaps_rollup").read_text().splitlines():
                if line.startswith("Rss:"):
                    rss += int(line.split()[1])
                elif line.startswith("Pss:"):
                    pss += int(line.split()[1])
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmHWM:"):
                    hwm = max(hwm, int(line.split()[1]))
    return rss / 1024, pss / 1024, hwm / 1024


def run_report(cfg: Path, month: str, out: Path, timeout_s: float, profile: Path | None = None, *,
               tree: Path = ROOT, workers: int | None = None) -> tuple[float, float, float, float, float]:
    """Run `slawatch report` as a child (from `tree`); (wall seconds, CPU seconds of it and its workers, peak RSS MiB
    of the largest of them (VmHWM), peak RSS and PSS MiB of the whole process tree; sampled every 0.2 s)."""
    pre = ["-m", "cProfile", "-o", str(profile)] if profile is not None else []
    cmd = [sys.executable, *pre, "-m", "slawatch.cli", "report", "--config", str(cfg), "--month", month,
           "--format", "json", "--out", str(out), *(["--workers", str(workers)] if workers is not None else [])]
    err_path = out.with_suffix(".stderr")
    peak = [0.0, 0.0, 0.0]
    with err_path.open("wb") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=tree, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
        timer = threading.Timer(timeout_s, proc.kill)
        timer.start()
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.2):
                for i, mib in enumerate(_tree_memory(proc.pid)):
                    peak[i] = max(peak[i], mib)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            # wait4: this child's own rusage, with that of its children it waited for (the workers'): CPU summed.
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
            stop.set()
            sampler.join()
        wall = time.perf_counter() - t0
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"report exited {proc.returncode} (killed after {timeout_s:g} s?): "
                         f"{err_path.read_text(errors='replace')[-3000:]}")
    return wall, usage.ru_utime + usage.ru_stime, peak[2], peak[0], peak[1]


PHASES = r'''
import asyncio, json, sys, time
from reporter.periods import month_period
from reporter.render import render
from reporter.report import build_report
from slawatch.config.loader import load
from slawatch.store import open_source

class Read:
    """The store's answers, read once: build_report over it times the engine (and the report's assembly) alone."""
    def __init__(self, changes, heartbeats, windows):
        self._c, self._h, self._w = {}, heartbeats, windows
        for c in changes:
            self._c.setdefault(c.ref.component, []).append(c)
    async def changes(self, start_ms, end_ms, components=None):
        return [c for name in sorted(components or self._c) for c in self._c.get(name, ())]
    async def heartbeats(self, start_ms, end_ms): return self._h
    async def windows(self, start_ms=None, end_ms=None): return self._w

async def main(cfg, month):
    out = {}
    t = time.perf_counter(); loaded = load(cfg); out["config load"] = time.perf_counter() - t
    year, mon = (int(x) for x in month.split("-"))
    period = month_period(year, mon, loaded.config.report.timezone)
    source = open_source(loaded.config.storage)
    try:
        names = [c.name for c in loaded.config.components]
        t = time.perf_counter(); changes = await source.changes(period.start_ms, period.end_ms, names)
        out["change reading"] = time.perf_counter() - t
        t = time.perf_counter(); beats = await source.heartbeats(period.start_ms, period.end_ms)
        windows = await source.windows(period.start_ms, period.end_ms)
        out["heartbeats and windows"] = time.perf_counter() - t
    finally:
        await source.close()
    t = time.perf_counter()
    report = await build_report(loaded, Read(changes, beats, windows), period, month=(year, mon), incidents=[])
    out["engine and assembly"] = time.perf_counter() - t
    t = time.perf_counter(); render(report, "json"); out["JSON rendering"] = time.perf_counter() - t
    print(json.dumps(out))

asyncio.run(main(sys.argv[1], sys.argv[2]))
'''


def phases(cfg: Path, month: str, timeout_s: float, tree: Path = ROOT) -> dict[str, float]:
    """Each phase of the report timed apart, in a child process of its own (the same code the report runs)."""
    proc = subprocess.run([sys.executable, "-c", PHASES, str(cfg), month], cwd=tree, capture_output=True, text=True,
                          timeout=timeout_s)
    if proc.returncode != 0:
        raise SystemExit(f"phases exited {proc.returncode}: {proc.stderr[-3000:]}")
    return json.loads(proc.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def top_cumulative(profile: Path, n: int = 25) -> str:
    buf = io.StringIO()
    pstats.Stats(str(profile), stream=buf).sort_stats("cumulative").print_stats(n)
    return buf.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, default=10000)
    parser.add_argument("--store", choices=("sqlite", "influxdb", "postgres", "both"), default="both",
                        help="both: sqlite and influxdb")
    parser.add_argument("--month", default=last_full_month(), help="YYYY-MM (default: the last full month)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=600.0, help="kill a report running longer (s)")
    parser.add_argument("--profile", action="store_true", help="profile the report even when the goal is met")
    parser.add_argument("--no-profile", action="store_true", help="do not profile the report even when the goal is "
                        "missed")
    parser.add_argument("--skip-phases", action="store_true", help="do not time config load, change reading, "
                        "the engine and rendering apart")
    parser.add_argument("--workdir", type=Path, help="keep stores, configs, reports and profiles here, and reuse a "
                        "store already there for the same --components, --month and --seed (default: a temp dir, "
                        "removed)")
    parser.add_argument("--tree", type=Path, default=ROOT, help="run the report from this source tree (a checkout of "
                        "another commit, for before/after pairs on one store)")
    parser.add_argument("--runs", type=int, default=1, help="report runs per store (each one printed)")
    parser.add_argument("--workers", type=int, help="the report's --workers (default: its own, one per core)")
    parser.add_argument("--history-months", type=int, default=0, help="store as many months of history before the "
                        "report's month (generated alike, without maintenance windows), as a store holds in use; "
                        "InfluxDB keeps 180 days")
    args = parser.parse_args()
    stores = ("sqlite", "influxdb") if args.store == "both" else (args.store,)
    tree = args.tree.resolve()
    key = {"components": args.components, "month": args.month, "seed": args.seed}
    if args.history_months:
        key["history_months"] = args.history_months

    rows = []
    profiles: dict[str, str] = {}
    split: dict[str, dict[str, float]] = {}
    history: History | None = None
    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True, exist_ok=True)
            work = args.workdir.resolve()
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slawatch-bench-report-")))
        influxd = None
        postgres: PostgresServer | None = None
        try:
            if "postgres" in stores:
                try:
                    postgres = kept_postgres(work) if args.workdir is not None else start_postgres(durable=True)
                except PeerMissing as exc:
                    sys.exit(exc.reason)
            for store in stores:
                store_dir = work / store
                cfg = store_dir / "slawatch.yaml"
                kept = store_dir / "history.json"
                meta = json.loads(kept.read_text()) if kept.exists() else None
                if meta is not None and meta["key"] == key and store != "influxdb":
                    print(f"{store}: reusing the store in {store_dir} ({meta['points']:,} points, "
                          f"{meta['outages']:,} outages)", flush=True)
                else:
                    if history is None:
                        t0 = time.perf_counter()
                        history = generate(args.components, args.month, random.Random(args.seed))
                        print(f"generated {len(history.points):,} points for {args.components:,} components in "
                              f"{args.month} ({history.states:,} state changes, {history.heartbeats:,} heartbeats, "
                              f"{history.outages:,} outages) in {time.perf_counter() - t0:.1f} s", flush=True)
                    if store_dir.exists():
                        shutil.rmtree(store_dir)
                    store_dir.mkdir()
                    if store == "influxdb" and influxd is None:
                        binary = shutil.which("influxd")
                        if binary is None:
                            sys.exit("influxd not found (apt-get install -y influxdb)")
                        influxd = Influxd(binary=binary, dir=work / "influx")
                        influxd.start()
                    dsn = None
                    if postgres is not None and store == "postgres":
                        with contextlib.suppress(Exception):
                            postgres.execute("DROP DATABASE IF EXISTS slawatch")
                        dsn = postgres.create_database("slawatch")
                    earlier = [generate(args.components, m, random.Random(args.seed + args.history_months - k))
                               for k, m in enumerate(months_before(args.month, args.history_months))]
                    write_s, storage = asyncio.run(write_store(
                        store, history, store_dir, influxd.url if influxd else None, dsn, earlier))
                    del earlier
                    if postgres is not None and store == "postgres":
                        postgres.execute("VACUUM ANALYZE", "slawatch")
                    if influxd is not None and influxd.proc is not None and store == "influxdb":
                        waited, busy = wait_idle(influxd.proc.pid)
                        print(f"influxd {'still busy' if busy else 'idle'} {waited:.0f} s after the write (it compacts "
                              "what was written)", flush=True)
                    cfg.write_text(config_text(args.components, storage))
                    meta = {"key": key, "points": len(history.points), "outages": history.outages,
                            "write_s": write_s}
                    kept.write_text(json.dumps(meta))
                for run in range(args.runs):
                    out = store_dir / "report.json"
                    wall, cpu, rss, tree_rss, tree_pss = run_report(cfg, args.month, out, args.timeout, tree=tree,
                                                                    workers=args.workers)
                    reported, n_components, digest = report_figures(out)
                    goal = goal_s(store, args.components)
                    assert n_components == args.components, n_components
                    load = os.getloadavg()
                    rows.append((store, meta["points"], meta["write_s"], wall, cpu, rss, tree_rss, tree_pss,
                                 goal, reported, meta["outages"], digest, load))
                    print(f"{store} run {run + 1}: report in {wall:.1f} s wall, {cpu:.1f} s CPU, {rss:.0f} MiB "
                          f"(its process tree: RSS {tree_rss:.0f} MiB, PSS {tree_pss:.0f} MiB), JSON sha256 "
                          f"{digest[:16]} (load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f})", flush=True)
                if not args.skip_phases:
                    split[store] = phases(cfg, args.month, args.timeout, tree)
                    print(f"{store} phases: " + ", ".join(f"{n} {t:.2f} s" for n, t in split[store].items()),
                          flush=True)
                if args.profile or (args.runs and rows[-1][3] >= rows[-1][8] and not args.no_profile):
                    prof = store_dir / "report.prof"
                    # cProfile sees the report's own process: the slices are computed there (--workers 1).
                    run_report(cfg, args.month, store_dir / "report-profiled.json", args.timeout, prof, tree=tree,
                               workers=1)
                    profiles[store] = top_cumulative(prof)
        finally:
            if influxd is not None:
                influxd.stop()
            if postgres is not None:
                if args.workdir is not None:
                    postgres.stop()
                else:
                    postgres.remove()

    print()
    print(f"{args.components:,} components, month {args.month}, tree {tree}")
    print()
    print("| store | points written | write time | report wall time | CPU | peak RSS, largest process "
          "| peak RSS / PSS, all processes | goal | outages reported | JSON sha256 | load average |")
    print("|---|---:|---:|---:|---:|---:|---:|---|---|---|---|")
    for store, points, write_s, wall, cpu, rss, tree_rss, tree_pss, goal, reported, generated, digest, load in rows:
        verdict = "met" if wall < goal else "MISSED"
        check = "= generated" if reported == generated else f"MISMATCH: {reported - generated:+,}"
        print(f"| {store} | {points:,} | {write_s:.1f} s | {wall:.1f} s | {cpu:.1f} s | {rss:.0f} MiB "
              f"| {tree_rss:.0f} / {tree_pss:.0f} MiB | < {goal:g} s: {verdict} | {reported:,} ({check}) "
              f"| {digest[:16]} | {load[0]:.2f} {load[1]:.2f} {load[2]:.2f} |")
    for store, times in split.items():
        print(f"\n{store}, each phase apart (a second run, in-process): "
              + ", ".join(f"{name} {took:.2f} s" for name, took in times.items()))
    for store, text in profiles.items():
        print(f"\n--- {store}: report under cProfile, top functions by cumulative time ---\n{text}")


def kept_postgres(work: Path) -> PostgresServer:
    """A durable PostgreSQL whose cluster stays in WORK/pgcluster (reused by the next run with this --workdir)."""
    server = start_postgres(durable=True)  # a fresh one first: it checks the binaries and the user to run as
    if not (work / "pgcluster" / "data" / "PG_VERSION").exists():
        server.stop()
        shutil.move(server.dir, work / "pgcluster")
    else:
        server.remove()
    port_file = work / "pgcluster.port"  # the stores' configs name it: the same port each time
    kept = PostgresServer(bindir=server.bindir, dir=work / "pgcluster", user=server.user, durable=True)
    if port_file.exists():
        kept.port = int(port_file.read_text())
    port_file.write_text(str(kept.port))
    kept.start()
    return kept


def report_figures(out: Path) -> tuple[int, int, str]:
    """(outages reported, components reported, sha256 of the JSON) of a report file, read a piece at a time."""
    digest = hashlib.sha256()
    with out.open("rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    doc = json.loads(out.read_bytes())
    outages = sum(len(c["outages"]) for c in doc["components"])
    return outages, len(doc["components"]), digest.hexdigest()


if __name__ == "__main__":
    main()

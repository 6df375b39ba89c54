"""Several hosts at scale: 100 000 components over 10 agents sharing one PostgreSQL.

    python bench/scale.py [--parts handover,assign,write,report,console] [--components 100000] [--agents 10]
                          [--replicas 1 2] [--heartbeat 10] [--write-batches 20] [--report-components 100000]
                          [--console-components 10000 100000] [--renders 20] [--timeout 600] [--workdir DIR]

One PostgreSQL (slawatch.testing.postgres, fsync off as in the tests, pg_stat_statements loaded), a fresh database
per measurement. Parts:

handover  The agents' real share machinery (agent.members.Membership: lease renewal, lease read, rendezvous
          assignment off the event loop) against PostgresMemberStore, one process per agent, each running the rounds
          as the agent's share task does (every renew_every_s(heartbeat)), without probing. Once every agent holds its
          share, one is SIGKILLed (no leave): kill -> the first survivor that sees its lease stale (detection) and
          -> every survivor's share recomputed and all components owned `replicas` times again (hand-over); how many
          components moved. Then a new agent joins: start -> it holds its share, and -> every other agent dropped
          what it took; how many moved. Also the CPU of the survivors' recomputing round.
assign    The CPU of one share computation (agent.assign.Assigner) in this process: cold (every agent's weights),
          after a leave (weights cached) and after a join (one new agent's weights); cProfile of the cold one.
write     --agents concurrent PostgresSinks (one process each, one batch of 5 000 points at a time as the agent's
          drain writes): samples only, state changes only, mixed (4 500 samples, 499 state changes, 1 heartbeat per
          batch). Points/s, and the CPU of the PostgreSQL server's processes (/proc/PID/stat) and of the writers.
report    bench/report.py's month (two agents, 0-20 outages per component) for --report-components components written
          through PostgresSink, then `slawatch report --month` as a subprocess: wall time, peak RSS (goal < 30 s).
console   bench/console.py's overview measurement (server time per render p50/p95) with the console reading
          PostgreSQL (PostgresSource, PostgresDeskStore, PostgresUserStore) instead of SQLite.

After each part, the statements that took most of the server's time (pg_stat_statements) are printed.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import cProfile
import importlib.util
import io
import multiprocessing
import os
import pstats
import queue
import random
import signal
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.assign import Assigner, Member, live_ms, renew_every_s  # noqa: E402
from agent.members import Membership  # noqa: E402
from slawatch.config.settings import AgentSettings, PostgresSettings  # noqa: E402
from slawatch.model import ComponentRef, Heartbeat, Outcome, Point, Sample, StateChange  # noqa: E402
from slawatch.store.postgres import (  # noqa: E402
    PostgresDeskStore,
    PostgresMemberStore,
    PostgresSink,
    PostgresSource,
    PostgresUserStore,
)
from slawatch.testing.postgres import PostgresServer, start_postgres  # noqa: E402

BATCH = 5000
CLK_TCK = os.sysconf("SC_CLK_TCK")
STEADY_TIMEOUT_S = 300.0


def load_bench(name: str) -> ModuleType:
    """Another bench script as a module (bench/ is no package, and bench/console.py's name is the console's)."""
    spec = importlib.util.spec_from_file_location(f"bench_{name}", ROOT / "bench" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def name_of(i: int) -> str:
    return f"comp-{i:06d}"


def agent_name(k: int) -> str:
    return f"agent-{k:02d}"


def load_average() -> str:
    return "load average " + " ".join(Path("/proc/loadavg").read_text().split()[:3])


def pct(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


# ---------------------------------------------------------------- PostgreSQL


def start_server(workdir: Path | None) -> PostgresServer:
    """A throwaway PostgreSQL with pg_stat_statements loaded (one restart after initdb)."""
    server = start_postgres()
    try:
        server.execute("ALTER SYSTEM SET shared_preload_libraries = 'pg_stat_statements'")
        server.restart()
    except BaseException:
        server.remove()
        raise
    print(f"PostgreSQL on 127.0.0.1:{server.port} in {server.dir} (fsync off){' ' if workdir else ''}", flush=True)
    return server


def fresh_database(server: PostgresServer, name: str) -> str:
    dsn = server.create_database(name)
    server.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements", name)
    server.execute("SELECT pg_stat_statements_reset()", name)
    return dsn


def top_statements(server: PostgresServer, database: str, n: int = 6) -> str:
    """The statements that took most of the server's time since the database was made."""
    out = server.psql("SELECT round(total_exec_time::numeric / 1000, 2) || ' s', calls, rows, "
                      "round((total_exec_time / greatest(calls, 1))::numeric, 2) || ' ms/call', "
                      "left(regexp_replace(query, '\\s+', ' ', 'g'), 150) FROM pg_stat_statements "
                      f"ORDER BY total_exec_time DESC LIMIT {n}", database)
    return "\n".join(f"    {line}" for line in out.strip().splitlines())


def postgres_cpu_s(server: PostgresServer) -> float:
    """utime + stime of the postmaster and its children (backends, checkpointer, wal writer...), in seconds."""
    root = server.pid()
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2:].split()  # after "pid (comm) "
        if int(stat.parent.name) == root or int(fields[1]) == root:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


# ---------------------------------------------------------------- hand-over


def member_process(agent: str, dsn: str, components: dict[str, str | None], prebuilt: Assigner, heartbeat_s: float,
                   replicas: int, out: Any) -> None:
    """One agent's share task without probing: rounds of Membership every renew_every_s, each reported."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    asyncio.run(_member(agent, dsn, components, prebuilt, heartbeat_s, replicas, out))


async def _member(agent: str, dsn: str, components: dict[str, str | None], prebuilt: Assigner, heartbeat_s: float,
                  replicas: int, out: Any) -> None:
    settings = AgentSettings(id=agent, heartbeat_s=heartbeat_s, assign="auto", replicas=replicas)
    membership = Membership(PostgresMemberStore(PostgresSettings(dsn=dsn, pool_max=2)), settings)
    # Assigner(components) costs ~15 s of CPU at 100 000 components (its per-zone tuples grow by concatenation):
    # built once in the parent and inherited by fork, its weights still empty; set_components then keeps it.
    membership.assigner, membership._components = prebuilt, components
    membership.set_components(components)
    index = {name: i for i, name in enumerate(components)}
    every = renew_every_s(heartbeat_s)
    share: frozenset[str] | None = None
    while True:
        t0, c0 = time.time(), time.process_time()
        shares = await membership.round(len(share or ()))
        t1, c1 = time.time(), time.process_time()
        if shares is not None:
            mine = shares.shares.get(agent, frozenset())
            members = tuple(m.agent for m in shares.members)
            changed = sorted(index[x] for x in mine) if mine != share else None
            share = mine
            out.put((agent, t0, t1, c1 - c0, members, changed))
        await asyncio.sleep(every)


class Fleet:
    """The member processes and what each last reported."""

    def __init__(self, dsn: str, n: int, heartbeat_s: float, replicas: int) -> None:
        self.ctx = multiprocessing.get_context("fork")
        self.out: Any = self.ctx.Queue()
        self.dsn, self.n, self.heartbeat_s, self.replicas = dsn, n, heartbeat_s, replicas
        self.components: dict[str, str | None] = {name_of(i): None for i in range(n)}
        c0 = time.process_time()
        self.prebuilt = Assigner(self.components)
        self.init_cpu_s = time.process_time() - c0
        self.procs: dict[str, Any] = {}
        self.rounds: dict[str, list[tuple[float, float, float, tuple[str, ...]]]] = {}
        self.share: dict[str, set[int]] = {}
        self.changed_at: dict[str, float] = {}

    def start(self, agent: str) -> float:
        proc = self.ctx.Process(target=member_process, daemon=True,
                                args=(agent, self.dsn, self.components, self.prebuilt, self.heartbeat_s,
                                      self.replicas, self.out))
        t = time.time()
        proc.start()
        self.procs[agent] = proc
        return t

    def kill(self, agent: str) -> float:
        t = time.time()
        os.kill(self.procs[agent].pid, signal.SIGKILL)
        self.procs.pop(agent).join()
        return t

    def stop(self) -> None:
        for proc in self.procs.values():
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGKILL)
            proc.join()
        self.procs.clear()

    def pump(self, timeout_s: float) -> None:
        """Take the reports that came in (waiting up to timeout_s for the first)."""
        try:
            item = self.out.get(timeout=timeout_s)
        except queue.Empty:
            return
        while True:
            agent, t0, t1, cpu, members, changed = item
            self.rounds.setdefault(agent, []).append((t0, t1, cpu, members))
            if changed is not None:
                self.share[agent] = set(changed)
                self.changed_at[agent] = t1
            try:
                item = self.out.get_nowait()
            except queue.Empty:
                return

    def settled(self, live: set[str], since: float) -> bool:
        """Every live agent finished a round begun after `since` that saw exactly `live`, and every component is
        owned min(replicas, live) times among the live agents."""
        for agent in live:
            rounds = [r for r in self.rounds.get(agent, []) if r[0] > since and set(r[3]) == live]
            if not rounds:
                return False
        owned = Counter(i for agent in live for i in self.share.get(agent, ()))
        want = min(self.replicas, len(live))
        return len(owned) == self.n and all(c == want for c in owned.values())

    def first_round(self, agent: str, since: float, live: set[str]) -> tuple[float, float, float]:
        """(start, end, CPU s) of `agent`'s first round begun after `since` that saw exactly `live`."""
        return next(r[:3] for r in self.rounds[agent] if r[0] > since and set(r[3]) == live)

    def wait(self, live: set[str], since: float, limit_s: float) -> None:
        deadline = time.time() + limit_s
        while not self.settled(live, since):
            if time.time() > deadline:
                views = {a: (len(r), len(r[-1][3]), round(max(x[1] - x[0] for x in r), 1))
                         for a, r in sorted(self.rounds.items())}
                raise SystemExit(f"the shares did not settle within {limit_s:g} s; per agent (rounds, live agents "
                                 f"it saw last, its longest round in s): {views}")
            dead = [a for a, p in self.procs.items() if not p.is_alive()]
            if dead:
                raise SystemExit(f"member process {dead} exited")
            self.pump(1.0)


def handover(server: PostgresServer, args: argparse.Namespace, replicas: int) -> list[str]:
    dsn = fresh_database(server, f"handover_r{replicas}")
    fleet = Fleet(dsn, args.components, args.heartbeat, replicas)
    print(f"  Assigner({args.components:,} components) built once, inherited by the agents: {fleet.init_cpu_s:.1f} s "
          "CPU", flush=True)
    agents = [agent_name(k) for k in range(args.agents)]
    rows = []
    try:
        t_start = time.time()
        for a in agents:
            fleet.start(a)
        fleet.wait(set(agents), t_start, max(STEADY_TIMEOUT_S, 8 * args.heartbeat))
        steady = time.time() - t_start
        cold_cpu = [fleet.rounds[a][0][2] for a in agents]
        before = {a: set(s) for a, s in fleet.share.items()}
        print(f"  replicas {replicas}: {args.agents} agents hold their shares {steady:.1f} s after start "
              f"(first round CPU p50 {statistics.median(cold_cpu):.2f} s: every agent's weights); {load_average()}",
              flush=True)

        victim = agents[-1]
        t_kill = fleet.kill(victim)
        live = set(agents) - {victim}
        fleet.wait(live, t_kill, STEADY_TIMEOUT_S)
        firsts = {a: fleet.first_round(a, t_kill, live) for a in live}
        detect = min(f[0] for f in firsts.values()) - t_kill
        done = max(f[1] for f in firsts.values()) - t_kill
        moved = sum(len(fleet.share[a] - before[a]) for a in live)
        owners_changed = sum(1 for i in range(args.components)
                             if {a for a in live if i in fleet.share[a]} != {a for a in agents if i in before[a]})
        cpu = [f[2] for f in firsts.values()]
        rows.append(f"| {replicas} | leave (SIGKILL, no leave) | {detect:.1f} s | {done:.1f} s | "
                    f"{len(before[victim]):,} held by it; {moved:,} taken by the others; {owners_changed:,} changed "
                    f"owners | {statistics.median(cpu):.2f} s / {max(cpu):.2f} s |")
        print(f"  {rows[-1]}  {load_average()}", flush=True)

        before = {a: set(fleet.share[a]) for a in live}
        joiner = agent_name(args.agents)
        t_join = fleet.start(joiner)
        live |= {joiner}
        fleet.wait(live, t_join, STEADY_TIMEOUT_S)
        own = fleet.first_round(joiner, t_join, live)
        others = {a: fleet.first_round(a, t_join, live) for a in live - {joiner}}
        done = max(f[1] for f in others.values()) - t_join
        lost = sum(len(before[a] - fleet.share[a]) for a in live - {joiner})
        cpu = [f[2] for f in others.values()]
        rows.append(f"| {replicas} | join (a new agent) | its share after {own[1] - t_join:.1f} s (round CPU "
                    f"{own[2]:.2f} s) | {done:.1f} s | {len(fleet.share[joiner]):,} taken by it; {lost:,} dropped by "
                    f"the others | {statistics.median(cpu):.2f} s / {max(cpu):.2f} s |")
        print(f"  {rows[-1]}  {load_average()}", flush=True)
    finally:
        fleet.stop()
    print(top_statements(server, f"handover_r{replicas}", 3))
    return rows


# ---------------------------------------------------------------- one share computation


def assign_cpu(args: argparse.Namespace) -> list[str]:
    components = {name_of(i): None for i in range(args.components)}
    members = [Member(agent_name(k), None) for k in range(args.agents)]
    rows = []
    for replicas in args.replicas:
        assigner = Assigner(components)
        c0 = time.process_time()
        assigner.shares(members, replicas)
        cold = time.process_time() - c0
        c0 = time.process_time()
        assigner.shares(members[:-1], replicas)
        leave = time.process_time() - c0
        c0 = time.process_time()
        assigner.shares([*members[:-1], Member(agent_name(args.agents), None)], replicas)
        join = time.process_time() - c0
        rows.append(f"| {replicas} | {cold:.2f} s | {leave:.2f} s | {join:.2f} s |")
        print(f"  {rows[-1]}  {load_average()}", flush=True)
    prof = cProfile.Profile()
    prof.enable()
    Assigner(components).shares(members, args.replicas[-1])
    prof.disable()
    buf = io.StringIO()
    pstats.Stats(prof, stream=buf).sort_stats("tottime").print_stats(6)
    profile_text = buf.getvalue()
    print(f"  cold share computation (replicas {args.replicas[-1]}) under cProfile, by own time:")
    print("\n".join("    " + line for line in profile_text.strip().splitlines()[-10:]))
    return rows


# ---------------------------------------------------------------- store write rate


def batches(kind: str, agent: str, k: int, count: int, n: int) -> list[list[Point]]:
    rnd = random.Random(k)
    now = time.time_ns() // 1_000_000 - 3_600_000
    out = []
    for b in range(count):
        batch: list[Point] = []
        ts = now + b * 1000 + k
        samples, changes = {"samples": (BATCH, 0), "states": (0, BATCH), "mixed": (4500, 499)}[kind]
        for j in range(samples):
            i = (k * 7919 + b * BATCH + j) % n
            ref = ComponentRef(name_of(i), "network", "gold", f"cust-{i % 100:03d}")
            batch.append(Sample(ref, "tcp", "tcp", agent, ts, Outcome.UP, "", rnd.uniform(0.5, 40.0)))
        for j in range(changes):
            i = (k * 7919 + b * BATCH + j) % n
            ref = ComponentRef(name_of(i), "network", "gold", f"cust-{i % 100:03d}")
            up = rnd.random() < 0.5
            batch.append(StateChange(ref, agent, ts, up, "" if up else "TCP connect refused"))
        if kind == "mixed":
            batch.append(Heartbeat(agent, ts, 10.0))
        out.append(batch)
    return out


def writer_process(kind: str, k: int, dsn: str, count: int, n: int, barrier: Any, close: Any, out: Any) -> None:
    asyncio.run(_writer(kind, k, dsn, count, n, barrier, close, out))


async def _writer(kind: str, k: int, dsn: str, count: int, n: int, barrier: Any, close: Any, out: Any) -> None:
    agent = agent_name(k)
    work = batches(kind, agent, k, count, n)
    sink = PostgresSink(PostgresSettings(dsn=dsn, pool_max=2))
    try:
        await sink.write([Heartbeat(agent, 1, 10.0)])  # the pool, the schema and this month's partitions first
        await asyncio.to_thread(barrier.wait)
        t0, c0 = time.time(), time.process_time()
        for batch in work:
            await sink.write(batch)
        out.put((t0, time.time(), time.process_time() - c0, sum(len(b) for b in work)))
        await asyncio.to_thread(close.wait)
    finally:
        await sink.close()


def write_rate(server: PostgresServer, args: argparse.Namespace) -> list[str]:
    ctx = multiprocessing.get_context("fork")
    rows = []
    for kind in ("samples", "states", "mixed"):
        database = f"write_{kind}"
        dsn = fresh_database(server, database)
        barrier, close, out = ctx.Barrier(args.agents + 1), ctx.Event(), ctx.Queue()
        procs = [ctx.Process(target=writer_process, daemon=True,
                             args=(kind, k, dsn, args.write_batches, args.components, barrier, close, out))
                 for k in range(args.agents)]
        for p in procs:
            p.start()
        try:
            barrier.wait(timeout=600)
            pg0 = postgres_cpu_s(server)
            results = [out.get(timeout=900) for _ in procs]
            pg1 = postgres_cpu_s(server)
        finally:
            close.set()
            for p in procs:
                p.join(30)
        start, end = min(r[0] for r in results), max(r[1] for r in results)
        points = sum(r[3] for r in results)
        wall = end - start
        client_cpu = sum(r[2] for r in results)
        rows.append(f"| {kind} | {args.agents} × {args.write_batches} × {BATCH:,} | {wall:.1f} s | "
                    f"{points / wall:,.0f} | {(pg1 - pg0):.1f} s ({(pg1 - pg0) / wall:.2f} cores) | "
                    f"{client_cpu:.1f} s ({client_cpu / wall:.2f} cores) |")
        print(f"  {rows[-1]}  {load_average()}", flush=True)
        print(top_statements(server, database, 3))
    return rows


# ---------------------------------------------------------------- the month report


def month_report(server: PostgresServer, args: argparse.Namespace, work: Path) -> list[str]:
    report = load_bench("report")
    n = args.report_components
    month = report.last_full_month()
    t0 = time.perf_counter()
    history = report.generate(n, month, random.Random(1))
    print(f"  generated {len(history.points):,} points for {n:,} components ({history.outages:,} outages) in "
          f"{time.perf_counter() - t0:.1f} s", flush=True)
    dsn = fresh_database(server, "report")
    store_dir = work / "report"
    store_dir.mkdir()
    write_s, storage = asyncio.run(report.write_store("postgres", history, store_dir, None, dsn))
    points = len(history.points)
    print(f"  written in {write_s:.1f} s ({points / write_s:,.0f} points/s); {load_average()}", flush=True)
    server.psql("VACUUM ANALYZE", "report")
    cfg = store_dir / "slawatch.yaml"
    if args.report_pg_timeout is not None:  # the store's statement timeout (10 s by default) bounds the month's read
        storage = storage.replace("}", f", timeout_s: {args.report_pg_timeout:g}}}", 1)
    cfg.write_text(report.config_text(n, storage))
    rows = []
    for run in range(1, args.report_runs + 1):
        out = store_dir / f"report-{run}.json"
        wall, rss = report.run_report(cfg, month, out, args.timeout)
        doc = __import__("json").loads(out.read_text())
        reported = sum(len(c["outages"]) for c in doc["components"])
        check = "= generated" if reported == history.outages else f"MISMATCH {reported - history.outages:+,}"
        rows.append(f"| {n:,} | {points:,} | {write_s:.0f} s | run {run}: {wall:.1f} s | {rss:.0f} MiB | "
                    f"< 30 s: {'met' if wall < 30 else 'MISSED'} | {reported:,} ({check}) |")
        print(f"  {rows[-1]}  {load_average()}", flush=True)
        del doc
    print(top_statements(server, "report", 4))
    if args.profile:
        prof = store_dir / "report.prof"
        report.run_report(cfg, month, store_dir / "report-profiled.json", args.timeout, profile=prof)
        print(report.top_cumulative(prof, 20))
    return rows


# ---------------------------------------------------------------- the console's overview


@contextlib.contextmanager
def console_on_postgres(console: ModuleType, pg: PostgresSettings, dsn: str) -> Iterator[None]:
    """bench/console.py's run() with PostgreSQL in place of its SQLite stores: its config, writer and stores."""
    original = console.write_config, console.write, console.SqliteSource, console.SqliteDeskStore, \
        console.SqliteUserStore

    def write_config(work: Path, n: int, customers: int) -> Path:
        cfg = original[0](work, n, customers)
        lines = cfg.read_text().splitlines()
        lines[1] = f"storage: {{postgres: {{dsn: '{dsn}'}}, spool: {{path: {work / 'spool'}}}}}"
        cfg.write_text("\n".join(lines) + "\n")
        return cfg

    async def write(cfg: Path, points: list[Point]) -> float:
        sink = PostgresSink(pg)
        t0 = time.perf_counter()
        try:
            for i in range(0, len(points), BATCH):
                await sink.write(points[i:i + BATCH])
        finally:
            await sink.close()
        return time.perf_counter() - t0

    console.write_config, console.write = write_config, write
    console.SqliteSource = lambda _settings: PostgresSource(pg)
    console.SqliteDeskStore = lambda _path: PostgresDeskStore(pg)
    console.SqliteUserStore = lambda _path: PostgresUserStore(pg)
    try:
        yield
    finally:
        (console.write_config, console.write, console.SqliteSource, console.SqliteDeskStore,
         console.SqliteUserStore) = original


def console_overview(server: PostgresServer, args: argparse.Namespace, work: Path) -> None:
    console = load_bench("console")
    for n in args.console_components:
        database = f"console_{n}"
        dsn = fresh_database(server, database)
        print(f"  {n:,} components: {load_average()}", flush=True)
        ns = argparse.Namespace(components=n, customers=50, renders=args.renders, seed=1)
        dir_ = work / database
        dir_.mkdir()
        with console_on_postgres(console, PostgresSettings(dsn=dsn), dsn):
            asyncio.run(console.run(ns, dir_))
        print(f"  after: {load_average()}")
        print(top_statements(server, database, 4))


# ---------------------------------------------------------------- main


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--parts", default="handover,assign,write,report,console")
    parser.add_argument("--components", type=int, default=100_000)
    parser.add_argument("--agents", type=int, default=10)
    parser.add_argument("--replicas", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--heartbeat", type=float, default=10.0, help="the agents' heartbeat_s (hand-over)")
    parser.add_argument("--write-batches", type=int, default=20, help="batches per writer and kind")
    parser.add_argument("--report-components", type=int, default=100_000)
    parser.add_argument("--report-runs", type=int, default=2)
    parser.add_argument("--report-pg-timeout", type=float, help="storage.postgres.timeout_s of the report's config")
    parser.add_argument("--profile", action="store_true", help="also run the report under cProfile")
    parser.add_argument("--console-components", type=int, nargs="+", default=[10_000, 100_000])
    parser.add_argument("--renders", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=600.0, help="kill a report running longer (s)")
    parser.add_argument("--workdir", type=Path, help="keep configs and reports here (must not exist yet)")
    args = parser.parse_args()
    parts = args.parts.split(",")
    unknown = set(parts) - {"handover", "assign", "write", "report", "console"}
    if unknown:
        parser.error(f"unknown parts {sorted(unknown)}")

    with contextlib.ExitStack() as stack:
        if args.workdir is not None:
            args.workdir.mkdir(parents=True)
            work = args.workdir.resolve()
        else:
            work = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="slawatch-bench-scale-")))
        server = start_server(args.workdir)
        stack.callback(server.remove)
        print(f"{args.components:,} components, {args.agents} agents; {os.cpu_count()} cores; {load_average()}")
        tables: list[tuple[str, str, list[str]]] = []
        if "handover" in parts:
            print(f"\nhand-over: heartbeat_s {args.heartbeat:g} (a lease is stale {live_ms(args.heartbeat) / 1000:g} s "
                  f"after its renewal; every agent reads the leases every {renew_every_s(args.heartbeat):g} s), "
                  f"one process per agent", flush=True)
            rows = [r for replicas in args.replicas for r in handover(server, args, replicas)]
            tables.append(("hand-over", "| replicas | event | detection (kill → first survivor's round without it) | "
                           "settled (→ every share recomputed, all owned `replicas` times) | components moved | "
                           "round CPU p50 / max |\n|---|---|---|---|---|---|", rows))
        if "assign" in parts:
            print(f"\none share computation (Assigner.shares) of {args.components:,} × {args.agents}, this process",
                  flush=True)
            rows = assign_cpu(args)
            tables.append(("share CPU", "| replicas | cold (every agent's weights) | after a leave | after a join |"
                           "\n|---|---|---|---|", rows))
        if "write" in parts:
            print(f"\nstore write rate: {args.agents} PostgresSinks, one process each", flush=True)
            rows = write_rate(server, args)
            tables.append(("write rate", "| points | writers × batches × points | wall | points/s | PostgreSQL CPU | "
                           "writers' CPU |\n|---|---|---|---|---|---|", rows))
        if "report" in parts:
            print(f"\nmonth report from PostgreSQL, {args.report_components:,} components", flush=True)
            rows = month_report(server, args, work)
            tables.append(("month report", "| components | points | write | report wall | report peak RSS | goal | "
                           "outages reported |\n|---|---|---|---|---|---|---|", rows))
        if "console" in parts:
            print("\nconsole overview over PostgreSQL (bench/console.py's measurement)", flush=True)
            console_overview(server, args, work)
        print()
        for title, head, rows in tables:
            print(f"{title}:\n{head}")
            print("\n".join(rows))
            print()


if __name__ == "__main__":
    main()

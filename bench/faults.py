"""Fault scenarios against the real agent: samples probed, stored, dropped-and-counted, lost, and time to recover.

    python bench/faults.py [--scenario NAME ...] [--seconds 10] [--components 300] [--interval 1]
                           [--workdir DIR]

Each scenario runs `python -m slawatch.cli agent` (what `slawatch agent` runs) as a subprocess with a generated
config, against TCP services on 127.0.0.1 in this process, injects one fault, and prints one row:

- probed: the agent's probe-run counter (`slawatch_probe_runs_total`, summed), from its "stopped after N probe
  runs" line at exit, else from the last /metrics scrape before SIGTERM;
- stored: `slawatch_probe` rows (SQLite) or points (InfluxDB `count("up")`) in the store after the agent exited;
- dropped: every counter whose name contains `dropped`, from the last scrape (samples the agent discarded and said so);
- in flight: agent-kill only, samples probed since the last spool flush when SIGKILL came (bounded, see there);
- lost: probed - stored - dropped - in flight; "nothing lost" is lost = 0;
- recovery: from the fault's end to the first stored sample probed at or after it / to the backlog drained
  (`slawatch_spool_samples` plus any `*backlog*` / `*outbox*` gauge down to one second of probing).

Exit status 1 if any scenario lost samples, stored wrong data (a confirmed DOWN missing, state changes out of time
order, false probe failures) or did not recover by itself, 2 if a scenario could not run. Needs root (tmpfs mount)
and Debian's influxdb and faketime packages.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import math
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.daemon import FLUSH_INTERVAL_S  # noqa: E402
from slawatch.config.loader import bundled_contract  # noqa: E402
from slawatch.schema import RETENTION_POLICY  # noqa: E402
from slawatch.testing import free_port, need_binary  # noqa: E402
from slawatch.testing.influxd import Influxd  # noqa: E402

FAKETIME_LIB = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"
EMFILE_LIMIT = 1024
EMFILE_CONNECTIONS = 1100
RECOVERY_LIMIT_S = 30.0  # how long a scenario waits for the agent to store again after the fault
DRAIN_LIMIT_S = 15.0  # how long it waits for the backlog to empty before stopping the agent
STOP_LIMIT_S = 60.0
POLL_S = 0.1


# ------------------------------------------------------------ targets, store, agent process

class Targets:
    """TCP services the components probe: up (accept and close) or down (connection refused)."""

    def __init__(self, count: int = 4) -> None:
        self.ports = [free_port() for _ in range(count)]
        self.servers: list[asyncio.Server] = []

    @staticmethod
    async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def up(self) -> None:
        for port in self.ports:
            self.servers.append(await asyncio.start_server(self._handle, "127.0.0.1", port, backlog=4096))

    async def down(self) -> None:
        servers, self.servers = self.servers, []
        for server in servers:
            server.close()
        for server in servers:
            await server.wait_closed()


class Store:
    """Counts what the agent stored: SQLite file or InfluxDB database."""

    def __init__(self, sqlite: Path | None = None, influx: Influxd | None = None, database: str = "") -> None:
        self.sqlite, self.influx, self.database = sqlite, influx, database

    def yaml(self) -> str:
        if self.influx is not None:
            return f'influxdb: {{url: "{self.influx.url}", api: v1, database: {self.database}}}'
        return f'sqlite: {{path: "{self.sqlite}"}}'

    def count(self, since_ms: int | None = None, until_ms: int | None = None) -> int:
        """Probe samples stored with a timestamp in [since_ms, until_ms]."""
        if self.influx is not None:
            where = []
            if since_ms is not None:
                where.append(f"time >= {since_ms}ms")
            if until_ms is not None:
                where.append(f"time <= {until_ms}ms")
            q = (f'SELECT count("up") FROM "{self.database}"."{RETENTION_POLICY}"."slawatch_probe"'
                 + (" WHERE " + " AND ".join(where) if where else ""))
            try:
                series = self.influx.series(q, timeout_s=3)
            except RuntimeError as exc:
                if "database not found" in str(exc) or "retention policy not found" in str(exc):
                    return 0
                raise
            return int(series[0]["values"][0][1]) if series else 0
        assert self.sqlite is not None
        if not self.sqlite.exists():
            return 0
        sql = "SELECT count(*) FROM slawatch_probe WHERE ts_ms >= ? AND ts_ms <= ?"
        args = (since_ms if since_ms is not None else -(2**62), until_ms if until_ms is not None else 2**62)
        try:
            with contextlib.closing(sqlite3.connect(f"file:{self.sqlite}?mode=ro", uri=True, timeout=5)) as db:
                return int(db.execute(sql, args).fetchone()[0])
        except sqlite3.OperationalError as exc:
            if "no such table" in str(exc):
                return 0
            raise

    def rows(self, sql: str) -> list[tuple[object, ...]]:
        assert self.sqlite is not None
        with contextlib.closing(sqlite3.connect(f"file:{self.sqlite}?mode=ro", uri=True, timeout=5)) as db:
            return db.execute(sql).fetchall()


@dataclass
class Scrape:
    """One /metrics answer: sums per sample name, and every sample with its labels."""

    sums: dict[str, float]
    samples: list[tuple[str, dict[str, str], float]]

    @property
    def probed(self) -> int:
        return int(self.sums.get("slawatch_probe_runs_total", 0))

    @property
    def dropped(self) -> dict[str, int]:
        return {k: int(v) for k, v in self.sums.items() if "dropped" in k and not k.endswith("_created")}

    @property
    def pending(self) -> int:
        """Points the agent still holds for the store: spool plus any in-memory backlog it exports."""
        return int(sum(v for k, v in self.sums.items() if k == "slawatch_spool_samples"
                       or (("backlog" in k or "outbox" in k) and not k.endswith(("_total", "_created")))))

    def components_up(self) -> list[float]:
        return [v for name, _, v in self.samples if name == "slawatch_component_up"]


class AgentProc:
    """`python -m slawatch.cli agent --config CFG` as a subprocess, optionally behind a wrapper (ulimit, faketime)."""

    def __init__(self, config: Path, listen: int, log: Path, rate: float, *, wrap: list[str] | None = None,
                 env: dict[str, str] | None = None) -> None:
        self.rate = rate  # probes per second its config asks for
        self.cmd = [*(wrap or []), sys.executable, "-m", "slawatch.cli", "agent", "--config", str(config)]
        self.listen, self.log, self.env = listen, log, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_ms = 0

    def start(self) -> None:
        env = {**os.environ, **(self.env or {})}
        self.started_ms = time.time_ns() // 1_000_000
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                         stderr=subprocess.STDOUT)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _get(self, timeout_s: float) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.listen}/metrics", timeout=timeout_s) as resp:
            return str(resp.read().decode())

    async def scrape(self, timeout_s: float = 5.0) -> Scrape | None:
        """The agent's metrics, or None when it does not answer."""
        try:
            text = await asyncio.to_thread(self._get, timeout_s)
        except OSError:
            return None
        sums: dict[str, float] = {}
        samples = []
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                sums[s.name] = sums.get(s.name, 0.0) + s.value
                samples.append((s.name, dict(s.labels), s.value))
        return Scrape(sums, samples)

    async def ready(self, timeout_s: float = 30.0) -> Scrape:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"agent exited with {self.proc and self.proc.returncode}: {self.tail()}")
            scrape = await self.scrape(1.0)
            if scrape is not None:
                return scrape
            await asyncio.sleep(POLL_S)
        raise RuntimeError(f"agent /metrics did not answer within {timeout_s:g}s: {self.tail()}")

    async def stop(self) -> int | None:
        """SIGTERM and wait for the exit (the agent flushes and drains); SIGKILL after STOP_LIMIT_S."""
        if self.proc is None:
            return None
        proc = self.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            return await asyncio.to_thread(proc.wait, STOP_LIMIT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)
            return None

    def open_fds(self) -> int | None:
        """Descriptors the agent holds now (the wrappers exec, so the child's pid is the agent's)."""
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/fd")) if self.proc is not None else None
        except OSError:
            return None

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def probe_runs_at_exit(self, since: int = 0) -> int | None:
        """The count from the agent's last "stopped after N probe runs" line written after byte `since`."""
        text = self.log.read_bytes()[since:].decode(errors="replace")
        found = re.findall(r"stopped after (\d+) probe runs", text)
        return int(found[-1]) if found else None

    def tail(self, n: int = 600) -> str:
        with contextlib.suppress(OSError):
            return self.log.read_bytes()[-n:].decode(errors="replace")
        return ""


def write_config(path: Path, *, listen: int, store: Store, spool: Path, targets: Targets, components: int,
                 interval_s: float, pad: int = 0) -> None:
    """`pad` lengthens every component name by that many characters (bigger samples fill a disk sooner)."""
    suffix = "-" + "x" * pad if pad else ""
    lines = [f"  - {{name: fault-{i:05d}{suffix}, class: san, tier: gold, probes: [{{kind: tcp, target: "
             f'"127.0.0.1:{targets.ports[i % len(targets.ports)]}"}}]}}' for i in range(components)]
    path.write_text(f"""\
agent: {{id: faults, listen: "127.0.0.1:{listen}", heartbeat_s: 1}}
storage:
  {store.yaml()}
  spool: {{path: "{spool}", max_bytes: 1GiB}}
contract: {bundled_contract()}
defaults: {{interval_s: {interval_s:g}, timeout_s: {min(interval_s * 0.8, 2.0):g}, confirm: {{down: 2, up: 1}}}}
components:
""" + "\n".join(lines) + "\n")


# ------------------------------------------------------------ one scenario's measurements

@dataclass
class Row:
    name: str
    probed: int = 0
    stored: int = 0
    dropped: int = 0
    in_flight: int = 0  # agent-kill only: probed since the last spool flush before SIGKILL (bounded)
    first_s: float | None = None
    drained_s: float | None = None
    notes: list[str] = field(default_factory=list)
    bad: list[str] = field(default_factory=list)  # integrity failures other than lost samples
    error: str = ""

    @property
    def lost(self) -> int:
        return self.probed - self.stored - self.dropped - self.in_flight

    @property
    def ok(self) -> bool:
        return not self.error and self.lost <= 0 and not self.bad


@dataclass
class Ctx:
    args: argparse.Namespace
    work: Path
    targets: Targets

    @property
    def rate(self) -> float:
        """Probes per second the configuration asks for."""
        return float(self.args.components / self.args.interval)


def phase(ctx: Ctx, factor: float = 1.0) -> float:
    return float(ctx.args.seconds * factor)


async def recover(row: Row, agent: AgentProc, store: Store, fault_end_ms: int, t_end: float,
                  limit_s: float = RECOVERY_LIMIT_S) -> None:
    """Time from the fault's end to the first sample probed at/after it in the store, and to an empty backlog."""
    deadline = t_end + limit_s
    while time.monotonic() < deadline and (row.first_s is None or row.drained_s is None):
        if row.first_s is None:
            with contextlib.suppress(OSError, RuntimeError):  # a store just back may still refuse queries
                if await asyncio.to_thread(store.count, fault_end_ms) > 0:
                    row.first_s = time.monotonic() - t_end
        if row.first_s is not None and row.drained_s is None:
            scrape = await agent.scrape(2.0)
            if scrape is not None and scrape.pending <= steady(agent.rate):
                row.drained_s = time.monotonic() - t_end
        if not agent.alive():
            row.bad.append("agent died")
            return
        await asyncio.sleep(POLL_S)


async def finish(row: Row, agent: AgentProc, store: Store, *, log_from: int = 0,
                 probed_before: int = 0, dropped_before: int = 0) -> Scrape | None:
    """Wait (bounded) for the backlog to empty, scrape, SIGTERM, wait for the exit, count the store."""
    deadline = time.monotonic() + DRAIN_LIMIT_S
    last = await agent.scrape()
    while last is not None and last.pending > steady(agent.rate) and time.monotonic() < deadline:
        await asyncio.sleep(0.2)
        last = await agent.scrape() or last
    if last is not None and last.pending > steady(agent.rate):
        row.notes.append(f"{last.pending} points still pending at stop")
    rc = await agent.stop()
    if rc != 0:
        row.notes.append(f"agent exit status {rc}")
    at_exit = agent.probe_runs_at_exit(log_from)
    if at_exit is None and last is None:
        row.error = "no probe count: /metrics did not answer and no exit line"
        return None
    row.probed = probed_before + (at_exit if at_exit is not None else last.probed if last else 0)
    dropped = last.dropped if last is not None else {}
    row.dropped = dropped_before + sum(dropped.values())
    if any(dropped.values()):
        row.notes.append("dropped: " + ", ".join(f"{k} {v}" for k, v in dropped.items() if v))
    row.stored = await asyncio.to_thread(store.count)
    return last


def steady(rate: float) -> int:
    """Points pending in normal operation on a shared machine: up to a second of probing between flush and ack."""
    return max(100, math.ceil(rate))


def log_facts(agent: AgentProc) -> list[str]:
    """What the agent's log says about the fault, in few words."""
    data = agent.log.read_bytes()
    text = data.decode(errors="replace")
    facts = [f"log {len(data) / 1e6:.1f} MB" if len(data) > 1e6 else f"log {len(data) / 1e3:.0f} kB"]
    for needle in ("Task exception was never retrieved", "Too many open files", "Traceback"):
        if (n := text.count(needle)):
            facts.append(f"{n}x {needle!r}")
    return facts


def scenario_dir(ctx: Ctx, name: str) -> Path:
    d = ctx.work / name
    d.mkdir(parents=True, exist_ok=True)
    return d


# ------------------------------------------------------------ the scenarios

async def influx_scenario(ctx: Ctx, row: Row, fault: Callable[[Influxd, AgentProc, Store], Awaitable[None]],
                          spool: Path | None = None, interval_s: float | None = None, pad: int = 0) -> None:
    """A run against InfluxDB with `fault` between a warm-up and the end; `fault` sets row.first_s/drained_s."""
    d = scenario_dir(ctx, row.name)
    influx = Influxd(binary=need_binary("influxd", "influxdb"), dir=d / "influx")
    influx.start()
    store = Store(influx=influx, database=f"faults_{row.name.replace('-', '_')}")
    listen = free_port()
    cfg = d / "agent.yaml"
    interval_s = interval_s or ctx.args.interval
    write_config(cfg, listen=listen, store=store, spool=spool or d / "spool", targets=ctx.targets,
                 components=ctx.args.components, interval_s=interval_s, pad=pad)
    agent = AgentProc(cfg, listen, d / "agent.log", ctx.args.components / interval_s)
    try:
        agent.start()
        await agent.ready()
        await asyncio.sleep(phase(ctx))
        await fault(influx, agent, store)
        await asyncio.sleep(phase(ctx))
        await finish(row, agent, store)
        row.notes.extend(log_facts(agent))
    finally:
        agent.kill()
        influx.stop()


async def store_kill(ctx: Ctx, row: Row) -> None:
    async def fault(influx: Influxd, agent: AgentProc, store: Store) -> None:
        influx.kill()
        await asyncio.sleep(phase(ctx))
        await asyncio.to_thread(influx.start)
        end_ms, t_end = time.time_ns() // 1_000_000, time.monotonic()
        await recover(row, agent, store, end_ms, t_end)

    row.notes.append(f"influxd SIGKILLed for {phase(ctx):g}s")
    await influx_scenario(ctx, row, fault)


async def store_stall(ctx: Ctx, row: Row) -> None:
    async def fault(influx: Influxd, agent: AgentProc, store: Store) -> None:
        influx.send_signal(signal.SIGSTOP)
        await asyncio.sleep(phase(ctx))
        influx.send_signal(signal.SIGCONT)
        end_ms, t_end = time.time_ns() // 1_000_000, time.monotonic()
        await recover(row, agent, store, end_ms, t_end)

    row.notes.append(f"influxd SIGSTOPped for {phase(ctx):g}s")
    await influx_scenario(ctx, row, fault)


async def full_disk(ctx: Ctx, row: Row) -> None:
    """Spool on a 2 MB tmpfs, store down until the disk is full and then one phase more. The store comes back: the
    agent must drain the spool and resume spooling on the same small disk within a phase (+15 s of back-off);
    if it does not, that is a failure, and the disk grows to 64 MB to see whether it recovers at all. Recovery
    counts from the store's return."""
    mnt = scenario_dir(ctx, row.name) / "spool-disk"
    mnt.mkdir(exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], check=True)
    try:
        async def fault(influx: Influxd, agent: AgentProc, store: Store) -> None:
            await asyncio.to_thread(influx.stop)
            t_down = time.monotonic()
            full_at = None
            while time.monotonic() - t_down < 120:  # bounded: at the defaults the disk fills in ~20 s
                st = os.statvfs(mnt)
                scrape = await agent.scrape(2.0)
                errors = scrape.sums.get("slawatch_spool_append_errors_total", 0) if scrape else 0
                if st.f_bavail * st.f_frsize < 64 * 1024 or errors:
                    full_at = time.monotonic()
                    break
                await asyncio.sleep(0.5)
            row.notes.append("disk full after " + (f"{full_at - t_down:.0f}s" if full_at else "never (120s)"))
            await asyncio.sleep(phase(ctx))
            row.notes.append(f"store down {time.monotonic() - t_down:.0f}s")
            await asyncio.to_thread(influx.start)
            end_ms, t_end = time.time_ns() // 1_000_000, time.monotonic()
            # Once the store is back the spool drains and the 2 MB are free again: the agent must resume by itself.
            # The store's retry back-off (up to 10 s) comes on top of the phase.
            await recover(row, agent, store, end_ms, t_end, limit_s=phase(ctx) + 15)
            if row.first_s is None or row.drained_s is None:
                scrape = await agent.scrape()
                if scrape is not None:
                    pending = scrape.sums.get("slawatch_spool_samples", 0)
                    errors = scrape.sums.get("slawatch_spool_append_errors_total", 0)
                    row.notes.append(f"still on 2 MB at +{time.monotonic() - t_end:.0f}s: slawatch_spool_samples "
                                     f"{pending:.0f}, spool append errors {errors:.0f}")
                row.bad.append("did not resume on the 2 MB disk once the store was back")
                subprocess.run(["mount", "-o", "remount,size=64m", str(mnt)], check=True)
                row.notes.append(f"disk grown to 64 MB at +{time.monotonic() - t_end:.0f}s")
                await recover(row, agent, store, end_ms, t_end, limit_s=time.monotonic() - t_end + RECOVERY_LIMIT_S)
            else:
                row.notes.append("recovered on the 2 MB disk")

        # twice the probe rate and ~100 bytes more per sample, so that 2 MB fill in about 20 s at the defaults
        await influx_scenario(ctx, row, fault, spool=mnt / "spool", interval_s=ctx.args.interval / 2, pad=100)
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


async def agent_kill(ctx: Ctx, row: Row) -> None:
    """Targets go down; right after /metrics shows every component DOWN, SIGKILL; targets up; restart."""
    d = scenario_dir(ctx, row.name)
    store = Store(sqlite=d / "store.db")
    listen = free_port()
    cfg = d / "agent.yaml"
    write_config(cfg, listen=listen, store=store, spool=d / "spool", targets=ctx.targets,
                 components=ctx.args.components, interval_s=ctx.args.interval)
    agent = AgentProc(cfg, listen, d / "agent.log", ctx.rate)
    try:
        agent.start()
        await agent.ready()
        await asyncio.sleep(phase(ctx))
        log_from = agent.log.stat().st_size
        await ctx.targets.down()
        # Kill as soon as every component is confirmed DOWN: the agent's log says so first (no HTTP round trip
        # through its busy loop), /metrics (slawatch_component_up) second; then read the probe count and kill.
        deadline = time.monotonic() + max(10.0, 5 * ctx.args.interval)
        next_scrape = 0.0
        while time.monotonic() < deadline:
            text = agent.log.read_bytes()[log_from:].decode(errors="replace")
            if text.count(" is DOWN") >= ctx.args.components:
                break
            if time.monotonic() >= next_scrape:
                next_scrape = time.monotonic() + 0.5
                probe = await agent.scrape()
                ups = probe.components_up() if probe else []
                if ups and not any(ups):
                    break
            await asyncio.sleep(0.005)
        scrape_ms = time.time_ns() // 1_000_000
        before = await agent.scrape()
        agent.kill()
        kill_ms = time.time_ns() // 1_000_000
        await ctx.targets.up()
        if before is None:
            row.error = "no /metrics before the kill"
            return
        downs = round(len(before.components_up()) - sum(before.components_up()))
        logged = re.findall(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),(\d{3}) .* is DOWN",
                            agent.log.read_bytes()[log_from:].decode(errors="replace"), re.M)
        if logged:
            day, ms = logged[-1]
            last_down_ms = int(time.mktime(time.strptime(day, "%Y-%m-%d %H:%M:%S")) * 1000) + int(ms)
            row.notes.append(f"SIGKILL {kill_ms - last_down_ms} ms after the last DOWN was logged")
        log_from = agent.log.stat().st_size
        agent.start()
        end_ms, t_end = agent.started_ms, time.monotonic()
        await agent.ready()
        await recover(row, agent, store, end_ms, t_end)
        await asyncio.sleep(phase(ctx))
        await finish(row, agent, store, log_from=log_from, probed_before=before.probed,
                     dropped_before=sum(before.dropped.values()))
        # The first run's samples are those stamped up to the scrape; the second run's from its start. Those
        # probed between the scrape and the kill are in neither count.
        stored_before = store.count(until_ms=scrape_ms)
        stored_after = store.count(since_ms=end_ms)
        row.stored = stored_before + stored_after
        # Samples probed since the last spool flush die with the process: two flush intervals' worth (one
        # collecting, one being written and fsynced) and 100 ms of scheduling slack on a busy machine.
        allowance = math.ceil(ctx.rate * (2 * FLUSH_INTERVAL_S + 0.1))
        unspooled = before.probed - stored_before
        row.in_flight = max(0, min(unspooled, allowance))
        row.notes.append(f"{before.probed} probed before the kill, {stored_before} of them stored, "
                         f"{unspooled} unspooled (in flight allowed: {allowance}, 2 x {FLUSH_INTERVAL_S:g}s + 0.1s "
                         f"at {ctx.rate:g}/s)")
        stored_downs = store.rows(f"SELECT count(DISTINCT component) FROM slawatch_state "
                                  f"WHERE up = 0 AND ts_ms <= {kill_ms}")[0][0]
        row.notes.append(f"confirmed DOWN before the kill: {downs}, stored: {stored_downs}")
        if stored_downs != downs:
            row.bad.append(f"{downs - int(str(stored_downs))} confirmed DOWN state changes not stored")
        row.notes.extend(log_facts(agent))
    finally:
        agent.kill()


async def emfile(ctx: Ctx, row: Row) -> None:
    """The agent under a hard limit of 1 024 descriptors; 1 100 idle connections to its listener for a phase."""
    d = scenario_dir(ctx, row.name)
    store = Store(sqlite=d / "store.db")
    listen = free_port()
    cfg = d / "agent.yaml"
    write_config(cfg, listen=listen, store=store, spool=d / "spool", targets=ctx.targets,
                 components=ctx.args.components, interval_s=ctx.args.interval)
    wrap = ["bash", "-c", f'ulimit -n {EMFILE_LIMIT}; ulimit -Hn {EMFILE_LIMIT}; exec "$@"', "bash"]
    agent = AgentProc(cfg, listen, d / "agent.log", ctx.rate, wrap=wrap)
    conns: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
    try:
        agent.start()
        await agent.ready()
        await asyncio.sleep(phase(ctx))

        async def connect() -> None:
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(3):
                    conns.append(await asyncio.open_connection("127.0.0.1", listen))

        # In batches: a burst beyond the listen backlog completes on the client side (SYN cookies) without the
        # agent ever accepting, and would not load it at all.
        for start in range(0, EMFILE_CONNECTIONS, 50):
            await asyncio.gather(*(connect() for _ in range(start, min(start + 50, EMFILE_CONNECTIONS))))
            await asyncio.sleep(0.02)
        await asyncio.sleep(0.5)
        row.notes.append(f"agent descriptors with the connections open: {agent.open_fds()} (limit {EMFILE_LIMIT})")
        await asyncio.sleep(phase(ctx))
        closed = sum(1 for reader, _ in conns if reader.at_eof())
        row.notes.append(f"{len(conns)}/{EMFILE_CONNECTIONS} idle connections made, {closed} of them closed by the "
                         f"agent within {phase(ctx):g}s")
        for _, writer in conns:
            writer.close()
        conns.clear()
        end_ms, t_end = time.time_ns() // 1_000_000, time.monotonic()
        await recover(row, agent, store, end_ms, t_end)
        await asyncio.sleep(phase(ctx))
        last = await finish(row, agent, store)
        if last is not None:
            failed = sum(v for name, labels, v in last.samples
                         if name == "slawatch_probe_runs_total" and labels.get("outcome") != "up")
            row.notes.append(f"{failed:.0f} probes failed (targets were up throughout)")
            if failed:
                row.bad.append(f"{failed:.0f} false probe failures stored")
        row.notes.extend(log_facts(agent))
    finally:
        for _, writer in conns:
            writer.close()
        agent.kill()


async def clock_step(ctx: Ctx, row: Row) -> None:
    """Wall clock of the agent stepped back 60 s during an outage of every target, then 300 s ahead of real."""
    d = scenario_dir(ctx, row.name)
    store = Store(sqlite=d / "store.db")
    listen = free_port()
    cfg = d / "agent.yaml"
    write_config(cfg, listen=listen, store=store, spool=d / "spool", targets=ctx.targets,
                 components=ctx.args.components, interval_s=ctx.args.interval)
    clock = d / "faketime"
    clock.write_text("+0\n")
    env = {"LD_PRELOAD": FAKETIME_LIB, "FAKETIME_TIMESTAMP_FILE": str(clock), "FAKETIME_NO_CACHE": "1",
           "FAKETIME_DONT_FAKE_MONOTONIC": "1"}
    agent = AgentProc(cfg, listen, d / "agent.log", ctx.rate, env=env)

    async def wait_all(up: bool) -> None:
        deadline = time.monotonic() + max(20.0, 10 * ctx.args.interval)
        while time.monotonic() < deadline:
            scrape = await agent.scrape()
            ups = scrape.components_up() if scrape else []
            if ups and all(bool(u) == up for u in ups) and len(ups) == ctx.args.components:
                return
            await asyncio.sleep(0.1)
        row.notes.append(f"not every component {'UP' if up else 'DOWN'} within the wait")

    try:
        agent.start()
        await agent.ready()
        await wait_all(True)
        await asyncio.sleep(phase(ctx, 0.5))
        await ctx.targets.down()
        await wait_all(False)
        clock.write_text("-60\n")
        await asyncio.sleep(phase(ctx, 0.5))
        await ctx.targets.up()
        await wait_all(True)
        await asyncio.sleep(phase(ctx, 0.5))
        clock.write_text("+300\n")
        end_ms, t_end = time.time_ns() // 1_000_000, time.monotonic()
        await recover(row, agent, store, end_ms, t_end)
        await asyncio.sleep(phase(ctx, 0.5))
        await finish(row, agent, store)
        # Every target went DOWN once and came back: ordered by stored time, each component's changes must
        # alternate and end UP (a recovery stamped before its DOWN leaves the component down for good).
        changes: dict[str, list[tuple[int, int]]] = {}
        for component, ts_ms, up in store.rows("SELECT component, ts_ms, up FROM slawatch_state"):
            changes.setdefault(str(component), []).append((int(str(ts_ms)), int(str(up))))
        in_order = 0
        for seq in changes.values():
            ups = [up for _, up in sorted(seq)]
            in_order += ups[-1] == 1 and 0 in ups and all(a != b for a, b in itertools.pairwise(ups))
        row.notes.append(f"state changes in time order (DOWN before its recovery, latest UP): "
                         f"{in_order}/{len(changes)} components")
        if in_order != len(changes) or not changes:
            row.bad.append(f"{len(changes) - in_order} components with state changes out of time order")
        beats = sorted(int(str(r[0])) for r in store.rows("SELECT ts_ms FROM slawatch_heartbeat"))
        gaps = [(b - a) / 1000 for a, b in itertools.pairwise(beats)]
        if gaps:
            row.notes.append(f"largest gap between stored heartbeats {max(gaps):.1f}s (period 1s: the rest reads as "
                             f"unmonitored)")
        newest = store.rows("SELECT max(ts_ms) FROM slawatch_probe")[0][0]
        if newest is not None:
            row.notes.append(f"newest sample stamp - real clock at exit: {int(str(newest)) / 1000 - time.time():+.0f}s")
        row.notes.extend(log_facts(agent))
    finally:
        agent.kill()


SCENARIOS: dict[str, Callable[[Ctx, Row], Awaitable[None]]] = {
    "full-disk": full_disk,
    "store-kill": store_kill,
    "store-stall": store_stall,
    "agent-kill": agent_kill,
    "emfile": emfile,
    "clock-step": clock_step,
}


# ------------------------------------------------------------ output

def fmt_s(v: float | None) -> str:
    return "never" if v is None else f"{v:.1f}s"


def print_header() -> None:
    print(f"{'scenario':<12} {'probed':>8} {'stored':>8} {'dropped':>8} {'in flight':>9} {'lost':>7}  "
          f"{'1st new stored':>14} {'drained':>8}  result", flush=True)


def print_row(row: Row) -> None:
    if row.error and not row.probed:
        print(f"{row.name:<12} {'':>8} {'':>8} {'':>8} {'':>9} {'':>7}  {'':>14} {'':>8}  ERROR {row.error}")
    else:
        verdict = "nothing lost" if row.lost <= 0 else f"LOST {row.lost / max(row.probed, 1):.1%}"
        if row.bad:
            verdict += "; " + "; ".join(row.bad)
        if row.error:
            verdict += f"; ERROR {row.error}"
        print(f"{row.name:<12} {row.probed:>8} {row.stored:>8} {row.dropped:>8} {row.in_flight:>9} {row.lost:>7}  "
              f"{fmt_s(row.first_s):>14} {fmt_s(row.drained_s):>8}  {verdict}")
    for note in row.notes:
        print(f"{'':<12} {note}")
    sys.stdout.flush()


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS),
                        help="run this scenario (repeatable; default: all)")
    parser.add_argument("--seconds", type=float, default=10.0, help="length of each phase (default 10)")
    parser.add_argument("--components", type=int, default=300, help="components, one TCP probe each (default 300)")
    parser.add_argument("--interval", type=float, default=1.0, help="probe interval in seconds (default 1)")
    parser.add_argument("--workdir", type=Path, help="keep configs, logs, spools and stores here")
    args = parser.parse_args()
    names = args.scenario or list(SCENARIOS)
    if os.geteuid() != 0 and "full-disk" in names:
        parser.error("full-disk mounts a tmpfs: run as root or leave it out")
    # the emfile scenario holds 1 100 connections in this process
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, min(hard, 8192)), hard))

    tmp = None if args.workdir else tempfile.TemporaryDirectory(prefix="slawatch-faults-")
    work = args.workdir or Path(tmp.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    targets = Targets()
    await targets.up()
    print(f"{args.components} components (one TCP probe each, every {args.interval:g}s = "
          f"{args.components / args.interval:g} probes/s), phases of {args.seconds:g}s; work dir {work}")
    print("lost = probed - stored - dropped - in flight; 1st new stored / drained: from the fault's end")
    print_header()
    status = 0
    try:
        for name in names:
            row = Row(name)
            ctx = Ctx(args, work, targets)
            try:
                await SCENARIOS[name](ctx, row)
            except Exception as exc:  # one broken scenario must not hide the others' rows
                row.error = f"{type(exc).__name__}: {exc}"[:300]
            if not targets.servers:
                await targets.up()
            print_row(row)
            if row.error:
                status = max(status, 2)
            elif not row.ok:
                status = max(status, 1)
    finally:
        await targets.down()
        if tmp is not None:
            tmp.cleanup()
    return status


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

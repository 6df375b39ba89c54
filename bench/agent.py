"""Agent throughput: the real agent probing a loopback target farm, with storage writes included.

    python bench/agent.py [--components 1000 10000] [--interval 10] [--seconds 40] [--store sqlite|influxdb|none]
                          [--loop asyncio|uvloop] [--outage 60] [--vs-blackbox]
                          [--py-spy DIR]

Prints, per component count: probes/s achieved, p50/p99 schedule lateness, CPU seconds per 1 000 probes
(agent process only: the farm runs in its own process), peak RSS, and (with --store influxdb --outage S)
the store-outage catch-up: InfluxDB is stopped for S seconds under load, restarted, and the time until the
drain has stored all that was waiting (or the spool is empty) is measured, and at the end the store must hold every
sample. `--store none` runs the agent with no store and a
spool that keeps nothing: the floor of probing, state and metrics on the event loop. `--loop uvloop` runs the agent
(and this script) on uvloop, as `agent.loop: uvloop` does. With --vs-blackbox, Debian's
prometheus-blackbox-exporter and prometheus probe the same TCP and ICMP targets at the same interval and
their CPU (from /proc) per probe is printed beside the agent's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.clock import Clock  # noqa: E402
from agent.daemon import Agent  # noqa: E402
from agent.metrics import Metrics  # noqa: E402
from slawatch.cli.agent import build_agent  # noqa: E402
from slawatch.cli.usage import run_on  # noqa: E402
from slawatch.config.loader import bundled_contract, load  # noqa: E402
from slawatch.store.influxdb import RETENTION_POLICY  # noqa: E402
from slawatch.testing.influxd import Influxd  # noqa: E402

FARM = r'''
import asyncio, sys
from aiohttp import web

async def tcp(reader, writer):
    writer.close()

class Sip(asyncio.DatagramProtocol):
    def connection_made(self, t): self.t = t
    def datagram_received(self, data, addr):
        text = data.decode(errors="replace")
        head = [l for l in text.split("\r\n") if l.split(":")[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        head = [h + (";tag=farm" if h.lower().startswith("to:") and "tag=" not in h else "") for h in head]
        self.t.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(head) + "\r\nContent-Length: 0\r\n\r\n").encode(), addr)

async def main():
    loop = asyncio.get_running_loop()
    ports = []
    for _ in range(4):
        s = await asyncio.start_server(tcp, "127.0.0.1", 0, backlog=4096)
        ports.append(s.sockets[0].getsockname()[1])
    t, _ = await loop.create_datagram_endpoint(Sip, local_addr=("127.0.0.1", 0))
    sip = t.get_extra_info("sockname")[1]
    app = web.Application()
    async def ok(_): return web.Response(text="ok")
    app.router.add_get("/health", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096)
    await site.start()
    http = runner.addresses[0][1]
    print(" ".join(map(str, ports)), sip, http, flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
'''


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def icmp_target(i: int) -> str:
    return f"127.0.{(i // 250) % 250 + 1}.{i % 250 + 1}"


def probe_plan(n: int, tcp_ports: list[int], sip: int, http: int, icmp: bool,
               mix: str = "all") -> list[tuple[str, str, str, str]]:
    """(name, class, kind, target) per component. `all`: 60 % tcp, 20 % sip, 10 % http, 10 % icmp;
    `tcp_icmp` (--vs-blackbox): 90 % tcp, 10 % icmp. Without root, icmp becomes http (all) or tcp (tcp_icmp)."""
    out = []
    for i in range(n):
        r = i % 10
        if r < (9 if mix == "tcp_icmp" else 6) or (mix == "tcp_icmp" and not icmp):
            out.append((f"c{i}", "san", "tcp", f"127.0.0.1:{tcp_ports[i % len(tcp_ports)]}"))
        elif r < 8:
            out.append((f"c{i}", "sip", "sip", f"sip:127.0.0.1:{sip}"))
        elif r < 9 or not icmp:
            out.append((f"c{i}", "load_balancer", "http", f"http://127.0.0.1:{http}/health"))
        else:
            out.append((f"c{i}", "network", "icmp", icmp_target(i)))
    return out


def components_yaml(plan: list[tuple[str, str, str, str]]) -> str:
    out = []
    for name, klass, kind, target in plan:
        extra = ", count: 1" if kind == "icmp" else ""
        probe = f'{{kind: {kind}, target: "{target}"{extra}}}'
        out.append(f"  - {{name: {name}, class: {klass}, tier: gold, probes: [{probe}]}}")
    return "\n".join(out)


async def run_one(n: int, args: argparse.Namespace, farm_ports: tuple[list[int], int, int], work: Path,
                  influx: Any | None, mix: str = "all") -> dict[str, Any]:
    """Warm up one interval, measure `args.seconds`; with `influx` and `args.outage`, then take the store away."""
    tcp_ports, sip, http = farm_ports
    database = f"bench_{n}"  # one database per size, so the outage check counts this run's samples only
    store = (f'influxdb: {{url: "{influx.url}", api: v1, database: {database}}}' if influx is not None
             else f"sqlite: {{path: bench-{n}-{mix}.db}}")
    cfg = work / f"bench-{n}-{mix}.yaml"
    cfg.write_text(f"""
agent: {{id: bench, listen: "127.0.0.1:{free_port()}", heartbeat_s: 10, concurrency: 2000}}
storage:
  {store}
  spool: {{path: spool-{n}-{mix}, max_bytes: 2GiB}}
contract: {bundled_contract()}
defaults: {{interval_s: {args.interval}, timeout_s: 5, confirm: {{down: 2, up: 1}}}}
components:
{components_yaml(probe_plan(n, tcp_ports, sip, http, os.geteuid() == 0, mix))}
""")
    agent = build_agent(load(cfg)) if args.store != "none" else bare_agent(load(cfg))
    lateness: list[float] = []
    observe = agent.metrics.lateness.observe

    def record(value: float) -> None:
        lateness.append(value)
        observe(value)

    agent.scheduler._on_lateness = record
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    outage: dict[str, Any] = {}
    try:
        # warm-up: one full interval so every probe has started once, longer when the machine is so busy that it
        # has not (bounded): the first run of each component confirms its state, a commit the steady state never pays
        await asyncio.sleep(args.interval)
        warm_until = time.monotonic() + 10 * args.interval
        while agent.probe_runs < n and time.monotonic() < warm_until:
            await asyncio.sleep(0.5)
        lateness.clear()
        spy = py_spy(args, f"{n}-{mix}")
        runs0, cpu0, t0, threads0 = agent.probe_runs, time.process_time(), time.monotonic(), thread_cpu()
        await asyncio.sleep(args.seconds)
        threads1 = thread_cpu()
        if spy is not None:
            await asyncio.to_thread(spy.wait)
        runs, cpu, elapsed = agent.probe_runs - runs0, time.process_time() - cpu0, time.monotonic() - t0
        per_thread = {k: 1000 * (v - threads0.get(k, 0.0)) / max(runs, 1) for k, v in sorted(threads1.items())}
        outcomes = {k: v for k, v in _outcomes(agent).items() if v}
        lat = sorted(lateness)
        if influx is not None and args.outage:
            lateness.clear()
            outage = await store_outage(agent, influx, args.outage)
            late = sorted(lateness)
            outage["p99_ms"] = 1000 * late[int(len(late) * 0.99)] if late else 0.0
    finally:
        stop.set()
        await task
    if outage:
        assert influx is not None
        with contextlib.suppress(Exception):
            outage["left_in_spool"] = agent.spool.pending("influxdb")
        q = f'SELECT count("up") FROM "{database}"."{RETENTION_POLICY}"."slawatch_probe"'
        series = await asyncio.to_thread(influx.series, q)
        outage.update(query=q, stored=int(series[0]["values"][0][1]) if series else 0, probe_runs=agent.probe_runs)
    return {
        "components": n, "probes_s": runs / elapsed, "p50_ms": 1000 * statistics.median(lat) if lat else 0,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0, "cpu_s_per_1000": 1000 * cpu / max(runs, 1),
        "cpu_ms_per_probe": 1000 * cpu / max(runs, 1), "rss_mb": rss_mb(), "outcomes": outcomes,
        "runs": runs, "elapsed": elapsed, "cpu_s": cpu, "outage": outage, "threads": per_thread,
    }


def thread_cpu() -> dict[str, float]:
    """CPU seconds (user + sys) per thread of this process, threads grouped by kind: the event loop's, the default
    executor's (`asyncio.to_thread`: spool appends, reads, acks), aiosqlite's, any other."""
    names = {t.native_id: t.name for t in threading.enumerate()}
    main = threading.main_thread().native_id
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for task in Path("/proc/self/task").iterdir():
        with contextlib.suppress(OSError, ValueError):
            text = (task / "stat").read_text()
            fields = text[text.rindex(")") + 2:].split()
            tid, cpu = int(task.name), (int(fields[11]) + int(fields[12])) / tick
            name = names.get(tid, "")
            kind = ("loop" if tid == main else "to_thread" if name.startswith("asyncio_")
                    else "aiosqlite" if name.startswith("Thread-") else "other")
            out[kind] = out.get(kind, 0.0) + cpu
    return out


def py_spy(args: argparse.Namespace, name: str) -> subprocess.Popen[bytes] | None:
    """With --py-spy DIR: py-spy recording this process (raw stacks, 100/s) for the measured window only."""
    if args.py_spy is None:
        return None
    args.py_spy.mkdir(parents=True, exist_ok=True)
    out = args.py_spy / f"agent-{name}-{args.loop}-{args.store}.txt"
    return subprocess.Popen([args.py_spy_bin, "record", "--format", "raw", "-r", "100", "--nonblocking",
                             "-d", str(max(1, round(args.seconds))), "-o", str(out), "--pid", str(os.getpid())],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class NullSpool:
    """A spool that keeps nothing (`--store none`): the agent's outbox is emptied into it at every flush."""

    bytes = 0
    dropped_samples = 0

    def append(self, points: Any) -> None:
        pass

    def read(self, consumer: str, max_points: int = 5000, *, after: Any = None, rows: bool = False) -> Any:
        return None  # nothing to drain

    def pending(self, consumer: str) -> int:
        return 0

    def close(self) -> None:
        pass


class NullSink:
    """A store that is never written (the NullSpool holds nothing for it)."""

    name = "none"
    write_errors = 0
    bad_points = 0

    async def write(self, batch: Any) -> None:
        pass

    async def prune(self, older_than_ms: int) -> int:
        return 0

    async def close(self) -> None:
        pass


def bare_agent(loaded: Any) -> Agent:
    """The agent with no store and no spool writes, everything else as `build_agent` makes it."""
    loaded.config.storage.spool.path.mkdir(parents=True, exist_ok=True)  # the state checkpoint is kept there
    return Agent(loaded, NullSpool(), [NullSink()], Metrics(), Clock())  # type: ignore[arg-type]


async def store_outage(agent: Agent, influx: Any, outage_s: float, poll_s: float = 0.01) -> dict[str, Any]:
    """Stop influxd (SIGTERM) for `outage_s` under load, start it again on the same port and dirs, and time
    the drain until the spool holds nothing for the `influxdb` consumer."""
    consumer = "influxdb"
    t_down = time.monotonic()
    await asyncio.to_thread(influx.stop)
    await asyncio.sleep(max(0.0, outage_s - (time.monotonic() - t_down)))
    await asyncio.to_thread(influx.start)
    t_up, cpu_up = time.monotonic(), time.process_time()
    backlog = agent.spool.pending(consumer)
    runs_up = agent.probe_runs
    deadline = t_up + max(300.0, 5 * outage_s)  # bounded: the backoff alone can be 30 s
    first_write: float | None = None
    at_first = (0, 0)  # (pending, probe_runs) when the first ack after the restart is seen
    peak = last = backlog
    t_empty: float | None = None
    while time.monotonic() < deadline:
        pending = agent.spool.pending(consumer)
        if first_write is None and pending < last:
            first_write = time.monotonic() - t_up
            at_first = (pending, agent.probe_runs)
        peak, last = max(peak, pending), pending
        # Caught up: the drain stored all there was (it then gathers a second of new samples before its next write).
        if pending == 0 or agent.caught_up_at.get(consumer, t_up) > t_up:
            t_empty, cpu_empty = time.monotonic(), time.process_time()
            break
        await asyncio.sleep(poll_s)
    catch_up = (t_empty - t_up) if t_empty is not None else None
    # the agent process's CPU per point written during the catch-up (the backlog plus what was probed meanwhile)
    cpu_us = (1e6 * (cpu_empty - cpu_up) / (backlog + agent.probe_runs - runs_up)) if t_empty is not None else None
    drain_rate = None
    if catch_up is not None and first_write is not None and catch_up - first_write > 0.05:
        # points acked after the first ack: what was left then plus what the probes added since (samples only)
        drain_rate = (at_first[0] + agent.probe_runs - at_first[1]) / (catch_up - first_write)
    return {
        "outage_s": t_up - t_down, "backlog": backlog, "peak": peak, "catch_up_s": catch_up,
        "first_write_s": first_write, "runs_during": agent.probe_runs - runs_up,
        "replay_pts_s": backlog / catch_up if catch_up else None, "drain_pts_s": drain_rate, "cpu_us_pt": cpu_us,
    }


def _outcomes(agent: Agent) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in agent.metrics.probe_runs.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = sample.labels["outcome"]
                out[key] = out.get(key, 0) + sample.value
    return out


# ------------------------------------------------------------ --vs-blackbox: prometheus + blackbox_exporter

BLACKBOX_CFG = """\
modules:
  tcp_connect:
    prober: tcp
    timeout: 5s
    tcp: {preferred_ip_protocol: ip4}
  icmp:
    prober: icmp
    timeout: 5s
    icmp: {preferred_ip_protocol: ip4}
"""


def proc_cpu_s(pid: int) -> float:
    """utime + stime of one process, from /proc/PID/stat (clock ticks)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    fields = text[text.rindex(")") + 2:].split()  # fields[0] is field 3 (state): utime is 14, stime 15
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def proc_hwm_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def wait_ready(url: str, proc: subprocess.Popen[bytes], name: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with {proc.returncode}")
        with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
            if resp.status == 200:
                return
        time.sleep(0.1)
    raise RuntimeError(f"{url} not ready within {timeout_s}s")


def prom_query(port: int, query: str, at: float) -> float:
    """One instant PromQL query at unix time `at`; the sum of the result's values."""
    url = f"http://127.0.0.1:{port}/api/v1/query?" + urllib.parse.urlencode({"query": query, "time": f"{at:.3f}"})
    with urllib.request.urlopen(url, timeout=30) as resp:
        body = json.loads(resp.read())
    if body.get("status") != "success":
        raise RuntimeError(f"prometheus query {query!r}: {body}")
    return sum(float(r["value"][1]) for r in body["data"]["result"])


def prometheus_config(plan: list[tuple[str, str, str, str]], interval: float, blackbox_port: int) -> str:
    relabel = [
        {"source_labels": ["__address__"], "target_label": "__param_target"},
        {"source_labels": ["__param_target"], "target_label": "instance"},
        {"target_label": "__address__", "replacement": f"127.0.0.1:{blackbox_port}"},
    ]
    jobs = []
    for kind, module in (("tcp", "tcp_connect"), ("icmp", "icmp")):
        # the same farm port repeats: a distinct `component` label keeps every target its own series
        groups = [{"targets": [target], "labels": {"component": name}} for name, _, k, target in plan if k == kind]
        if groups:
            jobs.append({"job_name": f"bb_{kind}", "metrics_path": "/probe", "params": {"module": [module]},
                         "static_configs": groups, "relabel_configs": relabel})
    config = {"global": {"scrape_interval": f"{round(interval * 1000)}ms",
                         "scrape_timeout": f"{round(min(interval, 5.0) * 1000)}ms", "evaluation_interval": "1m"},
              "scrape_configs": jobs}
    return json.dumps(config)  # JSON is YAML


async def run_blackbox(n: int, args: argparse.Namespace, farm_ports: tuple[list[int], int, int],
                       work: Path) -> dict[str, Any]:
    """prometheus-blackbox-exporter + prometheus probing the same targets as the agent at the same interval."""
    tcp_ports, sip, http = farm_ports
    plan = probe_plan(n, tcp_ports, sip, http, os.geteuid() == 0, "tcp_icmp")
    d = work / f"blackbox-{n}"
    (d / "tsdb").mkdir(parents=True)
    bb_port, prom_port = free_port(), free_port()
    (d / "blackbox.yml").write_text(BLACKBOX_CFG)
    (d / "prometheus.yml").write_text(prometheus_config(plan, args.interval, bb_port))
    procs: list[subprocess.Popen[bytes]] = []
    log = (d / "log").open("ab")
    try:
        bb = subprocess.Popen([BLACKBOX, f"--config.file={d / 'blackbox.yml'}",
                               f"--web.listen-address=127.0.0.1:{bb_port}", "--log.level=warn"],
                              stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(bb)
        wait_ready(f"http://127.0.0.1:{bb_port}/-/healthy", bb, "blackbox_exporter")
        prom = subprocess.Popen([PROMETHEUS, f"--config.file={d / 'prometheus.yml'}",
                                 f"--storage.tsdb.path={d / 'tsdb'}", f"--web.listen-address=127.0.0.1:{prom_port}",
                                 "--log.level=warn"],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        procs.append(prom)
        wait_ready(f"http://127.0.0.1:{prom_port}/-/ready", prom, "prometheus")
        # warm-up: one interval (every target scraped once) and a little for target discovery
        await asyncio.sleep(args.interval + 2)
        cpu0 = {p.pid: proc_cpu_s(p.pid) for p in procs}
        w0 = time.time()
        await asyncio.sleep(args.seconds)
        cpu1 = {p.pid: proc_cpu_s(p.pid) for p in procs}
        w1 = time.time()
        await asyncio.sleep(1.0)  # let scrapes started before w1 land in the TSDB (they carry their start time)
        window = f"{round((w1 - w0) * 1000)}ms"
        jobs = '{job=~"bb_.*"}'
        scrapes = await asyncio.to_thread(prom_query, prom_port, f"sum(count_over_time(up{jobs}[{window}]))", w1)
        success = await asyncio.to_thread(prom_query, prom_port,
                                          f"sum(sum_over_time(probe_success{jobs}[{window}]))", w1)
        samples = await asyncio.to_thread(prom_query, prom_port,
                                          f"sum(sum_over_time(scrape_samples_scraped{jobs}[{window}]))", w1)
        targets = await asyncio.to_thread(prom_query, prom_port, f"count(up{jobs})", w1)
        return {
            "scrapes": scrapes, "success": success, "samples": samples, "targets": targets,
            "expected": n * (w1 - w0) / args.interval, "elapsed": w1 - w0,
            "cpu_blackbox": cpu1[bb.pid] - cpu0[bb.pid], "cpu_prometheus": cpu1[prom.pid] - cpu0[prom.pid],
            "rss_blackbox": proc_hwm_mb(bb.pid), "rss_prometheus": proc_hwm_mb(prom.pid),
        }
    finally:
        for p in reversed(procs):
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        log.close()


BLACKBOX = "/usr/bin/prometheus-blackbox-exporter"
PROMETHEUS = "/usr/bin/prometheus"


def print_vs_blackbox(n: int, r: dict[str, Any], b: dict[str, Any]) -> None:
    ours = 1000 * r["cpu_s"] / max(r["runs"], 1)
    bb_cpu = b["cpu_blackbox"] + b["cpu_prometheus"]
    theirs = 1000 * bb_cpu / max(b["scrapes"], 1)
    print(f"{n:>10} {'slawatch':<20} {r['runs']:>8.0f} {r['runs'] / r['elapsed']:>9.0f} {1000 * r['cpu_s']:>9.0f} "
          f"{ours:>9.3f} {r['rss_mb']:>8.0f}  {r['outcomes']}")
    print(f"{'':>10} {'blackbox_exporter':<20} {'':>8} {'':>9} {1000 * b['cpu_blackbox']:>9.0f} "
          f"{1000 * b['cpu_blackbox'] / max(b['scrapes'], 1):>9.3f} {b['rss_blackbox']:>8.0f}")
    print(f"{'':>10} {'prometheus':<20} {'':>8} {'':>9} {1000 * b['cpu_prometheus']:>9.0f} "
          f"{1000 * b['cpu_prometheus'] / max(b['scrapes'], 1):>9.3f} {b['rss_prometheus']:>8.0f}")
    print(f"{'':>10} {'blackbox+prometheus':<20} {b['scrapes']:>8.0f} {b['scrapes'] / b['elapsed']:>9.0f} "
          f"{1000 * bb_cpu:>9.0f} {theirs:>9.3f} {b['rss_blackbox'] + b['rss_prometheus']:>8.0f}  "
          f"success {b['success']:.0f}/{b['scrapes']:.0f}, expected ~{b['expected']:.0f} probes "
          f"(N x window / interval), {b['targets']:.0f} targets, {b['samples']:.0f} samples scraped")
    print(f"{'':>10} ratio blackbox+prometheus / slawatch CPU per probe: {theirs / ours if ours else float('nan'):.2f}"
          f"   RSS: {(b['rss_blackbox'] + b['rss_prometheus']) / r['rss_mb']:.2f}", flush=True)


def print_outage(n: int, o: dict[str, Any]) -> None:
    def f(v: float | None, fmt: str) -> str:
        return "never" if v is None else format(v, fmt)

    match = o["stored"] == o["probe_runs"]
    print(f"{n:>10} {o['outage_s']:>7.1f}s {o['backlog']:>9} {f(o['first_write_s'], '.1f'):>10}s "
          f"{f(o['catch_up_s'], '.1f'):>10}s {f(o['replay_pts_s'], ',.0f'):>12} {f(o['drain_pts_s'], ',.0f'):>14} "
          f"{o['p99_ms']:>8.0f}ms {f(o['cpu_us_pt'], '.1f'):>8} "
          f"{o['stored']:>10} {o['probe_runs']:>10}  {'yes' if match else 'NO'}"
          + (f" ({o['left_in_spool']} left in spool)" if o.get("left_in_spool") else ""), flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=40.0, help="measured time per size (after warm-up)")
    parser.add_argument("--store", choices=("sqlite", "influxdb", "none"), default="sqlite",
                        help="none: no store and a spool that keeps nothing (the floor without storage)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio",
                        help="the event loop the agent runs on (agent.loop)")
    parser.add_argument("--outage", type=float, nargs="?", const=60.0, default=None, metavar="S",
                        help="with --store influxdb: stop influxd for S seconds (default 60) after the measured "
                             "time, restart it, time the catch-up and check the stored sample count")
    parser.add_argument("--mix", choices=("all", "tcp_icmp"), default="all",
                        help="all: 60/20/10/10 tcp/sip/http/icmp; tcp_icmp: 90/10, the --vs-blackbox mix without them")
    parser.add_argument("--vs-blackbox", action="store_true",
                        help="compare CPU per probe with prometheus-blackbox-exporter + prometheus (TCP + ICMP)")
    parser.add_argument("--py-spy", type=Path, default=None, metavar="DIR",
                        help="record the agent's stacks over the measured time with py-spy (raw format) into DIR")
    parser.add_argument("--py-spy-bin", default=shutil.which("py-spy") or "py-spy", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.outage is not None and args.store != "influxdb":
        parser.error("--outage needs --store influxdb")
    if args.outage is not None and args.vs_blackbox:
        parser.error("--outage and --vs-blackbox are separate runs")
    if args.vs_blackbox:
        missing = [b for b in (BLACKBOX, PROMETHEUS) if not os.access(b, os.X_OK)]
        if missing:
            sys.exit(f"{', '.join(missing)} not found (apt-get install -y prometheus prometheus-blackbox-exporter)")
    return args


def load_average() -> str:
    return "load average " + ", ".join(f"{v:.2f}" for v in os.getloadavg())


async def main(args: argparse.Namespace) -> None:
    print(f"event loop {args.loop} ({type(asyncio.get_running_loop()).__module__}), store {args.store}, "
          f"{load_average()}", flush=True)
    farm = subprocess.Popen([sys.executable, "-c", FARM], stdout=subprocess.PIPE, text=True)
    try:
        assert farm.stdout is not None
        fields = farm.stdout.readline().split()
        tcp_ports, sip, http = [int(p) for p in fields[:4]], int(fields[4]), int(fields[5])
        with tempfile.TemporaryDirectory() as tmp:
            influx_proc = None
            if args.store == "influxdb":
                binary = shutil.which("influxd")
                if binary is None:
                    sys.exit("influxd not found (apt-get install -y influxdb)")
                influx_proc = Influxd(binary=binary, dir=Path(tmp) / "influx")
                influx_proc.start()
            try:
                if args.vs_blackbox:
                    await vs_blackbox(args, (tcp_ports, sip, http), Path(tmp), influx_proc)
                    return
                print(f"{'components':>10} {'probes/s':>9} {'p50 late':>9} {'p99 late':>9} {'CPU s/1000':>11} "
                      f"{'RSS MB':>7}  outcomes", flush=True)
                outages = []
                for n in args.components:
                    r = await run_one(n, args, (tcp_ports, sip, http), Path(tmp), influx_proc, args.mix)
                    print(f"{n:>10} {r['probes_s']:>9.0f} {r['p50_ms']:>7.1f}ms {r['p99_ms']:>7.1f}ms "
                          f"{r['cpu_s_per_1000']:>11.3f} {r['rss_mb']:>7.0f}  {r['outcomes']}", flush=True)
                    print(f"{'':>10} CPU ms per probe by thread: "
                          + ", ".join(f"{k} {v:.3f}" for k, v in r["threads"].items()), flush=True)
                    if r["outage"]:
                        outages.append((n, r["outage"]))
                if outages:
                    print(f"\nstore outage (influxd SIGTERM, restarted on the same port and dirs); count: "
                          f"{outages[0][1]['query']}")
                    print(f"{'components':>10} {'outage':>8} {'backlog':>9} {'1st ack':>11} {'catch-up':>11} "
                          f"{'replay pt/s':>12} {'after 1st ack':>14} {'p99 late':>10} {'CPU µs/pt':>8} {'stored':>10} "
                          f"{'probe_runs':>10}  match")
                    for n, o in outages:
                        print_outage(n, o)
            finally:
                if influx_proc is not None:
                    influx_proc.stop()
    finally:
        print(load_average(), flush=True)
        farm.kill()
        with contextlib.suppress(Exception):
            farm.wait(5)


async def vs_blackbox(args: argparse.Namespace, farm_ports: tuple[list[int], int, int], work: Path,
                      influx: Any | None) -> None:
    print(f"TCP + ICMP only (90 % / 10 %), interval {args.interval:g} s, {args.seconds:g} s measured; CPU = user + sys "
          f"of each process (slawatch: the agent process; others: /proc/PID/stat); RSS = peak (ru_maxrss / VmHWM)")
    print(f"{'components':>10} {'':<20} {'probes':>8} {'probes/s':>9} {'CPU ms':>9} {'ms/probe':>9} {'RSS MB':>8}")
    for n in args.components:
        r = await run_one(n, args, farm_ports, work, influx if args.store == "influxdb" else None, mix="tcp_icmp")
        b = await run_blackbox(n, args, farm_ports, work)
        print_vs_blackbox(n, r, b)


if __name__ == "__main__":
    arguments = parse_args()
    run_on(arguments.loop, lambda: main(arguments))

"""Agent throughput: the real agent probing a loopback target farm, with storage writes included.

    python bench/agent.py [--components 1000 10000] [--interval 10] [--seconds 40] [--store sqlite|influxdb]
                          [--outage 60] [--vs-blackbox]

Prints, per component count: probes/s achieved, p50/p99 schedule lateness, CPU seconds per 1 000 probes
(agent process only: the farm runs in its own process), peak RSS, and (with --store influxdb --outage S)
the store-outage catch-up: InfluxDB is stopped for S seconds under load, restarted, and the time until the
spool is empty and the store holds every sample is measured. With --vs-blackbox, Debian's
prometheus-blackbox-exporter and prometheus probe the same TCP and ICMP targets at the same interval and
their CPU (from /proc) per probe is printed beside the agent's.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agent.configfile import bundled_contract, load  # noqa: E402
from agent.daemon import Agent  # noqa: E402

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


def components_yaml(n: int, tcp_ports: list[int], sip: int, http: int, icmp: bool) -> str:
    out = []
    for i in range(n):
        r = i % 10
        if r < 6:
            probe = f'{{kind: tcp, target: "127.0.0.1:{tcp_ports[i % len(tcp_ports)]}"}}'
            klass = "san"
        elif r < 8:
            probe = f'{{kind: sip, target: "sip:127.0.0.1:{sip}"}}'
            klass = "sip"
        elif r < 9 or not icmp:
            probe = f'{{kind: http, target: "http://127.0.0.1:{http}/health"}}'
            klass = "load_balancer"
        else:
            probe = f"{{kind: icmp, target: 127.0.{(i // 250) % 250 + 1}.{i % 250 + 1}, count: 1}}"
            klass = "network"
        out.append(f"  - {{name: c{i}, class: {klass}, tier: gold, probes: [{probe}]}}")
    return "\n".join(out)


async def run_one(n: int, args: argparse.Namespace, farm_ports: tuple[list[int], int, int], work: Path,
                  influx_url: str | None) -> dict[str, float]:
    tcp_ports, sip, http = farm_ports
    store = (f'influxdb: {{url: "{influx_url}", api: v1, database: bench}}' if influx_url
             else "sqlite: {path: bench.db}")
    cfg = work / f"bench-{n}.yaml"
    cfg.write_text(f"""
agent: {{id: bench, listen: "127.0.0.1:{free_port()}", heartbeat_s: 10, concurrency: 2000}}
storage:
  {store}
  spool: {{path: spool-{n}, max_bytes: 2GiB}}
contract: {bundled_contract()}
defaults: {{interval_s: {args.interval}, timeout_s: 5, confirm: {{down: 2, up: 1}}}}
components:
{components_yaml(n, tcp_ports, sip, http, os.geteuid() == 0)}
""")
    agent = Agent(load(cfg))
    lateness: list[float] = []
    observe = agent.metrics.lateness.observe

    def record(value: float) -> None:
        lateness.append(value)
        observe(value)

    agent.scheduler._on_lateness = record
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    # warm-up: one full interval so every probe has started once
    await asyncio.sleep(args.interval)
    lateness.clear()
    runs0, cpu0, t0 = agent.probe_runs, time.process_time(), time.monotonic()
    await asyncio.sleep(args.seconds)
    runs, cpu, elapsed = agent.probe_runs - runs0, time.process_time() - cpu0, time.monotonic() - t0
    outcomes = {k: v for k, v in _outcomes(agent).items() if v}
    stop.set()
    await task
    lat = sorted(lateness)
    return {
        "components": n, "probes_s": runs / elapsed, "p50_ms": 1000 * statistics.median(lat) if lat else 0,
        "p99_ms": 1000 * lat[int(len(lat) * 0.99)] if lat else 0, "cpu_s_per_1000": 1000 * cpu / max(runs, 1),
        "cpu_ms_per_probe": 1000 * cpu / max(runs, 1), "rss_mb": rss_mb(), "outcomes": outcomes,  # type: ignore[dict-item]
    }


def _outcomes(agent: Agent) -> dict[str, float]:
    out: dict[str, float] = {}
    for metric in agent.metrics.probe_runs.collect():
        for sample in metric.samples:
            if sample.name.endswith("_total"):
                key = sample.labels["outcome"]
                out[key] = out.get(key, 0) + sample.value
    return out


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--components", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--interval", type=float, default=10.0)
    parser.add_argument("--seconds", type=float, default=40.0, help="measured time per size (after warm-up)")
    parser.add_argument("--store", choices=("sqlite", "influxdb"), default="sqlite")
    args = parser.parse_args()
    farm = subprocess.Popen([sys.executable, "-c", FARM], stdout=subprocess.PIPE, text=True)
    try:
        assert farm.stdout is not None
        fields = farm.stdout.readline().split()
        tcp_ports, sip, http = [int(p) for p in fields[:4]], int(fields[4]), int(fields[5])
        with tempfile.TemporaryDirectory() as tmp:
            influx_url = None
            influx_proc = None
            if args.store == "influxdb":
                sys.path.insert(0, str(ROOT))
                from tests.sinks.influx import Influxd

                binary = shutil.which("influxd")
                if binary is None:
                    sys.exit("influxd not found (apt-get install -y influxdb)")
                influx_proc = Influxd(binary=binary, dir=Path(tmp) / "influx")
                influx_proc.start()
                influx_url = influx_proc.url
            print(f"{'components':>10} {'probes/s':>9} {'p50 late':>9} {'p99 late':>9} {'CPU s/1000':>11} "
                  f"{'RSS MB':>7}  outcomes")
            try:
                for n in args.components:
                    r = await run_one(n, args, (tcp_ports, sip, http), Path(tmp), influx_url)
                    print(f"{n:>10} {r['probes_s']:>9.0f} {r['p50_ms']:>7.1f}ms {r['p99_ms']:>7.1f}ms "
                          f"{r['cpu_s_per_1000']:>11.3f} {r['rss_mb']:>7.0f}  {r['outcomes']}", flush=True)
            finally:
                if influx_proc is not None:
                    influx_proc.stop()
    finally:
        farm.kill()
        with contextlib.suppress(Exception):
            farm.wait(5)


if __name__ == "__main__":
    asyncio.run(main())

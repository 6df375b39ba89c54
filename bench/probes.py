"""Probe throughput: probes per second and CPU µs per probe for sip, tcp, http, https and icmp against loopback peers.

Each peer runs in its own process (its CPU is not counted); the probes run here through `agent.probes.run_probe`,
`concurrency` at a time, until `--max-probes` are done or `--max-seconds` have passed. `https` is the http probe
against the same server behind TLS (a throwaway self-signed P-256 certificate, tls_verify off; needs openssl).
Run from the repository root:

    .venv/bin/python bench/probes.py [--kinds sip,tcp,http,https,icmp] [--concurrency 100,1000] [--max-probes 5000]
                                     [--loop asyncio|uvloop]
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import functools
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.probes import run_probe
from slawatch.cli.usage import run_on
from slawatch.config.probes import HttpProbe, IcmpProbe, ProbeBase, SipProbe, TcpProbe
from slawatch.testing import need_binary

# Each peer prints its port on its first line, then serves until stdin closes.
_PEER_PRELUDE = """
import asyncio, resource, sys
soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))

async def until_stdin_closes():
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)
"""

SIP_PEER = _PEER_PRELUDE + r"""
COPY = {"via": "Via", "v": "Via", "from": "From", "f": "From", "to": "To", "t": "To",
        "call-id": "Call-ID", "i": "Call-ID", "cseq": "CSeq"}

class Responder(asyncio.DatagramProtocol):
    def connection_made(self, transport):
        self.transport = transport

    def datagram_received(self, data, addr):
        head = data.split(b"\r\n\r\n", 1)[0].decode("utf-8", "replace").split("\r\n")
        if not head[0].startswith("OPTIONS "):
            return
        lines = ["SIP/2.0 200 OK"]
        for line in head[1:]:
            name, _, value = line.partition(":")
            canon = COPY.get(name.strip().lower())
            if canon == "To" and ";tag=" not in value:
                value = value.rstrip() + ";tag=bench"
            if canon:
                lines.append(f"{canon}: {value.strip()}")
        lines += ["Content-Length: 0", "", ""]
        self.transport.sendto("\r\n".join(lines).encode(), addr)

async def main():
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(
        Responder, local_addr=("127.0.0.1", 0))
    print(transport.get_extra_info("sockname")[1], flush=True)
    await until_stdin_closes()

asyncio.run(main())
"""

TCP_PEER = _PEER_PRELUDE + r"""
async def answer(reader, writer):
    writer.close()

async def main():
    server = await asyncio.start_server(answer, "127.0.0.1", 0, backlog=4096)
    print(server.sockets[0].getsockname()[1], flush=True)
    await until_stdin_closes()

asyncio.run(main())
"""

# With two arguments (certificate and key files) it serves HTTPS.
HTTP_PEER = _PEER_PRELUDE + r"""
import ssl
from aiohttp import web

async def ok(request):
    return web.Response(text="ok")

async def main():
    app = web.Application()
    app.router.add_get("/", ok)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    tls = None
    if len(sys.argv) == 3:
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        tls.load_cert_chain(sys.argv[1], sys.argv[2])
    site = web.TCPSite(runner, "127.0.0.1", 0, backlog=4096, ssl_context=tls)
    await site.start()
    print(site._server.sockets[0].getsockname()[1], flush=True)
    await until_stdin_closes()

asyncio.run(main())
"""


@contextmanager
def peer(code: str, *args: str) -> Iterator[int]:
    """A server in a child process; yields its port; stops it by closing its stdin."""
    proc = subprocess.Popen([sys.executable, "-c", code, *args], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            text=True)
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        if not line.strip().isdigit():
            raise RuntimeError(f"peer did not start (exit {proc.poll()})")
        yield int(line)
    finally:
        assert proc.stdin is not None
        proc.stdin.close()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@dataclass(frozen=True, slots=True)
class Cell:
    kind: str
    concurrency: int
    probes: int
    wall_s: float
    cpu_s: float
    user_s: float
    sys_s: float
    latencies_s: list[float]
    outcomes: collections.Counter[str]

    @property
    def per_s(self) -> float:
        return self.probes / self.wall_s

    @property
    def cpu_us(self) -> float:
        return self.cpu_s / self.probes * 1e6

    def pct(self, q: float) -> float:
        if not self.latencies_s:
            return float("nan")
        ordered = sorted(self.latencies_s)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


async def measure(kind: str, make: Callable[[int], ProbeBase], concurrency: int, max_probes: int,
                  max_seconds: float) -> Cell:
    outcomes: collections.Counter[str] = collections.Counter()
    latencies: list[float] = []
    started = 0
    stop_at = time.monotonic() + max_seconds

    async def worker() -> None:
        nonlocal started
        while started < max_probes and time.monotonic() < stop_at:
            i = started
            started += 1
            run = await run_probe(make(i))
            outcomes[str(run.result.outcome) if run.result.up else f"{run.result.outcome}: {run.result.reason}"] += 1
            if run.result.latency_s is not None:
                latencies.append(run.result.latency_s)

    r0 = resource.getrusage(resource.RUSAGE_SELF)
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return Cell(kind, concurrency, sum(outcomes.values()), wall, cpu, r1.ru_utime - r0.ru_utime,
                r1.ru_stime - r0.ru_stime, latencies, outcomes)


def summary(outcomes: collections.Counter[str]) -> str:
    total = sum(outcomes.values())
    up = outcomes.get("up", 0) + outcomes.get("degraded", 0)
    if up == total:
        return "all up"
    worst, n = max(((k, v) for k, v in outcomes.items() if k not in ("up", "degraded")), key=lambda kv: kv[1])
    return f"{up}/{total} up; {n}× {worst[:70]}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kinds", default="sip,tcp,http,icmp")
    parser.add_argument("--concurrency", default="100,1000")
    parser.add_argument("--max-probes", type=int, default=5000, help="per cell (default 5000)")
    parser.add_argument("--max-seconds", type=float, default=20.0, help="per cell (default 20)")
    parser.add_argument("--icmp-count", type=int, default=1, help="echo requests per icmp probe (default 1)")
    parser.add_argument("--timeout", type=float, default=5.0, help="timeout_s of every probe (default 5)")
    parser.add_argument("--loop", choices=("asyncio", "uvloop"), default="asyncio", help="the event loop (agent.loop)")
    args = parser.parse_args()
    _soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # 1000 sockets in flight, plus the peers'

    kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    levels = [int(c) for c in args.concurrency.split(",")]
    peers = {"sip": SIP_PEER, "tcp": TCP_PEER, "http": HTTP_PEER}
    timeout = args.timeout
    cells: list[Cell] = []
    print(f"Python {sys.version.split()[0]}, event loop {args.loop}, load average "
          f"{', '.join(f'{v:.2f}' for v in os.getloadavg())}, {len(kinds)} kinds × concurrency {levels}, "
          f"≤ {args.max_probes} probes or {args.max_seconds:g} s per cell, timeout_s {timeout:g}", flush=True)
    for kind in kinds:
        with _peer_for(kind, peers) as port:
            make = _factory(kind, port, timeout, args.icmp_count)
            run_on(args.loop, functools.partial(measure, kind, make, 10, 50, 5))  # warm-up: imports, connections
            for level in levels:
                cell = run_on(args.loop, functools.partial(measure, kind, make, level, args.max_probes,
                                                           args.max_seconds))
                cells.append(cell)
                print(f"  {kind} ×{level}: {cell.probes} probes, {cell.per_s:,.0f}/s, {summary(cell.outcomes)}",
                      file=sys.stderr, flush=True)
    print()
    print("| kind | concurrency | probes | wall s | probes/s | CPU µs/probe | user s | sys s | "
          "latency p50 ms | p99 ms | result |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for c in cells:
        print(f"| {c.kind} | {c.concurrency} | {c.probes} | {c.wall_s:.2f} | {c.per_s:,.0f} | {c.cpu_us:,.0f} | "
              f"{c.user_s:.2f} | {c.sys_s:.2f} | {c.pct(0.5):.2f} | {c.pct(0.99):.2f} | {summary(c.outcomes)} |")
    if any(c.kind == "icmp" for c in cells):
        print(f"\nicmp: {args.icmp_count} echo request(s) per probe to 127.0.0.1-127.0.0.254, "
              f"{'raw sockets (root)' if os.geteuid() == 0 else 'datagram sockets'}.")


@contextmanager
def _peer_for(kind: str, peers: dict[str, str]) -> Iterator[int]:
    if kind == "https":
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            # P-256 rather than RSA: the peer's side of each handshake is then cheap enough not to be the limit.
            subprocess.run([need_binary("openssl", "openssl"), "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:prime256v1", "-nodes", "-days", "2", "-subj", "/CN=127.0.0.1",
                            "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
            with peer(HTTP_PEER, str(cert), str(key)) as port:
                yield port
    elif kind in peers:
        with peer(peers[kind]) as port:
            yield port
    else:
        yield 0


def _factory(kind: str, port: int, timeout: float, icmp_count: int) -> Callable[[int], ProbeBase]:
    if kind == "sip":
        sip = SipProbe(kind="sip", target=f"sip:127.0.0.1:{port}", timeout_s=timeout)
        return lambda i: sip
    if kind == "tcp":
        tcp = TcpProbe(kind="tcp", target=f"127.0.0.1:{port}", timeout_s=timeout)
        return lambda i: tcp
    if kind == "http":
        http = HttpProbe(kind="http", target=f"http://127.0.0.1:{port}/", timeout_s=timeout)
        return lambda i: http
    if kind == "https":
        https = HttpProbe(kind="http", target=f"https://127.0.0.1:{port}/", timeout_s=timeout, tls_verify=False)
        return lambda i: https
    if kind == "icmp":
        icmps = [IcmpProbe(kind="icmp", target=f"127.0.0.{n}", count=icmp_count, timeout_s=timeout)
                 for n in range(1, 255)]
        return lambda i: icmps[i % len(icmps)]
    raise SystemExit(f"no benchmark for kind {kind!r}")


if __name__ == "__main__":
    main()

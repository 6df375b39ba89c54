"""`slawatch demo`: loopback targets (SIP, TCP, HTTP, SNMP/UPS, ones that fail on a schedule) and the real agent."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import socket
import time
from collections.abc import Callable
from pathlib import Path

from aiohttp import web

from agent import demoups
from agent.probes.icmp import may_ping
from agent.probes.sipmessage import SipParseError, parse_message
from slawatch.cli.agent import build_agent, print_change, run_agent, setup_logging
from slawatch.cli.usage import EXIT_OK, EXIT_USAGE
from slawatch.config.loader import ConfigError, bundled_contract, load
from slawatch.model import Outcome, Sample

log = logging.getLogger(__name__)

FLAP_CYCLE_S = 240.0  # the flapping target goes down for FLAP_DOWN_S every FLAP_CYCLE_S
FLAP_DOWN_S = 60.0
# The demo UPS runs on battery (degraded, not down) for UPS_BATTERY_S every UPS_CYCLE_S, the first time
# UPS_OFFSET_S after start: at 1 min, while the flapper first goes down at 3 min. (The two cycles meet
# once every 20 min: 240 s and 300 s cannot keep 60 s and 30 s windows apart for good.)
UPS_CYCLE_S = 300.0
UPS_BATTERY_S = 30.0
UPS_OFFSET_S = 60.0


def _free_port(kind: int = socket.SOCK_STREAM) -> int:
    with socket.socket(socket.AF_INET, kind) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


class SipResponder(asyncio.DatagramProtocol):
    """Answers every SIP request with 200 OK, echoing the headers RFC 3261 needs for matching."""

    def __init__(self) -> None:
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # a datagram endpoint's transport

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        try:
            msg = parse_message(data)
        except SipParseError:
            return
        if msg.is_response:
            return
        lines = ["SIP/2.0 200 OK"]
        for name in ("Via", "From", "To", "Call-ID", "CSeq"):
            for value in msg.header_values(name):
                if name == "To" and ";tag=" not in value:
                    value += ";tag=demo"
                lines.append(f"{name}: {value}")
        lines += ["Server: slawatch-demo", "Content-Length: 0", "", ""]
        if self.transport is not None:
            self.transport.sendto("\r\n".join(lines).encode(), addr)


async def _tcp_service(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    writer.close()
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()


class Flapper:
    """A TCP service that is down for `down_s` at the end of every `cycle_s`."""

    def __init__(self, port: int, cycle_s: float, down_s: float) -> None:
        self.port, self.cycle_s, self.down_s = port, cycle_s, down_s
        self.server: asyncio.Server | None = None

    async def run(self) -> None:
        start = time.monotonic()
        while True:
            phase = (time.monotonic() - start) % self.cycle_s
            should_be_up = phase < self.cycle_s - self.down_s
            if should_be_up and self.server is None:
                self.server = await asyncio.start_server(_tcp_service, "127.0.0.1", self.port)
            elif not should_be_up and self.server is not None:
                self.server.close()
                await self.server.wait_closed()
                self.server = None
            await asyncio.sleep(0.5)

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


class DegradedWatch:
    """Says when a component's probe runs turn DEGRADED and when they stop. Degraded counts as up, so the
    agent reports no state change for it; this follows the agent's samples as they are taken."""

    def __init__(self, out: Callable[[str], None]) -> None:
        self.out = out
        self.degraded: dict[tuple[str, str], bool] = {}

    def observe(self, sample: Sample) -> None:
        key = (sample.ref.component, sample.probe)
        now_degraded = sample.outcome is Outcome.DEGRADED
        was_degraded = self.degraded.get(key, False)
        self.degraded[key] = now_degraded
        at = time.strftime("%H:%M:%S", time.gmtime(sample.ts_ms / 1000))
        name, klass = sample.ref.component, sample.ref.klass
        if now_degraded and not was_degraded:
            self.out(f"{at} DEGR {name:<14} ({klass})  {sample.reason}")
        elif was_degraded and sample.outcome is Outcome.UP:
            self.out(f"{at} UP   {name:<14} ({klass})  no longer degraded")


def demo_config(ports: dict[str, int], interval_s: float) -> str:
    timeout = min(2.0, interval_s / 2)
    icmp = """
  - name: core-router
    class: network
    customer: demo-telecom
    probes:
      - {kind: icmp, target: 127.0.0.1, count: 2, packet_interval_s: 0.05}""" if may_ping() else ""
    return f"""# Written by `slawatch demo`: the demo's targets on loopback, watched by the real agent.
agent: {{id: demo-agent, listen: "127.0.0.1:{ports['listen']}", heartbeat_s: {max(interval_s, 5):g}}}
storage:
  sqlite: {{path: slawatch.db}}
  spool: {{path: spool, max_bytes: 64MiB}}
contract: {bundled_contract()}
defaults: {{interval_s: {interval_s:g}, timeout_s: {timeout:g}, confirm: {{down: 2, up: 1}}}}
customers:
  - {{name: demo-telecom, tier: gold, report_to: [noc@demo-telecom.example]}}
components:
  - name: sip-core
    class: sip
    customer: demo-telecom
    probes:
      - {{kind: sip, target: "sip:127.0.0.1:{ports['sip']}", transport: udp}}
  - name: web-lb
    class: load_balancer
    customer: demo-telecom
    tier: silver
    probes:
      - {{kind: http, target: "http://127.0.0.1:{ports['http']}/health", expect_status: [200], expect_body: ok}}
  - name: san-portal
    class: san
    customer: demo-telecom
    probes:
      - {{kind: tcp, target: "127.0.0.1:{ports['tcp']}"}}
  - name: vlan-flappy
    class: vlan
    customer: demo-telecom
    probes:
      - {{kind: tcp, target: "127.0.0.1:{ports['flap']}"}}
  - name: ups-rack-a
    class: power
    customer: demo-telecom
    probes:
      - {{kind: ups, target: "127.0.0.1:{ports['snmp']}", community: public}}{icmp}
"""


async def run_demo(directory: Path, *, duration_s: float | None = None, interval_s: float = 5.0) -> int:
    await asyncio.to_thread(directory.mkdir, parents=True, exist_ok=True)
    ports = {"sip": _free_port(socket.SOCK_DGRAM), "http": _free_port(), "tcp": _free_port(),
             "flap": _free_port(), "snmp": _free_port(socket.SOCK_DGRAM),
             "listen": 9810 if _port_free(9810) else _free_port()}
    loop = asyncio.get_running_loop()
    sip_transport, _ = await loop.create_datagram_endpoint(SipResponder, local_addr=("127.0.0.1", ports["sip"]))
    tcp_server = await asyncio.start_server(_tcp_service, "127.0.0.1", ports["tcp"])
    ups = demoups.DemoUps(UPS_CYCLE_S, UPS_BATTERY_S, UPS_OFFSET_S)
    ups_transport, _ = await demoups.start(ups, "127.0.0.1", ports["snmp"])
    app = web.Application()

    async def health(_: web.Request) -> web.Response:
        return web.Response(text="ok")

    app.router.add_get("/health", health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", ports["http"]).start()
    flapper = Flapper(ports["flap"], FLAP_CYCLE_S, FLAP_DOWN_S)
    flap_task = asyncio.create_task(flapper.run())

    config_path = directory / "config.yaml"
    await asyncio.to_thread(config_path.write_text, demo_config(ports, interval_s))
    try:
        loaded = load(config_path)
    except ConfigError as exc:  # pragma: no cover - the demo writes a valid file
        print(exc)
        return EXIT_USAGE
    print(f"slawatch demo: {len(loaded.config.components)} loopback targets, probed every {interval_s:g}s")
    store = loaded.config.storage.sqlite.path if loaded.config.storage.sqlite else "-"
    print(f"  config  {config_path}\n  store   {store}")
    print(f"  console http://127.0.0.1:{ports['listen']}/  (metrics at /metrics; sign in after "
          f"`slawatch user add NAME --role admin --config {config_path}`)")
    print(f"  'vlan-flappy' goes down for {FLAP_DOWN_S:g}s every {FLAP_CYCLE_S:g}s; 'ups-rack-a' runs on battery "
          f"(degraded) for {UPS_BATTERY_S:g}s every {UPS_CYCLE_S:g}s, first after {UPS_OFFSET_S:g}s.")
    print("  Ctrl-C stops the demo.")
    print(f"  Then: slawatch report --config {config_path} --month {time.strftime('%Y-%m', time.gmtime())}\n",
          flush=True)
    stop = asyncio.Event()
    if duration_s is not None:
        loop.call_later(duration_s, stop.set)
    watch = DegradedWatch(lambda line: print(line, flush=True))
    agent = build_agent(loaded, on_change=print_change(lambda line: print(line, flush=True)), on_sample=watch.observe)
    try:
        await run_agent(agent, stop)
    finally:
        flap_task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await flap_task
        flapper.close()
        tcp_server.close()
        sip_transport.close()
        ups_transport.close()
        await runner.cleanup()
    print(f"demo stopped; {agent.probe_runs} probe runs stored in {directory}")
    return EXIT_OK


def _demo_cmd(args: argparse.Namespace) -> int:
    setup_logging("text", args.log_level)
    return asyncio.run(run_demo(Path(args.dir), duration_s=args.duration, interval_s=args.interval))


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    demo = sub.add_parser("demo", help="run the agent against built-in loopback demo targets",
                          description="Start loopback demo targets (SIP, TCP, HTTP, a UPS over SNMP, a flapping "
                                      "service) and the real agent watching them with the embedded SQLite "
                                      "store; print state changes as they happen. Ctrl-C stops it; "
                                      "`slawatch report` then reads the same store.")
    demo.add_argument("--dir", default="slawatch-demo", help="where the demo writes its config, store and spool "
                                                            "(default: ./slawatch-demo)")
    demo.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    demo.add_argument("--interval", type=float, default=5.0, metavar="S", help="probe interval (default 5)")
    demo.add_argument("--log-level", default="warning", choices=("debug", "info", "warning", "error"))
    demo.set_defaults(func=_demo_cmd)

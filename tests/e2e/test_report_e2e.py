"""End to end: the real agent watches SIPp and a TCP server through known outages; `slawatch report` gives them back.

The agent runs in-process (interval 1 s, confirm down 2 / up 1) against a SIPp UAS and an asyncio TCP server,
each stopped once for a time measured around the stop and the restart, plus a TCP server that never stops.
Then `slawatch report --format json` over the run must show each outage's length within two intervals, one
outage in each ledger, and no downtime for the component that never failed. Once per store: SQLite, InfluxDB.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from slawatch.cli.agent import build_agent
from slawatch.config.loader import bundled_contract, load
from slawatch.testing import free_port, need_binary
from slawatch.testing.influxd import Influxd, start_influxd

ROOT = Path(__file__).resolve().parents[2]
INTERVAL_S = 1.0
TOLERANCE_S = 2 * INTERVAL_S
SIP_OUTAGE_S = 12.0
TCP_OUTAGE_S = 10.0

pytestmark = [pytest.mark.timeout(180), pytest.mark.peer("sipp", "influxd")]


def _udp_bound(port: int) -> bool:
    """Whether something listens on UDP 127.0.0.1:port (read from /proc: no probe packet is spent on it)."""
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table) as f:
            for row in f.readlines()[1:]:
                if int(row.split()[1].rsplit(":", 1)[1], 16) == port:
                    return True
    return False


class SippUas:
    """SIPp's built-in UAS on a fixed loopback UDP port, stoppable and restartable on that same port."""

    def __init__(self, binary: str, workdir: Path) -> None:
        self.binary = binary
        self.workdir = workdir
        self.port = free_port(socket.SOCK_DGRAM)
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # -aa: SIPp answers OPTIONS (the sip probe's request) with 200 OK; without it the built-in uas
        # scenario only expects INVITE and leaves OPTIONS unanswered, and the probe would time out.
        cmd = [self.binary, "-sn", "uas", "-aa", "-i", "127.0.0.1", "-p", str(self.port), "-t", "u1", "-nostdin",
               "-cp", str(free_port(socket.SOCK_DGRAM)), "-mi", "127.0.0.1", "-mp", str(free_port(socket.SOCK_DGRAM))]
        self.proc = subprocess.Popen(cmd, cwd=self.workdir, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)
        deadline = time.monotonic() + 5
        while not _udp_bound(self.port):
            if self.proc.poll() is not None:
                code = self.proc.returncode
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                self.stop()
                raise RuntimeError(f"sipp exited with {code}: {err[-2000:]}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError("sipp did not bind its port within 5 s")
            time.sleep(0.01)

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.kill()
        proc.wait(5)
        if proc.stderr is not None:
            proc.stderr.close()


class TcpService:
    """An asyncio TCP server on a fixed loopback port that accepts and closes; can go down and come back."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: asyncio.Server | None = None

    @staticmethod
    async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def down(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            await server.wait_closed()


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[SippUas]:
    uas = SippUas(need_binary("sipp", "sip-tester"), tmp_path)
    try:
        yield uas
    finally:
        uas.stop()


@pytest.fixture
async def services() -> AsyncIterator[tuple[TcpService, TcpService]]:
    flaky, steady = TcpService(), TcpService()
    await flaky.up()
    await steady.up()
    try:
        yield flaky, steady
    finally:
        await flaky.down()
        await steady.down()


@pytest.fixture(params=["sqlite", "influxdb"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The `storage:` block of the config, for each store."""
    if request.param == "sqlite":
        yield "storage: {sqlite: {path: store.db}, spool: {path: spool}}"
        return
    influx: Influxd = start_influxd(tmp_path / "influx")
    try:
        yield f'storage: {{influxdb: {{url: "{influx.url}", api: v1, database: slawatch}}, spool: {{path: spool}}}}'
    finally:
        influx.stop()


def write_config(tmp: Path, storage: str, sip_port: int, flaky_port: int, steady_port: int) -> Path:
    cfg = tmp / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: e2e-agent, listen: "127.0.0.1:{free_port()}", heartbeat_s: 1}}
{storage}
contract: {bundled_contract()}
defaults: {{interval_s: {INTERVAL_S:g}, timeout_s: 0.8, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
components:
  - name: pbx-1
    class: sip
    customer: acme
    probes: [{{kind: sip, target: "sip:127.0.0.1:{sip_port}"}}]
  - name: san-1
    class: san
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{flaky_port}"}}]
  - name: lb-1
    class: load_balancer
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{steady_port}"}}]
""")
    return cfg


def iso(ts_s: float) -> str:
    return datetime.fromtimestamp(ts_s, UTC).isoformat(timespec="milliseconds")


def run_report(cfg: Path, start_s: float, end_s: float) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "slawatch.cli", "report", "--config", str(cfg),
           "--from", iso(start_s), "--to", iso(end_s), "--format", "json"]
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr.decode(errors="replace")[-3000:]
    doc: dict[str, Any] = json.loads(proc.stdout)
    return doc


async def test_report_gives_back_the_known_outages(tmp_path: Path, storage: str, sipp: SippUas,
                                                   services: tuple[TcpService, TcpService]) -> None:
    flaky, steady = services
    await asyncio.to_thread(sipp.start)
    cfg = write_config(tmp_path, storage, sipp.port, flaky.port, steady.port)
    period_start = time.time()
    agent = build_agent(load(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    try:
        await asyncio.sleep(6.0)
        # SIPp away for a known time: measured from just before the kill to just after it listens again.
        sip_down = time.time()
        await asyncio.to_thread(sipp.stop)
        await asyncio.sleep(SIP_OUTAGE_S)
        await asyncio.to_thread(sipp.start)
        sip_up = time.time()
        await asyncio.sleep(6.0)
        tcp_down = time.time()
        await flaky.down()
        await asyncio.sleep(TCP_OUTAGE_S)
        await flaky.up()
        tcp_up = time.time()
        await asyncio.sleep(6.0)
    finally:
        stop.set()
        await asyncio.wait_for(task, 30)
    period_end = time.time() + 1.0
    assert agent.probe_runs > 3 * 35

    report = await asyncio.to_thread(run_report, cfg, period_start, period_end)
    by_name = {c["name"]: c for c in report["components"]}
    assert list(by_name) == ["pbx-1", "san-1", "lb-1"]
    period_s = report["period"]["length_s"]
    for comp, (down_at, up_at) in {"pbx-1": (sip_down, sip_up), "san-1": (tcp_down, tcp_up)}.items():
        entry = by_name[comp]
        known = up_at - down_at
        print(f"{comp}: known outage {known:.3f} s, reported {entry['downtime_s']:.3f} s")
        assert abs(entry["downtime_s"] - known) <= TOLERANCE_S, (comp, entry["downtime_s"], known)
        assert entry["down_s"] == entry["downtime_s"]  # unmonitored time counts as up under the contract
        assert len(entry["outages"]) == 1, entry["outages"]
        outage = entry["outages"][0]
        assert outage["duration_s"] == pytest.approx(entry["downtime_s"], abs=0.001)
        assert outage["counted_s"] == pytest.approx(entry["downtime_s"], abs=0.001)
        # the outage starts at the first failed probe: at most one interval after the peer went away
        start = datetime.fromisoformat(outage["start"]).timestamp()
        end = datetime.fromisoformat(outage["end"]).timestamp()
        assert down_at - 0.05 <= start <= down_at + INTERVAL_S + 0.2, (comp, outage, down_at)
        assert up_at - 0.05 <= end <= up_at + INTERVAL_S + 0.2, (comp, outage, up_at)
        assert outage["agents"] == ["e2e-agent"]
        assert entry["met"] is False  # a 10 s outage in a minute misses any target
        parts = entry["up_s"] + entry["down_s"] + entry["maintenance_s"] + entry["unmonitored_s"]
        assert parts == pytest.approx(period_s, abs=0.001)
    assert "refused" in by_name["san-1"]["outages"][0]["reason"]
    assert by_name["pbx-1"]["outages"][0]["reason"]

    steady_entry = by_name["lb-1"]
    assert steady_entry["downtime_s"] == 0
    assert steady_entry["down_s"] == 0
    assert steady_entry["outages"] == []
    assert steady_entry["met"] is True
    # watched from the first probe to the agent's stop: most of the period is seen up
    assert steady_entry["up_s"] > period_s - 10

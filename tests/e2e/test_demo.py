"""`slawatch demo`: its SNMP/UPS responder probed by the real ups probe, and the whole demo as a subprocess."""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import closing
from pathlib import Path

import pytest

from agent import demoups
from agent.probes import run_probe, snmpclient
from slawatch.cli.demo import DegradedWatch
from slawatch.config.loader import load
from slawatch.config.probes import SnmpProbe, UpsProbe
from slawatch.model import ComponentRef, Outcome, Sample
from slawatch.testing import free_port

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.timeout(30)

ON_BATTERY = ("on battery: upsOutputSource=battery(5), upsBatteryStatus=batteryNormal(2), 30 min remaining, "
              "80% charge, 1 alarm present")


class Responder:
    def __init__(self, ups: demoups.DemoUps, transport: asyncio.DatagramTransport,
                 protocol: demoups.SnmpResponder, port: int) -> None:
        self.ups, self.transport, self.protocol, self.port = ups, transport, protocol, port

    def ups_probe(self, **kw: object) -> UpsProbe:
        return UpsProbe.model_validate({"kind": "ups", "target": f"127.0.0.1:{self.port}", "timeout_s": 2.0, **kw})


@pytest.fixture
async def responder() -> AsyncIterator[Responder]:
    ups = demoups.DemoUps()
    port = free_port(socket.SOCK_DGRAM)
    transport, protocol = await demoups.start(ups, "127.0.0.1", port)
    try:
        yield Responder(ups, transport, protocol, port)
    finally:
        transport.close()
        await snmpclient.close()  # pytest gives each test its own loop: close that loop's engine sockets


async def test_ups_normal_then_on_battery(responder: Responder) -> None:
    responder.ups.forced = False
    run = await run_probe(responder.ups_probe())
    assert (run.result.outcome, run.result.reason) == (Outcome.UP, "")

    responder.ups.forced = True
    run = await run_probe(responder.ups_probe())
    assert run.result.outcome is Outcome.DEGRADED
    assert "battery(5)" in run.result.reason
    assert run.result.reason == ON_BATTERY


async def test_garbage_is_dropped_and_the_responder_keeps_answering(responder: Responder) -> None:
    garbage = [b"", b"garbage", b"\x30\x82\xff\xff", b"\x30\x05\x02\x01\x01\x04\x00", bytes(range(256)),
               b"\x30\x0b\x02\x01\x01\x04\x06public\xa0\x00"]  # v2c, right community, truncated PDU
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        for data in garbage:
            s.sendto(data, ("127.0.0.1", responder.port))
    for _ in range(100):
        if responder.protocol.dropped >= len(garbage):
            break
        await asyncio.sleep(0.01)
    assert responder.protocol.dropped == len(garbage)
    responder.ups.forced = True
    run = await run_probe(responder.ups_probe())
    assert (run.result.outcome, run.result.reason) == (Outcome.DEGRADED, ON_BATTERY)


async def test_wrong_community_gets_no_answer(responder: Responder) -> None:
    run = await run_probe(responder.ups_probe(community="private", timeout_s=0.6))
    assert run.result.outcome is Outcome.TIMEOUT


async def test_sys_uptime_and_unknown_objects(responder: Responder) -> None:
    settings = SnmpProbe.model_validate({
        "kind": "snmp", "target": f"127.0.0.1:{responder.port}", "timeout_s": 2.0,
        "checks": [{"oid": "1.3.6.1.2.1.1.3.0", "ge": 0}, {"oid": "1.3.6.1.2.1.1.5.0", "label": "sysName"}]})
    run = await run_probe(settings)
    assert run.result.outcome is Outcome.BAD_RESPONSE
    assert run.result.reason == "sysName (1.3.6.1.2.1.1.5.0): noSuchObject"


def test_battery_schedule() -> None:
    now = [1000.0]
    ups = demoups.DemoUps(cycle_s=300, battery_s=30, offset_s=60, clock=lambda: now[0])
    states = {}
    for t in (0, 59, 60, 89, 90, 359, 360, 389, 390):
        now[0] = 1000.0 + t
        states[t] = ups.on_battery()
    assert states == {0: False, 59: False, 60: True, 89: True, 90: False, 359: False, 360: True, 389: True,
                      390: False}


def test_degraded_watch_prints_transitions() -> None:
    lines: list[str] = []
    watch = DegradedWatch(lines.append)
    ref = ComponentRef("ups-rack-a", "power", "gold", "demo-telecom")
    for i, (outcome, reason) in enumerate([(Outcome.UP, ""), (Outcome.DEGRADED, ON_BATTERY),
                                           (Outcome.DEGRADED, ON_BATTERY), (Outcome.UP, ""), (Outcome.UP, "")]):
        watch.observe(Sample(ref, "ups", "ups", "demo-agent", 1_000_000 + 1000 * i, outcome, reason, 3.0))
    assert [line[9:] for line in lines] == [f"DEGR ups-rack-a     (power)  {ON_BATTERY}",
                                            "UP   ups-rack-a     (power)  no longer degraded"]


def test_demo_runs_every_component_up_and_stores_samples(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "slawatch.cli", "demo", "--dir", str(tmp_path), "--duration", "8",
                           "--interval", "1"], capture_output=True, text=True, timeout=25, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    components = [c.name for c in load(tmp_path / "config.yaml").config.components]
    assert "ups-rack-a" in components
    came_up = set(re.findall(r"^\d\d:\d\d:\d\d UP +(\S+) +\(", proc.stdout, re.MULTILINE))
    assert came_up >= set(components), proc.stdout
    assert re.search(r"UP +ups-rack-a +\(power\)", proc.stdout)
    with closing(sqlite3.connect(tmp_path / "slawatch.db")) as db:
        counts = dict(db.execute("SELECT component, count(*) FROM slawatch_probe GROUP BY component").fetchall())
        ups_outcomes = {o for (o,) in db.execute("SELECT outcome FROM slawatch_probe WHERE component = 'ups-rack-a'")}
    assert set(counts) == set(components)
    assert all(n >= 3 for n in counts.values()), counts
    assert ups_outcomes == {"up"}  # the first battery run comes after 60 s

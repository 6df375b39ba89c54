"""The real agent writing to a real InfluxDB that is SIGKILLed mid-run: the store ends with every sample."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slawatch.cli.agent import build_agent
from slawatch.config.loader import bundled_contract, load
from slawatch.store.influxdb import RETENTION_POLICY
from slawatch.testing import free_port
from slawatch.testing.influxd import Influxd, start_influxd


@pytest.fixture
async def tcp_target() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


@pytest.mark.timeout(120)
@pytest.mark.peer("influxd")
async def test_influxdb_killed_and_restarted_mid_run_loses_and_doubles_nothing(
        tmp_path: Path, tcp_target: int) -> None:
    influx: Influxd = await asyncio.to_thread(start_influxd, tmp_path / "influx")
    try:
        cfg = tmp_path / "agent.yaml"
        components = "\n".join(f"""  - name: san-{i}
    class: san
    tier: gold
    probes: [{{kind: tcp, target: "127.0.0.1:{tcp_target}"}}]""" for i in range(20))
        cfg.write_text(f"""
agent: {{id: agent-a, listen: "127.0.0.1:{free_port()}", heartbeat_s: 1}}
storage:
  influxdb: {{url: "{influx.url}", api: v1, database: slawatch}}
  spool: {{path: spool}}
contract: {bundled_contract()}
defaults: {{interval_s: 0.5, timeout_s: 0.4}}
components:
{components}
""")
        agent = build_agent(load(cfg))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(3.0)
        await asyncio.to_thread(influx.kill)
        killed = time.time()
        await asyncio.sleep(4.0)
        assert agent.spool.pending("influxdb") > 50  # the samples wait in the spool
        await asyncio.to_thread(influx.start)
        await asyncio.sleep(3.0)
        stop.set()
        await asyncio.wait_for(task, 30)

        rows = influx.rows(f'SELECT count("up") FROM "slawatch"."{RETENTION_POLICY}"."slawatch_probe"', "slawatch")
        assert rows and rows[0]["count"] == agent.probe_runs
        states = influx.rows(f'SELECT "up" FROM "slawatch"."{RETENTION_POLICY}"."slawatch_state"', "slawatch")
        assert len(states) == 20  # one first state per component, none doubled by the replay
        beats = influx.rows(f'SELECT "period_s" FROM "slawatch"."{RETENTION_POLICY}"."slawatch_heartbeat"',
                            "slawatch")
        assert any(b["time"] / 1000 > killed + 1 for b in beats) and len(beats) >= 8
        assert agent.sinks[0].write_errors > 0
    finally:
        await asyncio.to_thread(influx.stop)

"""The real agent against loopback targets: what it stores, how it stops, reloads, and survives SIGKILL."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slawatch.cli.agent import build_agent
from slawatch.config.loader import load
from slawatch.model import StateChange
from slawatch.testing import free_port
from tests.e2e.agentconfig import write_config

ROOT = Path(__file__).resolve().parents[2]


class CountingServer:
    """A TCP service that records when each connection arrived, and can be taken down and up."""

    def __init__(self) -> None:
        self.accepts: list[float] = []
        self.server: asyncio.Server | None = None
        self.port = free_port()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepts.append(time.time())
        writer.close()

    async def up(self) -> None:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def down(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def target() -> AsyncIterator[CountingServer]:
    srv = CountingServer()
    await srv.up()
    yield srv
    await srv.down()


def db_rows(path: Path, sql: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(path) as db:
        return db.execute(sql).fetchall()


async def test_agent_stores_every_probe_and_dates_the_outage_at_the_first_failure(
        tmp_path: Path, target: CountingServer) -> None:
    loaded = load(write_config(tmp_path, target.port, interval=0.25))
    changes: list[StateChange] = []
    agent = build_agent(loaded, on_change=changes.append)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await asyncio.sleep(1.5)
    went_down = time.time()
    await target.down()
    await asyncio.sleep(1.5)
    await target.up()
    came_up = time.time()
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(task, 15)

    db = tmp_path / "store.db"
    (n_samples,) = db_rows(db, "SELECT count(*) FROM slawatch_probe")[0]
    assert n_samples == agent.probe_runs > 10
    assert len(target.accepts) == n_samples - len(db_rows(db, "SELECT 1 FROM slawatch_probe WHERE up = 0"))
    states = db_rows(db, "SELECT ts_ms, up, reason FROM slawatch_state ORDER BY ts_ms")
    assert [s[1] for s in states] == [1, 0, 1]
    assert [(c.ts_ms, int(c.up)) for c in changes] == [(s[0], s[1]) for s in states]
    # the outage starts at the first failed probe (within one interval of the server going away) and ends
    # at the first good one, whatever the confirmation setting. Stamps are whole milliseconds from the agent's
    # monotonic clock anchored to the wall clock: a few ms of slack against this process's time.time().
    slack = 0.005
    assert -slack <= states[1][0] / 1000 - went_down <= 0.25 + 0.1
    assert -slack <= states[2][0] / 1000 - came_up <= 0.25 + 0.1
    assert "refused" in str(states[1][2])
    first_fail = db_rows(db, "SELECT min(ts_ms) FROM slawatch_probe WHERE up = 0")[0][0]
    assert states[1][0] == first_fail
    heartbeats = db_rows(db, "SELECT ts_ms FROM slawatch_heartbeat")
    assert len(heartbeats) >= 3


async def test_metrics_healthz_and_reload(tmp_path: Path, target: CountingServer) -> None:
    from slawatch.cli.agent import run_agent

    listen = free_port()
    cfg = write_config(tmp_path, target.port, interval=0.25, listen_port=listen)
    agent = build_agent(load(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(agent, stop))
    await asyncio.sleep(1.0)

    def get(path: str) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{listen}{path}", timeout=5) as resp:
            return str(resp.read().decode())

    metrics = await asyncio.to_thread(get, "/metrics")
    for name in ("slawatch_probe_success", "slawatch_probe_duration_seconds", "slawatch_component_up",
                 "slawatch_schedule_lateness_seconds_bucket", "slawatch_spool_bytes", "slawatch_spool_samples",
                 "slawatch_sink_write_errors_total", "slawatch_samples_dropped_total",
                 "slawatch_config_last_reload_successful"):
        assert name in metrics, name
    assert 'slawatch_probe_success{component="san-1",kind="tcp",probe="tcp"} 1.0' in metrics
    assert "slawatch_config_last_reload_successful 1.0" in metrics
    assert '"status": "ok"' in await asyncio.to_thread(get, "/healthz")
    assert "san-1" in await asyncio.to_thread(get, "/")

    # a good reload adds a component without disturbing the first one's state
    before = agent.states["san-1"]
    cfg.write_text(cfg.read_text() + f"""
  - name: san-2
    class: san
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{target.port}"}}]
""")
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(1.0)
    assert set(agent.states) == {"san-1", "san-2"}
    assert agent.states["san-1"] is before
    # a bad reload keeps the running config and says so in the metric
    cfg.write_text(cfg.read_text().replace("class: san\n    customer: acme\n    probes: [{kind: tcp, target: "
                                           f'"127.0.0.1:{target.port}"}}]\n', "class: nope\n", 1))
    os.kill(os.getpid(), signal.SIGHUP)
    await asyncio.sleep(0.3)
    assert set(agent.states) == {"san-1", "san-2"}
    assert "slawatch_config_last_reload_successful 0.0" in await asyncio.to_thread(get, "/metrics")
    stop.set()
    await asyncio.wait_for(task, 15)


@pytest.mark.timeout(90)
async def test_sigkill_and_restart_loses_nothing_and_doubles_nothing(tmp_path: Path,
                                                                     target: CountingServer) -> None:
    cfg = write_config(tmp_path, target.port, interval=0.2)
    cmd = [sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    await asyncio.sleep(4.0)
    proc.kill()
    killed_at = time.time()
    proc.wait(10)
    accepts_before_kill = [t for t in target.accepts if t < killed_at]
    # The agent spools every 200 ms; what was probed in the last moment before SIGKILL may be unspooled.
    # Cut at the quietest gap between connections well before the kill.
    window = [t for t in accepts_before_kill if killed_at - 1.5 < t < killed_at - 0.4]
    assert len(window) >= 3
    gaps = [(b - a, (a + b) / 2) for a, b in itertools.pairwise(window)]
    cutoff = max(gaps)[1]

    proc2 = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    await asyncio.sleep(3.0)
    proc2.send_signal(signal.SIGTERM)
    _, err = await asyncio.to_thread(proc2.communicate, timeout=20)
    assert proc2.returncode == 0, err.decode()[-2000:]

    db = tmp_path / "store.db"
    stored = [r[0] / 1000 for r in db_rows(db, "SELECT ts_ms FROM slawatch_probe WHERE up = 1")]
    assert len(stored) == len(set(stored))  # no duplicates
    assert sum(1 for t in stored if t < cutoff) == sum(1 for t in target.accepts if t < cutoff)
    assert sum(1 for t in stored if t > killed_at) > 5  # the restarted agent went on


@pytest.mark.timeout(60)
def test_sigterm_exits_zero_and_flushes(tmp_path: Path) -> None:
    port = free_port()  # nothing listens: every probe fails, every sample must still be stored
    cfg = write_config(tmp_path, port, interval=0.2)
    proc = subprocess.Popen([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg)], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(3.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err.decode()[-2000:]
    log = err.decode()
    assert "san-1 is DOWN: connection refused" in log
    n = db_rows(tmp_path / "store.db", "SELECT count(*) FROM slawatch_probe")[0][0]
    assert f"stopped after {n} probe runs" in log
    assert n >= 5
    assert db_rows(tmp_path / "store.db", "SELECT up FROM slawatch_state") == [(0,)]


def test_reload_drops_the_metric_series_of_removed_and_retagged_components(tmp_path: Path) -> None:
    from prometheus_client import generate_latest

    from slawatch.model import Outcome, Result

    extra = """  - name: san-2
    class: san
    customer: acme
    probes: [{kind: tcp, target: "127.0.0.1:9"}]
"""
    cfg = write_config(tmp_path, 9, extra_components=extra)
    agent = build_agent(load(cfg))
    for st in agent.states.values():
        agent.metrics.set_component(st.ref, True)
        agent.metrics.observe_probe(st.ref, "tcp", "tcp", Result(Outcome.UP), 0.001)
    # san-2 removed, san-1 moves to another tier
    cfg.write_text(cfg.read_text().replace(extra, "").replace("customer: acme\n    probes", "tier: silver\n    probes"))
    agent._apply(load(cfg))
    text = generate_latest(agent.metrics.registry).decode()
    assert 'component="san-2"' not in text
    assert 'tier="gold"' not in text
    agent.spool.close()

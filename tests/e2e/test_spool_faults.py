"""The real agent on a full disk and with its store down: every sample is stored or dropped and counted, and it
recovers by itself; a dying task is restarted and /healthz says what is wrong meanwhile."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import resource
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest

from agent.daemon import Agent
from agent.spool import SEG_HEADER
from slawatch.cli.agent import build_agent
from slawatch.config.loader import bundled_contract, load
from slawatch.testing import free_port, need, need_binary
from slawatch.testing.influxd import Influxd

ROOT = Path(__file__).resolve().parents[2]
COMPONENTS = 40
INTERVAL_S = 0.1


@pytest.fixture
def tiny_fs() -> Iterator[Path]:
    """A real 2 MB tmpfs (root only)."""
    mnt = Path(tempfile.mkdtemp(prefix="slawatch-fullfs-"))
    proc = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mnt)], capture_output=True)
    if proc.returncode != 0:
        mnt.rmdir()
        need(False, f"cannot mount a tmpfs here (needs root): {proc.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)
        mnt.rmdir()


@pytest.fixture
async def tcp_target() -> AsyncIterator[int]:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    yield int(server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()


def write_config(tmp: Path, target_port: int, storage: str, *, listen_port: int | None = None,
                 components: int = COMPONENTS, interval_s: float = INTERVAL_S) -> Path:
    cfg = tmp / "agent.yaml"
    comps = "\n".join(f"""  - name: san-{i}
    class: san
    tier: gold
    probes: [{{kind: tcp, target: "127.0.0.1:{target_port}"}}]""" for i in range(components))
    cfg.write_text(f"""
agent: {{id: agent-a, listen: "127.0.0.1:{listen_port or free_port()}", heartbeat_s: 1}}
storage:
{storage}
contract: {bundled_contract()}
defaults: {{interval_s: {interval_s}, timeout_s: {interval_s * 0.9:g}}}
components:
{comps}
""")
    return cfg


def metric(agent: Agent, name: str) -> float:
    """The sum of a metric's samples over all its label values."""
    total = 0.0
    for family in agent.metrics.registry.collect():
        for s in family.samples:
            if s.name == name:
                total += s.value
    return total


async def wait_for(what: str, check: Callable[[], bool], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.1)


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.peer("influxd")
@pytest.mark.timeout(240)
async def test_full_disk_with_the_store_down_counts_every_drop_and_recovers_by_itself(
        tmp_path: Path, tiny_fs: Path, tcp_target: int, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    monkeypatch.setattr("agent.daemon.OUTBOX_LIMIT", 8000)  # more than fits on the disk, yet fills in seconds
    influx = Influxd(binary=need_binary("influxd", "influxdb"), dir=tmp_path / "influx")  # not started yet
    try:
        # The spool shares a 2 MB disk with 1.5 MB of ballast, so the store outage fills it in a few seconds.
        ballast = tiny_fs / "ballast"
        ballast.write_bytes(b"\0" * (1536 << 10))
        spool = tiny_fs / "spool"
        cfg = write_config(tmp_path, tcp_target, f"""  influxdb: {{url: "{influx.url}", api: v1, database: slawatch,
              timeout_s: 2}}
  spool: {{path: {spool}}}""")
        agent = build_agent(load(cfg))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))

        await wait_for("the disk to fill", lambda: metric(agent, "slawatch_spool_append_errors_total") > 0, 60)
        await wait_for("samples to be dropped from memory",
                       lambda: metric(agent, "slawatch_samples_dropped_total") > 0, 60)
        assert metric(agent, "slawatch_outbox_samples") >= 8000  # the backlog in memory is visible
        for _ in range(20):  # tries go on while the disk is full, each leaving no file behind
            await asyncio.sleep(0.1)
            assert len([p for p in spool.glob("*.seg") if p.stat().st_size <= SEG_HEADER]) <= 1
        assert not list(spool.glob("*.tmp"))

        # The store comes back: the spool drains, makes room, and the backlog in memory follows by itself.
        await asyncio.to_thread(influx.start)
        back = time.monotonic()
        await wait_for("the memory backlog to be spooled",
                       lambda: metric(agent, "slawatch_outbox_samples") < 1000, 60)
        recovered_s = time.monotonic() - back
        await wait_for("the store to catch up", lambda: agent.spool.pending("influxdb") < 2000, 60)
        dropped = metric(agent, "slawatch_samples_dropped_total")
        await asyncio.sleep(2.0)
        assert metric(agent, "slawatch_outbox_samples") < 1000
        assert metric(agent, "slawatch_samples_dropped_total") == dropped  # nothing dropped once it is back
        assert len([p for p in spool.glob("*.seg") if p.stat().st_size <= SEG_HEADER]) <= 1

        stop.set()
        await asyncio.wait_for(task, 60)
        rows = influx.rows('SELECT count("up") FROM "slawatch"."slawatch"."slawatch_probe"', "slawatch")
        stored = rows[0]["count"] if rows else 0
        counted = sum(agent.dropped_samples().values())
        assert counted > 0 and agent.dropped_samples()["stopped"] == 0
        assert stored + counted == agent.probe_runs  # probed = stored + dropped-and-counted
        assert f"stopping: samples dropped since start: {counted} ({counted} outbox_full)" in caplog.text
        assert "spool writable again after" in caplog.text
        print(f"full disk, store down: probed {agent.probe_runs}, stored {stored}, dropped and counted {counted}; "
              f"memory backlog spooled {recovered_s:.1f}s after the store came back")
        states = influx.rows('SELECT "up" FROM "slawatch"."slawatch"."slawatch_state"', "slawatch")
        assert len(states) == COMPONENTS  # state changes are never dropped
    finally:
        await asyncio.to_thread(influx.stop)


@pytest.mark.timeout(120)
async def test_points_the_spool_cannot_take_at_stop_are_counted_and_logged(
        tmp_path: Path, tiny_fs: Path, tcp_target: int, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="agent")
    cfg = write_config(tmp_path, tcp_target, f"""  sqlite: {{path: {tmp_path / "store.db"}}}
  spool: {{path: {tiny_fs / "spool"}}}""", components=10)
    agent = build_agent(load(cfg))
    fd = os.open(tiny_fs / "ballast", os.O_WRONLY | os.O_CREAT)
    with contextlib.suppress(OSError):  # the disk is full from the start
        for _ in range(1024):
            os.write(fd, b"\0" * 4096)
    os.close(fd)
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    await wait_for("a failed append", lambda: metric(agent, "slawatch_spool_append_errors_total") > 0, 30)
    await asyncio.sleep(1.0)
    stop.set()
    await asyncio.wait_for(task, 30)
    lost = agent.dropped_samples()["stopped"]
    with sqlite3.connect(tmp_path / "store.db") as db:  # what fitted in the segment's first block is stored
        stored = db.execute("SELECT count(*) FROM slawatch_probe").fetchone()[0]
    assert lost > stored and stored + lost == agent.probe_runs  # probed = stored + dropped-and-counted
    line = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("stopping: LOST"))
    assert f"LOST {lost} samples, " in line and "No space left on device" in line
    assert f"samples dropped since start: {lost} ({lost} stopped)" in line


class AgentProcess:
    """`slawatch agent` as a real process, its log in a file, its HTTP face on a loopback port."""

    def __init__(self, cfg: Path, listen_port: int, log: Path) -> None:
        self.base = f"http://127.0.0.1:{listen_port}"
        self.log = log
        with log.open("wb") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg)],
                                         cwd=ROOT, stdout=subprocess.DEVNULL, stderr=err)

    async def get(self, path: str) -> tuple[int, str]:
        try:
            return await asyncio.to_thread(get, self.base + path)
        except OSError as exc:
            return 0, str(exc)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")

    async def until(self, what: str, check: Callable[[int, str], bool], path: str = "/healthz",
                    timeout_s: float = 30.0) -> str:
        deadline = time.monotonic() + timeout_s
        while True:
            status, body = await self.get(path)
            if check(status, body):
                return body
            assert time.monotonic() < deadline, f"timed out waiting for {what}; last {status} {body[:500]}\n" \
                                                f"{self.log_text()[-3000:]}"
            await asyncio.sleep(0.2)

    async def stop(self) -> int:
        """SIGTERM; the number of probe runs the agent reports at exit."""
        self.proc.send_signal(signal.SIGTERM)
        assert await asyncio.to_thread(self.proc.wait, 30) == 0, self.log_text()[-3000:]
        m = re.search(r"stopped after (\d+) probe runs", self.log_text())
        assert m, self.log_text()[-3000:]
        return int(m.group(1))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def exhaust_descriptors(pid: int, limit: int) -> int:
    """Lower the process's soft RLIMIT_NOFILE to its lowest free descriptor: it can open nothing more."""
    fds = {int(n) for n in os.listdir(f"/proc/{pid}/fd")}
    lowest_free = next(i for i in range(len(fds) + 1) if i not in fds)
    if lowest_free < limit:
        _, hard = resource.prlimit(pid, resource.RLIMIT_NOFILE)
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (lowest_free, hard))
        return lowest_free
    return limit


@pytest.mark.timeout(180)
async def test_a_drain_that_dies_of_emfile_is_restarted_and_healthz_says_so_meanwhile(
        tmp_path: Path, tcp_target: int) -> None:
    listen = free_port()
    cfg = write_config(tmp_path, tcp_target, "  sqlite: {path: store.db}\n  spool: {path: spool}",
                       listen_port=listen, components=2, interval_s=0.5)
    agent = AgentProcess(cfg, listen, tmp_path / "agent.log")
    try:
        await agent.until("the agent to serve", lambda status, _: status == 200)
        soft, hard = resource.prlimit(agent.proc.pid, resource.RLIMIT_NOFILE)
        # No descriptor left: the drain's next spool read fails with EMFILE (Too many open files).
        limit = soft
        deadline = time.monotonic() + 30
        exhausted_at: float | None = None
        while exhausted_at is None or time.monotonic() < exhausted_at + 3.0:  # the drain reads at least each 1 s
            assert time.monotonic() < deadline, agent.log_text()[-3000:]
            limit = exhaust_descriptors(agent.proc.pid, limit)  # a probe socket that closed left a hole
            if exhausted_at is None and "Too many open files" in agent.log_text():
                exhausted_at = time.monotonic()
            await asyncio.sleep(0.05)
        resource.prlimit(agent.proc.pid, resource.RLIMIT_NOFILE, (soft, hard))

        body = await agent.until("/healthz to name the dead drain", lambda status, _: status != 0)
        status, body = await agent.get("/healthz")
        assert status == 503, body
        assert "task drain-sqlite failed" in body and "Too many open files" in body
        assert re.search(r"ERROR +agent.supervisor: task drain-sqlite failed, restarting in .*Too many open files",
                         agent.log_text())
        metrics = await agent.until("metrics", lambda status, _: status == 200, "/metrics")
        m = re.search(r'slawatch_task_restarts_total\{task="drain-sqlite"\} (\S+)', metrics)
        assert m and float(m.group(1)) >= 1, metrics
        await agent.until("/healthz to be ok again", lambda status, _: status == 200, timeout_s=60)
        probe_runs = await agent.stop()
    finally:
        agent.kill()
    with sqlite3.connect(tmp_path / "store.db") as db:
        stored = db.execute("SELECT count(*) FROM slawatch_probe").fetchone()[0]
    assert stored == probe_runs > 0  # the restarted drain caught up: every sample stored
    assert "Task exception was never retrieved" not in agent.log_text()


@pytest.mark.timeout(180)
@pytest.mark.peer("influxd")
async def test_healthz_is_unhealthy_through_a_store_outage_and_ok_after_it(tmp_path: Path, tcp_target: int) -> None:
    influx = Influxd(binary=need_binary("influxd", "influxdb"), dir=tmp_path / "influx")  # not started: port closed
    listen = free_port()
    cfg = write_config(tmp_path, tcp_target, f"""  influxdb: {{url: "{influx.url}", api: v1, database: slawatch}}
  spool: {{path: spool, unhealthy_failing_s: 2, unhealthy_backlog_s: 3}}""",
                       listen_port=listen, components=4, interval_s=0.25)
    agent = AgentProcess(cfg, listen, tmp_path / "agent.log")
    try:
        body = await agent.until("/healthz to report the failing store", lambda status, body: status == 503
                                 and "store influxdb: writes failing for" in body and "backlog growing" in body)
        assert "cannot reach the server" in body
        await asyncio.to_thread(influx.start)
        await agent.until("/healthz to be ok again", lambda status, _: status == 200)
        probe_runs = await agent.stop()
        rows = influx.rows('SELECT count("up") FROM "slawatch"."slawatch"."slawatch_probe"', "slawatch")
        assert rows and rows[0]["count"] == probe_runs
    finally:
        agent.kill()
        await asyncio.to_thread(influx.stop)

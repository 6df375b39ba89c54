"""The real agent under `ulimit -n 1024` against a flood of idle connections, and two agents on one spool."""

from __future__ import annotations

import errno
import os
import resource
import select
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from slawatch.config.loader import bundled_contract
from slawatch.testing import free_port

ROOT = Path(__file__).resolve().parents[2]
FLOOD = 1100
CAP = 64
HEADER_TIMEOUT_S = 2.0
COMPONENTS = 20
INTERVAL_S = 0.5

TARGET = r"""
import asyncio, sys

async def main() -> None:
    async def handle(reader, writer):
        writer.close()
    server = await asyncio.start_server(handle, "127.0.0.1", int(sys.argv[1]))
    print("ready", flush=True)
    async with server:
        await server.serve_forever()

asyncio.run(main())
"""


@pytest.fixture
def target_port() -> Iterator[int]:
    """A loopback TCP service the probes connect to, in its own process (its descriptors are not ours)."""
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-c", TARGET, str(port)], stdout=subprocess.PIPE)
    assert proc.stdout is not None
    assert proc.stdout.readline() == b"ready\n"
    yield port
    proc.kill()
    proc.wait(10)
    proc.stdout.close()


def write_config(tmp: Path, target_port: int, listen_port: int, *, spool: str = "spool") -> Path:
    comps = "".join(f"""
  - name: svc-{i}
    class: san
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{target_port}"}}]""" for i in range(COMPONENTS))
    cfg = tmp / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: flood-agent, listen: "127.0.0.1:{listen_port}", heartbeat_s: 1,
        max_connections: {CAP}, header_timeout_s: {HEADER_TIMEOUT_S}}}
storage: {{sqlite: {{path: store.db}}, spool: {{path: {spool}}}}}
contract: {bundled_contract()}
defaults: {{interval_s: {INTERVAL_S}, timeout_s: 0.4, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
components:{comps}
""")
    return cfg


def start_agent(cfg: Path, log: Path, limits: str = "ulimit -Sn 1024 && ulimit -Hn 1024") -> subprocess.Popen[bytes]:
    """The agent as an operator starts it, under a shell's file-descriptor limits (hard limit too)."""
    with log.open("wb") as out:
        return subprocess.Popen(["bash", "-c", f'{limits} && exec "$@"', "bash", sys.executable, "-m", "slawatch.cli",
                                 "agent", "--config", str(cfg)], cwd=cfg.parent, stdout=out, stderr=out,
                                env={**os.environ, "PYTHONPATH": str(ROOT)})


def get(port: int, path: str, timeout: float = 3.0) -> tuple[int, str]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as resp:
        return int(resp.status), resp.read().decode()


def wait_ready(port: int, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if get(port, "/healthz", 1.0)[0] == 200:
                return
        except OSError:
            time.sleep(0.1)
    raise AssertionError(f"agent did not answer /healthz: {log.read_text()}")


def stop(proc: subprocess.Popen[bytes]) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    try:
        return proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(10)
        raise


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


class Flood:
    """Many idle TCP connections to one port, opened without blocking; tracks when each is closed by the peer."""

    def __init__(self, port: int, n: int, *, chunk: int = 50) -> None:
        self.socks: list[socket.socket] = []
        self.by_fd: dict[int, socket.socket] = {}
        self.connected: dict[int, float] = {}
        self.closed: dict[int, float] = {}  # fd -> when the agent closed (EOF or reset)
        self.failed = 0  # connect refused or reset before it completed
        self.poll = select.poll()
        # in chunks, as clients arrive, so that the agent gets to accept them (a burst overflows the accept queue)
        while len(self.socks) < n:
            for _ in range(min(chunk, n - len(self.socks))):
                s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
                s.setblocking(False)
                err = s.connect_ex(("127.0.0.1", port))
                assert err in (0, errno.EINPROGRESS), os.strerror(err)
                self.socks.append(s)
                self.by_fd[s.fileno()] = s
                self.poll.register(s.fileno(), select.POLLOUT | select.POLLIN)
            self.pump(0.05)

    def pump(self, seconds: float) -> None:
        """Watch the sockets for `seconds`: record connects, and the agent closing them."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            for fd, ev in self.poll.poll(min(left, 0.1) * 1000):
                s = self.by_fd[fd]
                now = time.monotonic()
                if fd not in self.connected:
                    err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        self.failed += 1
                        self.closed[fd] = now
                        self.poll.unregister(fd)
                        continue
                    self.connected[fd] = now
                    self.poll.modify(fd, select.POLLIN)
                    if not ev & (select.POLLIN | select.POLLHUP | select.POLLERR):
                        continue
                try:
                    data = s.recv(4096)
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    self.closed[fd] = now
                    self.poll.unregister(fd)

    @property
    def open(self) -> int:
        """Connected and not closed by the agent."""
        return sum(1 for fd in self.connected if fd not in self.closed)

    @property
    def pending(self) -> int:
        return len(self.socks) - len(self.connected) - self.failed

    def close(self) -> None:
        for s in self.socks:
            s.close()


def raise_own_nofile(need: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < need:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(need, hard) if hard != resource.RLIM_INFINITY else need, hard))
    assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] >= need, "the test process cannot open enough sockets"


def test_idle_connection_flood_neither_starves_probes_nor_floods_the_log(tmp_path: Path, target_port: int) -> None:
    raise_own_nofile(FLOOD + 200)
    listen = free_port()
    cfg = write_config(tmp_path, target_port, listen)
    log = tmp_path / "agent.log"
    proc = start_agent(cfg, log)
    flood: Flood | None = None
    try:
        wait_ready(listen, proc, log)
        time.sleep(2 * INTERVAL_S)
        flood_start_ms = time.time_ns() // 1_000_000
        flood = Flood(listen, FLOOD)
        flood.pump(1.5)
        # at most CAP idle connections are held; the rest were closed at once (refused, not queued for ever)
        assert flood.open <= CAP, (flood.open, flood.pending, len(flood.closed))
        assert open_fds(proc.pid) < 1024 - 512, "the listener holds the descriptors the probes need"
        flood.pump(0.5)
        held_fds = open_fds(proc.pid)
        assert held_fds < CAP + 100, held_fds

        # every idle connection is closed by the header timeout; then /metrics answers again
        flood.pump(HEADER_TIMEOUT_S + 2)
        assert flood.pending == 0
        assert flood.open == 0, flood.open
        kept = [flood.closed[fd] - flood.connected[fd] for fd in flood.connected
                if flood.closed[fd] - flood.connected[fd] > 0.5]
        assert 0 < len(kept) <= CAP
        assert all(HEADER_TIMEOUT_S - 0.2 <= held <= HEADER_TIMEOUT_S + 2.5 for held in kept), kept
        status, metrics = get(listen, "/metrics")
        assert status == 200
        refused = next(float(line.split()[-1]) for line in metrics.splitlines()
                       if line.startswith("slawatch_http_connections_refused_total"))
        assert refused == FLOOD - len(kept)  # each connection was either held (up to the cap) or refused at once
        time.sleep(2 * INTERVAL_S)
        flood_end_ms = time.time_ns() // 1_000_000
    finally:
        if flood is not None:
            flood.close()
        rc = stop(proc)
    text = log.read_text(errors="replace")
    assert rc == 0, text[-3000:]
    assert log.stat().st_size < 200_000
    assert "Too many open files" not in text
    assert f"HTTP listener at its cap of {CAP} connections" in text

    with sqlite3.connect(tmp_path / "store.db") as db:
        down = db.execute("SELECT count(*) FROM slawatch_probe WHERE up = 0").fetchone()[0]
        during = db.execute("SELECT count(*) FROM slawatch_probe WHERE ts_ms BETWEEN ? AND ?",
                            (flood_start_ms, flood_end_ms)).fetchone()[0]
        states = db.execute("SELECT DISTINCT up FROM slawatch_state").fetchall()
    assert down == 0
    assert states == [(1,)]
    # every component kept being probed on schedule through the flood
    expected = COMPONENTS * (flood_end_ms - flood_start_ms) / 1000 / INTERVAL_S
    assert during >= 0.7 * expected, (during, expected)


def test_a_client_slow_to_send_its_request_head_is_closed_after_the_header_timeout(
        tmp_path: Path, target_port: int) -> None:
    listen = free_port()
    log = tmp_path / "agent.log"
    proc = start_agent(write_config(tmp_path, target_port, listen), log)
    socks: list[socket.socket] = []
    try:
        wait_ready(listen, proc, log)
        silent = [socket.create_connection(("127.0.0.1", listen), timeout=1) for _ in range(3)]
        partial = socket.create_connection(("127.0.0.1", listen), timeout=1)
        partial.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        trickle = socket.create_connection(("127.0.0.1", listen), timeout=1)
        trickle.sendall(b"GET /metrics HTTP/1.1\r\n")
        kept_alive = socket.create_connection(("127.0.0.1", listen), timeout=1)
        kept_alive.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        socks = [*silent, partial, trickle, kept_alive]
        start = time.monotonic()
        assert kept_alive.recv(4096).startswith(b"HTTP/1.1 200")
        # `trickle` sends one more byte of a header line every 0.2 s and never ends its head
        for s in socks:
            s.setblocking(False)
        closed: dict[int, float] = {}
        while len(closed) < len(socks) and time.monotonic() - start < HEADER_TIMEOUT_S + 5:
            if trickle.fileno() not in closed:
                try:
                    trickle.send(b"X")
                except OSError:
                    closed[trickle.fileno()] = time.monotonic() - start
            for s in socks:
                if s.fileno() in closed:
                    continue
                try:
                    if s.recv(4096) == b"":
                        closed[s.fileno()] = time.monotonic() - start
                except BlockingIOError:
                    pass
                except OSError:
                    closed[s.fileno()] = time.monotonic() - start
            time.sleep(0.2)
        assert sorted(closed) == sorted(s.fileno() for s in socks), "not closed by the agent"
        assert all(HEADER_TIMEOUT_S - 0.3 <= at <= HEADER_TIMEOUT_S + 2.5 for at in closed.values()), closed
        status, metrics = get(listen, "/metrics")
        assert status == 200
        assert "slawatch_http_header_timeouts_total 5.0" in metrics
    finally:
        for s in socks:
            s.close()
        stop(proc)


def test_the_agent_log_throttles_a_repeated_line(tmp_path: Path, target_port: int) -> None:
    """30 reloads of a broken config: the same error 30 times costs 10 lines and one count, not 30 lines."""
    listen = free_port()
    cfg = write_config(tmp_path, target_port, listen)
    log = tmp_path / "agent.log"
    proc = start_agent(cfg, log)
    try:
        wait_ready(listen, proc, log)
        cfg.write_text(cfg.read_text() + "bogus_key: 1\n")
        for _ in range(30):
            proc.send_signal(signal.SIGHUP)
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while "reload_successful 0.0" not in get(listen, "/metrics")[1] and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)
    finally:
        assert stop(proc) == 0
    bogus = [ln for ln in log.read_text().splitlines() if "bogus_key" in ln]
    assert len(bogus) == 11, "\n".join(bogus)
    assert "(… repeated 20 more times in " in bogus[-1], bogus[-1]  # written at the latest at shutdown


def test_agent_raises_its_soft_descriptor_limit_to_the_hard_limit(tmp_path: Path, target_port: int) -> None:
    listen = free_port()
    cfg = write_config(tmp_path, target_port, listen)
    log = tmp_path / "agent.log"
    proc = start_agent(cfg, log, limits="ulimit -Sn 256 && ulimit -Hn 2048")
    try:
        wait_ready(listen, proc, log)
        limits = Path(f"/proc/{proc.pid}/limits").read_text()
    finally:
        stop(proc)
    line = next(ln for ln in limits.splitlines() if ln.startswith("Max open files"))
    assert line.split()[3:5] == ["2048", "2048"], line
    assert "open-file limit raised from 256 to 2048" in log.read_text()


def test_second_agent_on_the_same_spool_names_the_holder(tmp_path: Path, target_port: int) -> None:
    first_log = tmp_path / "first.log"
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    spool = tmp_path / "spool"
    cfg1 = write_config(tmp_path / "a", target_port, free_port(), spool=str(spool))
    cfg2 = write_config(tmp_path / "b", target_port, free_port(), spool=str(spool))
    first = start_agent(cfg1, first_log)
    try:
        wait_ready(int(cfg1.read_text().split('listen: "127.0.0.1:')[1].split('"')[0]), first, first_log)
        second = subprocess.run([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg2)], cwd=cfg2.parent,
                                capture_output=True, text=True, timeout=30, env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert first.poll() is None
    finally:
        assert stop(first) == 0
    assert second.returncode == 2, second.stderr
    assert "Traceback" not in second.stderr
    errors = [ln for ln in second.stderr.splitlines() if "ERROR" in ln]
    assert len(errors) == 1, second.stderr
    assert errors[0].endswith(f"spool {spool} is in use by process {first.pid}"), errors[0]

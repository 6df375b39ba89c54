"""The real `slawatch agent` as a subprocess for end-to-end tests: a TCP target, the process, its store."""

from __future__ import annotations

import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from slawatch.config.loader import bundled_contract
from slawatch.testing import free_port

ROOT = Path(__file__).resolve().parents[2]  # the directory holding the slawatch package: in a checkout, its root
LIBFAKETIME = "/usr/lib/x86_64-linux-gnu/faketime/libfaketime.so.1"


class TcpTarget:
    """A loopback TCP service in a thread: accepts and closes; `down()` makes connections refused."""

    def __init__(self) -> None:
        self.port = free_port()
        self._sock: socket.socket | None = None
        self._thread: threading.Thread | None = None

    def up(self) -> None:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", self.port))
        sock.listen(64)
        sock.settimeout(0.1)
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, args=(sock,), daemon=True)
        self._thread.start()

    def _serve(self, sock: socket.socket) -> None:
        while self._sock is sock:
            try:
                conn, _ = sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            conn.close()

    def down(self) -> None:
        sock, self._sock = self._sock, None
        if self._thread is not None:
            self._thread.join(2)
        if sock is not None:
            sock.close()


def write_config(tmp: Path, port: int, *, interval: float = 0.5, confirm_down: int = 2, heartbeat_s: float = 1.0,
                 listen: str | None = None) -> Path:
    cfg = tmp / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: test-agent, listen: "{listen or f'127.0.0.1:{free_port()}'}", heartbeat_s: {heartbeat_s}}}
storage: {{sqlite: {{path: {tmp / 'store.db'}}}, spool: {{path: {tmp / 'spool'}}}}}
contract: {bundled_contract()}
defaults: {{interval_s: {interval}, timeout_s: {interval * 0.8:g}, confirm: {{down: {confirm_down}, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
components:
  - name: san-1
    class: san
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:{port}"}}]
""")
    return cfg


class LoggedProcess:
    """A `slawatch` command in a subprocess from the checkout's root; its stderr lines are collected as they come."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "slawatch.cli", *args], cwd=ROOT,
                                     env=env if env is not None else dict(os.environ),
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def _ended(self) -> bool:
        """The process exited and every line it wrote has been read."""
        return self.proc.poll() is not None and not self._reader.is_alive()

    def has(self, pattern: str) -> bool:
        rx = re.compile(pattern)
        with self._cond:
            return any(rx.search(line) for line in self.lines)

    @property
    def log(self) -> str:
        with self._cond:
            return "\n".join(self.lines)

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(10)
        self._close()

    def stop(self) -> int:
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(30)
        self._close()
        return code

    def _close(self) -> None:
        self._reader.join(5)
        assert self.proc.stderr is not None
        self.proc.stderr.close()


class AgentProcess(LoggedProcess):
    """`slawatch agent` in a subprocess; its log lines are collected as they come."""

    def __init__(self, cfg: Path, *, faketime_file: Path | None = None, log_format: str = "text",
                 args: Sequence[str] = ()) -> None:
        env = dict(os.environ)
        if faketime_file is not None:
            env.update(LD_PRELOAD=LIBFAKETIME, FAKETIME_TIMESTAMP_FILE=str(faketime_file), FAKETIME_NO_CACHE="1",
                       FAKETIME_DONT_FAKE_MONOTONIC="1")
        super().__init__(["agent", "--config", str(cfg), "--log-format", log_format, *args], env)

    def wait_for(self, pattern: str, timeout: float = 20.0) -> str:
        """The first log line matching `pattern` (a regex), waiting for it to come."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for line in self.lines:
                    if rx.search(line):
                        return line
                left = deadline - time.monotonic()
                if left <= 0 or self._ended():
                    raise AssertionError(f"no log line matching {pattern!r}; log:\n" + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.2))


def rows(db: Path, sql: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql, params).fetchall()


def poll(check: object, timeout: float = 20.0, what: str = "condition") -> None:
    """Wait until `check()` is true (every 50 ms, at most `timeout` seconds)."""
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def store_rows(db: Path, sql: str) -> list[tuple[object, ...]]:
    """Rows of the agent's store, or none while the store or its tables are not there yet."""
    if not db.exists():
        return []
    try:
        return rows(db, sql)
    except sqlite3.OperationalError:
        return []

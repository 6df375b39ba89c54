"""A real InfluxDB 1.x (Debian's influxd) on random loopback ports in a directory, for tests and benchmarks.

Use `start_influxd(dir)` (the tests' `influxd` fixtures do). The handle can `stop()`, `kill()` (SIGKILL, like a
crash) and `restart()` on the same dirs and ports, so fault tests can take the store away and bring it back
with its data.
"""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slawatch.testing import free_port, need_binary

ADMIN_USER = "admin"
ADMIN_PASSWORD = "admin-secret"  # test-only credential of a throwaway server

_CONFIG = """\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc_port}"

[meta]
  dir = "{dir}/meta"
  retention-autocreate = true
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false
  wal-fsync-delay = "0s"

[http]
  enabled = true
  bind-address = "127.0.0.1:{http_port}"
  auth-enabled = {auth}
  log-enabled = false
  pprof-enabled = false

[monitor]
  store-enabled = false

[ifql]
  enabled = false

[continuous_queries]
  enabled = false

[logging]
  level = "warn"
  suppress-logo = true
"""


class InfluxError(RuntimeError):
    """A query answered with an error (HTTP status or `results[i].error`)."""


@dataclass
class Influxd:
    """One influxd process and its directory; survives stop/kill/restart with its data."""

    binary: str
    dir: Path
    auth: bool = False
    http_port: int = field(default_factory=free_port)
    rpc_port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def config_path(self) -> Path:
        return self.dir / "influxdb.conf"

    def start(self, timeout_s: float = 15.0) -> None:
        """Start influxd and wait until GET /ping answers 204; on auth servers make the admin user."""
        if self.proc is not None and self.proc.poll() is None:
            raise RuntimeError("influxd is already running")
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(_CONFIG.format(
            dir=self.dir, rpc_port=self.rpc_port, http_port=self.http_port, auth="true" if self.auth else "false"))
        with (self.dir / "influxd.log").open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "run", "-config", str(self.config_path)],
                                         stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.returncode}: {self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                    if resp.status == 204:
                        break
            except (OSError, urllib.error.URLError):
                pass
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"influxd not ready within {timeout_s}s: {self.log_tail()}")
            time.sleep(0.05)
        if self.auth:
            # With auth on and no user yet, influxd accepts exactly this one statement unauthenticated.
            self.query(f"CREATE USER {ADMIN_USER} WITH PASSWORD '{ADMIN_PASSWORD}' WITH ALL PRIVILEGES",
                       method="POST", admin=False, ignore_errors=("user already exists",))

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM and wait (a clean shutdown); SIGKILL if it does not exit in time."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)  # a stopped (SIGSTOP) process cannot act on SIGTERM
        self._signal(signal.SIGTERM, timeout_s)

    def kill(self) -> None:
        """SIGKILL: a crash, with whatever the WAL holds."""
        self._signal(signal.SIGKILL, 10.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def send_signal(self, sig: signal.Signals) -> None:
        """Send `sig`: SIGSTOP and SIGCONT stall a store that keeps its connections open, and return once the
        process is stopped or running again (a signal is delivered when the kernel next schedules the process:
        on a busy machine a request sent at once could still be answered)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        if sig in (signal.SIGSTOP, signal.SIGCONT):
            deadline = time.monotonic() + 5.0
            while _stopped(self.proc.pid) != (sig == signal.SIGSTOP) and time.monotonic() < deadline:
                time.sleep(0.005)

    def _signal(self, sig: signal.Signals, timeout_s: float) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return (self.dir / "influxd.log").read_text(errors="replace")[-n:]
        except OSError:
            return ""

    # ------------------------------------------------------------ InfluxQL over HTTP (synchronous)

    def query(self, q: str, db: str | None = None, *, method: str = "GET", admin: bool = True,
              epoch: str = "ms", ignore_errors: tuple[str, ...] = (), timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Run InfluxQL; return `results` (one per statement). Raises InfluxError on any error answer, OSError
        when the server does not answer within `timeout_s`."""
        params = {"q": q, "epoch": epoch}
        if db:
            params["db"] = db
        data = None
        if method == "POST":
            data = urllib.parse.urlencode(params).encode()
            req = urllib.request.Request(f"{self.url}/query", data=data, method="POST")
            req.add_header("Content-Type", "application/x-www-form-urlencoded")
        else:
            req = urllib.request.Request(f"{self.url}/query?{urllib.parse.urlencode(params)}")
        if self.auth and admin:
            token = base64.b64encode(f"{ADMIN_USER}:{ADMIN_PASSWORD}".encode()).decode()
            req.add_header("Authorization", f"Basic {token}")
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            text = exc.read().decode(errors="replace")
            if any(e in text for e in ignore_errors):
                return []
            raise InfluxError(f"{exc.code} {text}") from None
        if "error" in body:
            if any(e in body["error"] for e in ignore_errors):
                return []
            raise InfluxError(body["error"])
        results: list[dict[str, Any]] = body.get("results", [])
        for r in results:
            if "error" in r and not any(e in r["error"] for e in ignore_errors):
                raise InfluxError(r["error"])
        return results

    def series(self, q: str, db: str | None = None, *, timeout_s: float = 30.0) -> list[dict[str, Any]]:
        """Every series the statements return, in order (each with `name`, `columns`, `values`, maybe `tags`)."""
        return [s for r in self.query(q, db, timeout_s=timeout_s) for s in r.get("series", [])]

    def rows(self, q: str, db: str) -> list[dict[str, Any]]:
        """A single SELECT's rows as dicts (column -> value), all series concatenated."""
        out: list[dict[str, Any]] = []
        for result in self.query(q, db):
            for series in result.get("series", []):
                tags = series.get("tags", {})
                for values in series["values"]:
                    row = dict(zip(series["columns"], values, strict=True))
                    row.update(tags)
                    out.append(row)
        return out


def start_influxd(tmpdir: Path, auth: bool = False) -> Influxd:
    """Start a fresh influxd in `tmpdir` (PeerMissing when there is no influxd)."""
    binary = need_binary("influxd", "influxdb")
    server = Influxd(binary=binary, dir=Path(tmpdir), auth=auth)
    server.start()
    return server


__all__ = ["ADMIN_PASSWORD", "ADMIN_USER", "InfluxError", "Influxd", "start_influxd"]


def _stopped(pid: int) -> bool:
    """Whether every thread of process `pid` is stopped by a signal (each one's state in /proc: T)."""
    try:
        states = []
        for task in Path(f"/proc/{pid}/task").iterdir():
            states.append((task / "stat").read_text(encoding="ascii", errors="replace").rsplit(")", 1)[1].split()[0])
    except (OSError, IndexError):
        return False
    return bool(states) and all(state == "T" for state in states)

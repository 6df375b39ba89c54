"""A throwaway InfluxDB 1.x (Debian's `influxd`) on loopback ports in a directory, for the benchmark scripts."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

CONFIG = """\
reporting-enabled = false
bind-address = "127.0.0.1:{rpc}"

[meta]
  dir = "{dir}/meta"
  logging-enabled = false

[data]
  dir = "{dir}/data"
  wal-dir = "{dir}/wal"
  query-log-enabled = false

[http]
  bind-address = "127.0.0.1:{http}"
  log-enabled = false

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


def loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Influxd:
    """One influxd process over one data directory; it keeps its ports and data across stop/kill/start."""

    def __init__(self, directory: Path, binary: str | None = None) -> None:
        found = binary or shutil.which("influxd")
        if found is None:
            raise FileNotFoundError("influxd not found (apt-get install -y influxdb)")
        self.binary = found
        self.dir = directory
        self.http_port = loopback_port()
        self.rpc_port = loopback_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def start(self, timeout_s: float = 20.0) -> None:
        """Start influxd and wait until /ping answers 204."""
        self.dir.mkdir(parents=True, exist_ok=True)
        conf = self.dir / "influxdb.conf"
        conf.write_text(CONFIG.format(dir=self.dir, rpc=self.rpc_port, http=self.http_port))
        with (self.dir / "influxd.log").open("ab") as log:
            self.proc = subprocess.Popen([self.binary, "run", "-config", str(conf)], stdin=subprocess.DEVNULL,
                                         stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"influxd exited with {self.proc.returncode}, see {self.dir / 'influxd.log'}")
            try:
                with urllib.request.urlopen(f"{self.url}/ping", timeout=1) as resp:
                    if resp.status == 204:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        self.kill()
        raise RuntimeError(f"influxd did not answer /ping within {timeout_s:g}s")

    def signal(self, sig: signal.Signals) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM and wait; SIGKILL if it does not exit in time."""
        if self.proc is None:
            return
        self.signal(signal.SIGCONT)  # a stopped process cannot act on SIGTERM
        self.signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def kill(self) -> None:
        """SIGKILL, like a crash: what the WAL holds survives."""
        if self.proc is None:
            return
        self.proc.kill()
        self.proc.wait()
        self.proc = None

    def query(self, q: str, timeout_s: float = 5.0) -> list[dict[str, Any]]:
        """Run InfluxQL; the statement's series. Raises OSError when the server does not answer in time and
        RuntimeError when it answers with an error (InfluxDB 1.x says so inside a 200 answer)."""
        url = f"{self.url}/query?" + urllib.parse.urlencode({"q": q, "epoch": "ms"})
        try:
            with urllib.request.urlopen(url, timeout=timeout_s) as resp:
                body = json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            raise RuntimeError(f"InfluxDB {exc.code}: {exc.read()[:500]!r}") from None
        results: list[dict[str, Any]] = body.get("results", [])
        for result in results:
            if "error" in result:
                raise RuntimeError(f"InfluxDB: {result['error']}")
        return [s for r in results for s in r.get("series", [])]

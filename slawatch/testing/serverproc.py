"""The real `slawatch server` as a subprocess for end-to-end tests and benchmarks: its config (one component, the NOC
on a JSON webhook), the process, and the state change an agent would store."""

from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from slawatch.config.loader import bundled_contract
from slawatch.model import ComponentRef, StateChange
from slawatch.testing import free_port
from slawatch.testing.agentproc import ROOT

REF = ComponentRef("san-1", "san", "gold", "acme")


def write_config(tmp: Path, hook_port: int, *, storage: str = "", every: str = "4s", check_s: float = 0.5,
                 components: int = 1) -> Path:
    """`components` components (san-1, san-2, ...), the NOC notified by a JSON webhook, escalated once `every` after
    the raise while unacknowledged. `storage`: the storage section's body (default: SQLite in `tmp`)."""
    cfg = tmp / "server.yaml"
    store = storage or f"sqlite: {{path: {tmp / 'store.db'}}}, spool: {{path: {tmp / 'spool'}}}"
    listed = "".join(f"""
  - name: san-{k}
    class: san
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:9"}}]""" for k in range(1, components + 1))
    cfg.write_text(f"""
agent: {{id: a1, listen: "127.0.0.1:{free_port()}", heartbeat_s: 1}}
server: {{listen: "127.0.0.1:{free_port()}", leader_check_s: {check_s}}}
storage: {{{store}}}
contract: {bundled_contract()}
customers: [{{name: acme, tier: gold}}]
desk: {{tick_s: 0.2}}
components:{listed}
notify:
  noc: ["json://127.0.0.1:{hook_port}/hook"]
  escalation: {{every: {every}, max: 1, at_target_pct: []}}
  retry_first: 1s
  retry_max: 2s
  timeout_s: 3
""")
    return cfg


def down(ts_ms: int, agent: str = "a1", component: str = "san-1") -> StateChange:
    """What agent `agent` stores when it confirms `component` down (its outage starting at `ts_ms`)."""
    return StateChange(dataclasses.replace(REF, component=component), agent, ts_ms, False, "TCP connection refused")


class ServerProcess:
    """`slawatch server --id ID --listen 127.0.0.1:PORT` in a subprocess, its JSON log lines collected as they come."""

    def __init__(self, cfg: Path, server_id: str) -> None:
        self.id = server_id
        self.port = free_port()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "slawatch.cli", "server", "--config", str(cfg), "--id", server_id,
             "--listen", f"127.0.0.1:{self.port}", "--log-format", "json"],
            cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        self.lines: list[str] = []
        self._cond = threading.Condition()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            with self._cond:
                self.lines.append(line.rstrip("\n"))
                self._cond.notify_all()
        with self._cond:
            self._cond.notify_all()

    def wait_for(self, pattern: str, timeout: float = 20.0, *, after: int = 0) -> tuple[int, dict[str, Any]]:
        """(index, record) of the first JSON log record from line `after` on whose message matches `pattern`."""
        rx = re.compile(pattern)
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for k, line in enumerate(self.lines[after:], after):
                    try:
                        record: dict[str, Any] = json.loads(line)
                    except ValueError:
                        continue
                    if rx.search(record.get("msg", "")):
                        return k, record
                left = deadline - time.monotonic()
                if left <= 0 or (self.proc.poll() is not None and not self._reader.is_alive()):
                    raise AssertionError(f"server {self.id}: no log line matching {pattern!r}; log:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.2))

    def has(self, pattern: str) -> bool:
        rx = re.compile(pattern)
        with self._cond:
            return any(rx.search(line) for line in self.lines)

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

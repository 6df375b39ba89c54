"""The real `slawatch server` as a subprocess for end-to-end tests and benchmarks: its config (one component, the NOC
on a JSON webhook), the process, and the state change an agent would store."""

from __future__ import annotations

import dataclasses
import json
import re
import time
from pathlib import Path
from typing import Any

from slawatch.config.loader import bundled_contract
from slawatch.model import ComponentRef, StateChange
from slawatch.testing import free_port
from slawatch.testing.agentproc import LoggedProcess

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


class ServerProcess(LoggedProcess):
    """`slawatch server --id ID --listen 127.0.0.1:PORT` in a subprocess, its JSON log lines collected as they come."""

    def __init__(self, cfg: Path, server_id: str) -> None:
        self.id = server_id
        self.port = free_port()
        super().__init__(["server", "--config", str(cfg), "--id", server_id, "--listen", f"127.0.0.1:{self.port}",
                          "--log-format", "json"])

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

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
                if left <= 0 or self._ended():
                    raise AssertionError(f"server {self.id}: no log line matching {pattern!r}; log:\n"
                                         + "\n".join(self.lines[-40:]))
                self._cond.wait(min(left, 0.2))

"""The real agent under libfaketime: its wall clock stepped back and forward (as NTP does) in the middle of an outage.

What is stored must keep each component's changes in order, the outage's real length, and no invented gap in
monitoring, as the reporter's engine (`slawatch report --format json`) reads it back.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from slawatch.testing import need
from slawatch.testing.agentproc import LIBFAKETIME, ROOT, AgentProcess, TcpTarget, poll, rows, write_config

Spawn = Callable[..., AgentProcess]


def iso(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")


def report(cfg: Path, start_ms: int, end_ms: int) -> dict[str, Any]:
    argv = ["report", "--config", str(cfg), "--from", iso(start_ms), "--to", iso(end_ms), "--format", "json"]
    proc = subprocess.run([sys.executable, "-m", "slawatch.cli", *argv], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    (component,) = json.loads(proc.stdout)["components"]
    assert component["name"] == "san-1"
    return dict(component)


def outage_across_a_step(tmp_path: Path, target: TcpTarget, spawn: Spawn,
                         step: str) -> tuple[Path, AgentProcess, float]:
    """The target goes down, the agent confirms it, its wall clock steps by `step`, the target comes back."""
    need(os.path.exists(LIBFAKETIME), "libfaketime not found (apt-get install -y faketime)")
    fake = tmp_path / "faketime"
    fake.write_text("+0\n")
    cfg = write_config(tmp_path, target.port, interval=0.5, confirm_down=2, heartbeat_s=1.0)
    agent = spawn(cfg, faketime_file=fake)
    agent.wait_for("san-1 is up")
    time.sleep(1.0)
    target.down()
    went_down = time.monotonic()
    agent.wait_for("san-1 is DOWN")
    fake.write_text(f"{step}\n")
    time.sleep(1.5)  # probe runs and a heartbeat on the stepped clock
    target.up()
    outage_s = time.monotonic() - went_down
    agent.wait_for("san-1 recovered")
    # Heartbeats well after the recovery (after a step back, once the clock has passed the stamps taken before it)
    db = tmp_path / "store.db"
    poll(lambda: int(rows(db, "SELECT max(ts_ms) FROM slawatch_heartbeat")[0][0])  # type: ignore[call-overload]
         > int(rows(db, "SELECT max(ts_ms) FROM slawatch_state")[0][0]) + 2500,  # type: ignore[call-overload]
         timeout=90, what="heartbeats after the recovery")
    assert agent.stop() == 0
    return cfg, agent, outage_s


def check_store_and_report(tmp_path: Path, cfg: Path, outage_s: float) -> None:
    db = tmp_path / "store.db"
    states = rows(db, "SELECT ts_ms, up FROM slawatch_state ORDER BY ts_ms")
    assert [s[1] for s in states] == [1, 0, 1], states
    last_beat = int(rows(db, "SELECT max(ts_ms) FROM slawatch_heartbeat")[0][0])  # type: ignore[call-overload]
    doc = report(cfg, int(states[0][0]), last_beat + 1)  # type: ignore[call-overload]
    assert doc["unmonitored_s"] == 0, doc["unmonitored"]
    # the stored outage lasts what it really lasted: first failed run to first good one, runs 0.5 s apart
    # (give or take their lateness on a busy machine)
    stored_s = (int(states[2][0]) - int(states[1][0])) / 1000  # type: ignore[call-overload]
    assert outage_s - 1.0 <= stored_s <= outage_s + 1.0, (stored_s, outage_s)
    (outage,) = doc["outages"]
    assert outage["duration_s"] == stored_s  # it ended: the component recovered
    assert outage_s - 1.0 <= doc["down_s"] <= outage_s + 1.0


@pytest.mark.timeout(180)
def test_a_step_back_keeps_the_recovery_after_its_down(tmp_path: Path, tcp_target: TcpTarget, spawn: Spawn) -> None:
    cfg, agent, outage_s = outage_across_a_step(tmp_path, tcp_target, spawn, "-60")
    check_store_and_report(tmp_path, cfg, outage_s)
    # every probe run is stored: none shares its instant with a run taken before the step
    runs = int(re.search(r"stopped after (\d+) probe runs", agent.log).group(1))  # type: ignore[union-attr]
    assert rows(tmp_path / "store.db", "SELECT count(*) FROM slawatch_probe") == [(runs,)]
    assert "wall clock stepped by -60.0 s" in agent.log


@pytest.mark.timeout(120)
def test_a_step_forward_invents_neither_unmonitored_time_nor_downtime(tmp_path: Path, tcp_target: TcpTarget,
                                                                      spawn: Spawn) -> None:
    cfg, agent, outage_s = outage_across_a_step(tmp_path, tcp_target, spawn, "+300")
    check_store_and_report(tmp_path, cfg, outage_s)
    assert "wall clock stepped by +300.0 s" in agent.log

"""The real agent killed and restarted: a logged state change is on disk, streaks and states carry over."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from agent.spool import Spool
from slawatch.model import StateChange
from slawatch.testing.agentproc import AgentProcess, TcpTarget, poll, rows, store_rows, write_config

Spawn = Callable[..., AgentProcess]


@pytest.mark.timeout(90)
def test_sigkill_right_after_down_is_logged_keeps_the_down_and_its_start(
        tmp_path: Path, tcp_target: TcpTarget, spawn: Spawn) -> None:
    cfg = write_config(tmp_path, tcp_target.port, interval=0.5, confirm_down=2)
    db = tmp_path / "store.db"
    agent = spawn(cfg)
    agent.wait_for("san-1 is up")
    tcp_target.down()
    agent.wait_for("san-1 is DOWN")
    agent.kill()  # at once: the flush of the in-memory outbox (every 200 ms) has not come yet

    # The DOWN is in the spool (read it directly: the store may not have it yet), dated at the first failure.
    with Spool(tmp_path / "spool", 1 << 30, consumers=("sqlite",)) as sp:
        points = sp.read("sqlite", 10**6).points
    stored = rows(db, "SELECT ts_ms, up FROM slawatch_state") if db.exists() else []
    downs = [p for p in points if isinstance(p, StateChange) and not p.up] + [
        r for r in stored if r[1] == 0]
    assert downs, "the DOWN logged before the kill is neither in the spool nor in the store"

    # A restart stores it (the target is still down) and writes no second DOWN; the outage starts at the first
    # failed run before the kill.
    agent = spawn(cfg)
    poll(lambda: len(store_rows(db, "SELECT 1 FROM slawatch_probe WHERE up = 0")) >= 4, what="failures after restart")
    assert agent.stop() == 0
    states = rows(db, "SELECT ts_ms, up FROM slawatch_state ORDER BY ts_ms")
    first_fail = rows(db, "SELECT min(ts_ms) FROM slawatch_probe WHERE up = 0")[0][0]
    assert [s[1] for s in states] == [1, 0]
    assert states[1][0] == first_fail


@pytest.mark.timeout(120)
def test_restarts_write_no_redundant_up(tmp_path: Path, tcp_target: TcpTarget, spawn: Spawn) -> None:
    cfg = write_config(tmp_path, tcp_target.port, interval=0.3)
    db = tmp_path / "store.db"
    for i in range(6):
        agent = spawn(cfg)
        n = len(store_rows(db, "SELECT 1 FROM slawatch_probe"))
        poll(lambda n=n: len(store_rows(db, "SELECT 1 FROM slawatch_probe")) >= n + 3, what="probe runs stored")
        if i % 2:
            agent.kill()
        else:
            assert agent.stop() == 0
    agent = spawn(cfg)
    agent.wait_for("watching 1 components")
    n = len(store_rows(db, "SELECT 1 FROM slawatch_probe"))
    poll(lambda: len(store_rows(db, "SELECT 1 FROM slawatch_probe")) >= n + 3, what="probe runs stored")
    assert agent.stop() == 0
    assert rows(db, "SELECT up FROM slawatch_state") == [(1,)]


@pytest.mark.timeout(90)
def test_restart_inside_the_confirmation_window_dates_the_outage_from_the_first_failure(
        tmp_path: Path, tcp_target: TcpTarget, spawn: Spawn) -> None:
    # the window is 3 heartbeat periods (15 s): the reporter sees a shorter gap as watched
    cfg = write_config(tmp_path, tcp_target.port, interval=2.0, confirm_down=3, heartbeat_s=5.0)
    db = tmp_path / "store.db"
    agent = spawn(cfg)
    agent.wait_for("san-1 is up")
    tcp_target.down()
    # two failed runs of the three that confirm, then SIGKILL
    poll(lambda: len(store_rows(db, "SELECT 1 FROM slawatch_probe WHERE up = 0")) >= 2, what="two failures")
    agent.kill()
    failed_before = [r[0] for r in rows(db, "SELECT ts_ms FROM slawatch_probe WHERE up = 0 ORDER BY ts_ms")]
    assert len(failed_before) == 2
    assert rows(db, "SELECT up FROM slawatch_state") == [(1,)]

    agent = spawn(cfg)
    agent.wait_for("san-1 is DOWN", timeout=15)
    assert agent.stop() == 0
    states = rows(db, "SELECT ts_ms, up FROM slawatch_state ORDER BY ts_ms")
    assert [s[1] for s in states] == [1, 0]
    assert states[1][0] == failed_before[0]

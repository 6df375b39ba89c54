"""A server whose PostgreSQL lock session goes stops its desk, sender and monthly job at once (before anything more
is delivered), and leads again, from the store, once it holds the lock again; a server that takes over sends what
the last sender claimed and never marked at once, not when the claim runs out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import asyncpg
import pytest

from slawatch.cli.desk import IncidentDesk
from slawatch.cli.server import Server
from slawatch.config.loader import load
from slawatch.model import ComponentRef, Incident, IncidentEvent, IncidentState, Notification
from slawatch.store.leader import PostgresLeader, campaign
from slawatch.testing.serverproc import write_config

pytestmark = [pytest.mark.timeout(60), pytest.mark.peer("postgresql")]


async def until(check: object, timeout: float = 10.0) -> float:
    start = time.monotonic()
    while not check():  # type: ignore[operator]
        assert time.monotonic() - start < timeout
        await asyncio.sleep(0.005)
    return time.monotonic() - start


async def test_a_lost_lock_session_stops_the_leaders_work_at_once(tmp_path: Path, pg_dsn: str) -> None:
    cfg = write_config(tmp_path, 9, storage=f'postgres: {{dsn: "{pg_dsn}"}}, spool: {{path: {tmp_path / "spool"}}}')
    loaded = load(cfg)
    assert loaded.config.storage.postgres is not None
    server = Server(loaded, "srv-a", PostgresLeader(loaded.config.storage.postgres))
    stop = asyncio.Event()
    task = asyncio.create_task(campaign(server.leader, stop, 5.0, on_gain=server.lead, on_loss=server.step_down))
    admin = await asyncpg.connect(pg_dsn)
    try:
        await until(lambda: server.leading)
        work = list(server._tasks)
        assert {t.get_name() for t in work} == {"desk", "notify", "follow", "outbox"}
        pid = await admin.fetchval("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
        await admin.execute("SELECT pg_terminate_backend($1)", pid)
        # Well within the 5 s check period: the closed session is noticed by itself, and the work cancelled.
        stopped_s = await until(lambda: not server.leading and all(t.done() for t in work), timeout=2.0)
        assert stopped_s < 1.0
        await until(lambda: server.terms == 2)  # the lock is free again: it leads again, from the store
        assert server.leading
    finally:
        stop.set()
        await task
        await admin.close()
        await server.channels.close()
    assert not server.leading and not server.leader.held


async def test_a_new_leader_sends_at_once_what_the_last_sender_claimed_and_never_marked(
        tmp_path: Path, pg_dsn: str) -> None:
    cfg = write_config(tmp_path, 9, storage=f'postgres: {{dsn: "{pg_dsn}"}}, spool: {{path: {tmp_path / "spool"}}}')
    loaded = load(cfg)
    now = time.time_ns() // 1_000_000
    ref = ComponentRef("san-1", "san", "gold", "acme")
    incident = Incident("INC-2026-000001", ref, "down", now - 5_000, now - 4_000, "P1", IncidentState.OPEN,
                        "TCP refused", ("a1",), updated_ms=now - 4_000, version=1)
    note = Notification(f"{incident.id}.1.0", incident.id, "open", "noc@example.com", "subject", "text", "", "{}",
                        now - 4_000, now - 4_000)
    old, new = IncidentDesk(loaded), IncidentDesk(loaded)
    try:
        assert await old.store.open(incident, [IncidentEvent(incident.id, 1, now - 4_000, "opened", "slawatch")],
                                    [note])
        assert [n.id for n in await old.store.due_notifications(now, 10)] == [note.id]  # claimed, then it died
        assert await new.store.due_notifications(now, 10) == []
        await new.take_over()
        assert [n.id for n in await new.store.due_notifications(now, 10)] == [note.id]
    finally:
        await old.close()
        await new.close()

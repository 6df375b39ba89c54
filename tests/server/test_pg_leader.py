"""The PostgreSQL leader lock on a real server: one holder per database; a session that ends (closed, terminated by
the server, its process killed) frees it at once, and the holder whose connection goes knows at once."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time

import asyncpg
import pytest

from slawatch.config.settings import PostgresSettings
from slawatch.store.leader import LeaderError, PostgresLeader

pytestmark = [pytest.mark.timeout(60), pytest.mark.peer("postgresql")]

HOLD = """
import asyncio, sys, asyncpg
async def main():
    conn = await asyncpg.connect(sys.argv[1])
    assert await conn.fetchval("SELECT pg_try_advisory_lock($1)", int(sys.argv[2]))
    print("held", flush=True)
    await asyncio.sleep(60)
asyncio.run(main())
"""


def settings(dsn: str) -> PostgresSettings:
    return PostgresSettings(dsn=dsn, timeout_s=2.0)


async def test_one_holder_per_database_and_a_release_frees_it(pg_dsn: str) -> None:
    first, second = PostgresLeader(settings(pg_dsn)), PostgresLeader(settings(pg_dsn))
    try:
        assert await first.acquire()
        assert await first.check()
        assert not await second.acquire()
        assert not second.held
        await first.release()
        assert await second.acquire()
    finally:
        await first.release()
        await second.release()


async def test_a_killed_holder_frees_the_lock(pg_dsn: str) -> None:
    leader = PostgresLeader(settings(pg_dsn))
    holder = subprocess.Popen([sys.executable, "-c", HOLD, pg_dsn, str(leader.key)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        assert not await leader.acquire()
        holder.kill()
        holder.wait(10)
        deadline = time.monotonic() + 5
        while not await leader.acquire():  # the server ends the session when it sees the socket close
            assert time.monotonic() < deadline
            await asyncio.sleep(0.05)
    finally:
        if holder.poll() is None:
            holder.kill()
            holder.wait(10)
        assert holder.stdout is not None
        holder.stdout.close()
        await leader.release()


async def test_a_terminated_session_is_leadership_lost_at_once(pg_dsn: str) -> None:
    leader, other = PostgresLeader(settings(pg_dsn)), PostgresLeader(settings(pg_dsn))
    admin = await asyncpg.connect(pg_dsn)
    try:
        assert await leader.acquire()
        pids = await admin.fetch("SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted")
        assert len(pids) == 1
        await admin.execute("SELECT pg_terminate_backend($1)", pids[0]["pid"])
        # No query needed: the closed connection is noticed by itself.
        await asyncio.wait_for(leader.lost.wait(), timeout=5)
        assert not leader.held
        assert not await leader.check()
        assert await other.acquire()  # the lock went with the session
        assert not await leader.acquire()  # reconnected, and the other holds it now
    finally:
        await admin.close()
        await leader.release()
        await other.release()


async def test_an_unreachable_store_is_a_leader_error() -> None:
    leader = PostgresLeader(PostgresSettings(dsn="postgresql://slawatch@127.0.0.1:9/none", timeout_s=1.0))
    with pytest.raises(LeaderError, match="cannot connect"):
        await leader.acquire()
    assert not leader.held

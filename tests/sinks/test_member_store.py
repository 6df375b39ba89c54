"""The agents' leases (MemberStore) on every backend: renew stamps the store's clock, members lists every lease,
leave removes one; two store objects stand for two agent processes."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from slawatch.config.settings import SqliteSettings, StorageSettings
from slawatch.model import AgentLease
from slawatch.store import MemberStore, SourceError, open_member_store
from slawatch.store.sqlite_members import SqliteMemberStore
from tests.sinks.pg import pg_settings

Opener = Callable[[], MemberStore]


def lease(agent: str, **kw: object) -> AgentLease:
    base = AgentLease(agent, seen_ms=1, started_ms=1_000, heartbeat_s=2.0, zone="", assign="auto", replicas=2,
                      watching=7, host="mon-1", version="0.1.0")
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.peer("postgresql"))])
def opener(request: pytest.FixtureRequest, tmp_path: Path) -> Opener:
    if request.param == "postgres":
        settings = pg_settings(request.getfixturevalue("pg_dsn"))
        return lambda: open_member_store(StorageSettings(postgres=settings))
    path = tmp_path / "records.db"
    return lambda: open_member_store(StorageSettings(sqlite=SqliteSettings(path=path)))


@pytest.fixture
async def two(opener: Opener) -> AsyncIterator[tuple[MemberStore, MemberStore]]:
    a, b = opener(), opener()
    yield a, b
    await a.close()
    await b.close()


async def test_renew_members_leave(two: tuple[MemberStore, MemberStore]) -> None:
    a, b = two
    before = time.time_ns() // 1_000_000
    await a.renew(lease("agent-b", zone="eu", watching=3))
    await b.renew(lease("agent-a"))
    now_ms, leases = await a.members()
    assert [x.agent for x in leases] == ["agent-a", "agent-b"]  # sorted by agent
    got = leases[1]
    # seen_ms is the store's clock at the renewal, whatever the agent sent
    assert before - 1000 <= got.seen_ms <= now_ms + 1000
    assert dataclasses.replace(got, seen_ms=1) == lease("agent-b", zone="eu", watching=3)
    await b.renew(lease("agent-b", watching=9))  # insert or replace: one row per agent
    _, leases = await b.members()
    assert [(x.agent, x.watching, x.zone) for x in leases] == [("agent-a", 7, ""), ("agent-b", 9, "")]
    await a.leave("agent-a")
    await a.leave("nobody")
    _, leases = await b.members()
    assert [x.agent for x in leases] == ["agent-b"]


async def test_unreadable_store_raises_source_error(tmp_path: Path) -> None:
    bad = tmp_path / "not-a-dir"
    bad.write_text("x")
    store = SqliteMemberStore(bad / "records.db")
    with pytest.raises(SourceError):
        await store.members()
    with pytest.raises(SourceError):
        await store.renew(lease("a"))
    await store.close()


def test_open_member_store_uses_the_records_file(tmp_path: Path) -> None:
    storage = StorageSettings(sqlite=SqliteSettings(path=tmp_path / "s.db"), records=tmp_path / "r.db")
    store = open_member_store(storage)
    assert isinstance(store, SqliteMemberStore) and store.path == tmp_path / "r.db"
    assert os.fspath(store.path).endswith("r.db")

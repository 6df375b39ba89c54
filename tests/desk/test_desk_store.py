"""The incident desk's stores: one incident per fault, writes refused when the incident moved on, the outbox, ids,
pruning — on real SQLite files and a real PostgreSQL, two store objects standing for two processes."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slawatch.model import (
    ComponentRef,
    Incident,
    IncidentEvent,
    IncidentState,
    Notification,
    NotificationState,
    Pause,
)
from slawatch.store import DeskStore, SourceError
from slawatch.store.sqlite_desk import SqliteDeskStore
from tests.sinks.pg import pg_settings

REF = ComponentRef("pbx-1", "sip", "gold", "acme")


def incident(id: str = "INC-2026-000001", start_ms: int = 1_000, **kw: object) -> Incident:
    fields: dict[str, object] = dict(id=id, ref=REF, fault="down", start_ms=start_ms, raised_ms=start_ms + 60_000,
                                     priority="P1", state=IncidentState.OPEN, reason="SIP 503", agents=("a1",),
                                     updated_ms=start_ms + 60_000, version=1)
    fields.update(kw)
    return Incident(**fields)  # type: ignore[arg-type]


def opened(i: Incident) -> IncidentEvent:
    return IncidentEvent(i.id, 1, i.raised_ms, "opened", "slawatch", detail='{"priority": "P1"}')


def note(i: Incident, seq: int, n: int = 0, due_ms: int = 0) -> Notification:
    return Notification(f"{i.id}.{seq}.{n}", i.id, "open", "noc@example.com", "subject", "text", "", "{}",
                        i.raised_ms, due_ms)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.peer("postgresql"))])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[tuple[DeskStore, DeskStore]]:
    """Two store objects on one store, standing for two processes: on a SQLite file, or on PostgreSQL."""
    a: DeskStore
    b: DeskStore
    if request.param == "postgres":
        from slawatch.store.postgres import PostgresDeskStore

        settings = pg_settings(request.getfixturevalue("pg_dsn"))
        a, b = PostgresDeskStore(settings), PostgresDeskStore(settings)
    else:
        a, b = SqliteDeskStore(tmp_path / "s.db"), SqliteDeskStore(tmp_path / "s.db")
    yield a, b
    await a.close()
    await b.close()


async def test_one_fault_raises_one_incident_whoever_writes_first(
        stores: tuple[DeskStore, DeskStore]) -> None:
    a, b = stores
    first = incident()
    second = incident(id="INC-2026-000002")  # another process saw the same fault
    results = await asyncio.gather(a.open(first, [opened(first)], [note(first, 1)]),
                                   b.open(second, [opened(second)], [note(second, 1)]))
    assert sorted(results) == [False, True]
    assert len(await a.incidents()) == 1 and len(await a.notifications()) == 1
    winner = (await a.incidents())[0]
    assert await b.fault_known("pbx-1", 1_000) == winner.id
    assert await b.fault_known("pbx-1", 2_000) is None


async def test_ids_count_up_within_a_year(stores: tuple[DeskStore, DeskStore]) -> None:
    a, _ = stores
    assert await a.next_id(2026) == "INC-2026-000001"
    i = incident()
    assert await a.open(i, [opened(i)], [])
    assert await a.next_id(2026) == "INC-2026-000002"
    assert await a.next_id(2027) == "INC-2027-000001"
    taken = incident(start_ms=5_000)  # same id, another fault: refused, nothing stored
    assert not await a.open(taken, [opened(taken)], [note(taken, 1)])
    assert await a.fault_known("pbx-1", 5_000) is None and len(await a.notifications()) == 0


async def test_an_update_from_a_stale_read_is_refused_and_stores_nothing(
        stores: tuple[DeskStore, DeskStore]) -> None:
    a, b = stores
    i = incident()
    await a.open(i, [opened(i)], [])
    acked = dataclasses.replace(i, state=IncidentState.ACKNOWLEDGED, acknowledged_ms=2, acknowledged_by="ann",
                                version=2)
    ack_event = IncidentEvent(i.id, 2, 2, "acknowledged", "ann", "on it")
    assert await a.update(1, acked, [ack_event], [note(i, 2)])
    paused = dataclasses.replace(i, state=IncidentState.PAUSED, pauses=(Pause(3, None, "no access"),), version=2)
    assert not await b.update(1, paused, [IncidentEvent(i.id, 2, 3, "paused", "bob")], [note(i, 2, 1)])
    assert await b.get(i.id) == acked
    assert [e.action for e in await b.events(i.id)] == ["opened", "acknowledged"]
    assert [n.id for n in await b.notifications(i.id)] == [f"{i.id}.2.0"]


async def test_a_reopening_fault_is_recorded_once(stores: tuple[DeskStore, DeskStore]) -> None:
    a, b = stores
    i = incident(state=IncidentState.RESOLVED, resolved_ms=90_000)
    await a.open(i, [opened(i)], [])
    again = dataclasses.replace(i, state=IncidentState.OPEN, resolved_ms=None, version=2)
    ev = IncidentEvent(i.id, 2, 100_000, "reopened", "slawatch")
    assert await a.update(1, again, [ev], [], fault_start_ms=95_000)
    assert not await b.update(2, dataclasses.replace(again, version=3),
                              [dataclasses.replace(ev, seq=3)], [], fault_start_ms=95_000)
    assert await a.fault_known("pbx-1", 95_000) == i.id
    assert (await a.latest("pbx-1")) == again
    assert [x.id for x in await a.active()] == [i.id]


async def test_the_outbox_gives_due_notifications_and_keeps_outcomes(
        stores: tuple[DeskStore, DeskStore]) -> None:
    a, b = stores
    i = incident()
    await a.open(i, [opened(i)], [note(i, 1, 0, due_ms=10), note(i, 1, 1, due_ms=50)])
    assert [n.id for n in await b.due_notifications(20, 10)] == [f"{i.id}.1.0"]
    assert await b.next_due_ms() == 10 and await b.pending_count() == 2
    first, second = await b.due_notifications(100, 10)
    await b.mark(dataclasses.replace(first, state=NotificationState.SENT, attempts=1, sent_ms=101))
    await b.mark(dataclasses.replace(second, attempts=1, due_ms=200, last_error="HTTP 500"))
    assert [n.id for n in await a.due_notifications(150, 10)] == []
    (retry,) = await a.due_notifications(200, 10)
    assert retry.attempts == 1 and retry.last_error == "HTTP 500"
    # A sent one stays sent: a late duplicate outcome cannot turn it back to pending.
    await a.mark(dataclasses.replace(first, attempts=2, due_ms=300))
    assert (await a.notifications(i.id))[0].state is NotificationState.SENT


async def test_a_replayed_write_queues_no_second_notification(
        stores: tuple[DeskStore, DeskStore]) -> None:
    a, _ = stores
    i = incident()
    await a.open(i, [opened(i)], [note(i, 1)])
    moved = dataclasses.replace(i, priority="P2", version=2)
    assert await a.update(1, moved, [IncidentEvent(i.id, 2, 5, "priority", "ann")], [note(i, 1)])
    assert len(await a.notifications()) == 1


async def test_prune_forgets_only_old_resolved_incidents(stores: tuple[DeskStore, DeskStore]) -> None:
    a, _ = stores
    old = incident(state=IncidentState.RESOLVED, resolved_ms=70_000)
    live = incident(id="INC-2026-000002", start_ms=2_000)
    for i in (old, live):
        await a.open(i, [opened(i)], [note(i, 1)])
    assert await a.prune(10**9) == 4  # the incident, its fault, event and notification
    assert [i.id for i in await a.incidents()] == [live.id]


async def test_a_store_that_cannot_be_opened_says_so(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    store = SqliteDeskStore(tmp_path / "dir.db")
    with pytest.raises(SourceError, match=r"dir\.db"):
        await store.active()
    await store.close()


async def test_open_many_stores_each_new_fault_once_in_one_go(stores: tuple[DeskStore, DeskStore]) -> None:
    a, b = stores
    known = incident()
    await b.open(known, [opened(known)], [note(known, 1)])
    fresh = [incident(id=f"INC-2026-{k:06d}", start_ms=10_000 + k) for k in (2, 3)]
    again = incident(id="INC-2026-000004")  # the fault `known` raised already
    taken = incident(id="INC-2026-000002", start_ms=20_000)  # an id drawn twice
    items = [(i, [opened(i)], [note(i, 1)]) for i in (fresh[0], again, fresh[1], taken)]
    assert await a.open_many(items) == [True, False, True, False]
    assert sorted(i.id for i in await b.incidents()) == ["INC-2026-000001", "INC-2026-000002", "INC-2026-000003"]
    assert len(await b.notifications()) == 3 and await b.fault_known("pbx-1", 20_000) is None

"""The outbox sender against a real mail server (aiosmtpd) and a real SQLite outbox: a mail server that is down
loses nothing and sends it once when back, retries back off, a refusal is final, a restart resends only what was
not sent, and a slow receiver does not hold the others."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from hypothesis import given
from hypothesis import strategies as st

from desk.channels import Channels, Delivery
from desk.sender import Sender, backoff_ms, outcome
from slawatch.config.settings import NotifySettings, SmtpSettings
from slawatch.model import ComponentRef, Incident, IncidentEvent, IncidentState, Notification, NotificationState
from slawatch.store.sqlite_desk import SqliteDeskStore
from slawatch.testing import free_port
from slawatch.testing.webhook import Webhook
from tests.reporter.smtpd import Handler

T0 = 1_780_000_000_000


class Clock:
    def __init__(self) -> None:
        self.now_ms = T0

    def __call__(self) -> int:
        return self.now_ms


def settings(**kw: object) -> NotifySettings:
    return NotifySettings.model_validate({"retry_first": "10s", "retry_max": "1m", "give_up_after": "1h",
                                          "timeout_s": 2, **kw})


async def queue(store: SqliteDeskStore, recipients: list[str], n: int = 1) -> list[Notification]:
    """`n` incidents, each with one notification per recipient in the outbox."""
    notes: list[Notification] = []
    for k in range(1, n + 1):
        inc = Incident(f"INC-2026-{k:06d}", ComponentRef(f"c{k}", "sip", "gold", "acme"), "down", T0, T0, "P1",
                       IncidentState.OPEN, "refused", version=1)
        mine = [Notification(f"{inc.id}.1.{j}", inc.id, "open", to, f"[P1] DOWN: c{k} - {inc.id}", "text", "",
                             json.dumps({"incident": inc.id}), T0, T0) for j, to in enumerate(recipients)]
        assert await store.open(inc, [IncidentEvent(inc.id, 1, T0, "opened", "slawatch")], mine)
        notes += mine
    return notes


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteDeskStore]:
    s = SqliteDeskStore(tmp_path / "s.db")
    yield s
    await s.close()


async def test_a_mail_server_down_loses_nothing_and_sends_once_when_back(store: SqliteDeskStore) -> None:
    port, handler, clock = free_port(), Handler(), Clock()
    channels = Channels(SmtpSettings(host="127.0.0.1", port=port, timeout_s=2))
    sender = Sender(store, channels, settings(), clock_ms=clock)
    try:
        await queue(store, ["noc@example.net"])
        await sender.send_due()  # nobody listens on the port
        (note,) = await store.notifications()
        assert note.state is NotificationState.PENDING and note.attempts == 1
        assert note.due_ms == T0 + 10_000 and "127.0.0.1" in note.last_error
        clock.now_ms = T0 + 9_000
        assert not await sender.send_due() and (await store.notifications())[0].attempts == 1  # not due yet
        controller = Controller(handler, hostname="127.0.0.1", port=port)
        controller.start()
        try:
            clock.now_ms = T0 + 10_000
            await sender.send_due()
            clock.now_ms = T0 + 100_000
            await sender.send_due()
        finally:
            controller.stop()
    finally:
        await channels.close()
    (sent,) = await store.notifications()
    assert sent.state is NotificationState.SENT and sent.attempts == 2 and sent.sent_ms == T0 + 10_000
    assert len(handler.received) == 1
    assert handler.received[0].message["Message-ID"] == "<INC-2026-000001.1.0@slawatch>"


async def test_a_restarted_sender_sends_only_what_was_not_sent(tmp_path: Path, store: SqliteDeskStore) -> None:
    hook = await Webhook().start()
    clock = Clock()
    try:
        await queue(store, [f"json://127.0.0.1:{hook.port}/a", f"json://127.0.0.1:{hook.port}/status/503"])
        first = Channels(None, timeout_s=2)
        await Sender(store, first, settings(), clock_ms=clock).send_due()
        await first.close()
        again = SqliteDeskStore(tmp_path / "s.db")  # the agent restarted
        second = Channels(None, timeout_s=2)
        try:
            clock.now_ms = T0 + 60_000
            await Sender(again, second, settings(), clock_ms=clock).send_due()
        finally:
            await second.close()
            await again.close()
    finally:
        await hook.stop()
    assert sorted(r.path for r in hook.received) == ["/a", "/status/503", "/status/503"]
    ok, failing = await store.notifications()
    assert ok.state is NotificationState.SENT and ok.attempts == 1
    assert failing.state is NotificationState.PENDING and failing.attempts == 2 and "503" in failing.last_error


async def test_a_refusal_that_retrying_cannot_help_is_given_up_at_once(store: SqliteDeskStore) -> None:
    handler, port = Handler(refuse="550 5.1.1 no such mailbox"), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    channels = Channels(SmtpSettings(host="127.0.0.1", port=port, timeout_s=2))
    try:
        await queue(store, ["nobody@example.net"])
        sender = Sender(store, channels, settings(), clock_ms=Clock())
        await sender.send_due()
    finally:
        await channels.close()
        controller.stop()
    (note,) = await store.notifications()
    assert note.state is NotificationState.FAILED and "550" in note.last_error and sender.failed == 1


async def test_a_slow_receiver_does_not_hold_the_others(store: SqliteDeskStore) -> None:
    hook = await Webhook().start()
    channels = Channels(None, timeout_s=1)
    try:
        await queue(store, [f"json://127.0.0.1:{hook.port}/hang", f"json://127.0.0.1:{hook.port}/fast"], n=5)
        sender = Sender(store, channels, settings(concurrency=10), clock_ms=Clock())
        started = asyncio.get_running_loop().time()
        await sender.send_due()
        took = asyncio.get_running_loop().time() - started
    finally:
        await channels.close()
        await hook.stop()
    assert took < 5  # five hanging receivers, concurrently: one timeout, not five
    states = {n.recipient.rsplit("/", 1)[1]: n.state for n in await store.notifications()}
    assert states == {"hang": NotificationState.PENDING, "fast": NotificationState.SENT}


async def test_the_run_loop_delivers_what_is_queued_while_it_waits(store: SqliteDeskStore) -> None:
    hook = await Webhook().start()
    channels = Channels(None, timeout_s=2)
    stop = asyncio.Event()
    sender = Sender(store, channels, settings())
    task = asyncio.create_task(sender.run(stop))
    try:
        await asyncio.sleep(0.2)
        await queue(store, [f"json://127.0.0.1:{hook.port}/x"], n=3)
        sender.wake()
        for _ in range(100):
            if len(hook.received) == 3:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await asyncio.wait_for(task, 5)
        await channels.close()
        await hook.stop()
    assert sorted(r.json()["title"].rsplit(" ", 1)[1] for r in hook.received) == [
        "INC-2026-000001", "INC-2026-000002", "INC-2026-000003"]


@given(st.integers(1, 60))
def test_backoff_doubles_from_the_first_wait_up_to_the_most(attempts: int) -> None:
    wait = backoff_ms(attempts, 10, 1800)
    assert wait == min(1_800_000, 10_000 * 2 ** (attempts - 1))
    assert backoff_ms(attempts + 1, 10, 1800) >= wait


def test_a_notification_failing_for_give_up_after_is_given_up() -> None:
    note = Notification("i.1.0", "i", "open", "x@example.net", "s", "t", "", "{}", T0, T0, attempts=7)
    failing = Delivery(False, "connection refused", True)
    assert outcome(note, failing, T0 + 3_599_000, settings()).state is NotificationState.PENDING
    late = outcome(note, failing, T0 + 3_600_000, settings())
    assert late.state is NotificationState.FAILED and late.attempts == 8
    assert dataclasses.replace(late, state=NotificationState.PENDING) != note

"""Delivers the store's notification outbox: due rows go out concurrently (bounded), each outcome is stored;
failures are retried with back-off until delivered or given up, and nothing here ever blocks probing."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import time
from collections.abc import Callable
from typing import Any

from desk.channels import Channels, Delivery, Message, redact
from slawatch.config.settings import NotifySettings
from slawatch.model import Notification, NotificationState
from slawatch.store import DeskStore, SourceError

log = logging.getLogger(__name__)

IDLE_S = 5.0
"""Longest sleep with nothing due: a notification queued by another process (`slawatch incident ack`) is seen
within this."""
STORE_RETRY_S = 5.0


def backoff_ms(attempts: int, first_s: float, max_s: float) -> int:
    """Wait before attempt `attempts + 1`: first_s, doubling, at most max_s."""
    return round(min(max_s, first_s * 2.0 ** max(0, attempts - 1)) * 1000)


def outcome(note: Notification, result: Delivery, now_ms: int, settings: NotifySettings) -> Notification:
    """The row after one attempt: sent; pending again later; or failed for good (retrying cannot help, or it
    has been failing for `give_up_after`)."""
    attempts = note.attempts + 1
    if result.ok:
        return dataclasses.replace(note, state=NotificationState.SENT, attempts=attempts, sent_ms=now_ms,
                                   last_error="")
    give_up = (not result.retryable
               or now_ms - note.created_ms >= round(settings.give_up_after_s * 1000))
    if give_up:
        return dataclasses.replace(note, state=NotificationState.FAILED, attempts=attempts, last_error=result.error)
    due = now_ms + backoff_ms(attempts, settings.retry_first_s, settings.retry_max_s)
    return dataclasses.replace(note, attempts=attempts, due_ms=due, last_error=result.error)


class Sender:
    """Takes due notifications from the store and delivers them through `channels`."""

    def __init__(self, store: DeskStore, channels: Channels, settings: NotifySettings, *,
                 clock_ms: Callable[[], int] | None = None) -> None:
        self.store = store
        self.channels = channels
        self.settings = settings
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self._wake = asyncio.Event()
        self.sent = self.failed = self.retried = 0
        self.pending = 0
        self.last_error = ""

    def wake(self) -> None:
        """Something was queued: look now rather than at the next tick."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self._wake.clear()
            try:
                busy = await self.send_due()
                next_due = await self.store.next_due_ms()
                self.pending = await self.store.pending_count()
            except SourceError as exc:
                log.warning("notifications: cannot use the store: %s", exc)
                busy, next_due = False, None
                await _sleep_or(stop, self._wake, STORE_RETRY_S)
                continue
            if busy:
                continue
            wait_s = IDLE_S if next_due is None else max(0.0, min(IDLE_S, (next_due - self.clock_ms()) / 1000))
            await _sleep_or(stop, self._wake, wait_s)

    async def send_due(self) -> bool:
        """Deliver what is due now (one batch); True when a full batch was taken (there may be more)."""
        limit = self.settings.concurrency * 4
        due = await self.store.due_notifications(self.clock_ms(), limit)
        if not due:
            return False
        gate = asyncio.Semaphore(self.settings.concurrency)
        done: list[Notification] = []

        async def one(note: Notification) -> None:
            async with gate:
                result = await self.channels.deliver(note.recipient, message_of(note))
            done.append(outcome(note, result, self.clock_ms(), self.settings))

        try:
            await asyncio.gather(*(one(n) for n in due))
        finally:
            # One transaction for the batch (a disk sync each would cap a storm at the disk's sync rate); what
            # was delivered is marked even when the rest is cancelled by a stop.
            await self.store.mark_many(done)
            before = {n.id: n for n in due}
            for after in done:
                self._count(before[after.id], after)
        return len(due) == limit

    def _count(self, note: Notification, after: Notification) -> None:
        if after.state is NotificationState.SENT:
            self.sent += 1
        elif after.state is NotificationState.FAILED:
            self.failed += 1
            self.last_error = after.last_error
            log.error("notification %s (%s) to %s given up after %d attempt(s): %s", note.id, note.kind,
                      redact(note.recipient), after.attempts, after.last_error)
        else:
            self.retried += 1
            self.last_error = after.last_error
            if note.attempts == 0:  # said once, not at every retry
                log.warning("notification %s (%s) to %s failed, retrying: %s", note.id, note.kind,
                            redact(note.recipient), after.last_error)


def message_of(note: Notification) -> Message:
    """The outbox row as the channels send it; its Message-ID is the row's id: a resend is recognisable."""
    return Message(note.subject, note.text, note.html or None, f"<{note.id}@slawatch>", message_data(note))


def message_data(note: Notification) -> dict[str, Any]:
    try:
        data = json.loads(note.data)
    except ValueError:
        return {}
    return data if isinstance(data, dict) else {}


async def _sleep_or(stop: asyncio.Event, wake: asyncio.Event, seconds: float) -> None:
    waiters = {asyncio.ensure_future(stop.wait()), asyncio.ensure_future(wake.wait())}
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()

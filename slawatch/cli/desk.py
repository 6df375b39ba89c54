"""The incident desk and its sender, wired for `slawatch agent` (one host: the agent's confirmed changes feed it) and
for `slawatch server` (the leader: the shared store's changes feed it); supervised beside the process's other tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agent.daemon import Agent
from agent.supervisor import Supervisor
from desk.channels import Channels, redact
from desk.desk import Desk
from desk.sender import Sender
from slawatch.config.loader import Loaded
from slawatch.model import IncidentState, StateChange
from slawatch.store import DeskStore, Source, SourceError, open_desk_store, open_source

log = logging.getLogger(__name__)


@runtime_checkable
class ChangeFeed(Protocol):
    """A source that announces stored state changes as they are written (PostgreSQL's LISTEN/NOTIFY): `on_change`
    gets the components named, or None for "re-read them all"."""

    async def watch_changes(self, on_change: Callable[[list[str] | None], None], stop: asyncio.Event) -> None: ...


def recipient_problems(loaded: Loaded, channels: Channels) -> list[tuple[str, str]]:
    """(where in the config, why) for each recipient that cannot be reached at all: an unknown Apprise scheme,
    a malformed URL, an address without SMTP settings. The recipient is shown redacted."""
    config = loaded.config
    places = [(f"notify.noc[{i}]", r) for i, r in enumerate(config.notify.noc)]
    places += [(f"notify.escalation.to[{i}]", r) for i, r in enumerate(config.notify.escalation.to)]
    places += [(f"customers[{k}].notify[{i}]", r) for k, c in enumerate(config.customers)
               for i, r in enumerate(c.notify)]
    out = []
    for where, recipient in places:
        problem = channels.check(recipient)
        if problem is not None:
            out.append((f"{where} ({redact(recipient)})", problem))
    return out


@runtime_checkable
class ClaimingStore(Protocol):
    """A desk store whose senders claim due notifications (PostgreSQL, where several servers could send)."""

    async def release_claims(self) -> int: ...


class IncidentDesk:
    """The desk and its sender for one process: an agent's, or the leading server's."""

    def __init__(self, loaded: Loaded, *, channels: Channels | None = None) -> None:
        """`channels`: the caller's, kept open by `close` (a server keeps one for its life: Apprise takes a while
        to load, and a server taking over should not wait for it); by default the desk's own."""
        config = loaded.config
        self.store: DeskStore = open_desk_store(config.storage)
        self.source: Source = open_source(config.storage, retention_s=loaded.contract.retention_s)
        self._own_channels = channels is None
        self.channels = channels if channels is not None else self.channels_of(loaded)
        self.sender = Sender(self.store, self.channels, config.notify)
        self.desk = Desk(loaded, self.store, self.source, on_queued=self.sender.wake)
        self._check(loaded)

    @staticmethod
    def channels_of(loaded: Loaded) -> Channels:
        notify = loaded.config.notify
        return Channels(notify.smtp or loaded.config.report.smtp, timeout_s=notify.timeout_s)

    def _check(self, loaded: Loaded) -> None:
        """Say at start which recipients cannot be reached at all (the rest still are)."""
        for where, problem in recipient_problems(loaded, self.channels):
            log.error("%s: notifications cannot be sent: %s", where, problem)

    def feed(self, change: StateChange) -> None:
        self.desk.feed(change)

    def apply(self, loaded: Loaded) -> None:
        """A reload: new rules, recipients and retries from now on."""
        self.desk.apply(loaded)
        self.sender.settings = loaded.config.notify
        self._check(loaded)

    def attach(self, agent: Agent) -> None:
        """Feed the agent's confirmed changes to the desk, follow its reloads, export the desk's metrics."""
        previous = agent.on_change

        def on_change(change: StateChange) -> None:
            if previous is not None:
                previous(change)
            self.desk.feed(change)

        agent.on_change = on_change
        agent.on_reload.append(self.apply)
        agent.metrics.watch(self.metrics)

    async def take_over(self) -> None:
        """The sending passes to this desk (a server that now leads): what the last sender claimed and never marked
        is this one's to send now. A delivery that was in flight when that sender stopped is sent again."""
        if not isinstance(self.store, ClaimingStore):
            return
        try:
            n = await self.store.release_claims()
        except SourceError as exc:  # the claims run out by themselves; the sender says if the store stays away
            log.warning("incident desk: cannot take over the outbox's claims: %s", exc)
            return
        if n:
            log.info("incident desk: %d notification(s) claimed by the last sender and not marked: sending them", n)

    def start(self, supervisor: Supervisor, stop: asyncio.Event, tick_s: float) -> list[asyncio.Task[None]]:
        return [supervisor.start("desk", lambda: self.desk.run(stop, tick_s=tick_s)),
                supervisor.start("notify", lambda: self.sender.run(stop))]

    async def follow_changes(self, stop: asyncio.Event, poll_s: float) -> None:
        """Feed the desk from the store, where no agent runs in this process: each change as the store announces
        it (ChangeFeed), else every component's latest state every `poll_s` (SQLite)."""
        if not isinstance(self.source, ChangeFeed):
            while not stop.is_set():
                await self._read_changes(None)
                await _wait(stop, None, poll_s)
            return
        pending: set[str] = set()
        everything = True  # what was written before listening began is read once
        woken = asyncio.Event()

        def on_change(names: list[str] | None) -> None:
            nonlocal everything
            if names is None:
                everything = True
            else:
                pending.update(names)
            woken.set()

        watcher = asyncio.create_task(self.source.watch_changes(on_change, stop), name="desk-watch-changes")
        try:
            while not stop.is_set():
                woken.clear()
                if everything or pending:
                    names = None if everything else sorted(pending)
                    everything = False
                    pending.clear()
                    await self._read_changes(names)
                    continue
                await _wait(stop, woken, None, watcher)
                if watcher.done():
                    watcher.result()  # its error restarts this task (supervised); its end means `stop`
                    return
        finally:
            watcher.cancel()
            await asyncio.gather(watcher, return_exceptions=True)

    async def _read_changes(self, names: Sequence[str] | None) -> None:
        now = self.desk.clock_ms()
        try:
            changes = await self.source.changes(now, now + 1, names)
        except SourceError as exc:
            log.warning("incident desk: cannot read the components' states: %s", exc)
            return
        for change in changes:
            self.desk.feed(change)

    async def follow_outbox(self, stop: asyncio.Event, poll_s: float) -> None:
        """Wake the sender every `poll_s` when the outbox holds something due that another process queued (an
        operator's action in the other server's console, `slawatch incident ack`): sent then, not at its idle tick."""
        while not stop.is_set():
            try:
                due = await self.store.next_due_ms()
            except SourceError:
                due = None  # the sender says so itself
            if due is not None and due <= self.desk.clock_ms():
                self.sender.wake()
            await _wait(stop, None, poll_s)

    def metrics(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        active = GaugeMetricFamily("slawatch_incidents_active", "Incidents not resolved, by state and priority",
                                   labels=["state", "priority"])
        counts: dict[tuple[str, str], int] = {}
        for incident in self.desk.active_incidents():
            key = (str(incident.state), incident.priority)
            counts[key] = counts.get(key, 0) + 1
        for state in (IncidentState.OPEN, IncidentState.ACKNOWLEDGED, IncidentState.PAUSED):
            if not any(name == state for name, _ in counts):
                counts[(str(state), "")] = 0  # every state is exported, at 0 when it has none
        for (name, priority), n in sorted(counts.items()):
            active.add_metric([name, priority], n)
        yield active
        raised = CounterMetricFamily("slawatch_incidents_raised", "Incidents raised or re-opened by this desk")
        raised.add_metric([], self.desk.raised)
        yield raised
        sent = CounterMetricFamily("slawatch_notifications", "Notification delivery attempts by result",
                                   labels=["result"])
        for result, n in (("sent", self.sender.sent), ("retried", self.sender.retried),
                          ("failed", self.sender.failed)):
            sent.add_metric([result], n)
        yield sent
        pending = GaugeMetricFamily("slawatch_notifications_pending", "Notifications waiting in the outbox")
        pending.add_metric([], self.sender.pending)
        yield pending

    async def close(self) -> None:
        if self._own_channels:
            await self.channels.close()
        await self.source.close()
        await self.store.close()


async def _wait(stop: asyncio.Event, other: asyncio.Event | None, seconds: float | None,
                task: asyncio.Task[None] | None = None) -> None:
    """Until `stop`, `other` or `task` is done, or `seconds` have passed."""
    waiters: set[asyncio.Future[object]] = {asyncio.ensure_future(stop.wait())}
    if other is not None:
        waiters.add(asyncio.ensure_future(other.wait()))
    try:
        await asyncio.wait(waiters | ({task} if task is not None else set()), timeout=seconds,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()

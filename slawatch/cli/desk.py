"""The incident desk inside `slawatch agent` (one host): the agent's confirmed changes feed it, its store is the
embedded SQLite file, its sender delivers the outbox; supervised beside the agent's own tasks."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Iterable

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agent.daemon import Agent
from desk.channels import Channels, redact
from desk.desk import Desk
from desk.sender import Sender
from slawatch.config.loader import Loaded
from slawatch.model import IncidentState, StateChange
from slawatch.store import DeskStore, Source, open_desk_store, open_source

log = logging.getLogger(__name__)


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


class IncidentDesk:
    """The desk and its sender for one agent process."""

    def __init__(self, loaded: Loaded) -> None:
        config = loaded.config
        self.store: DeskStore = open_desk_store(config.storage)
        self.source: Source = open_source(config.storage, retention_s=loaded.contract.retention_s)
        self.channels = self.channels_of(loaded)
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

    def start(self, agent: Agent, stop: asyncio.Event) -> list[asyncio.Task[None]]:
        tick = agent.loaded.config.desk.tick_s
        return [agent.supervisor.start("desk", lambda: self.desk.run(stop, tick_s=tick)),
                agent.supervisor.start("notify", lambda: self.sender.run(stop))]

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
        await self.channels.close()
        await self.source.close()
        await self.store.close()

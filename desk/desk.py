"""The incident desk: follows every component's state (the agents' confirmed changes, with the report's quorum
rule), raises, re-opens and resolves incidents in the store, escalates unacknowledged ones, and queues their
notifications in the store's outbox in the same transaction."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from desk import incidents as steps
from desk.incidents import FaultSeen, Step
from desk.messages import Context, notifications, recipients_for
from reporter.availability import current_state
from reporter.calendars import Calendar, calendars_of
from reporter.maintenance import format_duration, notice_of
from reporter.periods import from_ms
from reporter.report import configured_ref, customers_policies
from reporter.response import ResponseTarget, evaluate, instants_at, priority_of, target_of
from slawatch.config.loader import Loaded
from slawatch.model import ComponentRef, Incident, IncidentState, MaintenanceWindow, Notification, StateChange
from slawatch.store import DeskStore, Source, SourceError

log = logging.getLogger(__name__)

WINDOWS_REFRESH_S = 30.0
"""Maintenance windows are read again this often (a window added by `slawatch maintenance add` is seen then)."""
RECONCILE_S = 30.0
"""Every component's last stored state is read again this often: what the agents wrote while the desk was not
following (a restart, another agent on the same store) is caught up."""
PRUNE_S = 6 * 3600.0
"""Resolved incidents older than the contract's retention are forgotten this often."""
ID_ATTEMPTS = 5
BATCH = 200
"""Components handled per pass; the rest wait for the next (a core switch taking 1 000 down at once)."""


@dataclass(frozen=True, slots=True)
class View:
    """A component's state by the quorum rule: a fault (down/degraded) from `start_ms`, or up (fault None)."""

    ref: ComponentRef
    fault: str | None
    start_ms: int
    reason: str
    agents: tuple[str, ...]


def component_view(ref: ComponentRef, agents: Mapping[str, StateChange], quorum: int | None) -> View | None:
    """The component's state from its agents' latest changes (reporter.availability.current_state, the rule the
    report and the console use); a fault starts when the quorum was reached. None when no agent has a state."""
    now = current_state([agents[a] for a in sorted(agents)], quorum)
    if now is None:
        return None
    return View(ref, None if now.state == "up" else now.state, now.since_ms, now.reason, now.agents)


class Desk:
    """Raises and follows incidents. `feed` takes the agents' confirmed changes (the agent's own at once, the
    store's every RECONCILE_S); `run` handles them and escalations until stopped."""

    def __init__(self, loaded: Loaded, store: DeskStore, source: Source | None, *,
                 clock_ms: Callable[[], int] | None = None, on_queued: Callable[[], None] | None = None) -> None:
        self.store = store
        self.source = source
        self.clock_ms = clock_ms or (lambda: time.time_ns() // 1_000_000)
        self.on_queued = on_queued  # wakes the sender when notifications were queued
        self._agents: dict[str, dict[str, StateChange]] = {}  # component -> agent -> its latest change
        self._refs: dict[str, ComponentRef] = {}
        self._dirty: dict[str, None] = {}  # components to look at, in arrival order
        self._fed_ms: dict[str, int] = {}  # when the desk got the change that made a component dirty
        self._deferred: set[str] = set()  # faults inside announced maintenance: looked at again each pass
        self._active: dict[str, Incident] = {}  # component -> its active incident
        self._windows: list[MaintenanceWindow] = []
        self._windows_at = -1e18
        self._wake = asyncio.Event()
        self.raised = self.resolved = self.notifications_queued = 0
        self.apply(loaded)

    def apply(self, loaded: Loaded) -> None:
        """Take a (re)loaded config and contract."""
        self.loaded = loaded
        config = loaded.config
        self._policies = customers_policies(loaded)
        self._calendars: Mapping[str, Calendar] = calendars_of(loaded.contract.response_terms())
        self._components = {c.name: c for c in config.components}
        self._customers = {c.name: c for c in config.customers}
        served = config.server.listen if config.server is not None else config.agent.listen  # where the console is
        self._console = config.notify.console_url or f"http://{served}"

    # ------------------------------------------------------------ input

    def feed(self, change: StateChange) -> None:
        """An agent's confirmed change (idempotent: an older or equal change of the same agent is ignored)."""
        name = change.ref.component
        per_agent = self._agents.setdefault(name, {})
        known = per_agent.get(change.agent)
        if known is not None and known.ts_ms >= change.ts_ms:
            return
        per_agent[change.agent] = change
        self._refs[name] = change.ref
        self._dirty[name] = None
        # The response clock of a fault raised from this change starts now, however long the desk then takes
        # to write it (a core switch's thousand faults at once).
        self._fed_ms.setdefault(name, self.clock_ms())
        self._wake.set()

    async def load(self) -> None:
        """Take the active incidents and every component's last stored state (at start)."""
        self._active = {i.ref.component: i for i in await self.store.active()}
        await self._reconcile()

    async def _reconcile(self) -> None:
        if self.source is None:
            return
        now = self.clock_ms()
        try:
            for change in await self.source.changes(now, now + 1):
                self.feed(change)
        except SourceError as exc:
            log.warning("incident desk: cannot read the components' states: %s", exc)

    # ------------------------------------------------------------ the loop

    async def run(self, stop: asyncio.Event, *, tick_s: float = 1.0) -> None:
        await self.load()
        last_reconcile = last_prune = time.monotonic()
        await self.prune()
        while not stop.is_set():
            await self.pass_once()
            if time.monotonic() - last_reconcile >= RECONCILE_S:
                await self._reconcile()
                last_reconcile = time.monotonic()
            if time.monotonic() - last_prune >= PRUNE_S:
                await self.prune()
                last_prune = time.monotonic()
            self._wake.clear()
            if self._dirty:
                continue
            waiter = asyncio.ensure_future(self._wake.wait())
            stopper = asyncio.ensure_future(stop.wait())
            await asyncio.wait({waiter, stopper}, timeout=tick_s, return_when=asyncio.FIRST_COMPLETED)
            waiter.cancel()
            stopper.cancel()

    async def pass_once(self) -> None:
        """Handle the components whose state moved (at most BATCH), the deferred ones, then escalations."""
        await self._refresh_windows()
        names = list(self._dirty)[:BATCH]
        for name in names:
            self._dirty.pop(name, None)
        names += [n for n in self._deferred if n not in names]
        drafts: list[tuple[FaultSeen, str, int]] = []
        for name in names:
            draft = await self._handle(name)
            if draft is not None:
                drafts.append(draft)
        await self._raise_all(drafts)
        await self._escalate()

    async def _refresh_windows(self) -> None:
        if self.source is None or time.monotonic() - self._windows_at < WINDOWS_REFRESH_S:
            return
        now = self.clock_ms()
        try:
            self._windows = await self.source.windows(now - 86_400_000, now + 86_400_000)
            self._windows_at = time.monotonic()
        except SourceError as exc:
            log.warning("incident desk: cannot read maintenance windows: %s", exc)

    def refresh_windows_soon(self) -> None:
        self._windows_at = -1e18

    async def prune(self) -> int:
        """Forget resolved incidents raised longer ago than the contract's retention (with their logs)."""
        older_than = self.clock_ms() - round(self.loaded.contract.retention_s * 1000)
        try:
            n = await self.store.prune(older_than)
        except SourceError as exc:
            log.warning("incident desk: cannot prune old incidents: %s", exc)
            return 0
        if n:
            log.info("incident desk: %d old incident records pruned (retention %s)", n,
                     format_duration(self.loaded.contract.retention_s))
        return n

    # ------------------------------------------------------------ one component

    def _quorum(self, ref: ComponentRef) -> int | None:
        policy = self._policies.get(ref.customer or None, self._policies[None])
        return policy.quorum

    async def _handle(self, name: str) -> tuple[FaultSeen, str, int] | None:
        """Act on the component's state; a fault that needs a new incident is returned (seen, priority, raised
        at) to be raised with the others of the pass."""
        ref = self._refs[name]
        view = component_view(ref, self._agents.get(name, {}), self._quorum(ref))
        fed_ms = self._fed_ms.pop(name, None)
        if view is None:
            return None
        now = self.clock_ms()
        active = self._active.get(name)
        if view.fault is None:
            self._deferred.discard(name)
            if active is not None and view.start_ms > active.start_ms:
                step = steps.recover(active, view.start_ms, now)
                if step is not None:
                    await self._write(step)
            return None
        seen = FaultSeen(self._configured(ref), "down" if view.fault == "down" else "degraded", view.start_ms,
                         view.reason, view.agents)
        priority = priority_of(self.loaded.contract, seen.ref.klass, seen.fault)
        if active is not None:
            if seen.start_ms >= active.start_ms:
                step = steps.worsen(active, seen, priority, now)
                if step is not None:
                    await self._write(step)
            return None
        window = self._excusing_window(seen.ref, now)
        if window is not None:
            if name not in self._deferred:
                log.info("%s is %s inside announced maintenance %s (%s): no incident", name, seen.fault.upper(),
                         window.id, window.reason or "no reason given")
            self._deferred.add(name)
            return None
        if name in self._deferred:  # the window has ended with the fault still there: raised now
            self._deferred.discard(name)
            fed_ms = None
        if await self.store.fault_known(name, seen.start_ms) is not None:
            return None  # raised before (a restart, or another desk on the same store)
        raised_ms = min(fed_ms, now) if fed_ms is not None else now
        latest = await self.store.latest(name)
        reopen_ms = round(self.loaded.config.notify.reopen_within_s * 1000)
        if (latest is not None and not latest.active and latest.resolved_by == "" and latest.resolved_ms is not None
                and 0 <= seen.start_ms - latest.resolved_ms <= reopen_ms):
            await self._write(steps.reopen(latest, seen, priority, now))
            return None
        return seen, priority, raised_ms

    async def _raise_all(self, drafts: Sequence[tuple[FaultSeen, str, int]]) -> None:
        """New incidents for the faults of one pass, numbered in a row and stored in one transaction. One that
        is refused (another desk raised that fault, or took the id a moment ago) is looked at again next pass."""
        if not drafts:
            return
        now = self.clock_ms()
        first = await self.store.next_id(from_ms(now).year)
        prefix, number = first[:-6], int(first[-6:])
        planned = []
        for k, (seen, priority, raised_ms) in enumerate(drafts):
            step = steps.raise_incident(f"{prefix}{number + k:06d}", seen, priority, raised_ms)
            planned.append((step, self.notifications_of(step, now)))
        stored = await self.store.open_many([(step.incident, step.events, notes) for step, notes in planned])
        for (step, notes), ok in zip(planned, stored, strict=True):
            name = step.incident.ref.component
            if ok:
                self._written(step, notes)
            else:
                self._dirty[name] = None
                self._fed_ms.setdefault(name, step.incident.raised_ms)

    def _configured(self, ref: ComponentRef) -> ComponentRef:
        """The component's class, tier and customer as configured (the stored ones when it is not configured)."""
        comp = self._components.get(ref.component)
        if comp is None:
            return ref
        try:
            return configured_ref(self.loaded.config, comp)
        except Exception:  # no tier: cross_check refuses such a config; keep what the agent stored
            return ref

    def _excusing_window(self, ref: ComponentRef, now_ms: int) -> MaintenanceWindow | None:
        """An announced window (meeting the notice rule) covering the component now, if any. A late-notice
        window excuses nothing: the fault is raised."""
        for window in self._windows:
            if (window.start_ms <= now_ms < window.end_ms and window.applies_to(ref)
                    and notice_of(self.loaded, window).ok):
                return window
        return None

    # ------------------------------------------------------------ escalation

    def target(self, incident: Incident) -> ResponseTarget | None:
        return target_of(self.loaded.contract, incident.priority, incident.ref.tier)

    def escalation_instants(self, incident: Incident, now_ms: int) -> list[int]:
        """When an unacknowledged incident is escalated: every `escalation.every` after the raise, and at the
        configured shares of its response target; sorted, at most `escalation.max`."""
        esc = self.loaded.config.notify.escalation
        out: list[int] = []
        if esc.every_s is not None:
            step_ms = round(esc.every_s * 1000)
            out += [incident.raised_ms + k * step_ms for k in range(1, esc.max + 1)]
        target = self.target(incident)
        if target is not None and esc.at_target_pct:
            out += [t for t in instants_at(self._calendars, target, incident.raised_ms,
                                           [p / 100 for p in esc.at_target_pct], incident.pause_spans, now_ms)
                    if t is not None]
        return sorted(out)[:esc.max]

    async def _escalate(self) -> None:
        now = self.clock_ms()
        for incident in list(self._active.values()):
            if incident.state is not IncidentState.OPEN:
                continue  # acknowledged, or paused waiting on the customer
            instants = self.escalation_instants(incident, now)
            due = sum(1 for t in instants if t <= now)
            if due > incident.escalations:
                verdict = evaluate(self._calendars, self.target(incident), incident.raised_ms, None,
                                   incident.pause_spans, now)
                why = "unacknowledged"
                if verdict.target_s:
                    why += f" after {(verdict.response_s or 0) / verdict.target_s:.0%} of its response target"
                await self._write(steps.escalate(incident, due, why, now))

    # ------------------------------------------------------------ writing

    def context(self, incident: Incident) -> Context:
        comp = self._components.get(incident.ref.component)
        probes = tuple(p.label for p in comp.probes) if comp is not None else ()
        verdict = evaluate(self._calendars, self.target(incident), incident.raised_ms, incident.acknowledged_ms,
                           incident.pause_spans, self.clock_ms())
        return Context(probes, verdict.deadline_ms, verdict.target_s, self._console)

    def notifications_of(self, step: Step, now_ms: int) -> list[Notification]:
        """The notifications a step asks for, one per recipient, tied to its last event."""
        if not step.notify or not step.events:
            return []
        incident = step.incident
        notify = self.loaded.config.notify
        customer = self._customers.get(incident.ref.customer)
        ctx = self.context(incident)
        out: list[Notification] = []
        for kind in step.notify:
            to = recipients_for(kind, notify.noc, customer.notify if customer is not None else (),
                                notify.escalation.to)
            out += notifications(kind, incident, step.events[-1], ctx, to, now_ms, index=len(out))
        return out

    async def _write(self, step: Step) -> bool:
        """Store the step with its events and notifications; on a conflict (an operator acted meanwhile) take
        the stored incident and let the next pass decide again."""
        now = self.clock_ms()
        notes = self.notifications_of(step, now)
        incident = step.incident
        ok = await self.store.update(step.before_version, incident, step.events, notes,
                                     fault_start_ms=step.fault_start_ms)
        name = incident.ref.component
        if not ok:
            stored = await self.store.get(incident.id)
            if stored is not None and stored.active:
                self._active[name] = stored
            else:
                self._active.pop(name, None)
            self._dirty[name] = None
            return False
        self._written(step, notes)
        return True

    def _written(self, step: Step, notes: Sequence[Notification]) -> None:
        """Bookkeeping after a step was stored: the active incidents, counters, a log line, the sender woken."""
        incident = step.incident
        name = incident.ref.component
        if incident.active:
            self._active[name] = incident
        else:
            self._active.pop(name, None)
        action = step.events[-1].action if step.events else ""
        if action in ("opened", "reopened"):
            self.raised += 1
            log.warning("%s %s: %s %s (%s)", incident.id, action, name, incident.fault.upper(), incident.priority,
                        extra={"incident": incident.id, "component": name, "priority": incident.priority})
        elif action == "resolved":
            self.resolved += 1
            log.info("%s resolved: %s", incident.id, name, extra={"incident": incident.id, "component": name})
        if notes:
            self.notifications_queued += len(notes)
            if self.on_queued is not None:
                self.on_queued()

    async def act(self, id: str, action: Callable[[Incident], Step]) -> Step:
        """Apply an operator's action to the stored incident (retrying when it moved meanwhile)."""
        for _ in range(ID_ATTEMPTS):
            incident = await self.store.get(id)
            if incident is None:
                raise steps.ActionError(f"no incident {id}")
            step = action(incident)
            if await self._write(step):
                return step
        raise steps.ActionError(f"{id} keeps changing: try again")

    def active_incidents(self) -> Sequence[Incident]:
        return tuple(self._active.values())

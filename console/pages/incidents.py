"""The incidents (`/incidents`, open first, the month's resolved below), one incident (`/incidents/ID`: its response
clock, event log and notifications) and what operators do to it (acknowledge, pause, resume, priority, resolve),
through the desk as the command line does. Customer accounts look only: the provider acts, and is named for it."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from console import flash
from console.context import Console, Ctx, form_value
from console.scope import may_act, may_see
from desk import incidents as steps
from desk.channels import redact, redact_in
from desk.desk import Desk
from desk.incidents import ActionError, Step
from desk.view import did, note_order, order, priorities, priority_named, response_words, verdict_of
from reporter.calendars import Calendar, calendars_of
from reporter.maintenance import format_duration
from reporter.periods import iso_ms, month_of, month_period
from reporter.response import Verdict
from slawatch.model import Incident, IncidentEvent, IncidentState, Notification, User
from slawatch.store import SourceError

log = logging.getLogger(__name__)

MAX_ID_CHARS = 40
RESOLVED_SHOWN = 100
"""The month's resolved incidents listed unless all are asked for (`?resolved=all`): the latest are what is looked
for, and a busy month's thousands would make the page slow to render and to load."""
ACTIONS = ("ack", "pause", "resume", "priority", "resolve")
SENDER_WAKE = "incidents.wake_sender"
"""The key in Console.extra of what wakes the notification sender, where the console runs beside the desk (in
`slawatch agent`): notifications an action queues then go at once."""
CUSTOMERS_LOOK = ("Customer accounts see their incidents but do not act on them: ask your provider to acknowledge, "
                  "pause or resolve.")


@dataclass(frozen=True, slots=True)
class Row:
    """An incident with its response clock read at `now_ms`, as the pages show it."""

    incident: Incident
    verdict: Verdict
    response: str
    """The response clock in words ('12m left', 'LATE by 5m', '14m, met'), counted on the contract's calendar."""
    linked: bool
    """Its component is configured (so its page exists)."""
    due: str
    """While it waits for an answer: the wall time to its deadline ('due in 1h 12m'); the page's script ticks it."""
    deadline_iso: str

    @property
    def waiting(self) -> bool:
        """Still to be answered: active and unacknowledged."""
        return self.incident.active and self.incident.acknowledged_ms is None


def countdown(deadline_ms: int, now_ms: int) -> str:
    """The wall time to a response deadline as the page shows it before its script ticks it on (operations.js
    does the same sums): 'due in 1h 12m', 'overdue by 5m'."""
    left_s = (deadline_ms - now_ms) / 1000
    return f"due in {format_duration(left_s)}" if left_s >= 0 else f"overdue by {format_duration(-left_s)}"


def _calendars(console: Console) -> Mapping[str, Calendar]:
    cached = console.extra.get("incidents.calendars")
    if not isinstance(cached, tuple) or cached[0] is not console.loaded:
        cached = console.extra["incidents.calendars"] = (
            console.loaded, calendars_of(console.loaded.contract.response_terms()))
    return cached[1]  # type: ignore[no-any-return]


def rows(console: Console, incidents: Sequence[Incident], now_ms: int) -> list[Row]:
    """The incidents, in the order given, with their response clocks read at `now_ms`."""
    calendars = _calendars(console)
    configured = {c.name for c in console.loaded.config.components}
    out = []
    for inc in incidents:
        verdict = verdict_of(calendars, console.loaded, inc, now_ms)
        waiting = inc.active and inc.acknowledged_ms is None and verdict.deadline_ms is not None
        due = countdown(verdict.deadline_ms, now_ms) if waiting and verdict.deadline_ms is not None else ""
        deadline = "" if verdict.deadline_ms is None else iso_ms(verdict.deadline_ms, always_ms=False)
        out.append(Row(inc, verdict, response_words(inc, verdict), inc.ref.component in configured, due, deadline))
    return out


def _no_desk(ctx: Ctx) -> web.Response:
    return ctx.render("incidents.html", http_status=503, title="Incidents", open=[], resolved=[], resolved_count=0,
                      now=0, month="", error="the incident desk's records are not open in this console", note=None)


async def index(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    console = ctx.console
    store = console.desk_store
    if store is None:
        return _no_desk(ctx)
    now = console.board.clock()
    tz = console.loaded.config.report.timezone
    year, month = month_of(now, tz)
    this_month = month_period(year, month, tz)
    last_month = month_period(*_previous(year, month), tz)
    error = ""
    active: list[Incident] = []
    resolved: list[Incident] = []
    try:
        active = [i for i in await store.active() if may_see(ctx.user, i.ref.customer)]
        # Resolved this month: those raised since the start of last month cover all but month-long incidents.
        resolved = [i for i in await store.incidents(last_month.start_ms, None)
                    if not i.active and (i.resolved_ms or 0) >= this_month.start_ms
                    and may_see(ctx.user, i.ref.customer)]
    except SourceError as exc:
        error = str(exc)
    resolved.sort(key=lambda i: i.resolved_ms or 0, reverse=True)
    shown = resolved if request.query.get("resolved") == "all" else resolved[:RESOLVED_SHOWN]
    return ctx.render("incidents.html", title="Incidents", open=rows(console, sorted(active, key=order), now),
                      resolved=rows(console, shown, now), resolved_count=len(resolved), now=now,
                      month=f"{year}-{month:02d}", error=error, note=flash.take(ctx.session))


def _previous(year: int, month: int) -> tuple[int, int]:
    return (year, month - 1) if month > 1 else (year - 1, 12)


async def _visible(ctx: Ctx, id: str) -> Incident:
    """The incident, when the user may see it; another customer's is answered exactly as one that does not exist."""
    assert ctx.user is not None
    store = ctx.console.desk_store
    incident = None
    if store is not None and 0 < len(id) <= MAX_ID_CHARS:
        incident = await store.get(id)
    if incident is None or not may_see(ctx.user, incident.ref.customer):
        raise web.HTTPNotFound(text="no such incident", content_type="text/plain")
    return incident


@dataclass(frozen=True, slots=True)
class Note:
    """A notification as the page shows it: the recipient redacted, the error without the recipient's secrets."""

    kind: str
    recipient: str
    state: str
    attempts: int
    last_error: str
    created_ms: int
    sent_ms: int | None


def _note(n: Notification) -> Note:
    return Note(n.kind, redact(n.recipient), str(n.state), n.attempts, redact_in(n.last_error, n.recipient),
                n.created_ms, n.sent_ms)


def _told(console: Console, user: User, notes: Sequence[Notification]) -> list[Notification]:
    """The notifications the user may see: all for the provider's staff; for a customer account only those sent to
    its customers' own contacts (not the provider's on-call addresses)."""
    if may_act(user):
        return list(notes)
    contacts = {to for c in console.loaded.config.customers if c.name in user.customers for to in c.notify}
    return [n for n in notes if n.recipient in contacts]


def _detail(event: IncidentEvent) -> str:
    """An event's particulars in words: 'P3 → P1' for a priority change."""
    try:
        doc = json.loads(event.detail) if event.detail else {}
    except ValueError:
        return ""
    if not isinstance(doc, dict):
        return ""
    if event.action == "priority" and "old" in doc and "new" in doc:
        return f"{doc['old']} → {doc['new']}"
    return ""


async def show(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    console = ctx.console
    incident = await _visible(ctx, request.match_info["id"].strip().upper())
    store = console.desk_store
    assert store is not None
    now = console.board.clock()
    error = ""
    events: list[IncidentEvent] = []
    notes: list[Notification] = []
    try:
        events = await store.events(incident.id)
        notes = sorted(await store.notifications(incident.id), key=note_order)
    except SourceError as exc:
        error = str(exc)
    row = rows(console, [incident], now)[0]
    may = may_act(ctx.user)
    return ctx.render("incident.html", title=incident.id, row=row, i=incident, v=row.verdict, now=now,
                      events=[(e, _detail(e)) for e in events],
                      notes=[_note(n) for n in _told(console, ctx.user, notes)],
                      may_act=may, customers_look=CUSTOMERS_LOOK,
                      priorities=[p for p in priorities(console.loaded) if p != incident.priority],
                      linked=row.linked, max_comment=steps.MAX_COMMENT_CHARS, error=error,
                      note=flash.take(ctx.session), paused=incident.state is IncidentState.PAUSED)


def _step(action: str, form: Mapping[str, Any], ctx: Ctx) -> Callable[[Incident, int], Step]:
    """The desk's step an action form asks for; ActionError when the form itself does not hold up."""
    assert ctx.user is not None
    by = ctx.user.name
    # One character over the limit is enough for the step to refuse a comment that is too long.
    comment = form_value(form, "comment", steps.MAX_COMMENT_CHARS + 1)
    if action == "ack":
        return lambda i, now: steps.acknowledge(i, by, comment, now)
    if action == "pause":
        return lambda i, now: steps.pause(i, by, comment, now)
    if action == "resume":
        return lambda i, now: steps.resume(i, by, comment, now)
    if action == "resolve":
        return lambda i, now: steps.resolve(i, by, comment, now)
    asked = form_value(form, "priority", 100)
    priority = priority_named(ctx.console.loaded, asked)
    if priority is None:
        # Only a priority the contract knows has a response target.
        raise ActionError(f"unknown priority {asked!r} (the contract has {', '.join(priorities(ctx.console.loaded))})")
    return lambda i, now: steps.set_priority(i, priority, by, comment, now)


async def act(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """One action form's POST: done through the desk (its events and notifications in one transaction), then back
    to the incident's page with what was done, or why not."""
    assert ctx.user is not None
    console = ctx.console
    incident = await _visible(ctx, request.match_info["id"].strip().upper())
    if not may_act(ctx.user):
        raise web.HTTPForbidden(text=CUSTOMERS_LOOK, content_type="text/plain")
    store = console.desk_store
    assert store is not None
    action = request.match_info["action"]
    form = await request.post()
    back = web.HTTPSeeOther(f"/incidents/{quote(incident.id)}")
    wake = console.extra.get(SENDER_WAKE)
    desk = Desk(console.loaded, store, None, clock_ms=console.board.clock, on_queued=wake if callable(wake) else None)
    try:
        make = _step(action, form, ctx)
        step = await desk.act(incident.id, lambda i: make(i, desk.clock_ms()))
    except ActionError as exc:
        flash.put(ctx.session, False, f"Not done: {exc}.")
        raise back from None
    except SourceError as exc:
        log.warning("console: %s on %s by %s failed: %s", action, incident.id, ctx.user.name, exc)
        flash.put(ctx.session, False, f"Not done: the store could not be written ({exc}).")
        raise back from None
    after, event = step.incident, step.events[-1]
    verdict = verdict_of(_calendars(console), console.loaded, after, event.ts_ms)
    queued = desk.notifications_queued
    log.info("console: %s %s by %s", after.id, event.action, ctx.user.name)
    told = f"{queued} notification{'' if queued == 1 else 's'} queued" if queued else "no one to notify"
    flash.put(ctx.session, True, f"{did(after, event, verdict, resume='resumed')}; {told}.")
    raise back


"""An incident as people read it (the command line and the console alike): its response clock at an instant and in
a few words, the order lists show incidents in, and the priorities an operator may choose."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping

from desk.incidents import priority_rank
from reporter.calendars import Calendar
from reporter.maintenance import format_duration
from reporter.response import Verdict, evaluate, target_of
from slawatch.config.loader import Loaded
from slawatch.model import Incident, IncidentEvent, IncidentState, Notification

ORDER = {IncidentState.OPEN: 0, IncidentState.ACKNOWLEDGED: 1, IncidentState.PAUSED: 1, IncidentState.RESOLVED: 2}
"""Open incidents first (they are waiting for someone), then those being worked on, then the resolved."""


def span(seconds: float | None) -> str:
    return "-" if seconds is None else format_duration(seconds)


def verdict_of(calendars: Mapping[str, Calendar], loaded: Loaded, incident: Incident, now_ms: int) -> Verdict:
    """The incident's response clock at `now_ms`. One resolved unacknowledged stopped counting when resolved."""
    target = target_of(loaded.contract, incident.priority, incident.ref.tier)
    if not incident.active and incident.resolved_ms is not None:
        now_ms = min(now_ms, max(incident.resolved_ms, incident.raised_ms))
    verdict = evaluate(calendars, target, incident.raised_ms, incident.acknowledged_ms, incident.pause_spans, now_ms)
    if incident.acknowledged_ms is None and incident.pauses and incident.pauses[-1].end_ms is None:
        # Waiting on the customer: the engine's deadline is where it would be if resumed now, and moves on with
        # the clock; there is none to respond by until the pause ends.
        verdict = dataclasses.replace(verdict, deadline_ms=None)
    return verdict


def response_words(incident: Incident, verdict: Verdict) -> str:
    """The response clock in a few words: '12m left', 'LATE by 5m', '14m 30s, met', 'not acknowledged'."""
    if incident.acknowledged_ms is None and not incident.active:
        return "not acknowledged"
    if verdict.target_s is None:
        return f"{span(verdict.response_s)} (no target)"
    if incident.acknowledged_ms is not None:
        return f"{span(verdict.response_s)}, {'met' if verdict.met else 'MISSED'}"
    left = verdict.remaining_s or 0.0
    text = f"{span(left)} left" if left >= 0 else f"LATE by {span(-left)}"
    return text + (" (paused)" if incident.state is IncidentState.PAUSED else "")


def order(incident: Incident) -> tuple[int, tuple[int, str], int, str]:
    """Open first, then by priority, then the oldest raise first."""
    return ORDER[incident.state], priority_rank(incident.priority), incident.raised_ms, incident.id


def note_order(note: Notification) -> tuple[int, int, int, str]:
    parts = note.id.rsplit(".", 2)  # <incident>.<event seq>.<n>: in number order, not text order
    seq, index = parts[1:] if len(parts) == 3 else ("", "")
    return note.created_ms, int(seq) if seq.isdigit() else 0, int(index) if index.isdigit() else 0, note.id


def priorities(loaded: Loaded) -> list[str]:
    """The priorities the contract knows (its default first): the only ones an incident may be given, since any
    other has no response target."""
    terms = loaded.contract.response_terms()
    names = [r.priority for r in terms.priorities] + [t.priority for t in terms.targets if t.priority is not None]
    return list(dict.fromkeys([terms.default_priority, *names]))


def priority_named(loaded: Loaded, text: str) -> str | None:
    """The contract's priority `text` names (`p2` is taken for `P2`), or None when it knows no such priority."""
    known = priorities(loaded)
    return next((p for p in known if p == text), None) or next(
        (p for p in known if p.lower() == text.strip().lower()), None)


def did(incident: Incident, event: IncidentEvent, verdict: Verdict, *, resume: str = "it is resumed") -> str:
    """What an operator's action did, in a line: 'INC-2026-000001 (pbx-1) acknowledged by ops: response 4m, met'.
    `resume` says how a pause ends, where the reader is."""
    head = f"{incident.id} ({incident.ref.component}) {event.action} by {event.actor}"
    if event.action == "acknowledged":
        return f"{head}: response {response_words(incident, verdict)}"
    if event.action == "paused":
        return f"{head}: the response clock stops until {resume}"
    if event.action == "resumed":
        return f"{head}: {incident.state}, response {response_words(incident, verdict)}"
    if event.action == "priority":
        try:
            old = json.loads(event.detail).get("old", "?")
        except (ValueError, AttributeError):
            old = "?"
        return (f"{incident.id} ({incident.ref.component}) priority {old} -> {incident.priority} by {event.actor}: "
                f"response {response_words(incident, verdict)}")
    if event.action == "resolved" and incident.resolved_ms is not None:
        return f"{head}, {span((incident.resolved_ms - incident.start_ms) / 1000)} after the fault began"
    return head

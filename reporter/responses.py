"""The report's response-time section: each incident raised in the period with its response time against the
contract's target (the response-time engine), and the totals per customer (pure)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from reporter.calendars import Calendar
from reporter.response import Terms as Terms
from reporter.response import Verdict, evaluate, target_of
from slawatch.model import Incident


@dataclass(frozen=True, slots=True)
class IncidentEntry:
    """One incident as the report shows it.

    `met`: acknowledged within the target (the engine's verdict); an incident never acknowledged is met when it
    was resolved before its deadline (nobody needed to answer), breached once its deadline passed unanswered,
    and None (pending) while its deadline is still ahead at `as_of_ms`. None too without a target.
    """

    incident: Incident
    customer: str | None
    verdict: Verdict
    met: bool | None

    @property
    def breached(self) -> bool:
        return self.met is False


def entry(terms: Terms, calendars: Mapping[str, Calendar], incident: Incident, as_of_ms: int) -> IncidentEntry:
    target = target_of(terms, incident.priority, incident.ref.tier)
    acked = incident.acknowledged_ms
    # Unacknowledged: the clock runs to the resolution, or to now while it is open.
    end = acked if acked is not None else (incident.resolved_ms if incident.resolved_ms is not None else as_of_ms)
    verdict = evaluate(calendars, target, incident.raised_ms, acked, incident.pause_spans,
                       None if acked is not None else end)
    met = verdict.met
    if acked is None and verdict.deadline_ms is not None:
        if end > verdict.deadline_ms:
            met = False
        elif incident.resolved_ms is not None:
            met = True
    return IncidentEntry(incident, incident.ref.customer or None, verdict, met)


def entries(terms: Terms, calendars: Mapping[str, Calendar], incidents: Iterable[Incident],
            as_of_ms: int) -> tuple[IncidentEntry, ...]:
    """The incidents in raise order, each with its verdict."""
    ordered = sorted(incidents, key=lambda i: (i.raised_ms, i.id))
    return tuple(entry(terms, calendars, i, as_of_ms) for i in ordered)


def summary(items: Sequence[IncidentEntry]) -> dict[str, int]:
    """{"incidents", "met", "breached", "pending"}: pending = not yet decided (or no target)."""
    met = sum(1 for e in items if e.met is True)
    breached = sum(1 for e in items if e.met is False)
    return {"incidents": len(items), "met": met, "breached": breached, "pending": len(items) - met - breached}

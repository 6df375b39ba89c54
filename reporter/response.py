"""Response time: an incident's priority and target from the contract, and the time from raise to acknowledgement
counted on a calendar, less the time paused, against that target."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Protocol

from reporter.calendars import ALWAYS, Calendar, calendars_of
from slawatch.config.terms import NEXT_BUSINESS_DAY, Measure, ResponseTerms

Pause = tuple[int, int | None]
"""A pause ("waiting on customer") from start_ms to end_ms; end None while it lasts."""


class HasTerms(Protocol):
    """A contract (slawatch.config.settings.Contract): what the engine reads from it."""

    def response_terms(self) -> ResponseTerms: ...


Terms = HasTerms | ResponseTerms


@dataclass(frozen=True, slots=True)
class ResponseTarget:
    """The target an incident of `priority` on a component of `tier` is held to. `calendar` decides whether it was
    raised in or out of hours, which picks the measure."""

    priority: str
    tier: str
    calendar: str
    in_hours: Measure
    out_of_hours: Measure


@dataclass(frozen=True, slots=True)
class Verdict:
    """The response clock of one incident.

    response_s: counted time from raise to acknowledgement (to `now` while unacknowledged; None with neither);
    target_s: the target as counted time (None without a target); deadline_ms: when the counted time reaches it
    (None without a target, or while an open pause has no end in sight); met: response_s <= target_s once
    acknowledged; paused_s: counted time paused, already left out of response_s; calendar: the one counted on;
    in_hours: whether the raise was in the target calendar's hours; remaining_s: counted time left at `now` while
    unacknowledged (negative once late)."""

    response_s: float | None
    target_s: float | None
    deadline_ms: int | None
    met: bool | None
    paused_s: float
    calendar: str
    in_hours: bool | None
    remaining_s: float | None


def _terms(contract: Terms) -> ResponseTerms:
    return contract if isinstance(contract, ResponseTerms) else contract.response_terms()


def priority_of(contract: Terms, klass: str, fault: str) -> str:
    """The priority of a `fault` (down or degraded) on a component of class `klass`: the first matching rule's."""
    terms = _terms(contract)
    return next((r.priority for r in terms.priorities if r.matches(klass, fault)), terms.default_priority)


def target_of(contract: Terms, priority: str, tier: str) -> ResponseTarget | None:
    """The first target matching the priority and tier; None when the contract sets none for them."""
    rule = next((r for r in _terms(contract).targets if r.matches(priority, tier)), None)
    if rule is None:
        return None
    return ResponseTarget(priority, tier, rule.calendar, rule.in_hours, rule.out_of_hours)


def evaluate(
    contract_or_calendars: Terms | Mapping[str, Calendar],
    target: ResponseTarget | None,
    raised_ms: int,
    acknowledged_ms: int | None,
    pauses: Sequence[Pause] = (),
    now_ms: int | None = None,
) -> Verdict:
    """The response clock of an incident raised at `raised_ms`. Pass `calendars_of(terms)` rather than a contract
    when evaluating many incidents: the calendars keep the days they have worked out."""
    calendars = (contract_or_calendars if isinstance(contract_or_calendars, Mapping)
                 else calendars_of(_terms(contract_or_calendars)))
    measure: Measure | None = None
    in_hours: bool | None = None
    deciding = counting = ALWAYS
    if target is not None:
        deciding = calendars[target.calendar]
        in_hours = deciding.is_open(raised_ms)
        measure = target.in_hours if in_hours else target.out_of_hours
        counting = calendars[measure.on or target.calendar]

    end_ms = acknowledged_ms if acknowledged_ms is not None else now_ms
    # An open pause lasts until now; with no `now`, until the acknowledgement; with neither, for all we know.
    paused = _merged(pauses, raised_ms, acknowledged_ms, now_ms if now_ms is not None else acknowledged_ms)
    response_ms: int | None = None
    if end_ms is not None:
        response_ms = counting.open_ms(raised_ms, end_ms) - _open_in(counting, paused, raised_ms, end_ms)
    paused_end = end_ms if end_ms is not None else max((e for _, e in paused if e is not None), default=raised_ms)
    paused_ms = _open_in(counting, paused, raised_ms, paused_end)

    target_ms: int | None = None
    deadline_ms: int | None = None
    if measure is not None:
        if measure.by == NEXT_BUSINESS_DAY:
            target_ms = counting.open_ms(raised_ms, deciding.next_business_day_close(raised_ms))
        else:
            target_ms = round((measure.within_s or 0) * 1000)
        deadline_ms = _deadline(counting, raised_ms, target_ms, paused)

    met = None if acknowledged_ms is None or target_ms is None or response_ms is None else response_ms <= target_ms
    remaining = (None if acknowledged_ms is not None or target_ms is None or response_ms is None
                 else (target_ms - response_ms) / 1000)
    return Verdict(
        response_s=None if response_ms is None else response_ms / 1000,
        target_s=None if target_ms is None else target_ms / 1000,
        deadline_ms=deadline_ms,
        met=met,
        paused_s=paused_ms / 1000,
        calendar=counting.name,
        in_hours=in_hours,
        remaining_s=remaining,
    )


def _merged(pauses: Sequence[Pause], raised_ms: int, acknowledged_ms: int | None,
            open_end_ms: int | None) -> list[Pause]:
    """Pauses clipped to [raised, acknowledged), sorted, overlaps merged; an open one ends at `open_end_ms`."""
    spans: list[tuple[int, int | None]] = []
    for start, end in pauses:
        if end is None:
            end = open_end_ms
        start = max(start, raised_ms)
        if acknowledged_ms is not None:
            end = acknowledged_ms if end is None else min(end, acknowledged_ms)
        if end is not None and end <= start:
            continue
        spans.append((start, end))
    spans.sort(key=lambda s: s[0])
    merged: list[Pause] = []
    for start, end in spans:
        if merged:
            last_start, last_end = merged[-1]
            if last_end is None:
                break  # an endless pause swallows every later one
            if start <= last_end:
                merged[-1] = (last_start, None if end is None else max(end, last_end))
                continue
        merged.append((start, end))
    return merged


def _open_in(calendar: Calendar, paused: Sequence[Pause], start_ms: int, end_ms: int) -> int:
    """Open time of the (merged) pauses inside [start_ms, end_ms)."""
    return sum(calendar.open_ms(max(s, start_ms), end_ms if e is None else min(e, end_ms)) for s, e in paused)


def _deadline(calendar: Calendar, raised_ms: int, target_ms: int, paused: Sequence[Pause]) -> int | None:
    """When the open time since the raise, less the pauses, reaches the target; None inside an endless pause."""
    cursor, remaining = raised_ms, target_ms
    for start, end in paused:
        reached = calendar.add_open(cursor, remaining)
        if reached <= start:
            return reached
        remaining -= calendar.open_ms(cursor, start)
        if end is None:
            return None
        cursor = end
    return calendar.add_open(cursor, remaining)


def instants_at(
    calendars: Mapping[str, Calendar],
    target: ResponseTarget,
    raised_ms: int,
    shares: Sequence[float],
    pauses: Sequence[Pause] = (),
    now_ms: int | None = None,
) -> list[int | None]:
    """For each share of the target (0.5: half of it), the instant the counted time since the raise reaches it,
    as `evaluate` counts (pauses push it later; None inside an open pause). Escalation uses these."""
    whole = evaluate(calendars, target, raised_ms, None, pauses, now_ms)
    if whole.target_s is None:
        return [None for _ in shares]
    deciding = calendars[target.calendar]
    measure = target.in_hours if deciding.is_open(raised_ms) else target.out_of_hours
    counting = calendars[measure.on or target.calendar]
    paused = _merged(pauses, raised_ms, None, now_ms)
    return [_deadline(counting, raised_ms, round(whole.target_s * 1000 * share), paused) for share in shares]

"""A contract's response terms as plain values (calendars, priority rules, targets); opening hours parsed."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import date
from typing import Literal

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
ALWAYS = "24/7"
"""The built-in calendar: open every minute of every day, in UTC."""
DAY_MINUTES = 24 * 60
FAULTS = ("down", "degraded")
Fault = Literal["down", "degraded"]
NEXT_BUSINESS_DAY = "next_business_day"

_HOURS_RE = re.compile(r"(?P<days>[a-z,-]+)\s+(?P<start>\d{2}):(?P<start_m>\d{2})-(?P<end>\d{2}):(?P<end_m>\d{2})")
_DATE_RE = re.compile(r"\d{4}-\d{2}-\d{2}")


@dataclass(frozen=True, slots=True)
class OpenHours:
    """Open from `start_min` to `end_min` (minutes after local midnight, end up to 1440) on each weekday in `days`
    (0 = Monday)."""

    days: frozenset[int]
    start_min: int
    end_min: int


ALL_DAY = (OpenHours(frozenset(range(7)), 0, DAY_MINUTES),)


@dataclass(frozen=True, slots=True)
class CalendarSpec:
    """A calendar as the contract gives it: time zone, weekly hours, public holidays and announced closures."""

    name: str
    timezone: str
    hours: tuple[OpenHours, ...]
    holiday_country: str | None = None
    holiday_subdivision: str | None = None
    closures: tuple[tuple[date, date], ...] = ()  # inclusive date ranges


ALWAYS_SPEC = CalendarSpec(ALWAYS, "UTC", ALL_DAY)


@dataclass(frozen=True, slots=True)
class Measure:
    """One side of a target: `within_s` seconds of open time, or `by` an instant (the next business day's close);
    measured on calendar `on` (None: the target's own calendar)."""

    within_s: float | None = None
    by: Literal["next_business_day"] | None = None
    on: str | None = None


@dataclass(frozen=True, slots=True)
class PriorityRule:
    """Faults of `fault` (None: any) on components of `classes` (None: any) get `priority`."""

    priority: str
    fault: Fault | None = None
    classes: frozenset[str] | None = None

    def matches(self, klass: str, fault: str) -> bool:
        return (self.fault is None or self.fault == fault) and (self.classes is None or klass in self.classes)


@dataclass(frozen=True, slots=True)
class TargetRule:
    """A response target for incidents of `priority` (None: any) on components of `tiers` (None: any)."""

    priority: str | None
    tiers: frozenset[str] | None
    calendar: str
    in_hours: Measure
    out_of_hours: Measure

    def matches(self, priority: str, tier: str) -> bool:
        return (self.priority is None or self.priority == priority) and (self.tiers is None or tier in self.tiers)


@dataclass(frozen=True, slots=True)
class ResponseTerms:
    """Everything the response-time engine reads from a contract."""

    calendars: Mapping[str, CalendarSpec]
    priorities: tuple[PriorityRule, ...]
    default_priority: str
    targets: tuple[TargetRule, ...]


def parse_hours(text: str) -> tuple[OpenHours, ...]:
    """"mon-fri 09:00-17:00", "mon,wed 08:00-12:00", "sat 09:00-13:00" or "24/7"; ValueError saying what is wrong."""
    clean = " ".join(text.lower().split())
    if clean == ALWAYS:
        return ALL_DAY
    m = _HOURS_RE.fullmatch(clean)
    if m is None:
        raise ValueError(f"bad hours {text!r}: write DAYS HH:MM-HH:MM, e.g. \"mon-fri 09:00-17:00\", "
                         "\"sat 09:00-13:00\" or \"24/7\"")
    days = _parse_days(m.group("days"), text)
    start_h, start_m, end_h, end_m = (int(m.group(k)) for k in ("start", "start_m", "end", "end_m"))
    if start_h > 23 or start_m > 59 or end_m > 59 or end_h > 24 or (end_h == 24 and end_m):
        raise ValueError(f"bad hours {text!r}: times are 00:00 to 23:59 (24:00 as an end)")
    start, end = start_h * 60 + start_m, end_h * 60 + end_m
    if end <= start:
        raise ValueError(f"bad hours {text!r}: the end must be after the start on the same day (for a night "
                         "shift write two entries, e.g. \"mon-fri 17:00-24:00\" and \"tue-sat 00:00-09:00\")")
    return (OpenHours(days, start, end),)


def _parse_days(text: str, whole: str) -> frozenset[int]:
    days: set[int] = set()
    for part in text.split(","):
        first, _, last = part.partition("-")
        if first not in DAYS or (last and last not in DAYS):
            raise ValueError(f"bad days {part!r} in {whole!r}: use mon tue wed thu fri sat sun, ranges (mon-fri) "
                             "and lists (mon,wed)")
        a, b = DAYS.index(first), DAYS.index(last or first)
        if b < a:
            raise ValueError(f"bad days {part!r} in {whole!r}: a range runs forwards from mon to sun")
        days.update(range(a, b + 1))
    return frozenset(days)


def parse_closure(text: str) -> tuple[date, date]:
    """"2026-12-24" or an inclusive range "2026-12-28/2026-12-31" -> (first, last)."""
    first, _, last = text.strip().partition("/")
    try:
        if not _DATE_RE.fullmatch(first) or (last and not _DATE_RE.fullmatch(last)):
            raise ValueError
        start, end = date.fromisoformat(first), date.fromisoformat(last or first)
    except ValueError:
        raise ValueError(f"bad closure {text!r}: write a date (2026-12-24) or an inclusive range "
                         "(2026-12-28/2026-12-31)") from None
    if end < start:
        raise ValueError(f"bad closure {text!r}: the range ends before it starts")
    if (end - start).days > 366:
        raise ValueError(f"bad closure {text!r}: a closure is at most 367 days")
    return start, end

"""Business calendars: open time between instants in a time zone; public holidays and closures are closed days."""

from __future__ import annotations

from collections.abc import Container, Iterable
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo

import holidays as holiday_tables

from slawatch.config.terms import ALWAYS_SPEC, DAY_MINUTES, CalendarSpec, ResponseTerms

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_ONE_DAY = timedelta(days=1)
SEARCH_DAYS = 20 * 366
"""How far `add_open` and `next_business_day_close` look ahead before they call a calendar closed for good: a
31-day target on a calendar open one hour a week needs about 14 years."""

Span = tuple[int, int]


class Calendar:
    """Open hours of one calendar, answered in epoch milliseconds. Each local date's open spans are worked out once
    (DST-correct: a day of 23 or 25 hours keeps its local opening times) and kept, so a month of incidents costs a
    month of days."""

    def __init__(self, spec: CalendarSpec, holidays: Container[date] | None = None) -> None:
        self.name = spec.name
        self.spec = spec
        self._zone = ZoneInfo(spec.timezone)
        self._holidays: Container[date] = () if holidays is None else holidays
        self._closures = spec.closures
        self._days: dict[date, tuple[Span, ...]] = {}
        # Open every minute of every day with nothing closed: open time is wall time, no walk through the days.
        self._always = (not spec.closures and holidays is None
                        and all(_covers_day(spec, weekday) for weekday in range(7)))

    def __repr__(self) -> str:
        return f"Calendar({self.name!r}, {self.spec.timezone})"

    def is_open(self, ms: int) -> bool:
        """Whether the instant is in open hours."""
        return any(start <= ms < end for start, end in self._day(self._date(ms)))

    def open_ms(self, start_ms: int, end_ms: int) -> int:
        """Open time in [start_ms, end_ms); 0 when the interval is empty or reversed."""
        if end_ms <= start_ms:
            return 0
        if self._always:
            return end_ms - start_ms
        total = 0
        day, last = self._date(start_ms), self._date(end_ms)
        while day <= last:
            for start, end in self._day(day):
                low, high = max(start, start_ms), min(end, end_ms)
                if high > low:
                    total += high - low
            day += _ONE_DAY
        return total

    def add_open(self, start_ms: int, duration_ms: int) -> int:
        """The instant at which the open time since `start_ms` reaches `duration_ms` (`start_ms` for zero)."""
        if duration_ms <= 0:
            return start_ms
        if self._always:
            return start_ms + duration_ms
        remaining = duration_ms
        day = self._date(start_ms)
        for _ in range(SEARCH_DAYS):
            for start, end in self._day(day):
                low = max(start, start_ms)
                if end <= low:
                    continue
                if end - low >= remaining:
                    return low + remaining
                remaining -= end - low
            day += _ONE_DAY
        raise ValueError(f"calendar {self.name!r} has no {duration_ms / 1000:g} s of open time within "
                         f"{SEARCH_DAYS} days of {start_ms}")

    def next_business_day_close(self, ms: int) -> int:
        """The close of the first business day that opens after `ms`: raised 06:00 Monday on 09:00-17:00 ->
        Monday 17:00; raised Friday 18:00 (or Monday 10:00) -> Monday (Tuesday) 17:00."""
        day = self._date(ms)
        for _ in range(SEARCH_DAYS):
            spans = self._day(day)
            if spans and spans[0][0] > ms:
                return spans[-1][1]
            day += _ONE_DAY
        raise ValueError(f"calendar {self.name!r} has no business day within {SEARCH_DAYS} days of {ms}")

    def _date(self, ms: int) -> date:
        return (_EPOCH + ms * _ONE_MS).astimezone(self._zone).date()

    def _local_ms(self, day: date, minute: int) -> int:
        if minute >= DAY_MINUTES:
            day, minute = day + _ONE_DAY, 0
        # fold=0: a time skipped by a spring-forward gap lands just after the gap, a repeated one on its first pass.
        local = datetime.combine(day, time(minute // 60, minute % 60), tzinfo=self._zone)
        return (local - _EPOCH) // _ONE_MS

    def _closed(self, day: date) -> bool:
        return day in self._holidays or any(first <= day <= last for first, last in self._closures)

    def _day(self, day: date) -> tuple[Span, ...]:
        spans = self._days.get(day)
        if spans is None:
            spans = () if self._closed(day) else _merge(
                (self._local_ms(day, h.start_min), self._local_ms(day, h.end_min))
                for h in self.spec.hours if day.weekday() in h.days)
            self._days[day] = spans
        return spans


def _covers_day(spec: CalendarSpec, weekday: int) -> bool:
    reached = 0
    for hours in sorted((h for h in spec.hours if weekday in h.days), key=lambda h: h.start_min):
        if hours.start_min > reached:
            return False
        reached = max(reached, hours.end_min)
    return reached >= DAY_MINUTES


def _merge(spans: Iterable[Span]) -> tuple[Span, ...]:
    merged: list[Span] = []
    for start, end in sorted(s for s in spans if s[1] > s[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(end, merged[-1][1]))
        else:
            merged.append((start, end))
    return tuple(merged)


ALWAYS = Calendar(ALWAYS_SPEC)
"""The built-in "24/7" calendar: open all the time, UTC."""


def calendar(spec: CalendarSpec) -> Calendar:
    """A Calendar for the spec, with its public holidays from the `holidays` library."""
    if spec.holiday_country is None:
        return Calendar(spec)
    table = holiday_tables.country_holidays(spec.holiday_country, subdiv=spec.holiday_subdivision)
    return Calendar(spec, table)


def calendars_of(terms: ResponseTerms) -> dict[str, Calendar]:
    """Every calendar of a contract by name, "24/7" included; build once and pass to `evaluate` for many incidents."""
    return {name: ALWAYS if spec is ALWAYS_SPEC else calendar(spec) for name, spec in terms.calendars.items()}

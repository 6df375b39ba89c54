"""Business calendars: open time, adding open time and the next business day, across weekends, bank holidays,
closures and daylight-saving changes."""

from __future__ import annotations

import time as wallclock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reporter.calendars import ALWAYS, Calendar, calendar
from reporter.periods import parse_iso
from slawatch.config.terms import CalendarSpec, parse_closure, parse_hours

H = 3_600_000
LONDON = "Europe/London"


def at(text: str) -> int:
    return parse_iso(text)


def office(*, holidays: bool = False, closures: tuple[str, ...] = (), hours: str = "mon-fri 09:00-17:00") -> Calendar:
    spec = CalendarSpec("office", LONDON, parse_hours(hours), "GB" if holidays else None,
                        "ENG" if holidays else None, tuple(parse_closure(c) for c in closures))
    return calendar(spec)


def always_london() -> Calendar:
    return calendar(CalendarSpec("london", LONDON, parse_hours("24/7")))


def cover() -> Calendar:
    return calendar(CalendarSpec("cover", LONDON, parse_hours("mon-sun 07:00-23:00")))


# 2026-05-22 is a Friday; Monday 2026-05-25 is the Spring bank holiday in England.
@pytest.mark.parametrize(("raised", "holidays", "expected"), [
    ("2026-05-15T16:30:00+01:00", True, "2026-05-18T16:30:00+01:00"),  # an ordinary weekend
    ("2026-05-22T16:30:00+01:00", False, "2026-05-25T16:30:00+01:00"),  # holidays not in the calendar
    ("2026-05-22T16:30:00+01:00", True, "2026-05-26T16:30:00+01:00"),  # bank holiday Monday is closed
    ("2026-05-23T11:00:00+01:00", True, "2026-05-26T17:00:00+01:00"),  # raised on Saturday: all of Tuesday
    ("2026-05-26T09:00:00+01:00", True, "2026-05-26T17:00:00+01:00"),  # exactly the open hours of one day
])
def test_eight_working_hours(raised: str, holidays: bool, expected: str) -> None:
    assert office(holidays=holidays).add_open(at(raised), 8 * H) == at(expected)


@pytest.mark.parametrize(("raised", "expected"), [
    ("2026-06-01T06:00:00+01:00", "2026-06-01T17:00:00+01:00"),  # Monday before opening: Monday's close
    ("2026-06-05T18:00:00+01:00", "2026-06-08T17:00:00+01:00"),  # Friday evening: Monday's close
    ("2026-06-01T10:00:00+01:00", "2026-06-02T17:00:00+01:00"),  # in hours: the next day's close
    ("2026-06-01T09:00:00+01:00", "2026-06-02T17:00:00+01:00"),  # at the opening: Monday opened, not after
    ("2026-05-22T18:00:00+01:00", "2026-05-26T17:00:00+01:00"),  # bank holiday Monday is no business day
])
def test_next_business_day_close(raised: str, expected: str) -> None:
    assert office(holidays=True).next_business_day_close(at(raised)) == at(expected)


def test_closures_are_closed_days() -> None:
    cal = office(holidays=True, closures=("2026-12-24", "2026-12-29/2026-12-31"))
    # Wednesday 23 Dec 16:00: 1 h that day; 24 closed, 25-28 Christmas, weekend and Boxing Day (observed); 29-31
    # closed; Friday 1 January is New Year's Day: the next open hours are Monday 4 January.
    assert cal.add_open(at("2026-12-23T16:00:00Z"), 8 * H) == at("2027-01-04T16:00:00Z")
    assert cal.open_ms(at("2026-12-24T00:00:00Z"), at("2027-01-04T00:00:00Z")) == 0
    assert not cal.is_open(at("2026-12-24T10:00:00Z"))
    assert cal.is_open(at("2026-12-23T10:00:00Z"))
    assert cal.next_business_day_close(at("2026-12-23T18:00:00Z")) == at("2027-01-04T17:00:00Z")


@pytest.mark.parametrize(("day", "next_day", "wall_h"), [
    ("2026-03-29", "2026-03-30", 23),  # spring forward: 01:00 GMT -> 02:00 BST
    ("2026-10-25", "2026-10-26", 25),  # fall back: 02:00 BST -> 01:00 GMT
    ("2026-06-14", "2026-06-15", 24),
])
def test_daylight_saving_sundays(day: str, next_day: str, wall_h: int) -> None:
    start, end = parse_iso(f"{day}T00:00:00", LONDON), parse_iso(f"{next_day}T00:00:00", LONDON)
    assert end - start == wall_h * H
    assert always_london().open_ms(start, end) == wall_h * H
    # 07:00-23:00 local is 16 h whichever way the clocks went that night.
    assert cover().open_ms(start, end) == 16 * H
    assert cover().add_open(start, 16 * H) == parse_iso(f"{day}T23:00:00", LONDON)
    assert cover().add_open(start, 1) == parse_iso(f"{day}T07:00:00", LONDON) + 1


def test_cover_hours_on_the_spring_forward_sunday() -> None:
    cal = cover()
    opens, closes = at("2026-03-29T07:00:00+01:00"), at("2026-03-29T23:00:00+01:00")
    assert not cal.is_open(opens - 1) and cal.is_open(opens) and not cal.is_open(closes)
    assert cal.add_open(at("2026-03-28T22:00:00+00:00"), 2 * H) == at("2026-03-29T08:00:00+01:00")
    # Fall back: 01:00-02:00 happens twice, outside the cover; the cover day is still 16 h.
    assert cal.open_ms(at("2026-10-25T00:00:00+01:00"), at("2026-10-26T00:00:00+00:00")) == 16 * H


def test_hours_over_midnight_and_several_entries() -> None:
    spec = CalendarSpec("shop", "UTC", parse_hours("mon-fri 09:00-12:00") + parse_hours("mon-fri 13:00-17:00")
                        + parse_hours("sat 09:00-13:00") + parse_hours("fri 20:00-24:00"))
    cal = calendar(spec)
    # Friday 2026-06-05: 3 + 4 + 4 h; Saturday 4 h.
    assert cal.open_ms(at("2026-06-05T00:00:00Z"), at("2026-06-07T00:00:00Z")) == 15 * H
    assert cal.next_business_day_close(at("2026-06-04T12:00:00Z")) == at("2026-06-06T00:00:00Z")
    assert cal.add_open(at("2026-06-05T11:00:00Z"), 2 * H) == at("2026-06-05T14:00:00Z")  # lunch is closed
    assert not cal.is_open(at("2026-06-05T12:30:00Z"))


def test_overlapping_entries_count_once() -> None:
    spec = CalendarSpec("x", "UTC", parse_hours("mon 08:00-12:00") + parse_hours("mon-fri 09:00-17:00"))
    assert calendar(spec).open_ms(at("2026-06-01T00:00:00Z"), at("2026-06-02T00:00:00Z")) == 9 * H


def test_the_built_in_calendar_is_wall_time() -> None:
    assert ALWAYS.name == "24/7"
    assert ALWAYS.open_ms(0, 7 * 86_400_000) == 7 * 86_400_000
    assert ALWAYS.add_open(123, 456) == 579
    assert ALWAYS.is_open(at("2026-03-29T01:30:00Z"))


def test_a_month_of_incidents_is_fast() -> None:
    cal = office(holidays=True, closures=("2026-12-24",))
    start = at("2026-05-01T00:00:00Z")
    began = wallclock.perf_counter()
    for i in range(20_000):
        raised = start + i * 133_000  # about a month of instants
        cal.open_ms(raised, raised + 5 * H)
        cal.add_open(raised, 8 * H)
        cal.is_open(raised)
    assert wallclock.perf_counter() - began < 5


# ---------------------------------------------------------------- properties

YEAR_2026 = at("2026-01-01T00:00:00Z")
instants = st.integers(min_value=YEAR_2026, max_value=YEAR_2026 + 366 * 86_400_000)
spans = st.integers(min_value=0, max_value=40 * 86_400_000)
CALENDARS = [office(holidays=True, closures=("2026-12-24",)), cover(), always_london(), ALWAYS,
             calendar(CalendarSpec("ny", "America/New_York", parse_hours("mon-sat 07:30-19:00")))]
calendars = st.sampled_from(CALENDARS)


@given(calendars, instants, spans)
def test_open_time_is_at_most_wall_time(cal: Calendar, start: int, length: int) -> None:
    assert 0 <= cal.open_ms(start, start + length) <= length


@given(calendars, instants, spans, spans)
def test_open_time_adds_up(cal: Calendar, start: int, a: int, b: int) -> None:
    assert cal.open_ms(start, start + a) + cal.open_ms(start + a, start + a + b) == cal.open_ms(start, start + a + b)


@settings(max_examples=200)
@given(calendars, instants, st.integers(min_value=1, max_value=31 * 86_400_000))
def test_add_open_inverts_open_time(cal: Calendar, start: int, duration: int) -> None:
    end = cal.add_open(start, duration)
    assert cal.open_ms(start, end) == duration
    assert cal.open_ms(start, end - 1) == duration - 1  # the first instant that reaches it, not a later one


@given(calendars, instants, spans, spans)
def test_add_open_is_monotone(cal: Calendar, start: int, a: int, b: int) -> None:
    assert cal.add_open(start, min(a, b)) <= cal.add_open(start, max(a, b))


@given(calendars, instants)
def test_next_business_day_close_is_after_an_opening_after_the_instant(cal: Calendar, ms: int) -> None:
    close = cal.next_business_day_close(ms)
    assert close > ms
    assert cal.open_ms(ms, close) > 0
    assert cal.is_open(close - 1)

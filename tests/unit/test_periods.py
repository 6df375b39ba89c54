"""Tests of report periods: calendar months in a time zone, DST, month parsing and splitting."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import pairwise

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reporter.periods import (
    iso_ms,
    month_of,
    month_period,
    next_month,
    parse_iso,
    parse_month,
    previous_month,
    split_at_months,
)
from slawatch.model import Interval

H = 3_600_000
D = 24 * H
PARIS = "Europe/Paris"
ZONES = ["UTC", PARIS, "America/New_York", "Australia/Sydney", "Asia/Kolkata", "America/Santiago"]


def ms(year: int, month: int, day: int, hour: int = 0) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp()) * 1000


@pytest.mark.parametrize(
    ("year", "month", "tz", "hours"),
    [
        (2024, 2, "UTC", 29 * 24),  # leap February
        (2026, 2, "UTC", 28 * 24),
        (2100, 2, "UTC", 28 * 24),  # not a leap year
        (2000, 2, "UTC", 29 * 24),  # leap year
        (2026, 4, "UTC", 30 * 24),  # 30 days = the contract's 720 h
        (2026, 1, "UTC", 31 * 24),
        (2026, 3, PARIS, 31 * 24 - 1),  # spring forward on 29 March: 743 h
        (2026, 10, PARIS, 31 * 24 + 1),  # fall back on 25 October: 745 h
        (2026, 4, PARIS, 30 * 24),
        (2026, 2, PARIS, 28 * 24),
        (2026, 3, "America/New_York", 31 * 24 - 1),
        (2026, 11, "America/New_York", 30 * 24 + 1),
        (2026, 4, "Australia/Sydney", 30 * 24 + 1),  # southern hemisphere: DST ends in April
    ],
)
def test_month_length(year: int, month: int, tz: str, hours: int) -> None:
    assert month_period(year, month, tz).duration_ms == hours * H


def test_month_edges_are_local_midnight() -> None:
    march = month_period(2026, 3, PARIS)
    assert march.start_ms == ms(2026, 2, 28, 23)  # 00:00 CET = 23:00 UTC the day before
    assert march.end_ms == ms(2026, 3, 31, 22)  # 00:00 CEST = 22:00 UTC
    october = month_period(2026, 10, PARIS)
    assert october.start_ms == ms(2026, 9, 30, 22)
    assert october.end_ms == ms(2026, 10, 31, 23)
    assert month_period(2026, 4, "UTC") == Interval(ms(2026, 4, 1), ms(2026, 5, 1))
    assert march.duration_ms == 743 * H


def test_consecutive_months_touch() -> None:
    assert month_period(2026, 2, PARIS).end_ms == month_period(2026, 3, PARIS).start_ms
    assert month_period(2025, 12, PARIS).end_ms == month_period(2026, 1, PARIS).start_ms


@pytest.mark.parametrize(
    ("given_", "expected"), [((2026, 3), (2026, 2)), ((2026, 1), (2025, 12)), ((2024, 3), (2024, 2))]
)
def test_previous_month(given_: tuple[int, int], expected: tuple[int, int]) -> None:
    assert previous_month(*given_) == expected
    assert next_month(*expected) == given_


def test_previous_month_rejects_bad_month() -> None:
    with pytest.raises(ValueError, match="month must be 1-12, got 13"):
        previous_month(2026, 13)


@pytest.mark.parametrize(
    ("text", "expected"), [("2026-03", (2026, 3)), ("1999-12", (1999, 12)), (" 2024-02 ", (2024, 2))]
)
def test_parse_month(text: str, expected: tuple[int, int]) -> None:
    assert parse_month(text) == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("2026-13", "invalid month '2026-13': month must be 01-12"),
        ("2026-00", "invalid month '2026-00': month must be 01-12"),
        ("2026-3", "invalid month '2026-3': expected YYYY-MM, e.g. 2026-03"),
        ("March 2026", "invalid month 'March 2026': expected YYYY-MM"),
        ("", "invalid month '': expected YYYY-MM"),
        ("2026-03-01", "expected YYYY-MM"),
        ("0000-05", "year must be 0001-9998"),
    ],
)
def test_parse_month_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError) as info:
        parse_month(text)
    assert message in str(info.value)


def test_split_outage_across_month_boundary() -> None:
    boundary = month_period(2026, 4, PARIS).start_ms
    pieces = split_at_months(boundary - 90 * 60_000, boundary + 30 * 60_000, PARIS)
    assert pieces == [Interval(boundary - 90 * 60_000, boundary), Interval(boundary, boundary + 30 * 60_000)]


def test_split_spanning_several_months_and_edges() -> None:
    jan, feb, mar = (month_period(2026, m, PARIS) for m in (1, 2, 3))
    assert split_at_months(jan.start_ms, mar.end_ms, PARIS) == [jan, feb, mar]
    assert split_at_months(feb.start_ms, feb.end_ms, PARIS) == [feb]
    assert split_at_months(feb.start_ms + 5, feb.start_ms + 5, PARIS) == []
    with pytest.raises(ValueError, match="ends before it starts"):
        split_at_months(10, 5, PARIS)


def test_month_of_uses_local_time() -> None:
    # 23:30 UTC on 31 March is already 1 April in Paris.
    assert month_of(ms(2026, 3, 31, 23) + 30 * 60_000, PARIS) == (2026, 4)
    assert month_of(ms(2026, 3, 31, 23) + 30 * 60_000, "UTC") == (2026, 3)


@given(
    start=st.integers(min_value=ms(2020, 1, 1), max_value=ms(2030, 1, 1)),
    length=st.integers(min_value=0, max_value=400 * D),
    tz=st.sampled_from(ZONES),
)
def test_split_pieces_tile_the_interval_within_months(start: int, length: int, tz: str) -> None:
    pieces = split_at_months(start, start + length, tz)
    assert sum(p.duration_ms for p in pieces) == length
    assert all(p.duration_ms > 0 for p in pieces)
    if pieces:
        assert pieces[0].start_ms == start
        assert pieces[-1].end_ms == start + length
    for a, b in pairwise(pieces):
        assert a.end_ms == b.start_ms
    for p in pieces:
        month = month_period(*month_of(p.start_ms, tz), tz)
        assert month.start_ms <= p.start_ms < p.end_ms <= month.end_ms


@given(
    year=st.integers(min_value=1971, max_value=2100),
    month=st.integers(min_value=1, max_value=12),
    tz=st.sampled_from(ZONES),
)
def test_month_period_contains_its_own_instants(year: int, month: int, tz: str) -> None:
    p = month_period(year, month, tz)
    assert 27 * D < p.duration_ms < 32 * D
    assert month_of(p.start_ms, tz) == (year, month)
    assert month_of(p.end_ms - 1, tz) == (year, month)
    assert month_of(p.end_ms, tz) == next_month(year, month)
    assert parse_month(f"{year:04d}-{month:02d}") == (year, month)


@pytest.mark.parametrize(("text", "tz", "expected"), [
    ("2024-05-01T22:00:00Z", None, 1714600800000),
    ("2024-05-02T00:00:00+02:00", None, 1714600800000),
    ("2024-05-01T22:00:00.250+00:00", None, 1714600800250),
    ("2024-05-02", PARIS, 1714600800000),  # local midnight in Paris (CEST)
    ("2024-05-02T00:00:00", PARIS, 1714600800000),
    ("2024-05-02T00:00:00Z", PARIS, 1714608000000),  # an offset wins over the zone
])
def test_parse_iso(text: str, tz: str | None, expected: int) -> None:
    assert parse_iso(text, tz) == expected


def test_parse_iso_says_what_is_wrong() -> None:
    with pytest.raises(ValueError, match="no UTC offset"):
        parse_iso("2024-05-01T22:00")
    with pytest.raises(ValueError, match="not an ISO 8601 time"):
        parse_iso("yesterday", "UTC")


@given(st.integers(min_value=-(10**13), max_value=253402300799999))
def test_iso_round_trips(ms: int) -> None:
    assert parse_iso(iso_ms(ms)) == ms
    assert parse_iso(iso_ms(ms, always_ms=False)) == ms
    assert iso_ms(ms, always_ms=False) == (iso_ms(ms) if ms % 1000 else iso_ms(ms).replace(".000Z", "Z"))


@given(st.integers(min_value=-(10**13), max_value=253402300799999)
       | st.integers(min_value=1_775_001_600_000, max_value=1_777_593_600_000))
def test_iso_is_what_datetime_writes(ms: int) -> None:
    expected = datetime.fromtimestamp(ms // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    assert iso_ms(ms) == f"{expected}.{ms % 1000:03d}Z"
    assert iso_ms(ms, always_ms=False) == (f"{expected}.{ms % 1000:03d}Z" if ms % 1000 else f"{expected}Z")

"""Report periods: calendar months in the report time zone, as half-open epoch-millisecond intervals."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_MS = timedelta(milliseconds=1)
_MONTH_RE = re.compile(r"(\d{4})-(\d{2})")


@dataclass(frozen=True, slots=True)
class Period:
    """The half-open interval [start_ms, end_ms) in epoch milliseconds UTC."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError(f"period ends before it starts: [{self.start_ms}, {self.end_ms})")

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms

    @property
    def duration_s(self) -> float:
        return self.duration_ms / 1000


def _to_ms(dt: datetime) -> int:
    # Exact integer arithmetic: a float timestamp would lose the millisecond far from 1970.
    return (dt - _EPOCH) // _ONE_MS


def _check_month(year: int, month: int) -> None:
    if not 1 <= month <= 12:
        raise ValueError(f"month must be 1-12, got {month}")
    if not 1 <= year <= 9998:
        raise ValueError(f"year must be 1-9998, got {year}")


def next_month(year: int, month: int) -> tuple[int, int]:
    """The (year, month) after the given one."""
    _check_month(year, month)
    return (year + 1, 1) if month == 12 else (year, month + 1)


def previous_month(year: int, month: int) -> tuple[int, int]:
    """The (year, month) before the given one: the month a report run early in a month covers."""
    _check_month(year, month)
    if month == 1:
        if year == 1:
            raise ValueError("there is no month before 0001-01")
        return (year - 1, 12)
    return (year, month - 1)


def parse_month(text: str) -> tuple[int, int]:
    """Parse "YYYY-MM" (e.g. "2026-03") into (year, month); ValueError with the reason otherwise."""
    match = _MONTH_RE.fullmatch(text.strip())
    if match is None:
        raise ValueError(f"invalid month {text!r}: expected YYYY-MM, e.g. 2026-03")
    year, month = int(match.group(1)), int(match.group(2))
    if not 1 <= month <= 12:
        raise ValueError(f"invalid month {text!r}: month must be 01-12")
    if not 1 <= year <= 9998:
        raise ValueError(f"invalid month {text!r}: year must be 0001-9998")
    return (year, month)


def _month_start_ms(year: int, month: int, zone: ZoneInfo) -> int:
    # Local midnight on the 1st. If a DST gap swallows that midnight, fold=0 maps it to the
    # instant of the transition itself, which is where the local month really begins.
    return _to_ms(datetime(year, month, 1, tzinfo=zone))


def month_period(year: int, month: int, tz: str) -> Period:
    """The calendar month `year-month` in IANA time zone `tz`, e.g. 743 h for 2026-03 in Europe/Paris."""
    zone = ZoneInfo(tz)
    ny, nm = next_month(year, month)
    return Period(_month_start_ms(year, month, zone), _month_start_ms(ny, nm, zone))


def month_of(ts_ms: int, tz: str) -> tuple[int, int]:
    """The (year, month) of the local calendar month in `tz` that contains the instant `ts_ms`."""
    local = (_EPOCH + ts_ms * _ONE_MS).astimezone(ZoneInfo(tz))
    return (local.year, local.month)


def split_at_months(start_ms: int, end_ms: int, tz: str) -> list[Period]:
    """Cut [start_ms, end_ms) at every local month boundary of `tz`; [] when the interval is empty."""
    if end_ms < start_ms:
        raise ValueError(f"interval ends before it starts: [{start_ms}, {end_ms})")
    pieces: list[Period] = []
    year, month = month_of(start_ms, tz)
    cursor = start_ms
    while cursor < end_ms:
        month_end = month_period(year, month, tz).end_ms
        piece_end = min(month_end, end_ms)
        pieces.append(Period(cursor, piece_end))
        cursor = piece_end
        year, month = next_month(year, month)
    return pieces

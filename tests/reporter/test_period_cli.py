"""`--month` for a month in progress stops at now; a month that has not started is refused."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reporter.periods import iso_ms, month_period
from slawatch.cli.report import UsageError, resolve_period

NOV = month_period(2026, 11, "UTC")


def args(month: str) -> argparse.Namespace:
    return argparse.Namespace(month=month, start=None, end=None)


def test_past_month_is_whole() -> None:
    period, month = resolve_period(args("2026-10"), "UTC", now_ms=NOV.start_ms + 5)
    assert month == (2026, 10)
    assert period == month_period(2026, 10, "UTC")


def test_month_in_progress_stops_at_now() -> None:
    now = NOV.start_ms + 21 * 86_400_000 + 123
    period, _ = resolve_period(args("2026-11"), "UTC", now_ms=now)
    assert (period.start_ms, period.end_ms) == (NOV.start_ms, now)


def test_future_month_is_refused() -> None:
    with pytest.raises(UsageError, match="has not started yet"):
        resolve_period(args("2026-12"), "UTC", now_ms=NOV.start_ms + 1)


@given(st.integers(min_value=-(10**13), max_value=253402300799999))
def test_iso_ms_matches_datetime(ms: int) -> None:
    dt = datetime(1970, 1, 1, tzinfo=UTC) + timedelta(milliseconds=ms)
    assert iso_ms(ms) == dt.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dt.microsecond // 1000:03d}Z"

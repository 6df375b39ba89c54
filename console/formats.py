"""How the console writes instants, durations and percentages: the same on the pages and in the poll's JSON."""

from __future__ import annotations

from datetime import UTC, datetime

from reporter.maintenance import format_duration


def when(ts_ms: int | None) -> str:
    if ts_ms is None:
        return ""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def iso(ts_ms: int | None) -> str:
    """For a <time datetime=...>: 2026-05-01T12:00:00Z."""
    if ts_ms is None:
        return ""
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def duration(ms: float | None) -> str:
    return "" if ms is None else format_duration(ms / 1000)


def pct(value: float | None) -> str:
    return "—" if value is None else f"{value:g} %"

"""The overview's row pieces: kept while what they show is equal, made again when it changes."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

from console.board import Figure, Status
from console.context import templates
from console.pages.overview import Rows
from reporter.availability import Availability
from slawatch.model import Interval

CONSOLE: Any = SimpleNamespace(templates=templates())
RESULT = Availability(period=Interval(0, 1000), up_ms=1000, down_ms=0, maintenance_ms=0, unmonitored_ms=0,
                      downtime_ms=0, basis_ms=1000, error_budget_ms=1, ratio=1.0, availability_pct=100.0,
                      target_pct=99.9, met=True, outages=(), unmonitored=())


def status(state: str = "up", reason: str = "") -> Status:
    return Status("sw-1", "network", "gold", "acme", state, 1_000, reason)


def figure(pct: float) -> Figure:
    return Figure(pct, 99.9, pct >= 99.9, 1000, 1000, RESULT)


def test_an_equal_status_or_figure_made_anew_keeps_the_row() -> None:
    rows = Rows()
    first = rows.row(CONSOLE, status(), figure(99.95), None)
    again = rows.row(CONSOLE, status(), figure(99.95), None)  # a new read of the store: equal, not identical
    assert again is first
    assert "sw-1" in first and "99.95" in first


def test_a_changed_status_or_figure_makes_the_row_again() -> None:
    rows = Rows()
    first = rows.row(CONSOLE, status(), figure(99.95), None)
    down = rows.row(CONSOLE, status("down", "SIP 503"), figure(99.95), None)
    assert down is not first and "SIP 503" in down and "SIP 503" not in first
    lower = rows.row(CONSOLE, status("down", "SIP 503"), figure(99.5), None)
    assert lower is not down and "99.5" in lower and "99.95" not in lower
    assert rows.row(CONSOLE, status("down", "SIP 503"), None, None) != lower

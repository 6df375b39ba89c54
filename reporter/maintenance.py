"""Planned maintenance windows: the notice each one needs and how their times are shown."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass

from reporter.availability import timely
from reporter.periods import iso_ms
from reporter.report import configured_ref, customers_policies
from slawatch.config.loader import Loaded
from slawatch.model import MaintenanceWindow, Scope

FUTURE_TOLERANCE_MS = 5 * 60_000
"""An announcement time this far ahead of the clock is taken as a mistake, not as evidence."""


def format_time(ts_ms: int) -> str:
    """'2024-05-01 22:00' (UTC), as the table shows times."""
    return iso_ms(ts_ms)[:16].replace("T", " ")


def iso_time(ts_ms: int) -> str:
    return iso_ms(ts_ms, always_ms=False)


def format_duration(seconds: float) -> str:
    """'72h', '3h 15m', '8d 4h': hours below 100 h (as contracts write notices), days above."""
    sign = "-" if seconds < 0 else ""
    s = round(abs(seconds))
    days, rest = divmod(s, 86400) if s >= 100 * 3600 else (0, s)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        parts = [f"{days}d", f"{hours}h" if hours else ""]
    elif hours:
        parts = [f"{hours}h", f"{minutes}m" if minutes else ""]
    elif minutes:
        parts = [f"{minutes}m", f"{secs}s" if secs else ""]
    else:
        parts = [f"{secs}s"]
    return sign + " ".join(p for p in parts if p)


def new_id() -> str:
    return "mw-" + secrets.token_hex(4)


def notices_ms(loaded: Loaded, window: MaintenanceWindow) -> dict[str | None, int]:
    """The notice the window needs, per customer whose configured components it covers (None: components without
    a customer), from the policy the report measures those components with (reporter.report.policy_for). A
    window that covers no configured component needs the contract's notice, or its customer's."""
    config = loaded.config
    policies = customers_policies(loaded)
    covered: set[str | None] = {c.customer for c in config.components if window.applies_to(configured_ref(config, c))}
    if not covered:
        covered = {window.value if window.scope == "customer" else None}
    return {name: policies.get(name, policies[None]).maintenance_notice_ms
            for name in sorted(covered, key=lambda n: (n is not None, n or ""))}


@dataclass(frozen=True, slots=True)
class Notice:
    """Whether a window meets the notice rule for the customers it covers (None: components without a customer):
    `required_ms` is the strictest notice among them, `late_for` those for which it is late."""

    lead_ms: int
    required_ms: int
    covers: tuple[str | None, ...]
    late_for: tuple[str | None, ...]

    @property
    def ok(self) -> bool:
        return not self.late_for

    def late_text(self) -> str:
        """'' when met; ' for initech' when late for some of the customers it covers only."""
        if self.ok or len(self.late_for) == len(self.covers):
            return ""
        return " for " + ", ".join(name or "components without a customer" for name in self.late_for)


def notice_of(loaded: Loaded, window: MaintenanceWindow,
              among: Callable[[str | None], bool] | None = None) -> Notice:
    """The notice verdict for `window`, by the rule the availability engine applies (reporter.availability.timely)
    with the notice the report uses for each component it covers; with `among`, for the customers it accepts only
    (what a customer's account is shown). ValueError when `among` accepts none of those the window covers."""
    needed = notices_ms(loaded, window)
    if among is not None:
        needed = {name: ms for name, ms in needed.items() if among(name)}
        if not needed:
            raise ValueError(f"maintenance window {window.id!r} covers none of the customers asked about")
    late = tuple(name for name, notice in needed.items() if not timely(window, notice))
    return Notice(window.start_ms - window.announced_ms, max(needed.values()), tuple(needed), late)


def lead_time_s(window: MaintenanceWindow) -> float:
    return (window.start_ms - window.announced_ms) / 1000


def known_targets(loaded: Loaded, scope: Scope) -> list[str]:
    """The components, classes or customers a window may name: those the config (and its contract) knows."""
    config = loaded.config
    if scope == "component":
        return [c.name for c in config.components]
    if scope == "class":
        return sorted({*loaded.contract.classes, *(c.klass for c in config.components)})
    return [c.name for c in config.customers]

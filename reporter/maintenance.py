"""Planned maintenance windows: the notice each one needs and how their times are shown."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime

from reporter.source import StoredWindow
from slawatch.config.loader import Loaded

# ---------------------------------------------------------------- pure helpers


def format_time(ts_ms: int) -> str:
    return datetime.fromtimestamp(ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M")


def iso_time(ts_ms: int) -> str:
    text = datetime.fromtimestamp(ts_ms / 1000, UTC).isoformat(timespec="milliseconds")
    return text.replace(".000+00:00", "Z").replace("+00:00", "Z")


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


def notice_required_s(loaded: Loaded, window: StoredWindow) -> float:
    """The notice this window needs: the contract's, or its customer's override when the window has one customer."""
    config = loaded.config
    customer: str | None = None
    if window.scope == "customer":
        customer = window.value
    elif window.scope == "component":
        comp = next((c for c in config.components if c.name == window.value), None)
        customer = comp.customer if comp is not None else None
    cust = config.customer(customer) if customer else None
    if cust is not None and cust.policy.maintenance_notice_s is not None:
        return cust.policy.maintenance_notice_s
    return loaded.contract.maintenance_notice_s


def lead_time_s(window: StoredWindow) -> float:
    return (window.start_ms - window.announced_ms) / 1000


__all__ = ["format_duration", "format_time", "iso_time", "lead_time_s", "new_id", "notice_required_s"]

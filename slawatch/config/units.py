"""Value types and checks every config model shares: names, bounded durations and sizes, host:port, URLs."""

from __future__ import annotations

import ipaddress
import math
import re
from typing import Annotated
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

# For pydantic `pattern=` (whose `$` is the end of the text); Python code uses NAME_RE.fullmatch, because
# Python's `$` also matches before a final newline.
NAME_PATTERN = r"^[A-Za-z0-9_.:-]+$"
NAME_RE = re.compile(r"[A-Za-z0-9_.:-]+")
VALUE_SHOWN = 80  # characters of a bad value repeated in an error message
_DURATION_RE = re.compile(
    r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|sec|secs|seconds?|m|min|mins|minutes?|h|hours?|d|days?|w|weeks?"
    r"|months?|mo|y|years?)\s*$"
)
_UNIT_S = {
    "ms": 0.001, "s": 1, "sec": 1, "secs": 1, "second": 1, "seconds": 1,
    "m": 60, "min": 60, "mins": 60, "minute": 60, "minutes": 60,
    "h": 3600, "hour": 3600, "hours": 3600,
    "d": 86400, "day": 86400, "days": 86400,
    "w": 604800, "week": 604800, "weeks": 604800,
    # A contract month is the 720 h basis; a year is 365 days.
    "mo": 2592000, "month": 2592000, "months": 2592000,
    "y": 31536000, "year": 31536000, "years": 31536000,
}


def shown(value: object) -> str:
    """repr() of a bad value for an error message, cut to VALUE_SHOWN characters."""
    text = repr(value)
    return text if len(text) <= VALUE_SHOWN else text[:VALUE_SHOWN - 1] + "…"


def valid_name(value: str) -> bool:
    return NAME_RE.fullmatch(value) is not None


def check_timezone(value: str, example: str = "Europe/London") -> str:
    """An IANA time zone name, or ValueError saying how to write one."""
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {shown(value)} (write e.g. UTC or {example})") from None
    return value


def parse_duration_s(value: object, *, allow_zero: bool = False) -> float:
    """'72h', '15 min', '6 months' or a number of seconds -> seconds."""
    if isinstance(value, bool):
        raise ValueError(f"not a duration: {shown(value)}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        m = _DURATION_RE.match(value)
        if not m:
            raise ValueError(f"not a duration: {shown(value)} (write e.g. 30s, 15min, 72h, 30d, 6 months)")
        seconds = float(m.group(1)) * _UNIT_S[m.group(2)]
    else:
        raise ValueError(f"not a duration: {shown(value)}")
    if math.isnan(seconds) or seconds < 0 or (seconds == 0 and not allow_zero):
        raise ValueError(f"duration must be {'zero or ' if allow_zero else ''}positive, got {shown(value)}")
    return seconds


def check_name(what: str, value: str) -> str:
    if not valid_name(value):
        raise ValueError(f"bad {what} name {shown(value)}: use letters, digits and - _ . : only")
    return value


def _span_text(seconds: float) -> str:
    for unit, size in (("day", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            n = int(seconds // size)
            return f"{n} {unit}{'s' if unit == 'day' and n > 1 else ''}"
    return f"{seconds:g} s"


def within(low: float, high: float, *, low_open: bool = False) -> AfterValidator:
    """Bounds for a number of seconds (or bytes...): a NaN, an infinity or an absurd value never reaches
    the scheduler, where it means a spinning loop or a job that never runs."""
    def check(value: float) -> float:
        if not math.isfinite(value) or value > high or value < low or (low_open and value == low):
            low_text = f"more than {_span_text(low)}" if low_open else _span_text(low)
            raise ValueError(f"must be from {low_text} to {_span_text(high)}, got {value:g}")
        return value
    return AfterValidator(check)


def count_within(low: int, high: int) -> AfterValidator:
    def check(value: int) -> int:
        if not low <= value <= high:
            raise ValueError(f"must be from {low} to {high}, got {shown(value)}")
        return value
    return AfterValidator(check)


# Every duration and size in the config is finite and bounded.
Duration = Annotated[float, within(0, 366 * 86400, low_open=True)]
Notice = Annotated[float, within(0, 366 * 86400)]  # 0: any announced maintenance counts
Retention = Annotated[float, within(86400, 100 * 366 * 86400)]
Interval = Annotated[float, within(0.1, 86400)]
Timeout = Annotated[float, within(0.001, 3600)]
HeartbeatPeriod = Annotated[float, within(0.1, 3600)]
ClientTimeout = Annotated[float, within(0.1, 600)]
PacketInterval = Annotated[float, within(0.001, 10)]
Milliseconds = Annotated[float, within(0, 3_600_000, low_open=True)]
ReadBytes = Annotated[int, count_within(1, 1 << 30)]
Finite = Annotated[float, Field(allow_inf_nan=False)]


def split_host_port(value: str, default_port: int | None = None) -> tuple[str, int]:
    """'host:port', '[v6]:port', or a bare host when a default port exists."""
    text = value.strip()
    host: str
    port_text: str | None
    if text.startswith("["):
        end = text.find("]")
        if end < 0:
            raise ValueError(f"bad address {shown(value)}: missing ']'")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise ValueError(f"bad address {shown(value)}")
        port_text = rest[1:] if rest else None
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    elif text.count(":") > 1:
        host, port_text = text, None  # a bare IPv6 address
    else:
        host, port_text = text, None
    if not host or not valid_host(host):
        raise ValueError(f"bad host in {shown(value)}")
    if port_text is None:
        if default_port is None:
            raise ValueError(f"{shown(value)} has no port: write host:port")
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"bad port in {shown(value)}: must be 1-65535")
    return host, int(port_text)


_LABEL = r"[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
_HOST_RE = re.compile(rf"{_LABEL}(?:\.{_LABEL})*")


def valid_host(host: str) -> bool:
    # Host names first: one regex, where ipaddress's parse (tried first before) cost most of a large config's
    # validation; a dotted IPv4 address matches it too, and IPv6 goes on to ipaddress.
    if _HOST_RE.fullmatch(host.rstrip(".")):
        return True
    try:
        ipaddress.ip_address(host)
        return True
    except ValueError:
        return False


def redact_url(url: str) -> str:
    """The URL with any user:password@ replaced by ***@, for messages and logs."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    return parts._replace(netloc="***@" + parts.netloc.rpartition("@")[2]).geturl()


def check_url(value: str, schemes: tuple[str, ...], *, credentials: str = "username and password") -> str:
    shown_url = shown(redact_url(value))
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise ValueError(f"bad URL {shown_url}: must start with {' or '.join(s + '://' for s in schemes)}")
    if "@" in parts.netloc:
        # A password in the URL would be printed wherever the URL is (summary, logs, store names).
        raise ValueError(f"bad URL {shown_url}: no user:password@ in the URL, set the {credentials} settings")
    try:
        host = parts.hostname
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"bad URL {shown_url}: {exc}") from None
    if not host or not valid_host(host):
        raise ValueError(f"bad URL {shown_url}: no valid host")
    if port == 0:
        raise ValueError(f"bad URL {shown_url}: port 0")
    return value


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Located(ValueError):
    """Several problems found by one validator, each at its own place under the model that raised it: the loader
    reports each at its own key and line instead of one message at the model."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems

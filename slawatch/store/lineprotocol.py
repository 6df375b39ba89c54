"""Points as stored records (one mapping for every sink) and their InfluxDB line protocol, as pure functions."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from functools import lru_cache

from slawatch.model import Heartbeat, Point, Sample, StateChange

FieldValue = bool | int | float | str

PROBE = "slawatch_probe"
STATE = "slawatch_state"
HEARTBEAT = "slawatch_heartbeat"
MAINTENANCE = "slawatch_maintenance"
ACK = "slawatch_ack"

MAX_TEXT_CHARS = 4096
"""Longer string values are cut here (InfluxDB 1.x refuses string fields over 64 KiB)."""

_SURROGATE = re.compile("[\ud800-\udfff]")
# In tag keys/values InfluxDB 1.x un-escapes only `\,` `\=` `\ ` and has no escape for a backslash itself,
# so a backslash at the end or before one of those three can never be read back: it becomes "/".
_TAG_BACKSLASH = re.compile(r"\\(?=[,= ]|$)")


@dataclass(frozen=True, slots=True)
class Record:
    """One stored row/point: what every sink writes, under the same names (see docs/schema.md)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    ts_ms: int


def clean_text(value: str) -> str:
    """Make a string storable anywhere: lone surrogates become U+FFFD, length is capped at MAX_TEXT_CHARS."""
    if value.isascii() and len(value) <= MAX_TEXT_CHARS:  # the common case, and fast
        return value
    if len(value) > MAX_TEXT_CHARS:
        value = value[:MAX_TEXT_CHARS]
    return _SURROGATE.sub("\ufffd", value)


def record(point: Point) -> Record:
    """The stored form of a model point (measurement, tags, fields, UTC ms timestamp)."""
    if isinstance(point, Sample):
        ref = point.ref
        fields: list[tuple[str, FieldValue]] = [("up", int(point.up))]
        if point.latency_ms is not None and math.isfinite(point.latency_ms):
            fields.append(("latency_ms", float(point.latency_ms)))
        fields += [("outcome", clean_text(str(point.outcome))), ("reason", clean_text(point.reason))]
        tags: tuple[tuple[str, str], ...] = (("component", ref.component), ("class", ref.klass), ("tier", ref.tier),
                ("customer", ref.customer), ("probe", point.probe), ("kind", point.kind), ("agent", point.agent))
        return Record(PROBE, _clean_tags(tags), tuple(fields), point.ts_ms)
    if isinstance(point, StateChange):
        ref = point.ref
        tags = (("component", ref.component), ("class", ref.klass), ("tier", ref.tier),
                ("customer", ref.customer), ("agent", point.agent))
        return Record(STATE, _clean_tags(tags), (("up", int(point.up)), ("reason", clean_text(point.reason))),
                      point.ts_ms)
    if isinstance(point, Heartbeat):
        return Record(HEARTBEAT, (("agent", clean_text(point.agent)),), (("period_s", float(point.period_s)),),
                      point.ts_ms)
    raise TypeError(f"not a point: {point!r}")


def _clean_tags(tags: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    if all(v.isascii() and len(v) <= MAX_TEXT_CHARS for _, v in tags):
        return tags
    return tuple((k, clean_text(v)) for k, v in tags)


# ---------------------------------------------------------------- line protocol


def escape_measurement(name: str) -> str:
    """Measurement: escape commas and spaces."""
    return _escape_name(name, ", ")


def escape_tag(text: str) -> str:
    """Tag key, tag value or field key: escape commas, equals signs and spaces.

    Two things cannot be carried and are replaced: a newline (ends the line) becomes a space, and a
    backslash at the end or before `,` `=` or space becomes "/" (the server would read it as an escape).
    """
    return _escape_name(text, ",= ")


escape_field_key = escape_tag
_field_key = lru_cache(maxsize=1024)(escape_tag)  # field names are a fixed handful


def _escape_name(text: str, special: str) -> str:
    text = _TAG_BACKSLASH.sub("/", text.replace("\r\n", " ").replace("\n", " ").replace("\r", " "))
    for ch in special:
        text = text.replace(ch, "\\" + ch)
    return text


def escape_string(text: str) -> str:
    """A string field value, quoted: backslashes and double quotes escaped.

    Newlines stay as they are: inside the quotes InfluxDB reads them as part of the value (verified with
    1.6, which returns them unchanged).
    """
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def format_field(value: FieldValue) -> str:
    if isinstance(value, bool):  # before int: bool is an int
        return "true" if value else "false"
    if isinstance(value, int):
        return f"{value}i"
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValueError(f"line protocol has no {value!r}")
        return repr(value)
    return escape_string(value)


def line(rec: Record) -> str:
    """One point as a line (no trailing newline); tags sorted, empty tag values left out, ms timestamp."""
    head = series_key(rec.measurement, rec.tags)
    fields = ",".join(f"{_field_key(k)}={format_field(v)}" for k, v in rec.fields
                      if not (type(v) is float and not math.isfinite(v)))
    return f"{head} {fields} {rec.ts_ms}"


@lru_cache(maxsize=16384)
def series_key(measurement: str, tags: tuple[tuple[str, str], ...]) -> str:
    """`measurement,tag=value,...` escaped. Cached: an agent writes the same few thousand series again and again."""
    head = escape_measurement(measurement)
    for key, value in sorted(tags):
        if value:  # an empty tag value is not allowed; a missing tag reads back as ""
            head += f",{escape_tag(key)}={escape_tag(value)}"
    return head


def lines(records: Iterable[Record]) -> str:
    """A write body: one line per record, newline-terminated."""
    return "".join(line(r) + "\n" for r in records)


def encode(points: Iterable[Point]) -> bytes:
    """Model points straight to a UTF-8 line protocol body."""
    return lines(record(p) for p in points).encode("utf-8")


_PARSE_FAILURE = re.compile(r"unable to parse ")
_DROPPED = re.compile(r"dropped=(\d+)")


def rejected_points(error: str) -> int:
    """How many points a 400 answer says were not written: lines that did not parse plus `dropped=N`
    (field type conflicts, points outside the retention policy); 0 when the text names none."""
    return len(_PARSE_FAILURE.findall(error)) + sum(int(n) for n in _DROPPED.findall(error))

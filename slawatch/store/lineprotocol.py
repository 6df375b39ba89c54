"""Points as stored records (one mapping for every sink) and their InfluxDB line protocol, as pure functions."""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import lru_cache
from operator import itemgetter
from typing import Any

from slawatch import schema
from slawatch.model import Point
from slawatch.schema import MAX_TEXT_CHARS, Measurement, Row, clean_text

FieldValue = schema.Value

PROBE = schema.PROBE.name
STATE = schema.STATE.name
HEARTBEAT = schema.HEARTBEAT.name
MAINTENANCE = schema.MAINTENANCE.name
ACK = schema.ACK.name
REPORT_SENT = schema.REPORT_SENT.name

# In tag keys/values InfluxDB 1.x un-escapes only `\,` `\=` `\ ` and has no escape for a backslash itself,
# so a backslash at the end or before one of those three can never be read back: it becomes "/".
_TAG_BACKSLASH = re.compile(r"\\(?=[,= ]|$)")


@dataclass(frozen=True, slots=True)
class Record:
    """One stored point as InfluxDB takes it: measurement, tags and fields by name, time (see slawatch.schema)."""

    measurement: str
    tags: tuple[tuple[str, str], ...]
    fields: tuple[tuple[str, FieldValue], ...]
    ts_ms: int


def _layout(m: Measurement) -> tuple[tuple[tuple[str, int], ...], tuple[tuple[str, int], ...], int]:
    """(tag name, row position)s, (field name, row position)s and the time's position, from the schema."""
    return (tuple((n, m.index(n)) for n in m.tags), tuple((n, m.index(n)) for n in m.fields), m.index(m.time))


_LAYOUTS = {m.name: _layout(m) for m in schema.MEASUREMENTS}


def as_record(m: Measurement, row: Row) -> Record:
    """A stored row as InfluxDB's point: a field that is None is not written."""
    tags, fields, time = _LAYOUTS[m.name]
    return Record(m.name, tuple((k, row[i]) for k, i in tags),  # type: ignore[misc]
                  tuple((k, row[i]) for k, i in fields if row[i] is not None),  # type: ignore[misc]
                  row[time])  # type: ignore[arg-type]


def record(point: Point) -> Record:
    """The stored form of a model point (measurement, tags, fields, UTC ms timestamp)."""
    return as_record(*schema.point_row(point))


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


def series_tags(key: str) -> dict[str, str]:
    """The tags of a series key as series_key writes it and InfluxDB lists it (`SHOW SERIES`). A backslash before
    `,` `=` or a space there is always an escape: escape_tag replaces a backslash of the text before them."""
    if "\\" not in key:  # nothing escaped (most keys): a plain split
        return dict(pair.split("=", 1) for pair in key.split(",")[1:])
    return {_unescape(k): _unescape(v) for k, v in (_EQUALS.split(pair, maxsplit=1) for pair in _COMMA.split(key)[1:])}


_COMMA = re.compile(r"(?<!\\),")
_EQUALS = re.compile(r"(?<!\\)=")
_ESCAPED = re.compile(r"\\([,= ])")


def _unescape(text: str) -> str:
    return _ESCAPED.sub(r"\1", text)


def lines(records: Iterable[Record]) -> str:
    """A write body: one line per record, newline-terminated."""
    return "".join(line(r) + "\n" for r in records)


def encode(points: Iterable[Point]) -> bytes:
    """Model points straight to a UTF-8 line protocol body: the same lines as `line(record(p))`, built from the
    stored row without the Record in between (this runs for every point the agent writes)."""
    out = []
    for p in points:
        measurement, row = schema.point_row(p)
        out.append(_row_line(measurement.name, row))
    return "".join(out).encode("utf-8")


ENCODING = f"influxdb-line-ms-{schema.SCHEMA_VERSION}"
"""Names `encode_lines`' bytes where they are kept (the agent's spool): a change of the lines must change it."""


def encode_lines(points: Iterable[Point]) -> list[bytes]:
    """Each point's line, newline-terminated, UTF-8: joined, they are `encode(points)`."""
    point_row, row_line = schema.point_row, _row_line
    out = []
    for p in points:
        measurement, row = point_row(p)
        out.append(row_line(measurement.name, row).encode("utf-8"))
    return out


_INT, _FLOAT, _STRING = 0, 1, 2
_KIND = {"integer": _INT, "float": _FLOAT, "string": _STRING}


def _fast_layout(m: Measurement) -> tuple[Callable[[Row], tuple[Any, ...]], tuple[tuple[str, int, int], ...], int]:
    """For one measurement: its tag values getter, each field's (`key=`, row position, kind), the time's position."""
    get = itemgetter(*(m.index(t) for t in m.tags))
    tag_values: Callable[[Row], tuple[Any, ...]] = get if len(m.tags) > 1 else lambda row: (get(row),)
    fields = tuple((f"{escape_field_key(f)}=", m.index(f), _KIND[m.column(f).type]) for f in m.fields)
    return tag_values, fields, m.index(m.time)


_FAST = {m.name: _fast_layout(m) for m in schema.MEASUREMENTS}


@lru_cache(maxsize=16384)
def _series(measurement: str, values: tuple[str, ...]) -> str:
    return series_key(measurement, tuple(zip((k for k, _ in _LAYOUTS[measurement][0]), values, strict=True)))


def _row_line(measurement: str, row: Row) -> str:
    tag_values, fields, time = _FAST[measurement]
    parts = []
    for prefix, i, kind in fields:
        v = row[i]
        if v is None:
            continue
        if kind == _INT:
            parts.append(f"{prefix}{v}i")
        elif kind == _FLOAT:
            if math.isfinite(v):  # type: ignore[arg-type]
                parts.append(prefix + repr(v))
        else:
            parts.append(prefix + escape_string(v))  # type: ignore[arg-type]
    return f"{_series(measurement, tag_values(row))} {','.join(parts)} {row[time]}\n"


_PARSE_FAILURE = re.compile(r"unable to parse ")
_DROPPED = re.compile(r"dropped=(\d+)")


def rejected_points(error: str) -> int:
    """How many points a 400 answer says were not written: lines that did not parse plus `dropped=N`
    (field type conflicts, points outside the retention policy); 0 when the text names none."""
    return len(_PARSE_FAILURE.findall(error)) + sum(int(n) for n in _DROPPED.findall(error))


__all__ = [
    "ACK", "ENCODING", "HEARTBEAT", "MAINTENANCE", "MAX_TEXT_CHARS", "PROBE", "REPORT_SENT", "STATE", "FieldValue",
    "Record", "as_record", "clean_text", "encode", "encode_lines", "escape_field_key", "escape_measurement",
    "escape_string", "escape_tag", "format_field", "line", "lines", "record", "rejected_points", "series_key",
]

"""Line protocol escaping as pure functions, checked against a reader that follows InfluxDB 1.x's parser."""

from __future__ import annotations

import math
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slawatch.model import ComponentRef, Heartbeat, Outcome, Sample, StateChange
from slawatch.store.lineprotocol import (
    MAX_TEXT_CHARS,
    PROBE,
    Record,
    clean_text,
    encode,
    encode_lines,
    escape_measurement,
    escape_string,
    escape_tag,
    format_field,
    line,
    lines,
    record,
    rejected_points,
    series_key,
    series_tags,
)

# ---------------------------------------------------------------- a reader written from InfluxDB 1.x models/points.go:
# while scanning, a backslash always takes the next character with it; keys and tag values are then
# un-escaped for `\,` `\=` `\ ` only (measurements: `\,` `\ `); string fields for `\\` and `\"` only.


def _scan(text: str, i: int, stops: str, quotes: bool = False) -> int:
    """Index of the first unescaped stop character; with `quotes`, skip quoted field values (a quote
    counts only in value position: more `=` than `,` seen so far, as in scanFields)."""
    in_quotes, equals, commas = False, 0, 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if quotes and ch == '"' and equals > commas:
            in_quotes = not in_quotes
        elif not in_quotes and ch in stops:
            return i
        elif not in_quotes and ch == "=":
            equals += 1
        elif not in_quotes and ch == ",":
            commas += 1
        i += 1
    return i


def _unescape(text: str, chars: str) -> str:
    for ch in chars:
        text = text.replace("\\" + ch, ch)
    return text


def _split(text: str, sep: str, quotes: bool = False) -> list[str]:
    parts: list[str] = []
    i = 0
    while True:
        j = _scan(text, i, sep, quotes)
        parts.append(text[i:j])
        if j >= len(text):
            return parts
        i = j + 1


def _string_field(raw: str) -> str:
    assert raw.startswith('"') and raw.endswith('"') and len(raw) >= 2, raw
    out: list[str] = []
    i, body = 0, raw[1:-1]
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body) and body[i + 1] in '\\"':
            out.append(body[i + 1])
            i += 2
        else:
            out.append(body[i])
            i += 1
    return "".join(out)


def _value(raw: str) -> object:
    if raw.startswith('"'):
        return _string_field(raw)
    if raw in ("true", "false"):
        return raw == "true"
    if raw.endswith("i"):
        return int(raw[:-1])
    return float(raw)


def parse(text: str) -> tuple[str, dict[str, str], dict[str, object], int]:
    key_end = _scan(text, 0, " ")
    series, rest = text[:key_end], text[key_end + 1:]
    field_end = _scan(rest, 0, " ", quotes=True)
    fields_text, ts_text = rest[:field_end], rest[field_end + 1:]
    assert re.fullmatch(r"-?\d+", ts_text), ts_text
    parts = _split(series, ",")
    measurement = _unescape(parts[0], ", ")
    tags = {}
    for part in parts[1:]:
        eq = _scan(part, 0, "=")
        tags[_unescape(part[:eq], ",= ")] = _unescape(part[eq + 1:], ",= ")
    fields = {}
    for part in _split(fields_text, ",", quotes=True):
        eq = _scan(part, 0, "=")
        fields[_unescape(part[:eq], ",= ")] = _value(part[eq + 1:])
    return measurement, tags, fields, int(ts_text)


def split_lines(body: str) -> list[str]:
    """Lines as the server splits them (scanLine): on newlines outside quoted field values."""
    out: list[str] = []
    start, i, in_quotes, in_fields, equals, commas = 0, 0, False, False, 0, 0
    while i < len(body):
        ch = body[i]
        if ch == "\\" and i + 2 < len(body):
            i += 2
            continue
        if ch == " ":
            in_fields = True
        if in_fields and not in_quotes and ch == "=":
            equals += 1
        elif in_fields and not in_quotes and ch == ",":
            commas += 1
        elif in_fields and ch == '"' and equals > commas:
            in_quotes = not in_quotes
        elif ch == "\n" and not in_quotes:
            out.append(body[start:i])
            start, in_fields, equals, commas = i + 1, False, 0, 0
        i += 1
    assert start == len(body), "body must end with a newline"
    return out


def tag_as_stored(text: str) -> str:
    """What a tag value reads back as: newlines become spaces, unreadable backslashes "/"."""
    text = text.replace("\r\n", " ").replace("\n", " ").replace("\r", " ")
    return re.sub(r"\\(?=[,= ]|$)", "/", text)


# ---------------------------------------------------------------- properties

any_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=60)
tricky_text = st.text(st.sampled_from(list(',= "\\\n\r\tab=é日🚀')), max_size=30)
texts = st.one_of(any_text, tricky_text)


@given(texts)
def test_tag_round_trips_as_stored(value: str) -> None:
    text = f"m,k={escape_tag(value)} f=1i 0" if value else "m f=1i 0"
    _, tags, _, _ = parse(text)
    assert tags.get("k", "") == tag_as_stored(value)
    if "\\" not in value and "\n" not in value and "\r" not in value:
        assert tags.get("k", "") == value


@given(st.dictionaries(st.sampled_from(["component", "agent", "class", "tier", "x,y", "a=b c"]), texts, max_size=6))
def test_series_tags_read_a_series_key_back_as_stored(tags: dict[str, str]) -> None:
    key = series_key("slawatch_state", tuple(tags.items()))
    assert series_tags(key) == {tag_as_stored(k): tag_as_stored(v) for k, v in tags.items() if v}
    assert series_tags(key) == parse(f"{key} f=1i 0")[1]  # as InfluxDB's own reading of the key


@given(texts)
def test_tag_key_and_measurement_round_trip(name: str) -> None:
    name = "x" + name  # keys cannot be empty
    _, tags, fields, _ = parse(f"{escape_measurement(name)},{escape_tag(name)}=v {escape_tag(name)}=1i 0")
    assert tags == {tag_as_stored(name): "v"}
    assert fields == {tag_as_stored(name): 1}


@given(texts)
def test_string_field_round_trips_exactly(value: str) -> None:
    assert _string_field(escape_string(value)) == value
    _, _, fields, _ = parse(f"m f={escape_string(value)},g=2i 5")
    assert fields == {"f": value, "g": 2}


@given(st.lists(texts, min_size=1, max_size=8))
def test_newlines_in_strings_never_split_lines(reasons: list[str]) -> None:
    recs = [Record("m", (("t", r),), (("reason", r),), i) for i, r in enumerate(reasons)]
    body = lines(recs)
    got = [parse(text) for text in split_lines(body)]
    assert [fields["reason"] for _, _, fields, _ in got] == reasons
    assert [ts for *_, ts in got] == list(range(len(reasons)))


@given(st.floats(allow_nan=False, allow_infinity=False))
def test_floats_are_exact(value: float) -> None:
    assert float(format_field(value)) == value


@pytest.mark.parametrize(("value", "text"), [(True, "true"), (False, "false"), (0, "0i"), (1, "1i"),
                                              (-(2**63), "-9223372036854775808i"), (1.5, "1.5"),
                                              ("a\"b\\c", '"a\\"b\\\\c"')])
def test_field_formats(value: bool | int | float | str, text: str) -> None:
    assert format_field(value) == text


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_floats_are_refused(value: float) -> None:
    with pytest.raises(ValueError):
        format_field(value)


names = st.text(st.characters(blacklist_categories=("Cs",)), min_size=1, max_size=20)
refs = st.builds(ComponentRef, component=names, klass=names, tier=names, customer=names)
latencies = st.one_of(st.none(), st.floats(min_value=0, max_value=1e7, allow_nan=False))
stamps = st.integers(min_value=0, max_value=2**53)
samples = st.builds(Sample, ref=refs, probe=names, kind=names, agent=names, ts_ms=stamps,
                    outcome=st.sampled_from(Outcome), reason=texts, latency_ms=latencies)
changes = st.builds(StateChange, ref=refs, agent=names, ts_ms=stamps, up=st.booleans(), reason=texts)
beats = st.builds(Heartbeat, agent=names, ts_ms=stamps, period_s=st.floats(min_value=0.001, max_value=1e6))


@given(st.lists(st.one_of(samples, changes, beats), max_size=10))
def test_points_encode_to_their_records(points: list[Sample | StateChange | Heartbeat]) -> None:
    body = encode(points).decode("utf-8")
    parsed = [parse(text) for text in split_lines(body)]
    assert len(parsed) == len(points)
    for point, (measurement, tags, fields, ts) in zip(points, parsed, strict=True):
        rec = record(point)
        assert measurement == rec.measurement and ts == point.ts_ms
        assert tags == {k: tag_as_stored(v) for k, v in rec.tags if v}
        assert fields == dict(rec.fields)


@given(st.lists(st.one_of(samples, changes, beats), max_size=10))
def test_encoded_lines_are_one_per_point_and_join_to_the_body(points: list[Sample | StateChange | Heartbeat]) -> None:
    items = encode_lines(points)
    assert len(items) == len(points) and b"".join(items) == encode(points)
    assert all(item.endswith(b"\n") and len(split_lines(item.decode("utf-8"))) == 1 for item in items)


def test_sample_record_names_and_types() -> None:
    ref = ComponentRef("sip-core", "sip", "Gold", "acme")
    rec = record(Sample(ref, "options", "sip", "a1", 1_700_000_000_123, Outcome.TIMEOUT, "no answer", None))
    assert rec.measurement == PROBE
    assert dict(rec.tags) == {"component": "sip-core", "class": "sip", "tier": "Gold", "customer": "acme",
                              "probe": "options", "kind": "sip", "agent": "a1"}
    assert dict(rec.fields) == {"up": 0, "outcome": "timeout", "reason": "no answer"}  # no latency_ms
    assert line(rec) == ('slawatch_probe,agent=a1,class=sip,component=sip-core,customer=acme,kind=sip,'
                         'probe=options,tier=Gold up=0i,outcome="timeout",reason="no answer" 1700000000123')


def test_state_and_heartbeat_lines() -> None:
    ref = ComponentRef("san 1", "san", "Base", "")
    assert line(record(StateChange(ref, "a1", 5, True, 'back "up"'))) == \
        'slawatch_state,agent=a1,class=san,component=san\\ 1,tier=Base up=1i,reason="back \\"up\\"" 5'
    assert line(record(Heartbeat("a1", 7, 60))) == "slawatch_heartbeat,agent=a1 period_s=60.0 7"


def test_clean_text_caps_and_replaces_surrogates() -> None:
    assert clean_text("a\ud800b") == "a\ufffdb"
    assert clean_text("x" * (MAX_TEXT_CHARS + 10)) == "x" * MAX_TEXT_CHARS
    assert len(line(Record("m", (), (("reason", clean_text("é" * 100_000)),), 0)).encode()) < 65_536


@pytest.mark.parametrize(("error", "count"), [
    ('partial write: field type conflict: input field "up" on measurement "slawatch_probe" is type string, '
     'already exists as type integer dropped=3', 3),
    ("partial write: unable to parse 'm,a=nl': missing fields dropped=0", 1),
    ("partial write: unable to parse 'a': missing fields\nunable to parse 'b': missing fields dropped=0", 2),
    ("partial write: points beyond retention policy dropped=12", 12),
    ("something else", 0),
])
def test_rejected_points_from_400_answers(error: str, count: int) -> None:
    assert rejected_points(error) == count

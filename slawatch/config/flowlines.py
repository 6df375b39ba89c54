"""One-line flow mappings of a block sequence (`  - {name: a, probes: [{kind: tcp, ...}]}`) read without YAML events."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

# A generated config of 100 000 components is mostly such lines; libyaml makes ~17 event objects for each (with
# two marks apiece), which is most of the load. A line is taken here only when it is entirely of this subset,
# written out by the regular expressions below; any other line is left in the file for the YAML parser:
# - scalars: plain ones of letters, digits and _ . + - / (no spaces, no `:`, not starting with - + . alone),
#   resolved by the caller exactly as a plain scalar (the same resolver and constructors); double-quoted ones
#   of printable ASCII without `\` or `"`; single-quoted ones of printable ASCII without `'`;
# - `key: value` entries (a scalar key), flow sequences, flow mappings, at most FLOW_DEPTH levels deep, commas
#   between entries (and one after the last, which YAML allows);
# - spaces only (no tabs, no comments), nothing after the closing brace but spaces.
_PLAIN = r"(?:[A-Za-z0-9_]|[-+.][A-Za-z0-9_./+-])[A-Za-z0-9_./+-]*"
_DOUBLE = r'"[ !#-\[\]-~]*"'
_SINGLE = r"'[ -&(-~]*'"
_SCALAR = f"(?:{_PLAIN}|{_DOUBLE}|{_SINGLE})"
FLOW_DEPTH = 4  # the line's mapping, and three levels in it: {probes: [{expect_status: [200]}]}


# Each entry is followed by a comma or the closing bracket (a comma before it too, as YAML allows): the value
# pattern is written once per level, so the pattern stays small (it is compiled at import).
def _sequence(value: str) -> str:
    return rf"\[ *(?:(?:{value}) *(?:, *|(?=\])))*\]"


def _mapping(value: str) -> str:
    return rf"\{{ *(?:{_SCALAR}: +(?:{value}) *(?:, *|(?=\}})))*\}}"


def _flow_line() -> re.Pattern[str]:
    value = _SCALAR
    for _ in range(FLOW_DEPTH - 1):
        value = f"{_SCALAR}|{_mapping(value)}|{_sequence(value)}"
    return re.compile(rf" *- +({_mapping(value)}) *")


_LINE = _flow_line()
# The tokens of lines that matched: a bracket, a key (scalar and ": ") or a scalar; spaces and commas skipped.
_TOKEN = re.compile(rf" *([{{}}\[\]]|{_SCALAR}(?:: )?)")
_OPEN_MAP, _OPEN_SEQ, _CLOSE, _KEY, _VALUE = range(5)
_PUNCT = {"{": (_OPEN_MAP, None), "[": (_OPEN_SEQ, None), "}": (_CLOSE, None), "]": (_CLOSE, None)}
PLACEHOLDER = "slawatch-flow-line-read-apart"
CHUNK = 2000  # lines tokenised at once: the token list of a whole file would be hundreds of MB


class NotFlow(Exception):
    """A plain scalar of a line resolves to something the reader leaves to the YAML parser."""


@dataclass(frozen=True, slots=True)
class FlowLines:
    """The file with the lines read here replaced: the first of each run of them (consecutive lines, the `-` in
    the same column: items of one sequence) by `- "PLACEHOLDER"` (the same columns before it), the others by
    empty lines, so every other line keeps its number; the runs as (0-based line of the first, the values of
    its lines), in order; whether any of their strings holds `${`."""

    text: str
    runs: list[tuple[int, list[Any]]]
    dollar: bool


def read_flow_lines(text: str, plain: Callable[[str], Any]) -> FlowLines | None:
    """The one-line flow mappings of block sequence items in `text`, or None when there are none (or the
    placeholder is written in the file). `plain(token)` is a plain scalar's value; it raises NotFlow for one
    the YAML parser must build."""
    if PLACEHOLDER in text or "{" not in text:
        return None
    rows = text.split("\n")
    match = _LINE.fullmatch
    found: list[int] = []
    for number, row in enumerate(rows):
        if "{" in row and match(row):
            found.append(number)
    if not found:
        return None
    values: list[Any] = []
    table: dict[str, tuple[int, Any]] = dict(_PUNCT)
    dollar = False
    for start in range(0, len(found), CHUNK):
        chunk = found[start:start + CHUNK]
        joined = " ".join(rows[number][rows[number].index("{"):] for number in chunk)
        dollar = dollar or "${" in joined
        got = _values(_TOKEN.findall(joined), table, plain)
        if len(got) != len(chunk):  # cannot be, for lines the pattern matched: then leave them all to the parser
            return None
        values.extend(got)
    runs: list[tuple[int, list[Any]]] = []
    last = dash = -2
    for number, value in zip(found, values, strict=True):
        row = rows[number]
        column = row.index("-")
        if number == last + 1 and column == dash:
            runs[-1][1].append(value)
            rows[number] = ""
        else:
            runs.append((number, [value]))
            rows[number] = row[:row.index("{")] + '"' + PLACEHOLDER + '"'
        last, dash = number, column
    return FlowLines("\n".join(rows), runs, dollar)


def _values(tokens: list[str], table: dict[str, tuple[int, Any]], plain: Callable[[str], Any]) -> list[Any]:
    """The values of a run of flow collections, from their tokens (already known to be well formed)."""
    out: list[Any] = []
    stack: list[Any] = []
    current: Any = out
    key: Any = _NO_KEY  # the key waiting for its value; _NO_KEY while the current collection is a sequence
    get = table.get
    for token in tokens:
        entry = get(token)
        if entry is None:
            entry = table[token] = _entry(token, plain)
        kind, value = entry
        if kind == _VALUE:
            if key is _NO_KEY:
                current.append(value)
            else:
                current[key] = value
                key = _NO_KEY
        elif kind == _KEY:
            key = value
        elif kind == _CLOSE:
            current = stack.pop()
        else:
            new: Any = {} if kind == _OPEN_MAP else []
            if key is _NO_KEY:
                current.append(new)
            else:
                current[key] = new
                key = _NO_KEY
            stack.append(current)
            current = new
    return out


def _entry(token: str, plain: Callable[[str], Any]) -> tuple[int, Any]:
    kind = _VALUE
    if token.endswith(": "):
        kind, token = _KEY, token[:-2]
    if token[0] in "\"'":
        return kind, token[1:-1]
    return kind, plain(token)


_NO_KEY: Any = object()

"""One-line flow mappings read apart from the YAML parser: the same data, Config and errors as the parser's way."""

from __future__ import annotations

import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from slawatch.config import flowlines, loader
from slawatch.config.loader import ConfigError, bundled_contract, load

PATH = Path("t.yaml")


def _events_only(text: str) -> Any:
    """What the parser's events alone make of the text (the way before flow lines were read apart)."""
    try:
        return loader._build_events(text, PATH, {}, None)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    except yaml.YAMLError as exc:
        return type(exc), str(exc)


def _built(text: str) -> Any:
    try:
        return loader._build(text, PATH)
    except ConfigError as exc:
        return [str(p) for p in exc.problems]
    except yaml.YAMLError as exc:
        return type(exc), str(exc)


def _flow_lines(text: str) -> list[int]:
    flow = flowlines.read_flow_lines(text, lambda token: token)
    return [] if flow is None else [line + i for line, values in flow.runs for i in range(len(values))]


# (text, the 0-based lines read apart)
SAME_AS_EVENTS = [
    ("a:\n  - {x: 1, y: two, z: 3.5}\n  - {x: yes, y: off, z: ~}\n", [1]),
    ("- {a: null, b: Null, c: 0x1F, d: 0o17, e: 1_000, f: .inf, g: -.NaN, h: 2026-11-26, i: +1, j: -5}\n", [0]),
    ('- {q: "yes", r: \'1\', s: "${X}", t: \'a # b\', u: "c: d", v: "", w: \'\'}\n', [0]),
    ("- {n: {m: [1, [2, 3], {p: [4]}]}, e: {}, l: []}\n- {n: {m: {o: [1]}}}\n- {n: [[[1]]]}\n", [1, 2]),
    ("- {1: int, true: bool, null: none, 2026-01-01: date, -1.5: float}\n", [0]),
    ("- {dup: 1, other: 2, dup: 3}\n", [0]),
    ("-   {a: 1}   \n-  {b:   [ 1 ,2 , 3 ]  ,  c: d}\n- {a: [1, 2,], b: {c: 3,},}\n- {a: 1,, b: 2}\n- {, a: 1}\n",
     [0, 1, 2]),
    ("components:\n- {name: a, probes: [{kind: tcp, target: \"h:1\"}]}\n- {name: b, class: san}\n", [1, 2]),
    ("- - {a: 1}\n  - {b: 2}\n", [1]),  # a nested sequence: the first line is `- - {`, not read apart
    # left to the parser, line by line: a comment, a tab, a colon, spaces in a plain scalar, a flow key
    ("- {a: 1}  # c\n- {a:\t1}\n- {a: b:c}\n- {a: b c}\n- {[a]: 1}\n- {a: 1}\n", [5]),
    ("a: &x [1, 2]\nb: *x\nc:\n  - {d: 1}\n", [3]),  # an alias: built again from the events
    ("a: &x\n  - {d: 1}\n  - {e: 2}\nb: [*x, *x]\n", [1, 2]),
    ("a: |\n  - {not: line}\n  - {of: own}\nb:\n  - {c: 1}\n", [1, 2, 4]),  # block text holds two
    ("a: >\n  - {folded: 1}\n", [1]),
    ("a: 'one\n  - {quoted: 1}\n  two'\n", [1]),
    ("a: plain\n  - {continued: 1}\n", [1]),
    ('a: "' + flowlines.PLACEHOLDER + '"\nb:\n  - {c: 1}\n', []),  # the placeholder written: not read apart
    ("- {a: 2026-13-45}\n", [0]),  # a date the constructor refuses: as before (ValueError from PyYAML)
    ("- {a: 1}\n- {b: 2\n", [0]),  # an unclosed mapping: a syntax error, with its line
    ("- {a: 1}\n  - {b: 2}\n", [0, 1]),  # bad indentation: the error of the file as written
    ("x:\n" + "".join("  " * i + "-\n" for i in range(1, 60)) + "  " * 60 + "- {a: {b: {c: [1]}}}\n", [60]),
    ("- {a: 1}\n---\n- {b: 2}\n", [0, 2]),  # several documents: left to PyYAML, which refuses them
    # runs of lines: one sequence each, broken by another column, another item, a comment or an empty line
    ("a:\n  - {x: 1}\n  - {x: 2}\nb:\n- {y: 1}\n- {y: 2}\n", [1, 2, 4, 5]),
    ("- {a: 1}\n- b\n- {c: 2}\n- {d: 3}\n# note\n- {e: 4}\n\n- {f: 5}\n", [0, 2, 3, 5, 7]),
    ("- - {a: 1}\n  - {b: 2}\n  - {c: 3}\n- {d: 4}\n- x:\n  - {e: 5}\n  - {f: 6}\n- {g: 7}\n", [1, 2, 3, 5, 6, 7]),
    ("a: |\n  text\n  - {in: text}\n  - {also: text}\nb: [1]\n", [2, 3]),
]


@pytest.mark.parametrize(("text", "lines"), SAME_AS_EVENTS)
def test_flow_lines_give_what_the_events_give(text: str, lines: list[int]) -> None:
    assert _flow_lines(text) == lines
    try:
        expected = _events_only(text)
    except ValueError as exc:  # the same exception from both ways
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            loader._build(text, PATH)
        return
    assert _built(text) == expected
    assert _built(text) is not None or expected is None


def test_a_generated_config_is_read_apart_and_put_in_place() -> None:
    rows = "".join(f'  - {{name: c{i}, class: san, customer: cust-{i % 3}, probes: [{{kind: tcp, target: "h:{i}"}}]}}\n'
                   for i in range(50))
    text = f"customers:\n  - {{name: cust-0, tier: gold}}\ncomponents:\n{rows}"
    flow = flowlines.read_flow_lines(text, lambda token: token)
    assert flow is not None and [(line, len(values)) for line, values in flow.runs] == [(1, 1), (3, 50)]
    assert flow.text.split("\n")[3:6] == ['  - "' + flowlines.PLACEHOLDER + '"', "", ""]
    built = loader._build_events(flow.text, PATH, {}, flow)  # not given up: every line was put in its place
    assert built is not None
    assert built == loader._build_events(text, PATH, {}, None) == (yaml.safe_load(text), False)


# Scalars as a person or a generator might write them: plain, quoted, and raw text with YAML's indicators.
_words = st.sampled_from(["a", "san", "tcp", "yes", "No", "on", "null", "~", "1", "-1", "+2", "0x1F", "1_0", ".5",
                          "1e3", "2026-11-26", "12:30", "-", ".", "a b", "a#b", "a #b", "a:b", "a: b", "${X}",
                          "", " ", "'", '"', "\\", "{", "}", "[", "]", ",", "&a", "*a", "!x", "|", ">", "%", "@",
                          "?", "=", "<<", "é", "\t"])
_plain = st.sampled_from(["a", "san", "tcp", "comp-01", "h.example", "a/b", "a+b", "_x", "yes", "No", "on", "OFF",
                          "null", "Null", "true", "1", "-1", "+2", "0x1F", "0o17", "0b11", "1_0", ".5", "-.5", "1e3",
                          "1.5e+3", ".inf", "-.Inf", ".NaN", "2026-11-26", "2026-1-2", "20261126", "y", "n", "-a"])
_text = st.text(st.characters(min_codepoint=32, max_codepoint=126, exclude_characters="\"'\\"), max_size=6)
_scalars = st.one_of(_plain, _plain, _plain, st.text("aeE1_.+-/:", min_size=1, max_size=4),
                     st.builds(lambda w: f'"{w}"', _text),
                     st.builds(lambda w: f"'{w}'", _text), _words)  # the last often not YAML at all


def _flow(inner: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    entries = st.lists(st.tuples(_scalars, inner), max_size=4)
    return st.one_of(
        st.builds(lambda kv, gap, end: "{" + ("," + gap).join(f"{k}:{gap or ' '}{v}" for k, v in kv) + end + "}",
                  entries, st.sampled_from(["", " ", "  "]), st.sampled_from(["", "", ",", " , ", ",,"])),
        st.builds(lambda items, end: "[" + ", ".join(items) + end + "]", st.lists(inner, max_size=4),
                  st.sampled_from(["", "", ",", " ,", ", ,"])))


_values = st.recursive(_scalars, _flow, max_leaves=12)
_lines = st.builds(lambda value, tail: f"- {{k: {value}}}{tail}",
                   _values, st.sampled_from(["", "", "", "", "", "", " ", "  # c", ":", " x"]))


@settings(max_examples=300, deadline=None)
@given(st.lists(_lines, min_size=1, max_size=8),
       st.sampled_from(["", "", "a:\n", "a:\n", "a: |\n", "a: &x\n", "- &x 1\n", "- [\n"]),
       st.sampled_from(["", "", "b: *x\n", "- *x\n", "c: 'q\n", "]\n"]))
def test_any_flow_lines_give_what_the_events_give(lines: list[str], head: str, tail: str) -> None:
    indent = "  " if head.endswith(":\n") else ""
    text = head + "".join(f"{indent}{line}\n" for line in lines) + tail
    try:
        expected = _events_only(text)
    except ValueError as exc:
        with pytest.raises(ValueError, match=re.escape(str(exc))):
            loader._build(text, PATH)
        return
    assert _built(text) == expected


def _config(tmp_path: Path, rows: list[str]) -> Path:
    path = tmp_path / "c.yaml"
    path.write_text(f"contract: {bundled_contract()}\ncustomers:\n  - {{name: cust-0, tier: gold}}\n"
                    "components:\n" + "".join(f"  {row}\n" for row in rows))
    return path


def _without_flow_lines(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(loader, "read_flow_lines", lambda text, plain: None)


ROWS = [
    '- {name: a, class: san, customer: cust-0, probes: [{kind: tcp, target: "127.0.0.1:9"}]}',
    "- {name: b, class: network, tier: gold, interval_s: 60, probes: [{kind: icmp, target: 127.0.0.1, count: 1}]}",
    "- {name: c, class: sip, tier: base, probes: [{kind: sip, target: 'sip:127.0.0.1:5060'}, "
    "{kind: http, name: web, target: 'http://127.0.0.1:8080/', expect_status: [200, 204], timeout_s: 2}]}",
    "- name: d\n    class: power\n    customer: cust-0\n    probes: [{kind: tcp, target: 'h:1'}]",
]


def test_a_config_of_flow_lines_loads_to_the_same_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = _config(tmp_path, ROWS)
    fast = load(path).config
    _without_flow_lines(monkeypatch)
    slow = load(path).config
    assert fast == slow
    assert [c.name for c in fast.components] == ["a", "b", "c", "d"]
    assert fast.components[2].probes[1].timeout_s == 2


BAD_ROWS = [
    ['- {name: a, class: san, customer: nobody, probes: [{kind: tcp, target: "x"}]}'],
    ["- {name: a, class: san, tier: gold, probes: [{kind: nope}]}", "- {name: bad name, class: san, tier: gold}"],
    ["- {name: a, class: san, tier: gold, probes: [{kind: tcp, target: 'h:1', interval_s: 1, timeout_s: 5}]}"],
    ["- {name: a, class: san, tier: gold, probes: [{kind: tcp, target: 'h:1'}], extra: 1}"],
    ["- {name: a, class: san, tier: gold, probes: [{kind: tcp, target: 'h:${NOT_SET}'}]}"],
    ["- {name: a, class: san, tier: gold, probes: [{kind: tcp, target: 'h:1'}]}", "- {name: a, class: san"],
]


@pytest.mark.parametrize("rows", BAD_ROWS)
def test_errors_in_flow_lines_are_the_same_messages_at_the_same_lines(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, rows: list[str]) -> None:
    path = _config(tmp_path, ROWS[:2] + rows)
    with pytest.raises(ConfigError) as fast:
        load(path, {})
    _without_flow_lines(monkeypatch)
    with pytest.raises(ConfigError) as slow:
        load(path, {})
    assert [str(p) for p in fast.value.problems] == [str(p) for p in slow.value.problems]
    assert all(p.line is not None and p.line >= 5 for p in fast.value.problems)


def test_strings_known_by_their_first_character_are_what_the_resolver_says() -> None:
    """The shortcut: a plain scalar whose first character no implicit resolver looks at is a string."""
    assert None not in loader._LOADER.yaml_implicit_resolvers  # no resolver for any first character
    resolver = loader._LOADER("")
    try:
        for first in map(chr, range(32, 127)):
            if first not in loader._RESOLVED_FIRST:
                assert resolver.resolve(yaml.ScalarNode, first + "x1", (True, False)) == "tag:yaml.org,2002:str"
    finally:
        resolver.dispose()


_field_values = {
    "name": st.sampled_from(["a", "b", "sw-01", "'a'", '"x y"', "bad name", "1", "null"]),
    "class": st.sampled_from(["san", "network", "nope", '"sip"']),
    "tier": st.sampled_from(["gold", "base", "platinum2", "~", "null"]),
    "customer": st.sampled_from(["cust-0", "nobody", '"cust-0"']),
    "interval_s": st.sampled_from(["60", "1.5", "0", "-1", "1e3", "yes", '"60"', ".inf"]),
    "timeout_s": st.sampled_from(["2", "90", "0.5", "null"]),
}
_probe_values = {
    "kind": st.sampled_from(["tcp", "icmp", "http", "nope", '"tcp"']),
    "target": st.sampled_from(['"127.0.0.1:9"', "127.0.0.1", "h.example", "'http://127.0.0.1:8/'", '"x"', "10"]),
    "name": st.sampled_from(["p1", "p2", "'p 1'"]),
    "count": st.sampled_from(["1", "3", "0", "true"]),
    "interval_s": st.sampled_from(["30", "0.01"]),
    "extra": st.sampled_from(["1"]),
}


def _mapping_text(base: dict[str, str], values: dict[str, st.SearchStrategy[str]]) -> st.SearchStrategy[str]:
    """A flow mapping of `base` with a few of its keys changed, dropped or added from `values`."""
    changed = st.dictionaries(st.sampled_from(sorted(values)), st.none(), max_size=1).flatmap(
        lambda names: st.tuples(*(st.one_of(st.none(), values[n]) for n in names)).map(
            lambda written: dict(zip(names, written, strict=True))))
    return st.one_of(st.just({}), st.just({}), changed).map(lambda change: "{" + ", ".join(
        f"{k}: {v}" for k, v in {**base, **change}.items() if v is not None) + "}")


_components = st.builds(
    lambda fields, probes: fields[:-1] + f", probes: [{probes}]}}",
    _mapping_text({"name": "NAME", "class": "san", "tier": "gold"}, _field_values),
    st.lists(_mapping_text({"kind": "tcp", "target": '"127.0.0.1:9"'}, _probe_values), min_size=1, max_size=2)
    .map(", ".join))


@settings(max_examples=60, deadline=None)
@given(st.lists(_components, min_size=1, max_size=5))
def test_any_config_of_flow_lines_loads_to_the_same_config_or_the_same_errors(rows: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = _config(Path(tmp), [f"- {row}".replace("NAME", f"c{i}") for i, row in enumerate(rows)])
        outcomes = []
        for flow in (True, False):
            with pytest.MonkeyPatch.context() as patch:
                if not flow:
                    _without_flow_lines(patch)
                try:
                    outcomes.append(load(path, {}).config)
                except ConfigError as exc:
                    outcomes.append([str(p) for p in exc.problems])
        assert outcomes[0] == outcomes[1]

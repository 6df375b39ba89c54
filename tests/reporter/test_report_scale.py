"""The report's inputs hash and its JSON, written a slice at a time: the same digest and text as the whole at once."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from reporter import render, report
from reporter.availability import Availability, DegradedSpell, Outage, OutagePart, Policy
from reporter.report import ComponentReport, inputs_sha256
from slawatch.model import AgentHeartbeats, ComponentRef, Interval, StateChange
from tests.reporter.april import fixed_report

GOLDEN = Path(__file__).parent / "golden"

PERIOD = Interval(1_775_001_600_000, 1_777_593_600_000)


def whole_json_sha256(changes: list[StateChange], heartbeats: dict[str, AgentHeartbeats]) -> str:
    """The digest as the canonical document (docs/report.md) defines it: one json.dumps of it all."""
    doc: dict[str, Any] = {
        "period": [PERIOD.start_ms, PERIOD.end_ms, "2026-04", "UTC"], "contract": {"name": "c", "tiers": ["gold"]},
        "policies": {}, "components": [["a", "san", "gold", "x", 99.9]], "windows": [],
        "heartbeats": {agent: [hb.period_s, sorted(hb.instants_ms)] for agent, hb in heartbeats.items()},
        "changes": sorted([c.ref.component, c.agent, c.ts_ms, c.up, c.reason, *(["degraded"] if c.degraded else [])]
                          for c in changes)}
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def streamed(changes: list[StateChange], heartbeats: dict[str, AgentHeartbeats]) -> str:
    return inputs_sha256(period=PERIOD, label="2026-04", timezone="UTC", contract={"name": "c", "tiers": ["gold"]},
                         policies={}, components=[("a", "san", "gold", "x", 99.9)], changes=changes,
                         heartbeats=heartbeats, windows=[])


change = st.builds(
    lambda comp, agent, ts, up, reason, degraded: StateChange(ComponentRef(comp, "san", "gold", "x"), agent, ts, up,
                                                              reason, degraded),
    st.sampled_from(["a", "b", "c-ü", "d"]), st.sampled_from(["mon-1", "mon-2"]),
    st.integers(PERIOD.start_ms - 10**6, PERIOD.end_ms), st.booleans(), st.sampled_from(["", "503", "refusé"]),
    st.booleans())


@pytest.fixture(autouse=True)
def small_slices(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(report, "HASH_SLICE", 3)  # several slices even for a few changes


@settings(max_examples=200, deadline=None)
@given(st.lists(change, max_size=30), st.booleans())
def test_the_streamed_hash_is_the_hash_of_the_whole_document(changes: list[StateChange], by_component: bool) -> None:
    if by_component:  # as every store reads them: by (component, ts_ms, agent)
        changes = sorted(changes, key=lambda c: (c.ref.component, c.ts_ms, c.agent))
    beats = {"mon-1": AgentHeartbeats("mon-1", (PERIOD.start_ms, PERIOD.start_ms + 60_000), 60.0)}
    assert streamed(changes, beats) == whole_json_sha256(changes, beats)


def test_the_hash_of_no_changes_is_that_of_an_empty_list() -> None:
    assert streamed([], {}) == whole_json_sha256([], {})


async def test_the_json_written_in_pieces_is_one_dump_of_the_whole_document(tmp_path: Path,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(render, "JSON_SLICE", 1)  # a slice per component
    fixed = await fixed_report(tmp_path)
    assert len(fixed.components) > 2
    whole = json.dumps(render.report_doc(fixed), sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                       allow_nan=False) + "\n"
    assert "".join(render.json_pieces(fixed)) == whole
    assert render.render_json(fixed) == (GOLDEN / "april.json").read_text(encoding="utf-8")


async def test_a_component_written_as_text_is_the_dump_of_its_document(tmp_path: Path) -> None:
    fixed = await fixed_report(tmp_path)
    for part in ("outages", "degraded", "unmonitored"):
        assert any(getattr(c.result, part) for c in fixed.components)
    assert any(c.result.met is None for c in fixed.components) and any(c.customer is None for c in fixed.components)
    for c in fixed.components:
        assert render.component_json(c) == render._json(render._component_doc(c))


text = st.text(max_size=8)  # quotes, backslashes, control characters, any code point


@settings(max_examples=100, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 10**13), st.integers(0, 10**9), text, st.lists(text, max_size=2),
                          st.booleans()), max_size=3), text, st.none() | text,
       st.floats(0, 100, allow_nan=False), st.none() | st.booleans())
def test_any_outage_written_as_text_is_the_dump_of_its_document(
        outages: list[tuple[int, int, str, list[str], bool]], name: str, customer: str | None, target: float,
        met: bool | None) -> None:
    made = tuple(Outage(start, start + length, length // 2, length - length // 2, reason, tuple(agents), late,
                        tuple(agents[:1]), (OutagePart(start, start + length, "counted"),))
                 for start, length, reason, agents, late in outages)
    result = Availability(PERIOD, 1, 2, 3, 4, 5, 6, -7, None if met is None else 0.5, None if met is None else 99.5,
                          target, met, made, (Interval(1, 1001),),
                          degraded=(DegradedSpell(5, 10, name, (name,)),))
    c = ComponentReport(name, "san", name, customer, target, Policy(), result)
    assert render.component_json(c) == render._json(render._component_doc(c))


kind = st.sampled_from(["counted", "late_notice", "excused"])


@settings(max_examples=100, deadline=None)
@given(st.integers(0, 10**13), st.lists(st.tuples(st.integers(0, 10**8), kind), min_size=1, max_size=4),
       st.integers(-2, 2), st.integers(-2, 2), st.booleans())
def test_an_outage_in_several_parts_written_as_text_is_the_dump_of_its_document(
        start: int, pieces: list[tuple[int, str]], lead: int, trail: int, gap: bool) -> None:
    """Parts that share their instants with the outage and each other, and (`lead`, `trail`, `gap`) ones that do
    not: the text writes each instant the dump writes."""
    parts, at = [], start + lead
    for length, how in pieces:
        parts.append(OutagePart(at, at + length, how))  # type: ignore[arg-type]
        at += length + (1 if gap else 0)
    end = parts[-1].end_ms + trail
    made = (Outage(start, end, 1, 2, "r", ("mon-1", "mon-2"), False, (), tuple(parts)),)
    result = Availability(PERIOD, 1, 2, 3, 4, 5, 6, -7, 0.5, 99.5, 99.0, True, made, ())
    c = ComponentReport("a", "san", "gold", None, 99.0, Policy(), result)
    assert render.component_json(c) == render._json(render._component_doc(c))


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(text, st.one_of(st.sampled_from(["mon-1", "mon-2"]), text), text, st.integers(-3, 3),
                          st.booleans(), st.booleans()), max_size=12),
       st.booleans(), st.booleans())
def test_the_hashed_rows_written_as_text_are_the_dump_of_the_sorted_rows(
        rows: list[tuple[str, str, str, int, bool, bool]], by_identity: bool, ordered: bool) -> None:
    """Any component, agent and reason (quotes, backslashes, control characters, any code point), degraded or not;
    in the stores' order or not; several changes of an agent at one instant (a few instants only), equal ones too."""
    changes = [StateChange(ComponentRef(comp, "san", "gold", None), agent, ts, up, why, degraded)
               for comp, agent, why, ts, up, degraded in rows]
    if by_identity:
        changes.sort(key=lambda c: (c.ref.component, c.ts_ms, c.agent))
    made = sorted([c.ref.component, c.agent, c.ts_ms, c.up, c.reason, *(["degraded"] if c.degraded else [])]
                  for c in changes)
    texts = report.change_texts(changes, ordered=ordered)
    if not ordered:  # a component at a time, put in order at the end
        assert [name for name, _ in texts] == sorted({c.ref.component for c in changes})
    assert b",".join(text for _, text in texts).decode("utf-8") == report._canonical(made)[1:-1]

"""The report's response-time section from a real SQLite store: each incident raised in the month with its
response time, target, deadline and verdict, the totals, in text, JSON and HTML; the inputs hash."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from reporter.periods import parse_iso
from reporter.render import render_html, render_json, render_text
from reporter.report import build_month_report
from slawatch.config.loader import Loaded, load
from slawatch.model import ComponentRef, Incident, IncidentEvent, IncidentState, Pause, StateChange
from slawatch.store.sqlite import SqliteSink, SqliteSource
from slawatch.store.sqlite_desk import SqliteDeskStore

ROOT = Path(__file__).resolve().parents[2]
MIN = 60_000
WED = parse_iso("2026-06-03T10:00:00Z")  # 11:00 in London, office hours: P1 has 15 minutes
AS_OF = parse_iso("2026-06-20T12:00:00Z")


def config(tmp_path: Path) -> Loaded:
    shutil.copy(ROOT / "config" / "contracts" / "priorities.yaml", tmp_path / "contract.yaml")
    (tmp_path / "slawatch.yaml").write_text(f"""
contract: contract.yaml
storage: {{sqlite: {{path: {tmp_path / 's.db'}}}}}
report: {{timezone: Europe/London}}
customers: [{{name: acme, tier: gold}}, {{name: globex, tier: base}}]
components:
  - {{name: pbx-1, class: sip, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:1"}}]}}
  - {{name: san-1, class: san, customer: globex, probes: [{{kind: tcp, target: "127.0.0.1:2"}}]}}
""", encoding="utf-8")
    return load(tmp_path / "slawatch.yaml")


def incident(n: int, raised_ms: int, *, component: str = "pbx-1", priority: str = "P1", **kw: object) -> Incident:
    customer = "acme" if component == "pbx-1" else "globex"
    ref = ComponentRef(component, "sip" if component == "pbx-1" else "san", "gold", customer)
    fields: dict[str, object] = dict(state=IncidentState.RESOLVED, reason="refused", version=1)
    fields.update(kw)
    return Incident(f"INC-2026-{n:06d}", ref, "down", raised_ms - MIN, raised_ms, priority,
                    **fields)  # type: ignore[arg-type]


INCIDENTS = [
    # acknowledged after 10 min of a 15 min target: met
    incident(1, WED, acknowledged_ms=WED + 10 * MIN, acknowledged_by="ann", resolved_ms=WED + 30 * MIN),
    # acknowledged after 40 min, 30 of them waiting on the customer: 10 min counted, met
    incident(2, WED + 60 * MIN, acknowledged_ms=WED + 100 * MIN, acknowledged_by="bob",
             pauses=(Pause(WED + 65 * MIN, WED + 95 * MIN, "no remote access"),), resolved_ms=WED + 120 * MIN),
    # acknowledged after 20 min: breached
    incident(3, WED + 24 * 60 * MIN, acknowledged_ms=WED + 24 * 60 * MIN + 20 * MIN, acknowledged_by="ann",
             resolved_ms=WED + 25 * 60 * MIN),
    # never acknowledged, recovered after 5 min: met (nobody needed to answer)
    incident(4, WED + 48 * 60 * MIN, resolved_ms=WED + 48 * 60 * MIN + 5 * MIN),
    # never acknowledged, still open long after its deadline (a Saturday: 30 min out of hours): breached
    incident(5, WED + 72 * 60 * MIN, state=IncidentState.OPEN),
    # globex, P2 raised on a Saturday 30 min before the report: by the next business day, pending
    incident(6, AS_OF - 30 * MIN, component="san-1", priority="P2", state=IncidentState.OPEN),
    # raised in May: not in June's report
    incident(7, parse_iso("2026-05-31T12:00:00Z"), acknowledged_ms=parse_iso("2026-05-31T12:01:00Z")),
]


async def store(tmp_path: Path, loaded: Loaded, incidents: list[Incident]) -> None:
    sink = SqliteSink(loaded.config.storage.sqlite)  # type: ignore[arg-type]
    await sink.write([StateChange(ComponentRef("pbx-1", "sip", "gold", "acme"), "a1", WED - 2 * MIN, True, ""),
                      StateChange(ComponentRef("san-1", "san", "base", "globex"), "a1", WED - 2 * MIN, True, "")])
    await sink.close()
    desk = SqliteDeskStore(tmp_path / "s.db")
    for i in incidents:
        assert await desk.open(i, [IncidentEvent(i.id, 1, i.raised_ms, "opened", "slawatch")], [])
    await desk.close()


async def test_each_incident_with_its_response_time_and_the_totals(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    await store(tmp_path, loaded, INCIDENTS)
    source = SqliteSource(loaded.config.storage.sqlite)  # type: ignore[arg-type]
    try:
        report = await build_month_report(loaded, source, 2026, 6, as_of_ms=AS_OF)
    finally:
        await source.close()
    doc = json.loads(render_json(report))
    got = {i["id"][-1]: (i["response_s"], i["target_s"], i["met"], i["paused_s"]) for i in doc["incidents"]}
    assert got == {"1": (600.0, 900.0, True, 0.0), "2": (600.0, 900.0, True, 1800.0),
                   "3": (1200.0, 900.0, False, 0.0), "4": (None, 900.0, True, 0.0), "5": (None, 1800.0, False, 0.0),
                   "6": (None, 36000.0, None, 0.0)}
    first = doc["incidents"][0]
    assert set(first) >= {"id", "component", "priority", "raised_at", "acknowledged_at", "response_s", "target_s",
                          "deadline", "met", "paused_s"}
    assert (first["raised_at"], first["acknowledged_at"], first["deadline"]) == (
        "2026-06-03T10:00:00.000Z", "2026-06-03T10:10:00.000Z", "2026-06-03T10:15:00.000Z")
    assert doc["response_summary"] == {"incidents": 6, "met": 3, "breached": 2, "pending": 1}
    text = render_text(report)
    assert "response times (5 incidents: 3 met, 2 breached, 0 pending)" in text  # acme
    assert "response times (1 incidents: 0 met, 0 breached, 1 pending)" in text  # globex
    assert "BREACHED (not acknowledged)" in text and "met (resolved before its deadline)" in text
    html = render_html(report)
    assert html.count("INC-2026-00000") == 6 and "Response times" in html


async def test_incidents_enter_the_inputs_hash_only_when_there_are_some(tmp_path: Path) -> None:
    loaded = config(tmp_path)
    await store(tmp_path, loaded, [])
    source = SqliteSource(loaded.config.storage.sqlite)  # type: ignore[arg-type]
    try:
        without = await build_month_report(loaded, source, 2026, 6, as_of_ms=AS_OF)
        none_given = await build_month_report(loaded, source, 2026, 6, as_of_ms=AS_OF, incidents=[])
        one = await build_month_report(loaded, source, 2026, 6, as_of_ms=AS_OF, incidents=INCIDENTS[:1])
        acked_later = await build_month_report(
            loaded, source, 2026, 6, as_of_ms=AS_OF,
            incidents=[incident(1, WED, acknowledged_ms=WED + 11 * MIN, resolved_ms=WED + 30 * MIN)])
    finally:
        await source.close()
    assert without.inputs_sha256 == none_given.inputs_sha256 != one.inputs_sha256 != acked_later.inputs_sha256
    assert json.loads(render_json(without))["response_summary"] == {"incidents": 0, "met": 0, "breached": 0,
                                                                    "pending": 0}

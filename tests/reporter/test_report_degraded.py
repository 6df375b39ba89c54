"""Degraded time per component in the report, read from a real SQLite store as the agent writes it."""

from __future__ import annotations

import asyncio
import csv
import hashlib
import io
import json
from pathlib import Path

from reporter.render import render_csv, render_html, render_json, render_text
from reporter.report import Report, build_month_report, inputs_sha256
from slawatch.config.loader import Loaded, load
from slawatch.model import ComponentRef, Heartbeat, StateChange
from slawatch.store import open_source
from slawatch.store.sqlite import SqliteSink
from tests.reporter.april import APRIL, D, H, M, beats, write_config

CORE = ComponentRef("core-router", "network", "gold", "acme")
SIP = ComponentRef("sip-core", "sip", "gold", "acme")
T0 = APRIL.start_ms + 4 * D


async def store_and_report(loaded: Loaded) -> Report:
    """sip-core short of members for 45 minutes on the 5th, seen by both agents; core-router degraded by one agent
    of two only (a majority of two is two: not degraded); mon-1 and mon-2 beating all month."""
    assert loaded.config.storage.sqlite is not None
    sink = SqliteSink(loaded.config.storage.sqlite)
    pool = "pool short of members: 1 of 3 up"
    try:
        await sink.write([
            *(StateChange(ref, agent, APRIL.start_ms - D, True, "") for ref in (CORE, SIP)
              for agent in ("mon-1", "mon-2")),
            StateChange(SIP, "mon-1", T0 + 3 * H, True, pool, True),
            StateChange(SIP, "mon-2", T0 + 3 * H + M, True, pool, True),
            StateChange(SIP, "mon-1", T0 + 3 * H + 45 * M, True, ""),
            StateChange(SIP, "mon-2", T0 + 3 * H + 46 * M, True, ""),
            StateChange(CORE, "mon-2", T0, True, "fan failure", True),
            StateChange(CORE, "mon-2", T0 + H, True, ""),
            *(Heartbeat(agent, t, 60.0) for agent in ("mon-1", "mon-2")
              for t in beats(APRIL.start_ms - D, APRIL.end_ms + D)),
        ])
    finally:
        await sink.close()
    source = open_source(loaded.config.storage)
    try:
        return await build_month_report(loaded, source, 2026, 4, customer="acme")
    finally:
        await source.close()


def test_degraded_time_per_component_in_every_format(tmp_path: Path) -> None:
    loaded = load(write_config(tmp_path))
    report = asyncio.run(store_and_report(loaded))
    by_name = {c.name: c for c in report.components}
    sip, core = by_name["sip-core"], by_name["core-router"]
    # Both agents agree from 03:01 (the second one's change) until 03:45 (the first one's recovery).
    assert sip.result.degraded_ms == 44 * M
    assert [(d.start_ms - T0, d.end_ms - T0, d.reason, d.agents) for d in sip.result.degraded] == [
        (3 * H + M, 3 * H + 45 * M, "pool short of members: 1 of 3 up", ("mon-1", "mon-2"))]
    assert (sip.result.availability_pct, sip.result.downtime_ms) == (100.0, 0)  # degraded is up
    assert core.result.degraded_ms == 0  # one agent of two is not a majority
    doc = {c["name"]: c for c in json.loads(render_json(report))["components"]}
    assert doc["sip-core"]["degraded_s"] == 2640.0
    assert doc["sip-core"]["degraded"] == [{"start": "2026-04-05T03:01:00.000Z", "end": "2026-04-05T03:45:00.000Z",
                                            "duration_s": 2640.0, "reason": "pool short of members: 1 of 3 up",
                                            "agents": ["mon-1", "mon-2"]}]
    rows = {r["component"]: r for r in csv.DictReader(io.StringIO(render_csv(report), newline=""))}
    assert (rows["sip-core"]["degraded_s"], rows["core-router"]["degraded_s"]) == ("2640", "0")
    text = render_text(report)
    assert "44m00s (2640 s)" in text and "degraded (1)" in text and "pool short of members: 1 of 3 up" in text
    html = render_html(report)
    assert 'fill="#f9ab00"><title>degraded 2026-04-05T03:01:00.000Z – 2026-04-05T03:45:00.000Z (44m00s)' in html
    assert "Degraded (up, counted as available)" in html


def test_a_report_without_degraded_changes_keeps_its_inputs_hash() -> None:
    """Data stored before degraded existed hashes as it did (the canonical document of docs/report.md, five fields
    a change): a sent report's hash can still be checked against a re-run."""
    changes = [StateChange(SIP, "mon-1", T0, True, ""), StateChange(SIP, "mon-1", T0 + H, False, "503")]
    doc = {"period": [APRIL.start_ms, APRIL.end_ms, "2026-04", "UTC"], "contract": {}, "policies": {},
           "components": [], "heartbeats": {}, "windows": [],
           "changes": sorted([c.ref.component, c.agent, c.ts_ms, c.up, c.reason] for c in changes)}
    before = hashlib.sha256(json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False,
                                       allow_nan=False).encode("utf-8")).hexdigest()
    args = {"period": APRIL, "label": "2026-04", "timezone": "UTC", "contract": {}, "policies": {},
            "components": [], "heartbeats": {}, "windows": []}
    assert inputs_sha256(changes=changes, **args) == before  # type: ignore[arg-type]
    marked = [changes[0]._replace(degraded=True), changes[1]]
    assert inputs_sha256(changes=marked, **args) != before  # type: ignore[arg-type]

"""Rendering is pure given a Report: golden files for text, JSON, CSV and HTML; JSON is byte-stable."""

from __future__ import annotations

import csv
import io
import json
import os
import re
from pathlib import Path

import pytest

from reporter.render import CSV_COLUMNS, human_ms, render, render_csv, render_html, render_json, seconds_text
from tests.reporter.april import fixed_report

GOLDEN = Path(__file__).parent / "golden"
UPDATE = os.environ.get("SLAWATCH_UPDATE_GOLDEN") == "1"


def check_golden(name: str, text: str) -> None:
    path = GOLDEN / name
    if UPDATE:
        GOLDEN.mkdir(exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    assert path.exists(), f"{path} missing: run with SLAWATCH_UPDATE_GOLDEN=1 and review the diff"
    assert text == path.read_bytes().decode("utf-8"), f"{name} differs from its golden file"


@pytest.mark.parametrize("fmt, name", [("text", "april.txt"), ("json", "april.json"), ("csv", "april.csv"),
                                       ("html", "april.html")])
async def test_golden(tmp_path: Path, fmt: str, name: str) -> None:
    check_golden(name, render(await fixed_report(tmp_path), fmt))


async def test_json_is_byte_identical_across_runs(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    first = render_json(await fixed_report(tmp_path / "a"))
    second = render_json(await fixed_report(tmp_path / "b"))
    assert first.encode() == second.encode()
    assert "generated" not in first


async def test_json_has_the_documented_names(tmp_path: Path) -> None:
    doc = json.loads(render_json(await fixed_report(tmp_path)))
    assert {"period", "policy", "inputs_sha256", "components", "contract", "customers"} <= doc.keys()
    assert {"from", "to", "basis_s"} <= doc["period"].keys()
    assert {"basis", "unmonitored", "maintenance_notice_s", "quorum", "decimals"} == doc["policy"].keys()
    assert re.fullmatch(r"[0-9a-f]{64}", doc["inputs_sha256"])
    component_names = {"name", "class", "tier", "customer", "target_pct", "availability_pct", "met", "downtime_s",
                       "maintenance_s", "unmonitored_s", "error_budget_s", "outages"}
    outage_names = {"start", "end", "duration_s", "counted_s", "reason", "agents", "maintenance_s", "late_notice"}
    for c in doc["components"]:
        assert component_names <= c.keys()
        for o in c["outages"]:
            assert outage_names <= o.keys()
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", o["start"])
    by_name = {c["name"]: c for c in doc["components"]}
    assert by_name["lab-vlan"]["availability_pct"] is None
    assert by_name["core-router"]["availability_pct"] == 99.988
    assert by_name["core-router"]["outages"][0]["late_notice"] is True
    sip = by_name["sip-core"]
    assert (sip["maintenance_s"], sip["downtime_s"], sip["outages"][0]["counted_s"]) == (1800.0, 0.0, 0.0)
    assert by_name["edge-router"]["outages"][0]["duration_s"] == 1.234
    assert doc["customers"][1]["policy"]["unmonitored"] == "down"
    # Every name the JSON uses is explained in docs/report.md.
    docs = (Path(__file__).parents[2] / "docs" / "report.md").read_text(encoding="utf-8")
    keys = set(doc) | set(doc["period"]) | set(doc["policy"]) | set(doc["customers"][0]) | \
        set(doc["components"][0]) | set(doc["components"][0]["outages"][0]) | \
        set(doc["components"][0]["unmonitored"][0] if doc["components"][0]["unmonitored"] else {})
    missing = sorted(k for k in keys if f"`{k}`" not in docs)
    assert not missing, f"docs/report.md does not describe {missing}"


async def test_csv_has_one_row_per_component_in_stable_columns(tmp_path: Path) -> None:
    report = await fixed_report(tmp_path)
    rows = list(csv.reader(io.StringIO(render_csv(report), newline="")))
    assert tuple(rows[0]) == CSV_COLUMNS
    assert [r[CSV_COLUMNS.index("component")] for r in rows[1:]] == [c.name for c in report.components]
    core = dict(zip(CSV_COLUMNS, rows[1], strict=True))
    assert (core["availability_pct"], core["met"], core["downtime_s"]) == ("99.988", "false", "300")
    lab = dict(zip(CSV_COLUMNS, rows[4], strict=True))
    assert (lab["availability_pct"], lab["met"]) == ("", "")


async def test_html_is_self_contained_and_escapes_text(tmp_path: Path) -> None:
    html = render_html(await fixed_report(tmp_path))
    assert "<svg" in html
    assert "SIP 503 &lt;Service Unavailable&gt; &amp; co" in html
    assert "<Service" not in html
    # No external resources: no stylesheet, script, image or font fetched from anywhere.
    assert not re.search(r"<(script|link|img|iframe)\b", html)
    assert not re.search(r"(src|href)=", html)
    assert "url(" not in html


@pytest.mark.parametrize("ms, text", [
    (0, "0s"), (1_234, "1.234s"), (59_000, "59s"), (300_000, "5m00s"), (3_723_000, "1h02m03s"),
    (3_723_500, "1h02m03.500s"), (90_061_000, "1d01h01m01s"), (-40_800, "-40.800s"),
])
def test_human_durations(ms: int, text: str) -> None:
    assert human_ms(ms) == text


def test_exact_seconds() -> None:
    assert [seconds_text(ms) for ms in (0, 300_000, 259_200, 1, -40_800)] == ["0", "300", "259.2", "0.001", "-40.8"]


async def test_every_format_shows_the_engines_budget(tmp_path: Path) -> None:
    """The engine's integer milliseconds are converted once: JSON, CSV and text agree with it, to the millisecond."""
    report = await fixed_report(tmp_path)
    doc = {c["name"]: c for c in json.loads(render_json(report))["components"]}
    rows = {r["component"]: r for r in csv.DictReader(io.StringIO(render_csv(report), newline=""))}
    text = render(report, "text")
    for c in report.components:
        budget = c.result.error_budget_ms
        assert round(doc[c.name]["error_budget_s"] * 1000) == budget
        assert rows[c.name]["error_budget_s"] == seconds_text(budget)
        assert human_ms(budget) in text
        assert doc[c.name]["basis_s"] * 1000 == c.result.basis_ms

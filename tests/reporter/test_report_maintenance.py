"""Maintenance windows in the report (with their reasons and the notice verdict of `slawatch maintenance`) and the
timeline that paints each part of an outage in its own colour."""

from __future__ import annotations

import csv
import io
import json
import re
from itertools import pairwise
from pathlib import Path

from reporter.maintenance import notice_of
from reporter.render import render_csv, render_html, render_json, render_text
from reporter.report import Report, build_month_report, build_report
from slawatch.config.loader import Loaded, load
from slawatch.model import AgentHeartbeats, ComponentRef, Interval, MaintenanceWindow, StateChange
from tests.reporter.april import APRIL, CONTRACT, D, FakeSource, H, beats, fixed_report

CONFIG = """\
agent: {id: mon-test}
storage: {sqlite: {path: store.db}, spool: {path: spool}}
contract: contract.yaml
customers:
  - {name: acme, tier: gold, report_to: [noc@acme.example]}
  - {name: globex, tier: gold, report_to: [ops@globex.example], policy: {maintenance_notice: 7d}}
components:
  - {name: core-router, class: network, customer: acme, probes: [{kind: tcp, target: "127.0.0.1:9"}]}
  - {name: sip-core, class: sip, customer: acme, probes: [{kind: tcp, target: "127.0.0.1:9"}]}
  - {name: edge-router, class: network, customer: globex, probes: [{kind: tcp, target: "127.0.0.1:9"}]}
  - {name: lab-vlan, class: vlan, tier: base, probes: [{kind: tcp, target: "127.0.0.1:9"}]}
report: {timezone: UTC}
"""
REFS = {"core-router": ComponentRef("core-router", "network", "gold", "acme"),
        "sip-core": ComponentRef("sip-core", "sip", "gold", "acme"),
        "edge-router": ComponentRef("edge-router", "network", "gold", "globex"),
        "lab-vlan": ComponentRef("lab-vlan", "vlan", "base", "")}
T0 = APRIL.start_ms + 9 * D  # 10 April, 00:00 UTC
RED, ORANGE, BLUE, GREY, AMBER = "#d93025", "#e8710a", "#7aa6d6", "#c7ccd1", "#f9ab00"


def loaded_two_notices(tmp_path: Path) -> Loaded:
    (tmp_path / "contract.yaml").write_text(CONTRACT, encoding="utf-8")
    (tmp_path / "slawatch.yaml").write_text(CONFIG, encoding="utf-8")
    return load(tmp_path / "slawatch.yaml")


def source(changes: list[StateChange], windows: list[MaintenanceWindow]) -> FakeSource:
    ups = [StateChange(ref, "mon-1", APRIL.start_ms - D, True, "") for ref in REFS.values()]
    hb = {"mon-1": AgentHeartbeats("mon-1", beats(APRIL.start_ms - D, APRIL.end_ms + D), 60.0)}
    return FakeSource([*ups, *changes], hb, windows)


def outage(component: str, start: int, end: int, reason: str) -> list[StateChange]:
    return [StateChange(REFS[component], "mon-1", start, False, reason),
            StateChange(REFS[component], "mon-1", end, True, "")]


async def class_window_report(tmp_path: Path) -> tuple[Loaded, MaintenanceWindow, Report]:
    """A window over class network (core-router of acme, edge-router of globex) announced 4 days ahead: timely
    under acme's 72 h, late under globex's 7 days. Both down for its first hour."""
    loaded = loaded_two_notices(tmp_path)
    w = MaintenanceWindow("mw-core", "class", "network", T0 + 2 * H, T0 + 6 * H, T0 + 2 * H - 4 * D,
                          "core switch firmware <v9> & reboot", T0 - 4 * D)
    changes = [*outage("core-router", T0 + 2 * H, T0 + 3 * H, "ICMP 100 % loss"),
               *outage("edge-router", T0 + 2 * H, T0 + 3 * H, "timeout")]
    return loaded, w, await build_month_report(loaded, source(changes, [w]), 2026, 4)


async def test_a_window_over_two_customers_has_each_customers_verdict(tmp_path: Path) -> None:
    loaded, w, report = await class_window_report(tmp_path)
    got = {m.customer: (m.components, m.timely, m.notice_ms, m.excused_ms, m.counted_ms) for m in report.maintenance}
    assert got == {"acme": (("core-router",), True, 72 * H, H, 0),
                   "globex": (("edge-router",), False, 7 * 24 * H, 0, H)}
    assert all(m.window == w and m.lead_ms == 4 * D for m in report.maintenance)
    # The verdict is the one `slawatch maintenance list` gives (reporter.maintenance.notice_of), per customer.
    notice = notice_of(loaded, w)
    assert notice.late_for == ("globex",)
    assert {m.customer for m in report.maintenance if not m.timely} == set(notice.late_for)
    # And the figures agree: what a window excuses is the component's maintenance, what it counts its downtime.
    figures = {c.name: (c.result.maintenance_ms, c.result.downtime_ms) for c in report.components}
    assert figures["core-router"] == (H, 0) and figures["edge-router"] == (0, H)


async def test_the_window_is_in_every_format_with_its_reason(tmp_path: Path) -> None:
    _, _, report = await class_window_report(tmp_path)
    text = render_text(report)
    assert re.search(r"mw-core +class network +2026-04-10 02:00 +2026-04-10 06:00 +2026-04-06 02:00 +96h +"
                     r"notice met: excused +1h00m00s +0s +core switch firmware <v9> & reboot", text)
    assert re.search(r"mw-core +class network .* LATE \(<168h\): counted +0s +1h00m00s", text)
    html = render_html(report)
    assert "core switch firmware &lt;v9&gt; &amp; reboot" in html and "<v9>" not in html
    assert html.count("LATE (&lt;168h): counted") == 1 and html.count("notice met: excused") == 1
    doc = json.loads(render_json(report))
    assert doc["maintenance"] == [
        {"id": "mw-core", "scope": "class", "value": "network", "start": "2026-04-10T02:00:00.000Z",
         "end": "2026-04-10T06:00:00.000Z", "announced": "2026-04-06T02:00:00.000Z",
         "reason": "core switch firmware <v9> & reboot", "customer": customer, "components": [component],
         "notice_s": 345600.0, "notice_required_s": required, "notice_met": met, "excused_s": excused,
         "counted_s": counted}
        for customer, component, required, met, excused, counted in [
            ("acme", "core-router", 259200.0, True, 3600.0, 0.0),
            ("globex", "edge-router", 604800.0, False, 0.0, 3600.0)]]
    rows = {r["component"]: r for r in csv.DictReader(io.StringIO(render_csv(report), newline=""))}
    assert {name: r["maintenance_windows"] for name, r in rows.items()} == {
        "core-router": "mw-core", "sip-core": "", "edge-router": "mw-core", "lab-vlan": ""}


async def test_windows_outside_the_period_or_the_components_are_left_out(tmp_path: Path) -> None:
    loaded = loaded_two_notices(tmp_path)
    windows = [MaintenanceWindow("mw-march", "customer", "acme", APRIL.start_ms - 2 * H, APRIL.start_ms,
                                 APRIL.start_ms - 10 * D, "before the month"),
               MaintenanceWindow("mw-edge", "class", "firewall", T0, T0 + H, T0 - 10 * D, "no such component"),
               MaintenanceWindow("mw-lab", "component", "lab-vlan", T0, T0 + H, T0 - 10 * D, "lab rewiring")]
    report = await build_month_report(loaded, source([], windows), 2026, 4)
    assert [(m.window.id, m.customer, m.components, m.excused_ms, m.counted_ms) for m in report.maintenance] == [
        ("mw-lab", None, ("lab-vlan",), 0, 0)]
    assert report.maintenance_of(None) == report.maintenance and report.maintenance_of("acme") == ()
    text = render_text(report)
    assert "lab rewiring" in text and text.count("maintenance: none") == 2  # acme and globex
    assert json.loads(render_json(report))["maintenance"][0]["customer"] is None
    # Only a customer's own windows go into its report (the email is per customer).
    acme = await build_month_report(loaded, source([], windows), 2026, 4, customer="acme")
    assert acme.maintenance == ()


def timeline_rects(html: str, component: str) -> list[tuple[float, float, str, str]]:
    """(x, width, fill, title) of the coloured rectangles on `component`'s row of the HTML timeline, by x."""
    [chart] = [svg for svg in html.split("<svg")[1:] if f">{component}</text>" in svg]
    rows = dict((name, float(y)) for y, name in re.findall(
        r'<text x="[\d.]+" y="([\d.]+)" font-size="11" text-anchor="end" fill="#3c4043">([^<]+)</text>', chart))
    row_y = rows[component] - 22 + 7 + 4  # the label's baseline -> the top of the row's bars
    found = [(float(x), float(w), fill, title) for x, y, w, fill, title in re.findall(
        r'<rect x="([\d.]+)" y="([\d.]+)" width="([\d.]+)" height="14" fill="(#[0-9a-f]+)"><title>([^<]*)</title>',
        chart) if float(y) == row_y]
    return sorted(found)


async def test_the_timeline_paints_each_part_of_an_outage_in_its_own_colour(tmp_path: Path) -> None:
    """core-router down 10:00-16:00 with a late window 11:00-12:00 and a timely one 12:00-14:00: one outage,
    four colours in order (counted red, late-notice orange, excused blue, counted red). Over one day, so that
    the widths can be compared."""
    loaded = loaded_two_notices(tmp_path)
    late = MaintenanceWindow("mw-late", "component", "core-router", T0 + 11 * H, T0 + 12 * H, T0 + 10 * H, "hotfix")
    timely = MaintenanceWindow("mw-ok", "component", "core-router", T0 + 12 * H, T0 + 14 * H, T0 - 5 * D, "upgrade")
    changes = outage("core-router", T0 + 10 * H, T0 + 16 * H, "ICMP 100 % loss")
    report = await build_report(loaded, source(changes, [late, timely]), Interval(T0, T0 + D), customer="acme")
    [o] = report.components[0].result.outages
    assert [p.kind for p in o.parts] == ["counted", "late_notice", "excused", "counted"]
    rects = timeline_rects(render_html(report), "core-router")
    assert [fill for _, _, fill, _ in rects] == [RED, ORANGE, BLUE, RED]
    assert all(abs(x0 + w0 - x1) < 0.02 for (x0, w0, _, _), (x1, _, _, _) in pairwise(rects))  # end to end
    widths = [w for _, w, _, _ in rects]
    assert abs(widths[1] - 560 / 24) < 0.02 and abs(widths[2] - 2 * widths[1]) < 0.02  # 1 h late, 2 h excused
    titles = [t for _, _, _, t in rects]
    assert titles[1].startswith("downtime in late-notice maintenance 2026-04-10T11:00:00.000Z")
    assert titles[2].startswith("excused maintenance 2026-04-10T12:00:00.000Z – 2026-04-10T14:00:00.000Z (2h00m00s)")


async def test_the_fixed_reports_timeline_colours(tmp_path: Path) -> None:
    """The golden report: core-router's outage in a late window is orange, sip-core's in a timely one blue and its
    degraded spell amber, the hour without heartbeats grey on every watched row, edge-router's 1.234 s red (2 px
    wide, to be seen)."""
    html = render_html(await fixed_report(tmp_path))
    assert [f for _, _, f, _ in timeline_rects(html, "core-router")] == [ORANGE, GREY]  # the 10th, the 21st
    assert [f for _, _, f, _ in timeline_rects(html, "sip-core")] == [AMBER, BLUE, GREY]  # the 5th, 15th, 21st
    [(_, width, fill, _)] = [r for r in timeline_rects(html, "edge-router") if r[2] != GREY]
    assert (fill, width) == (RED, 2.0)
    assert [f for _, _, f, _ in timeline_rects(html, "lab-vlan")] == [GREY]
    # The legend names each colour.
    for colour, words in [(RED, "downtime"), (ORANGE, "downtime in late-notice maintenance (counted)"),
                          (BLUE, "excused maintenance"), (AMBER, "degraded (up)"), (GREY, "unmonitored")]:
        assert f'<span style="color:{colour};">■</span> {words}</span>' in html


async def test_maintenance_names_are_documented(tmp_path: Path) -> None:
    _, _, report = await class_window_report(tmp_path)
    doc = json.loads(render_json(report))
    keys = set(doc["maintenance"][0]) | {"maintenance", "parts", "kind"}
    keys |= set(doc["components"][0]["outages"][0]["parts"][0])
    docs = (Path(__file__).parents[2] / "docs" / "report.md").read_text(encoding="utf-8")
    assert not sorted(k for k in keys if f"`{k}`" not in docs)
    assert all(f"`{kind}`" in docs for kind in ("counted", "late_notice", "excused"))


"""Renders a Report as text, JSON, CSV or one self-contained HTML page: pure functions of the Report."""

from __future__ import annotations

import csv
import functools
import io
import json
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, get_args
from zoneinfo import ZoneInfo

import jinja2

from reporter.availability import Outage, PartKind, Policy, period_basis_ms
from reporter.periods import from_ms, iso_ms, to_ms
from reporter.report import ComponentReport, CustomerInfo, MaintenanceEntry, Report, policy_doc
from reporter.responses import IncidentEntry, summary

FORMATS = ("text", "json", "csv", "html")
JSON_FORMAT = "slawatch-report/1"
CSV_COLUMNS = (
    "period", "period_from", "period_to", "customer", "tier", "component", "class", "target_pct",
    "availability_pct", "met", "downtime_s", "maintenance_s", "unmonitored_s", "up_s", "basis_s",
    "error_budget_s", "outages", "inputs_sha256", "maintenance_windows", "degraded_s",
)
NO_CUSTOMER = "(no customer)"


# ---------------------------------------------------------------- numbers as people read them
# The engine gives integer milliseconds; they become seconds and words here, and only here.


def seconds(ms: int) -> float:
    """Milliseconds as the JSON's seconds (a float, millisecond-exact)."""
    return ms / 1000


def human_ms(ms: int) -> str:
    """A duration as 1h02m03s (2d01h00m00s past a day; milliseconds only when there are some)."""
    sign = "-" if ms < 0 else ""
    ms = abs(ms)
    secs, frac = divmod(ms, 1000)
    days, secs = divmod(secs, 86400)
    hours, secs = divmod(secs, 3600)
    minutes, secs = divmod(secs, 60)
    s = f"{secs}.{frac:03d}s" if frac else f"{secs}s"
    if days:
        return f"{sign}{days}d{hours:02d}h{minutes:02d}m{s.zfill(3 if not frac else 7)}"
    if hours:
        return f"{sign}{hours}h{minutes:02d}m{s.zfill(3 if not frac else 7)}"
    if minutes:
        return f"{sign}{minutes}m{s.zfill(3 if not frac else 7)}"
    return f"{sign}{s}"


def seconds_text(ms: int) -> str:
    """Exact seconds: 300, 259.2, 0.001."""
    whole, frac = divmod(abs(ms), 1000)
    text = f"{whole}" if not frac else f"{whole}.{frac:03d}".rstrip("0")
    return f"-{text}" if ms < 0 else text


def duration_text(ms: int) -> str:
    return f"{human_ms(ms)} ({seconds_text(ms)} s)"


def pct_text(pct: float | None, decimals: int) -> str:
    return "n/a" if pct is None else f"{pct:.{decimals}f} %"


def target_text(target: float) -> str:
    return f"{target:g} %"


def met_text(met: bool | None) -> str:
    return "no data" if met is None else ("met" if met else "BREACHED")


def policy_text(policy: Policy) -> str:
    quorum = "majority" if policy.quorum is None else f"{policy.quorum} agent(s)"
    notice = notice_text(policy.maintenance_notice_ms)
    return (f"basis {policy.basis}, unmonitored time counts as {policy.unmonitored}, maintenance notice "
            f"{notice}, quorum {quorum}, {policy.decimals} decimals")


def _outage_notes(o: Outage) -> str:
    notes = []
    if o.late_notice:
        notes.append("late notice")
    if o.maintenance_ms:
        notes.append(f"maintenance {human_ms(o.maintenance_ms)}")
    if o.window_ids:
        notes.append("window " + ", ".join(o.window_ids))
    return "; ".join(notes)


def notice_text(ms: int) -> str:
    """A notice as contracts write it: 72h, 1h30m00s."""
    return f"{ms / 3_600_000:g}h" if ms % 3_600_000 == 0 else human_ms(ms)


def stamp_text(ts_ms: int) -> str:
    """'2026-04-10 12:00:00.000' (UTC): ISO with a space, where a narrow printed column can wrap."""
    return iso_ms(ts_ms).replace("T", " ").removesuffix("Z")


def minute_text(ts_ms: int) -> str:
    """A maintenance window's time as it was announced: '2026-04-10 12:00' (UTC), seconds only when there are some."""
    text = iso_ms(ts_ms, always_ms=False).removesuffix("Z").replace("T", " ")
    return text.removesuffix(":00") if text.count(":") == 2 else text


def verdict_text(m: MaintenanceEntry) -> str:
    """'notice met: excused' or 'LATE (<72h): counted'."""
    return "notice met: excused" if m.timely else f"LATE (<{notice_text(m.notice_ms)}): counted"


def _groups(report: Report) -> list[tuple[CustomerInfo | None, tuple[ComponentReport, ...]]]:
    groups: list[tuple[CustomerInfo | None, tuple[ComponentReport, ...]]] = [
        (c, report.components_of(c.name)) for c in report.customers]
    orphans = report.components_of(None)
    if orphans:
        groups.append((None, orphans))
    return [(c, comps) for c, comps in groups if comps]


# ---------------------------------------------------------------- text


def _table(header: tuple[str, ...], rows: Sequence[tuple[str, ...]], indent: str = "  ") -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return [(indent + "  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True))).rstrip()
            for row in [header, *rows]]


def render_text(report: Report) -> str:
    """A readable report: per customer, the component table and the outage ledger."""
    p = report.period
    lines = [
        f"SLA availability report {report.label}",
        f"period {iso_ms(p.start_ms)} – {iso_ms(p.end_ms)} ({human_ms(p.duration_ms)}, time zone {report.timezone})",
        f"contract {report.contract_name} {report.contract_version}; inputs sha256 {report.inputs_sha256}",
    ]
    if not report.components:
        lines += ["", "no components selected"]
    for customer, comps in _groups(report):
        lines.append("")
        if customer is not None:
            lines.append(f"{customer.name} ({customer.tier}) — {policy_text(customer.policy)}")
        else:
            lines.append(f"{NO_CUSTOMER} — {policy_text(report.policy)}")
        rows = []
        for c in comps:
            r = c.result
            rows.append((c.name, c.klass, c.tier, target_text(c.target_pct),
                         pct_text(r.availability_pct, c.policy.decimals), duration_text(r.downtime_ms),
                         duration_text(r.maintenance_ms), duration_text(r.unmonitored_ms),
                         duration_text(r.degraded_ms), human_ms(r.error_budget_ms), met_text(r.met)))
        lines += _table(("component", "class", "tier", "target", "availability", "downtime", "maintenance",
                         "unmonitored", "degraded", "budget left", "met"), rows)
        ledger = [(c.name, iso_ms(o.start_ms), iso_ms(o.end_ms), duration_text(o.duration_ms),
                   duration_text(o.counted_ms), o.reason or "-", ", ".join(o.agents) or "-", _outage_notes(o))
                  for c in comps for o in c.result.outages]
        lines.append("")
        if ledger:
            lines.append(f"  outages ({len(ledger)})")
            lines += _table(("component", "start", "end", "duration", "counted", "reason", "agents", "notes"),
                            ledger, indent="    ")
        else:
            lines.append("  outages: none")
        spells = [(c.name, iso_ms(d.start_ms), iso_ms(d.end_ms), duration_text(d.duration_ms), d.reason or "-",
                   ", ".join(d.agents)) for c in comps for d in c.result.degraded]
        if spells:  # up time, so not in the figures: what was on battery, short of members, and when
            lines += ["", f"  degraded ({len(spells)})"]
            lines += _table(("component", "start", "end", "duration", "reason", "agents"), spells, indent="    ")
        windows = report.maintenance_of(customer.name if customer is not None else None)
        lines.append("")
        if windows:
            lines.append(f"  maintenance ({len(windows)})")
            lines += _table(("window", "covers", "start", "end", "announced", "notice", "verdict", "excused",
                             "counted", "reason"),
                            [(m.window.id, f"{m.window.scope} {m.window.value}", minute_text(m.window.start_ms),
                              minute_text(m.window.end_ms), minute_text(m.window.announced_ms), notice_text(m.lead_ms),
                              verdict_text(m), human_ms(m.excused_ms), human_ms(m.counted_ms),
                              m.window.reason or "-") for m in windows], indent="    ")
        else:
            lines.append("  maintenance: none")
        lines += _response_text(report.incidents_of(customer.name if customer is not None else None))
    return "\n".join(lines) + "\n"


def verdict_word(e: IncidentEntry) -> str:
    if e.met is None:
        return "pending" if e.verdict.target_s is not None else "no target"
    if e.incident.acknowledged_ms is None:
        return "met (resolved before its deadline)" if e.met else "BREACHED (not acknowledged)"
    return "met" if e.met else "BREACHED"


def _response_text(items: Sequence[IncidentEntry]) -> list[str]:
    if not items:
        return ["", "  response times: no incidents"]
    total = summary(items)
    lines = ["", f"  response times ({total['incidents']} incidents: {total['met']} met, {total['breached']} "
                 f"breached, {total['pending']} pending)"]
    rows = []
    for e in items:
        i, v = e.incident, e.verdict
        rows.append((i.id, i.ref.component, i.priority, minute_text(i.raised_ms),
                     minute_text(i.acknowledged_ms) if i.acknowledged_ms is not None else "-",
                     human_ms(round(v.response_s * 1000)) if v.response_s is not None and i.acknowledged_ms else "-",
                     human_ms(round(v.target_s * 1000)) if v.target_s is not None else "-",
                     minute_text(v.deadline_ms) if v.deadline_ms is not None else "-",
                     human_ms(round(v.paused_s * 1000)) if v.paused_s else "-", verdict_word(e)))
    lines += _table(("incident", "component", "priority", "raised", "acknowledged", "response", "target",
                     "deadline", "paused", "verdict"), rows, indent="    ")
    return lines


# ---------------------------------------------------------------- json


def _outage_doc(o: Outage) -> dict[str, Any]:
    return {
        "start": iso_ms(o.start_ms), "end": iso_ms(o.end_ms), "duration_s": seconds(o.duration_ms),
        "counted_s": seconds(o.counted_ms), "reason": o.reason, "agents": list(o.agents),
        "maintenance_s": seconds(o.maintenance_ms), "late_notice": o.late_notice, "window_ids": list(o.window_ids),
        "parts": [{"start": iso_ms(p.start_ms), "end": iso_ms(p.end_ms), "kind": p.kind} for p in o.parts],
    }


def _maintenance_doc(m: MaintenanceEntry) -> dict[str, Any]:
    w = m.window
    return {
        "id": w.id, "scope": w.scope, "value": w.value, "start": iso_ms(w.start_ms), "end": iso_ms(w.end_ms),
        "announced": iso_ms(w.announced_ms), "reason": w.reason, "customer": m.customer,
        "components": list(m.components), "notice_s": seconds(m.lead_ms), "notice_required_s": seconds(m.notice_ms),
        "notice_met": m.timely, "excused_s": seconds(m.excused_ms), "counted_s": seconds(m.counted_ms),
    }


def _component_doc(c: ComponentReport) -> dict[str, Any]:
    r = c.result
    return {
        "name": c.name, "class": c.klass, "tier": c.tier, "customer": c.customer, "target_pct": c.target_pct,
        "availability_pct": r.availability_pct, "ratio": r.ratio, "met": r.met,
        "downtime_s": seconds(r.downtime_ms), "down_s": seconds(r.down_ms), "up_s": seconds(r.up_ms),
        "maintenance_s": seconds(r.maintenance_ms), "unmonitored_s": seconds(r.unmonitored_ms),
        "degraded_s": seconds(r.degraded_ms),
        "degraded": [{"start": iso_ms(d.start_ms), "end": iso_ms(d.end_ms), "duration_s": seconds(d.duration_ms),
                      "reason": d.reason, "agents": list(d.agents)} for d in r.degraded],
        "basis_s": seconds(r.basis_ms), "error_budget_s": seconds(r.error_budget_ms),
        "outages": [_outage_doc(o) for o in r.outages],
        "unmonitored": [{"start": iso_ms(g.start_ms), "end": iso_ms(g.end_ms), "duration_s": seconds(g.duration_ms)}
                        for g in r.unmonitored],
    }


def report_doc(report: Report, *, components: bool = True) -> dict[str, Any]:
    """The JSON document (docs/report.md): figures in seconds and percent, ISO 8601 UTC times (`components`
    False: all but the components' list, which json_pieces writes a slice at a time)."""
    return {
        "format": JSON_FORMAT,
        "period": {"from": iso_ms(report.period.start_ms), "to": iso_ms(report.period.end_ms),
                   "basis_s": seconds(period_basis_ms(report.policy, report.period)),
                   "length_s": seconds(report.period.duration_ms),
                   "label": report.label, "timezone": report.timezone,
                   "kind": "month" if report.month is not None else "range"},
        "contract": dict(report.contract),
        "policy": policy_doc(report.policy),
        "customers": [{"name": c.name, "tier": c.tier, "report_to": list(c.report_to), "policy": policy_doc(c.policy)}
                      for c in report.customers],
        "inputs_sha256": report.inputs_sha256,
        "components": [_component_doc(c) for c in report.components] if components else [],
        "maintenance": [_maintenance_doc(m) for m in report.maintenance],
        "incidents": [_incident_doc(e) for e in report.incidents],
        "response_summary": summary(report.incidents),
    }


def _incident_row(e: IncidentEntry) -> dict[str, Any]:
    i, v = e.incident, e.verdict
    acked = i.acknowledged_ms is not None
    return {"i": i, "verdict": verdict_word(e), "met": e.met,
            "response": human_ms(round(v.response_s * 1000)) if acked and v.response_s is not None else "–",
            "target": human_ms(round(v.target_s * 1000)) if v.target_s is not None else "–",
            "deadline": v.deadline_ms, "paused": human_ms(round(v.paused_s * 1000)) if v.paused_s else "–"}


def _incident_doc(e: IncidentEntry) -> dict[str, Any]:
    i, v = e.incident, e.verdict
    return {
        "id": i.id, "component": i.ref.component, "customer": e.customer, "priority": i.priority, "fault": i.fault,
        "raised_at": iso_ms(i.raised_ms),
        "acknowledged_at": None if i.acknowledged_ms is None else iso_ms(i.acknowledged_ms),
        "acknowledged_by": i.acknowledged_by or None,
        "resolved_at": None if i.resolved_ms is None else iso_ms(i.resolved_ms),
        "response_s": v.response_s if i.acknowledged_ms is not None else None, "target_s": v.target_s,
        "deadline": None if v.deadline_ms is None else iso_ms(v.deadline_ms), "met": e.met,
        "paused_s": v.paused_s, "calendar": v.calendar,
    }


def render_json(report: Report) -> str:
    """Byte-identical for identical inputs: sorted keys, no generation time."""
    return "".join(json_pieces(report))


def _json(value: Any) -> str:
    # Compact: with `indent` CPython falls back to its pure-Python encoder (5x slower on a 10 000-component
    # report); `jq .` pretty-prints it.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


JSON_SLICE = 1000


def json_pieces(report: Report) -> Iterator[str]:
    """render_json's text in pieces, components a slice at a time: what one json.dumps of report_doc writes, without
    every component's document (a month of 100 000 components: a million outages) built at once."""
    yield json_head()
    for start in range(0, len(report.components), JSON_SLICE):
        yield json_components(report.components[start:start + JSON_SLICE], first=start == 0)
    yield json_tail(report)


def json_head() -> str:
    """The JSON's text up to its components: its keys are written sorted, and "components" is the first."""
    return "{" + _json("components") + ":["


def json_components(components: Sequence[ComponentReport], *, first: bool) -> str:
    """Some components' documents in the JSON's list (`first`: none written before them)."""
    if not components:
        return ""
    return ("" if first else ",") + ",".join(map(component_json, components))


def json_slice(head: Report, components: tuple[ComponentReport, ...]) -> bytes:
    """Some components' documents in the JSON's list, without a comma before them, as the file holds them: a slice
    rendered where it was computed (ReportRun.rendered); bytes come back from a report's worker in a file."""
    return json_components(components, first=True).encode("utf-8")


# The components' documents are written as text here, not built as dicts for json.dumps: a month of 100 000
# components has a million outages, and the dicts cost twice the text. The text is what _json writes of
# _component_doc, byte for byte (its keys sorted, compact, not ASCII-escaped; tests hold the two together).
_text: Callable[[str], str] = json.encoder.encode_basestring


def _number(value: float | None) -> str:
    if type(value) is float and math.isfinite(value):
        return repr(value)
    return _json(value)


def _flag(value: bool | None) -> str:
    return "null" if value is None else ("true" if value else "false")


@functools.lru_cache(maxsize=256)
def _texts(values: tuple[str, ...]) -> str:
    # Cached: the outages of a report name the same few agents over and over.
    return "[" + ",".join(map(_text, values)) + "]" if values else "[]"


_KINDS: dict[str, str] = {kind: _text(kind) for kind in get_args(PartKind)}


def _outage_json(o: Outage) -> str:
    start, end = iso_ms(o.start_ms), iso_ms(o.end_ms)
    parts = o.parts
    if len(parts) == 1 and parts[0].start_ms == o.start_ms and parts[0].end_ms == o.end_ms:  # nearly every outage
        text = f'{{"end":"{end}","kind":{_KINDS.get(parts[0].kind) or _text(parts[0].kind)},"start":"{start}"}}'
    else:
        # Parts follow on without gaps: each begins where the one before ended (the first where the outage begins),
        # so most instants are written once, not twice.
        texts = []
        at_ms, at = o.start_ms, start
        for p in parts:
            begin = at if p.start_ms == at_ms else iso_ms(p.start_ms)
            at_ms = p.end_ms
            at = end if at_ms == o.end_ms else iso_ms(at_ms)
            texts.append(f'{{"end":"{at}","kind":{_KINDS.get(p.kind) or _text(p.kind)},"start":"{begin}"}}')
        text = ",".join(texts)
    return (f'{{"agents":{_texts(o.agents)},"counted_s":{o.counted_ms / 1000!r},'
            f'"duration_s":{(o.end_ms - o.start_ms) / 1000!r},"end":"{end}",'
            f'"late_notice":{"true" if o.late_notice else "false"},"maintenance_s":{o.maintenance_ms / 1000!r},'
            f'"parts":[{text}],"reason":{_text(o.reason)},"start":"{start}",'
            f'"window_ids":{_texts(o.window_ids)}}}')


def component_json(c: ComponentReport) -> str:
    """_json(_component_doc(c)), written directly."""
    r = c.result
    degraded = ",".join(f'{{"agents":{_texts(d.agents)},"duration_s":{(d.end_ms - d.start_ms) / 1000!r},'
                        f'"end":"{iso_ms(d.end_ms)}","reason":{_text(d.reason)},"start":"{iso_ms(d.start_ms)}"}}'
                        for d in r.degraded)
    unmonitored = ",".join(f'{{"duration_s":{(g.end_ms - g.start_ms) / 1000!r},"end":"{iso_ms(g.end_ms)}",'
                           f'"start":"{iso_ms(g.start_ms)}"}}' for g in r.unmonitored)
    return (f'{{"availability_pct":{_number(r.availability_pct)},"basis_s":{r.basis_ms / 1000!r},'
            f'"class":{_text(c.klass)},"customer":{"null" if c.customer is None else _text(c.customer)},'
            f'"degraded":[{degraded}],"degraded_s":{r.degraded_ms / 1000!r},"down_s":{r.down_ms / 1000!r},'
            f'"downtime_s":{r.downtime_ms / 1000!r},"error_budget_s":{r.error_budget_ms / 1000!r},'
            f'"maintenance_s":{r.maintenance_ms / 1000!r},"met":{_flag(r.met)},"name":{_text(c.name)},'
            f'"outages":[{",".join(map(_outage_json, r.outages))}],"ratio":{_number(r.ratio)},'
            f'"target_pct":{_number(c.target_pct)},"tier":{_text(c.tier)},"unmonitored":[{unmonitored}],'
            f'"unmonitored_s":{r.unmonitored_ms / 1000!r},"up_s":{r.up_ms / 1000!r}}}')


def json_tail(report: Report) -> str:
    """The JSON's text after its components: every other key, from `report` (its components are not read)."""
    doc = report_doc(report, components=False)
    del doc["components"]
    assert min(doc) > "components"
    return "]" + "".join("," + _json(key) + ":" + _json(doc[key]) for key in sorted(doc)) + "}\n"


# ---------------------------------------------------------------- csv


_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def csv_text(value: str) -> str:
    """A text cell a spreadsheet will not run as a formula (OWASP "CSV injection"): a leading = + - @ tab or
    CR gets a quote in front. Numbers are written as they are."""
    return "'" + value if value.startswith(_FORMULA_START) else value


def csv_slice(head: Report, components: tuple[ComponentReport, ...]) -> list[tuple[str, str, str]]:
    """Some components' CSV rows, as far as they are known before the summary: a slice rendered where it was
    computed (ReportRun.rendered), then CsvRows.extend."""
    rows = CsvRows(head)
    rows.add(components)
    return rows.rows()


def render_csv(report: Report) -> str:
    """One row per component and period, columns in CSV_COLUMNS order (RFC 4180, CRLF line ends)."""
    rows = CsvRows(report)
    rows.add(report.components)
    return "".join(rows.text(report))


class CsvRows:
    """render_csv a slice of components at a time: each row is made as its component passes, kept as text (a few
    hundred bytes a component), and written once the report's inputs_sha256 and maintenance, which every row
    repeats, are known."""

    def __init__(self, head: Report) -> None:
        self._head = head
        self._rows: list[tuple[str, str, str]] = []  # (the cells before inputs_sha256, name, degraded_s)

    def add(self, components: Sequence[ComponentReport]) -> None:
        report = self._head
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="")
        label, start, end = csv_text(report.label), iso_ms(report.period.start_ms), iso_ms(report.period.end_ms)
        for c in components:
            r = c.result
            # Each cell is quoted on its own: the cells before the hash written now are those of the whole row.
            writer.writerow((
                label, start, end, csv_text(c.customer or ""), csv_text(c.tier), csv_text(c.name), csv_text(c.klass),
                f"{c.target_pct:g}",
                "" if r.availability_pct is None else f"{r.availability_pct:.{c.policy.decimals}f}",
                "" if r.met is None else ("true" if r.met else "false"),
                seconds_text(r.downtime_ms), seconds_text(r.maintenance_ms), seconds_text(r.unmonitored_ms),
                seconds_text(r.up_ms), seconds_text(r.basis_ms), seconds_text(r.error_budget_ms), len(r.outages)))
            self._rows.append((out.getvalue(), c.name, seconds_text(r.degraded_ms)))
            out.seek(0)
            out.truncate()

    def rows(self) -> list[tuple[str, str, str]]:
        """The rows made so far, to be `extend`ed into another CsvRows of the same report (made in a worker)."""
        return self._rows

    def extend(self, rows: Sequence[tuple[str, str, str]]) -> None:
        self._rows += rows

    def text(self, summary: Report) -> Iterator[str]:
        """The CSV's text in pieces, once every component is added; `summary` gives the hash and the maintenance."""
        windows: dict[str, list[str]] = {}
        for m in summary.maintenance:
            for name in m.components:
                windows.setdefault(name, []).append(m.window.id)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\r\n")
        writer.writerow(CSV_COLUMNS)
        for n, (cells, name, degraded) in enumerate(self._rows):
            out.write(cells + ",")
            writer.writerow((summary.inputs_sha256, csv_text(" ".join(windows.get(name, ()))), degraded))
            if n % 1000 == 999:
                yield out.getvalue()
                out.seek(0)
                out.truncate()
        yield out.getvalue()


# ---------------------------------------------------------------- html

_SVG_WIDTH = 720
_LABEL_W = 150
_PLOT_W = _SVG_WIDTH - _LABEL_W - 10
_ROW_H = 22
_AXIS_H = 18
TIMELINE_ROWS = 30
"""Components per timeline chart: an SVG cannot break across pages, and 30 rows fit on A4 under a heading."""


@dataclass(frozen=True, slots=True)
class _Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    title: str


@dataclass(frozen=True, slots=True)
class _Tick:
    x: float
    label: str


# Each part of an outage in its own colour: what counts, what counts because the notice was late, what is excused.
_PART_LOOK: dict[PartKind, tuple[str, str]] = {
    "counted": ("#d93025", "downtime"),
    "late_notice": ("#e8710a", "downtime in late-notice maintenance"),
    "excused": ("#7aa6d6", "excused maintenance"),
}
UNMONITORED_FILL = "#c7ccd1"
DEGRADED_FILL = "#f9ab00"  # up, but on battery or short of members: amber on the green of up time


def _x(report: Report, ts_ms: int) -> float:
    p = report.period
    span = max(1, p.duration_ms)
    return round(_LABEL_W + (min(max(ts_ms, p.start_ms), p.end_ms) - p.start_ms) / span * _PLOT_W, 2)


def _ticks(report: Report) -> list[_Tick]:
    """Local midnights in the period (every 7th past two months), labelled with the day of the month."""
    p = report.period
    zone = ZoneInfo(report.timezone)
    start = from_ms(p.start_ms, report.timezone)
    day = datetime(start.year, start.month, start.day, tzinfo=zone)
    ticks: list[_Tick] = []
    n_days = p.duration_ms // 86_400_000 + 2
    step = 1 if n_days <= 62 else 7
    for i in range(0, n_days + 1, step):
        local = datetime.combine((day + timedelta(days=i)).date(), datetime.min.time(), tzinfo=zone)
        ts = to_ms(local)
        if p.start_ms <= ts < p.end_ms:
            label = str(local.day) if (local.day == 1 or local.day % 5 == 0 or step > 1) else ""
            ticks.append(_Tick(_x(report, ts), label))
    return ticks


def _timelines(report: Report, comps: tuple[ComponentReport, ...]) -> list[dict[str, Any]]:
    """The timeline of `comps`, as one chart per TIMELINE_ROWS components: a chart fits on a printed page."""
    ticks = _ticks(report)
    return [_timeline(report, comps[i:i + TIMELINE_ROWS], ticks) for i in range(0, len(comps), TIMELINE_ROWS)]


def _timeline(report: Report, comps: tuple[ComponentReport, ...], ticks: list[_Tick]) -> dict[str, Any]:
    rects: list[_Rect] = []
    for row, c in enumerate(comps):
        y = _AXIS_H + row * _ROW_H + 4
        for g in c.result.unmonitored:
            x0, x1 = _x(report, g.start_ms), _x(report, g.end_ms)
            rects.append(_Rect(x0, y, max(1.0, round(x1 - x0, 2)), _ROW_H - 8, UNMONITORED_FILL,
                               f"unmonitored {iso_ms(g.start_ms)} – {iso_ms(g.end_ms)}"))
        for d in c.result.degraded:
            x0, x1 = _x(report, d.start_ms), _x(report, d.end_ms)
            rects.append(_Rect(x0, y, max(2.0, round(x1 - x0, 2)), _ROW_H - 8, DEGRADED_FILL,
                               f"degraded {iso_ms(d.start_ms)} – {iso_ms(d.end_ms)} "
                               f"({human_ms(d.duration_ms)}) {d.reason}".rstrip()))
        for o in c.result.outages:
            for part in o.parts:
                x0, x1 = _x(report, part.start_ms), _x(report, part.end_ms)
                fill, what = _PART_LOOK[part.kind]
                rects.append(_Rect(x0, y, max(2.0, round(x1 - x0, 2)), _ROW_H - 8, fill,
                                   f"{what} {iso_ms(part.start_ms)} – {iso_ms(part.end_ms)} "
                                   f"({human_ms(part.duration_ms)}) {o.reason}".rstrip()))
    height = _AXIS_H + len(comps) * _ROW_H + 4
    return {"width": _SVG_WIDTH, "height": height, "label_w": _LABEL_W, "plot_w": _PLOT_W, "row_h": _ROW_H,
            "axis_h": _AXIS_H, "rects": rects, "ticks": ticks,
            "rows": [{"y": _AXIS_H + i * _ROW_H, "name": c.name} for i, c in enumerate(comps)]}


def _bar(c: ComponentReport) -> dict[str, Any]:
    """Availability on a scale zoomed so that the target sits in the middle: 99.99 % -> 99.98-100 %."""
    floor = 100 - 2 * (100 - c.target_pct) if c.target_pct < 100 else 99.0
    pct = c.result.availability_pct
    fill = 0.0 if pct is None else min(100.0, max(0.0, (pct - floor) / (100 - floor) * 100))
    target = (c.target_pct - floor) / (100 - floor) * 100
    color = "#9aa0a6" if c.result.met is None else ("#188038" if c.result.met else "#d93025")
    # Below the scale the bar is empty: tint its track so that reads as "far below", not "no data".
    track = "#fce8e6" if pct is not None and pct < floor else "#e8eaed"
    return {"fill": round(fill, 2), "target": round(target, 2), "color": color, "floor": f"{floor:g}", "track": track}


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("reporter", "templates"),
        autoescape=jinja2.select_autoescape(["html", "j2"]),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(iso=iso_ms, stamp=stamp_text, minute=minute_text, human=human_ms, duration=duration_text,
                       target=target_text)
    return env


def render_html(report: Report) -> str:
    """One self-contained, email-ready page: inline styles, inline SVG, no external resources."""
    sections = []
    for customer, comps in _groups(report):
        policy = customer.policy if customer is not None else report.policy
        sections.append({
            "title": f"{customer.name} ({customer.tier})" if customer is not None else NO_CUSTOMER,
            "policy": policy_text(policy),
            "components": [{"c": c, "r": c.result, "bar": _bar(c),
                            "availability": pct_text(c.result.availability_pct, c.policy.decimals),
                            "met": met_text(c.result.met), "budget": human_ms(c.result.error_budget_ms)}
                           for c in comps],
            "timelines": _timelines(report, comps),
            "ledger": [{"component": c.name, "o": o, "notes": _outage_notes(o)}
                       for c in comps for o in c.result.outages],
            "degraded": [{"component": c.name, "d": d} for c in comps for d in c.result.degraded],
            "maintenance": [{"m": m, "w": m.window, "lead": notice_text(m.lead_ms), "verdict": verdict_text(m),
                             "covers": f"{m.window.scope} {m.window.value}"}
                            for m in report.maintenance_of(customer.name if customer is not None else None)],
            "incidents": [_incident_row(e) for e in report.incidents_of(customer.name if customer else None)],
            "response": summary(report.incidents_of(customer.name if customer is not None else None)),
        })
    return _environment().get_template("report.html.j2").render(
        report=report, sections=sections, look=_PART_LOOK, unmonitored=UNMONITORED_FILL, degraded=DEGRADED_FILL,
        period_from=iso_ms(report.period.start_ms), period_to=iso_ms(report.period.end_ms),
        length=human_ms(report.period.duration_ms))


def render(report: Report, fmt: str) -> str:
    renderers = {"text": render_text, "json": render_json, "csv": render_csv, "html": render_html}
    if fmt not in renderers:
        raise ValueError(f"unknown format {fmt!r} (one of {', '.join(FORMATS)})")
    return renderers[fmt](report)

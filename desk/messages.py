"""What an incident notification says, built apart from sending it (pure): subject, text, HTML and the
structured fields for webhooks, one Notification per recipient."""

from __future__ import annotations

import html
import json
from collections.abc import Sequence
from dataclasses import dataclass

from reporter.maintenance import format_duration
from reporter.periods import iso_ms
from slawatch.model import Incident, IncidentEvent, Notification

HEADLINE = {
    "open": "{FAULT}", "reopen": "{FAULT} again", "ack": "ACKNOWLEDGED", "priority": "PRIORITY {priority}",
    "pause": "PAUSED", "resume": "RESUMED", "escalation": "UNACKNOWLEDGED {FAULT}", "resolve": "RESOLVED",
}
KINDS = tuple(HEADLINE)

CUSTOMER_KINDS = frozenset({"open", "ack", "priority", "pause", "resume", "resolve"})
"""What the customer's contacts are told; re-opening (flapping) and escalation are the provider's business."""


@dataclass(frozen=True, slots=True)
class Context:
    """What a message needs beyond the incident: the component's probes, its response deadline, the link."""

    probes: tuple[str, ...] = ()
    deadline_ms: int | None = None
    target_s: float | None = None
    console_url: str | None = None


def when(ts_ms: int | None) -> str:
    return "-" if ts_ms is None else iso_ms(ts_ms, always_ms=False).replace("T", " ").replace("Z", " UTC")


def link(incident: Incident, ctx: Context) -> str | None:
    return None if not ctx.console_url else f"{ctx.console_url.rstrip('/')}/incidents/{incident.id}"


def subject(kind: str, incident: Incident) -> str:
    head = HEADLINE[kind].format(FAULT=incident.fault.upper(), priority=incident.priority)
    customer = f" ({incident.ref.customer})" if incident.ref.customer else ""
    tail = ""
    if kind == "resolve" and incident.resolved_ms is not None:
        tail = f" after {format_duration((incident.resolved_ms - incident.start_ms) / 1000)}"
    return f"[{incident.priority}] {head}: {incident.ref.component}{customer}{tail} - {incident.id}"


def fields(kind: str, incident: Incident, event: IncidentEvent | None, ctx: Context) -> dict[str, object]:
    """The structured content of a message (the webhook's data, and the rows of the text and HTML)."""
    r = incident.ref
    data: dict[str, object] = {
        "incident": incident.id, "kind": kind, "state": str(incident.state), "component": r.component,
        "customer": r.customer, "class": r.klass, "tier": r.tier, "priority": incident.priority,
        "fault": incident.fault, "since": iso_ms(incident.start_ms, always_ms=False),
        "raised_at": iso_ms(incident.raised_ms, always_ms=False), "reason": incident.reason,
        "probes": list(ctx.probes), "agents": list(incident.agents),
        "deadline": None if ctx.deadline_ms is None else iso_ms(ctx.deadline_ms, always_ms=False),
        "target_s": ctx.target_s, "url": link(incident, ctx),
    }
    if incident.acknowledged_ms is not None:
        data.update(acknowledged_at=iso_ms(incident.acknowledged_ms, always_ms=False),
                    acknowledged_by=incident.acknowledged_by)
    if incident.resolved_ms is not None:
        data.update(resolved_at=iso_ms(incident.resolved_ms, always_ms=False),
                    duration_s=(incident.resolved_ms - incident.start_ms) / 1000, resolved_by=incident.resolved_by)
    if event is not None:
        data.update(actor=event.actor, comment=event.comment)
    return data


def _rows(kind: str, incident: Incident, event: IncidentEvent | None, ctx: Context) -> list[tuple[str, str]]:
    r = incident.ref
    rows = [("Incident", incident.id), ("Component", r.component), ("Customer", r.customer or "-"),
            ("Class / tier", f"{r.klass} / {r.tier}"), ("Priority", incident.priority),
            ("State", str(incident.state)), ("Fault", incident.fault), ("Since", when(incident.start_ms)),
            ("Raised", when(incident.raised_ms)), ("Reason", incident.reason or "-"),
            ("Probes", ", ".join(ctx.probes) or "-"), ("Seen by", ", ".join(incident.agents) or "-")]
    if ctx.deadline_ms is not None and incident.acknowledged_ms is None:
        target = "" if ctx.target_s is None else f" (target {format_duration(ctx.target_s)})"
        rows.append(("Respond by", when(ctx.deadline_ms) + target))
    if incident.acknowledged_ms is not None:
        rows.append(("Acknowledged", f"{when(incident.acknowledged_ms)} by {incident.acknowledged_by}"))
    if incident.resolved_ms is not None:
        by = f" by {incident.resolved_by}" if incident.resolved_by else " (recovered)"
        rows.append(("Resolved", f"{when(incident.resolved_ms)}{by}"))
        rows.append(("Duration", format_duration((incident.resolved_ms - incident.start_ms) / 1000)))
    if event is not None and event.comment:
        rows.append(("Comment", f"{event.comment} ({event.actor})"))
    url = link(incident, ctx)
    if url:
        rows.append(("Console", url))
    return rows


def render(kind: str, incident: Incident, event: IncidentEvent | None, ctx: Context) -> tuple[str, str, str, str]:
    """(subject, text, html, data as JSON) of one kind of message about the incident."""
    rows = _rows(kind, incident, event, ctx)
    width = max(len(k) for k, _ in rows)
    text = "\n".join(f"{k + ':':<{width + 1}} {v}" for k, v in rows) + "\n"
    cells = "".join(f"<tr><th align=left>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    title = html.escape(subject(kind, incident))
    body = f"<!doctype html><html><body><p><b>{title}</b></p><table>{cells}</table></body></html>"
    data = json.dumps(fields(kind, incident, event, ctx), ensure_ascii=False, sort_keys=True)
    return subject(kind, incident), text, body, data


def recipients_for(kind: str, noc: Sequence[str], customer: Sequence[str], escalation: Sequence[str]) -> list[str]:
    """Who hears of `kind`: the NOC always; the customer's contacts for what concerns them; the escalation
    list for escalations. Each address once, in that order."""
    out = list(noc)
    if kind in CUSTOMER_KINDS:
        out += customer
    if kind == "escalation":
        out += escalation
    return list(dict.fromkeys(out))


def notifications(kind: str, incident: Incident, event: IncidentEvent, ctx: Context, recipients: Sequence[str],
                  now_ms: int, index: int = 0) -> list[Notification]:
    """One Notification per recipient, ids `<incident>.<event seq>.<n>` (n from `index` on)."""
    subj, text, body, data = render(kind, incident, event, ctx)
    return [Notification(f"{incident.id}.{event.seq}.{index + n}", incident.id, kind, to, subj, text, body, data,
                         now_ms, now_ms)
            for n, to in enumerate(recipients)]

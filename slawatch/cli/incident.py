"""`slawatch incident ACTION`: list, show and act on the desk's incidents (ack, pause, resume, priority, resolve);
`clock` runs the response-time engine on given instants."""

from __future__ import annotations

import argparse
import getpass
import json
import os
import re
import sys
import time
from collections.abc import Callable, Sequence
from typing import TypeAlias
from urllib.parse import urlsplit

from desk import incidents as steps
from desk.desk import Desk
from desk.incidents import ActionError, Step
from desk.view import did, note_order, order, priorities, priority_named, response_words, span, verdict_of
from reporter.calendars import calendars_of
from reporter.maintenance import format_duration, format_time
from reporter.periods import iso_ms, parse_iso
from reporter.response import Pause, ResponseTarget, Verdict, evaluate, target_of
from slawatch.cli.maintenance import DEFAULT_CONFIG_ENV
from slawatch.cli.usage import EXIT_OK, EXIT_USAGE, UsageError, guarded, load_config, run_with
from slawatch.config.loader import Loaded
from slawatch.model import Incident, IncidentEvent, IncidentState, Notification
from slawatch.store import DeskStore, SourceError, open_desk_store

Subparsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"


def _instant(text: str, option: str) -> int:
    """An ISO 8601 time with an offset or Z -> epoch milliseconds."""
    try:
        return parse_iso(text)
    except ValueError as exc:
        if "no UTC offset" in str(exc):
            raise UsageError(f"{option} {text!r} has no UTC offset, so it could be any time zone: add one, e.g. "
                             f"{text.strip()}Z or {text.strip()}+01:00") from None
        raise UsageError(f"{option} {text!r} is not an ISO 8601 time (write e.g. 2026-06-01T09:30:00+01:00 or "
                         "2026-06-01T08:30:00Z)") from None


def _pause(text: str) -> Pause:
    """"START/END", or "START/" for a pause still running."""
    start, slash, end = text.partition("/")
    if not slash:
        raise UsageError(f"--paused {text!r}: write START/END (or START/ for a pause still running), e.g. "
                         "2026-06-01T10:00:00Z/2026-06-01T11:30:00Z")
    start_ms = _instant(start, "--paused start")
    end_ms = _instant(end, "--paused end") if end.strip() else None
    if end_ms is not None and end_ms < start_ms:
        raise UsageError(f"--paused {text!r} ends before it starts")
    return start_ms, end_ms


def _tier(loaded: Loaded, customer: str, component: str | None) -> str:
    """The tier of the component (its own, or its customer's), or else of the customer."""
    config = loaded.config
    cust = config.customer(customer)
    if cust is None:
        known = ", ".join(c.name for c in config.customers) or "none"
        raise UsageError(f"--customer: unknown customer {customer!r} ({loaded.path} has {known})")
    if component is None:
        return cust.tier
    comp = next((c for c in config.components if c.name == component), None)
    if comp is None:
        raise UsageError(f"--component: unknown component {component!r} in {loaded.path}")
    if comp.customer is not None and comp.customer != customer:
        raise UsageError(f"--component: {component!r} belongs to customer {comp.customer!r}, not {customer!r}")
    return comp.tier or cust.tier


def _document(target: ResponseTarget | None, priority: str, tier: str, verdict: Verdict) -> dict[str, object]:
    return {
        "response_s": verdict.response_s,
        "target_s": verdict.target_s,
        "deadline": None if verdict.deadline_ms is None else iso_ms(verdict.deadline_ms, always_ms=False),
        "met": verdict.met,
        "paused_s": verdict.paused_s,
        "calendar": verdict.calendar,
        "in_hours": verdict.in_hours,
        "remaining_s": verdict.remaining_s,
        "priority": priority,
        "tier": tier,
        "target_calendar": None if target is None else target.calendar,
    }


def _text(doc: dict[str, object], verdict: Verdict) -> str:
    def span(seconds: float | None) -> str:
        return "-" if seconds is None else format_duration(seconds)

    when = "" if verdict.in_hours is None else (" in hours" if verdict.in_hours else " out of hours")
    lines = [f"priority {doc['priority']}, tier {doc['tier']}: raised{when}, counted on calendar {verdict.calendar}"]
    if verdict.target_s is None:
        lines.append(f"response {span(verdict.response_s)} (no target for this priority and tier)")
    else:
        if verdict.met is None:
            state = (f"unacknowledged, {span(verdict.remaining_s)} left" if (verdict.remaining_s or 0) >= 0
                     else f"unacknowledged, LATE by {span(-(verdict.remaining_s or 0))}")
        else:
            state = "met" if verdict.met else "MISSED"
        lines.append(f"response {span(verdict.response_s)} of a {span(verdict.target_s)} target: {state}")
        lines.append(f"deadline {doc['deadline'] or '- (paused)'}")
    if verdict.paused_s:
        lines.append(f"paused {span(verdict.paused_s)} (not counted)")
    return "\n".join(lines)


def _clock(args: argparse.Namespace) -> int:
    raised_ms = _instant(args.raised, "--raised")
    acknowledged_ms = None if args.acknowledged is None else _instant(args.acknowledged, "--acknowledged")
    now_ms = int(time.time() * 1000) if args.now is None else _instant(args.now, "--now")
    pauses = [_pause(text) for text in args.paused or ()]
    loaded = load_config(args.config)
    tier = _tier(loaded, args.customer, args.component)
    known = priorities(loaded)
    if args.priority not in known:
        raise UsageError(f"--priority: unknown priority {args.priority!r} (the contract has {', '.join(known)})")
    terms = loaded.contract.response_terms()
    target = target_of(terms, args.priority, tier)
    verdict = evaluate(calendars_of(terms), target, raised_ms, acknowledged_ms, pauses,
                       None if acknowledged_ms is not None and args.now is None else now_ms)
    doc = _document(target, args.priority, tier, verdict)
    print(json.dumps(doc, indent=2) if args.format == "json" else _text(doc, verdict))
    return EXIT_OK


def _add_clock(actions: Subparsers) -> None:
    clock = actions.add_parser(
        "clock", help="the response time, target, deadline and verdict of an incident, from given instants",
        description="Run the contract's response clock on given instants: the time from --raised to "
                    "--acknowledged counted on the target's calendar, less the pauses, against the target for the "
                    "priority and the tier of the component (or customer). Times are ISO 8601 with an offset or Z. "
                    "Without --acknowledged the clock runs to --now (default: the current time).")
    clock.add_argument("--config", "-c", required=True, metavar="FILE")
    clock.add_argument("--customer", required=True, metavar="X")
    clock.add_argument("--component", metavar="NAME", help="the component; its tier applies (default: the customer's)")
    clock.add_argument("--priority", required=True, metavar="P")
    clock.add_argument("--raised", required=True, metavar="ISO", help="when the fault was confirmed")
    clock.add_argument("--acknowledged", metavar="ISO", help="the first acknowledgement")
    clock.add_argument("--paused", action="append", metavar="ISO/ISO",
                       help="a pause (waiting on the customer), START/END or START/ if still running; repeatable")
    clock.add_argument("--now", metavar="ISO", help="the time an unacknowledged incident is looked at")
    clock.add_argument("--format", choices=("json", "text"), default="json")
    clock.set_defaults(func=guarded("incident", _clock))


# ---------------------------------------------------------------- the desk's incidents

MAX_NAME_CHARS = 100
# An action that does not apply, or a store error, exits 1 with the reason.
DESK_FAILURES: dict[type[Exception], str] = {ActionError: "", SourceError: "store error: "}

HOST_SCHEMES = frozenset({"http", "https", "json", "jsons", "xml", "xmls", "form", "forms", "mailto", "mailtos"})
"""Apprise schemes whose host part names a server; the others may carry a token there (tgram://BOTTOKEN/...)."""


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _iso(ts_ms: int | None) -> str | None:
    return None if ts_ms is None else iso_ms(ts_ms, always_ms=False)


def _when(ts_ms: int) -> str:
    """'2026-06-01 10:00:05' (UTC), as the tables show instants."""
    return iso_ms(ts_ms)[:19].replace("T", " ")


def _cell(text: str) -> str:
    """Stored text fit for one table cell: one line, no control characters (a comment is anyone's input)."""
    return " ".join("".join(ch if ch.isprintable() else " " for ch in text).split())


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Aligned columns; the last one, free text, is not padded."""
    table = [list(header), *([_cell(c) for c in r] for r in rows)]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=False)) + "  " + r[-1] for r in table]


def _recipient(to: str) -> str:
    """A recipient as shown: an email address as it is; of a URL the scheme and the server only. Apprise URLs
    carry passwords and tokens in the user part, the path or the query (json://user:pass@host/,
    slack://TOKEN/TOKEN/TOKEN), so none of those is ever printed."""
    if "://" not in to:
        return to
    parts = urlsplit(to)
    if parts.scheme.lower() not in HOST_SCHEMES:
        return f"{parts.scheme}://…"
    _, at, hostport = parts.netloc.rpartition("@")
    if hostport.startswith("["):  # [::1]:8080
        host, _, rest = hostport.partition("]")
        host += "]"
        port = rest[1:] if rest.startswith(":") else ""
    else:
        host, _, port = hostport.partition(":")
    shown = f"{parts.scheme}://{'***@' if at else ''}{host}{':' + port if port.isdigit() else ''}"
    return shown + ("/…" if parts.path.strip("/") or parts.query or parts.fragment else "")


def _scrubbed(error: str, to: str) -> str:
    """A delivery error as shown: the recipient's URL as `_recipient` shows it, any user:password@ hidden."""
    if "://" in to:
        error = error.replace(to, _recipient(to))
    return _USERINFO.sub(r"\1***@", error)


_USERINFO = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*://)[^/\s@]+@")


def _config_option(parser: argparse.ArgumentParser) -> None:
    default = os.environ.get(DEFAULT_CONFIG_ENV)
    parser.add_argument("--config", "-c", required=default is None, default=default, metavar="FILE",
                        help=f"default: ${DEFAULT_CONFIG_ENV}")


def _incident_id(text: str) -> str:
    return text.strip().upper()  # ids are INC-2026-000123; `inc-2026-000123` means the same one


def _operator(given: str | None) -> str:
    """Who acts: --by, else the login name."""
    name = given
    if name is None:
        try:
            name = getpass.getuser()
        except (OSError, KeyError):  # no LOGNAME/USER and no password entry for the uid (a bare container)
            raise UsageError("cannot tell who you are (no login name): give --by NAME") from None
    name = " ".join(name.split())
    if not name or not name.isprintable() or len(name) > MAX_NAME_CHARS:
        raise UsageError(f"--by {name!r}: give a name of 1 to {MAX_NAME_CHARS} printable characters")
    return name


def _said(text: str | None, option: str, what: str, *, required: bool = True) -> str:
    said = (text or "").strip()
    if required and not said:
        raise UsageError(f"{option} must say {what}")
    if len(said) > steps.MAX_COMMENT_CHARS:
        raise UsageError(f"{option} is too long ({len(said)} characters, at most {steps.MAX_COMMENT_CHARS})")
    return said


def _no_store(loaded: Loaded) -> bool:
    """The store does not exist yet: nothing to read, and a read must not create it (nor its directory)."""
    return not loaded.config.storage.records_path.exists()


def _unknown(id: str, loaded: Loaded) -> UsageError:
    return UsageError(f"no incident {id} in {loaded.config.storage.records_path} (see `slawatch incident list --all`)")


def _row(incident: Incident, verdict: Verdict) -> dict[str, object]:
    """An incident in `list --format json` (and the head of `show`'s)."""
    r = incident.ref
    return {
        "id": incident.id, "component": r.component, "customer": r.customer, "class": r.klass, "tier": r.tier,
        "priority": incident.priority, "state": str(incident.state), "fault": incident.fault,
        "since": _iso(incident.start_ms), "raised_at": _iso(incident.raised_ms),
        "acknowledged_at": _iso(incident.acknowledged_ms), "acknowledged_by": incident.acknowledged_by or None,
        "resolved_at": _iso(incident.resolved_ms),
        "response_s": verdict.response_s, "target_s": verdict.target_s, "deadline": _iso(verdict.deadline_ms),
        "met": verdict.met, "remaining_s": verdict.remaining_s if incident.active else None,
        "paused_s": verdict.paused_s, "reason": incident.reason,
    }


def _deadline(incident: Incident, verdict: Verdict) -> str:
    if verdict.deadline_ms is not None:
        return format_time(verdict.deadline_ms)
    return "paused" if verdict.target_s is not None and incident.state is IncidentState.PAUSED else "-"


def _list(args: argparse.Namespace) -> int:
    since_ms = None if args.since is None else _instant(args.since, "--since")
    now_ms = _now_ms() if args.now is None else _instant(args.now, "--now")
    loaded = load_config(args.config)
    config = loaded.config
    for option, value, known in (("--customer", args.customer, [c.name for c in config.customers]),
                                 ("--component", args.component, [c.name for c in config.components])):
        if value is not None and value not in known:
            # Not refused: the store keeps incidents of what the config no longer has.
            print(f"slawatch incident: note: {option} {value!r} is not in {loaded.path}", file=sys.stderr)
    found: list[Incident] = []
    if not _no_store(loaded):
        found = run_with(lambda: open_desk_store(loaded.config.storage), lambda store: store.incidents(
            since_ms, None, customer=args.customer, component=args.component, active_only=not args.all))
    calendars = calendars_of(loaded.contract.response_terms())
    rows = [(i, verdict_of(calendars, loaded, i, now_ms)) for i in sorted(found, key=order)]
    if args.format == "json":
        print(json.dumps([_row(i, v) for i, v in rows], ensure_ascii=False, indent=2))
        return EXIT_OK
    if not rows:
        print("no incidents" if args.all else "no active incidents (--all for the resolved ones too)")
        return EXIT_OK
    header = ("ID", "PRI", "STATE", "COMPONENT", "CUSTOMER", "FAULT", "SINCE (UTC)", "RAISED (UTC)",
              "RESPOND BY (UTC)", "RESPONSE", "REASON")
    for line in _table(header, [
            (i.id, i.priority, str(i.state), i.ref.component, i.ref.customer or "-", i.fault, format_time(i.start_ms),
             format_time(i.raised_ms), _deadline(i, v), response_words(i, v), i.reason or "-") for i, v in rows]):
        print(line)
    return EXIT_OK


def _event_doc(e: IncidentEvent) -> dict[str, object]:
    try:
        detail: object = json.loads(e.detail) if e.detail else None
    except ValueError:
        detail = e.detail
    return {"seq": e.seq, "time": _iso(e.ts_ms), "action": e.action, "actor": e.actor, "comment": e.comment,
            "detail": detail}


def _note_doc(n: Notification) -> dict[str, object]:
    return {"id": n.id, "kind": n.kind, "recipient": _recipient(n.recipient), "state": str(n.state),
            "attempts": n.attempts, "last_error": _scrubbed(n.last_error, n.recipient) or None,
            "created_at": _iso(n.created_ms), "due_at": _iso(n.due_ms), "sent_at": _iso(n.sent_ms),
            "subject": n.subject}


def _show(args: argparse.Namespace) -> int:
    id = _incident_id(args.id)
    now_ms = _now_ms() if args.now is None else _instant(args.now, "--now")
    loaded = load_config(args.config)
    if _no_store(loaded):
        raise _unknown(id, loaded)

    async def read(store: DeskStore) -> tuple[Incident | None, list[IncidentEvent], list[Notification]]:
        incident = await store.get(id)
        if incident is None:
            return None, [], []
        return incident, await store.events(id), await store.notifications(id)

    incident, events, notes = run_with(lambda: open_desk_store(loaded.config.storage), read)
    if incident is None:
        raise _unknown(id, loaded)
    notes.sort(key=note_order)
    verdict = verdict_of(calendars_of(loaded.contract.response_terms()), loaded, incident, now_ms)
    doc = _row(incident, verdict)
    doc.update(
        ack_comment=incident.ack_comment or None, resolved_by=incident.resolved_by or None,
        agents=list(incident.agents), escalations=incident.escalations,
        pauses=[{"start": _iso(p.start_ms), "end": _iso(p.end_ms), "reason": p.reason} for p in incident.pauses],
        calendar=verdict.calendar, in_hours=verdict.in_hours, updated_at=_iso(incident.updated_ms),
        events=[_event_doc(e) for e in events], notifications=[_note_doc(n) for n in notes])
    if args.format == "json":
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return EXIT_OK
    print("\n".join(_show_text(incident, verdict, events, notes)))
    return EXIT_OK


def _show_text(incident: Incident, verdict: Verdict, events: Sequence[IncidentEvent],
               notes: Sequence[Notification]) -> list[str]:
    r = incident.ref
    customer = f"customer {r.customer}, " if r.customer else ""
    facts = [("state", str(incident.state)), ("priority", incident.priority),
             ("fault", f"{incident.fault} since {_when(incident.start_ms)} UTC"),
             ("raised", f"{_when(incident.raised_ms)} UTC"), ("reason", incident.reason or "-"),
             ("seen by", ", ".join(incident.agents) or "-")]
    target = f"of a {span(verdict.target_s)} target"
    if verdict.target_s is None:
        clock = f"{span(verdict.response_s)}, no target for {incident.priority} on tier {r.tier}"
    elif incident.acknowledged_ms is not None:
        clock = f"{span(verdict.response_s)} {target}: {'met' if verdict.met else 'MISSED'}"
    elif not incident.active:
        clock = f"not acknowledged before it was resolved, {span(verdict.response_s)} {target} had passed"
    else:
        clock = f"{span(verdict.response_s)} so far {target}: {response_words(incident, verdict)}"
        clock += (f", respond by {_when(verdict.deadline_ms)} UTC" if verdict.deadline_ms is not None
                  else ", no deadline while paused")
    when = "" if verdict.in_hours is None else (", raised in hours" if verdict.in_hours else ", raised out of hours")
    facts.append(("response", f"{clock} (counted on {verdict.calendar}{when})"))
    if incident.acknowledged_ms is not None:
        said = f": {incident.ack_comment}" if incident.ack_comment else ""
        facts.append(("acknowledged", f"{_when(incident.acknowledged_ms)} UTC by {incident.acknowledged_by}{said}"))
    for p in incident.pauses:
        end = "now" if p.end_ms is None else f"{_when(p.end_ms)} UTC"
        facts.append(("paused", f"{_when(p.start_ms)} UTC to {end}: {p.reason}"))
    if verdict.paused_s:
        facts.append(("not counted", f"{span(verdict.paused_s)} paused"))
    if incident.resolved_ms is not None:
        by = f"by {incident.resolved_by}" if incident.resolved_by else "(the component recovered)"
        facts.append(("resolved", f"{_when(incident.resolved_ms)} UTC {by}, "
                                  f"{span((incident.resolved_ms - incident.start_ms) / 1000)} after the fault began"))
    if incident.escalations:
        facts.append(("escalations", str(incident.escalations)))
    width = max(len(k) for k, _ in facts)
    lines = [f"{incident.id}  {r.component} ({customer}class {r.klass}, tier {r.tier})"]
    lines += [f"  {k:<{width}}  {_cell(v)}" for k, v in facts]
    lines += ["", "EVENTS"]
    lines += ["  " + line for line in _table(("SEQ", "TIME (UTC)", "ACTION", "ACTOR", "COMMENT"), [
        (str(e.seq), _when(e.ts_ms), e.action, e.actor, e.comment or "-") for e in events])]
    lines += ["", "NOTIFICATIONS"]
    if not notes:
        lines.append("  none (notify.noc and the customer's notify list no one)")
    else:
        lines += ["  " + line for line in _table(("KIND", "RECIPIENT", "STATE", "ATTEMPTS", "LAST ERROR"), [
            (n.kind, _recipient(n.recipient), str(n.state), str(n.attempts),
             _scrubbed(n.last_error, n.recipient) or "-") for n in notes])]
    return lines


# ---------------------------------------------------------------- what operators do


def _act(args: argparse.Namespace, loaded: Loaded, action: Callable[[Incident, int], Step]) -> int:
    """Apply an operator's step to the stored incident through the desk (its events and its notifications in the
    outbox in one transaction: the running agent's sender delivers them) and say what was done."""
    id = _incident_id(args.id)
    if _no_store(loaded):
        raise _unknown(id, loaded)

    async def work(store: DeskStore) -> tuple[Step, int]:
        if await store.get(id) is None:
            raise _unknown(id, loaded)
        desk = Desk(loaded, store, None)
        step = await desk.act(id, lambda incident: action(incident, desk.clock_ms()))
        return step, desk.notifications_queued

    step, queued = run_with(lambda: open_desk_store(loaded.config.storage), work)
    incident, event = step.incident, step.events[-1]
    if queued and not loaded.config.desk.enabled:
        print(f"slawatch incident: note: desk.enabled is false in {loaded.path}: no agent sends the notifications "
              "queued", file=sys.stderr)
    verdict = verdict_of(calendars_of(loaded.contract.response_terms()), loaded, incident, event.ts_ms)
    if args.format == "json":
        print(json.dumps({"id": incident.id, "action": event.action, "actor": event.actor, "comment": event.comment,
                          "at": _iso(event.ts_ms), "notifications_queued": queued,
                          "incident": _row(incident, verdict)}, ensure_ascii=False, indent=2))
        return EXIT_OK
    done = did(incident, event, verdict, resume=f"`slawatch incident resume {incident.id}`")
    print(f"{done}; " + (f"{queued} notification{'' if queued == 1 else 's'} queued" if queued else "no one to notify"))
    return EXIT_OK


def _ack(args: argparse.Namespace) -> int:
    comment = _said(args.comment, "--comment", "what is being done")
    by = _operator(args.by)
    return _act(args, load_config(args.config), lambda i, now: steps.acknowledge(i, by, comment, now))


def _pause_incident(args: argparse.Namespace) -> int:
    reason = _said(args.reason, "--reason", "what the customer is to do (the clock waits on them)")
    by = _operator(args.by)
    return _act(args, load_config(args.config), lambda i, now: steps.pause(i, by, reason, now))


def _resume(args: argparse.Namespace) -> int:
    comment = _said(args.comment, "--comment", "", required=False)
    by = _operator(args.by)
    return _act(args, load_config(args.config), lambda i, now: steps.resume(i, by, comment, now))


def _resolve(args: argparse.Namespace) -> int:
    comment = _said(args.comment, "--comment", "how it was resolved")
    by = _operator(args.by)
    return _act(args, load_config(args.config), lambda i, now: steps.resolve(i, by, comment, now))


def _priority(args: argparse.Namespace) -> int:
    why = _said(args.comment, "--comment", "why the priority changes")
    by = _operator(args.by)
    loaded = load_config(args.config)
    # A name the contract does not know is refused: it would have no response target.
    priority = priority_named(loaded, args.priority)
    if priority is None:
        raise UsageError(f"unknown priority {args.priority!r} (the contract has {', '.join(priorities(loaded))})")
    return _act(args, loaded, lambda i, now: steps.set_priority(i, priority, by, why, now))


def _add_list(actions: Subparsers) -> None:
    lst = actions.add_parser(
        "list", help="the active incidents with their response clock (--all: the resolved too)",
        description="The desk's incidents: open first, then acknowledged and paused, by priority, each with its "
                    "response deadline and the time left (or its response time and whether it met the target, once "
                    "acknowledged). Times are UTC.")
    _config_option(lst)
    lst.add_argument("--all", action="store_true", help="the resolved incidents too")
    lst.add_argument("--customer", metavar="X", help="only this customer's")
    lst.add_argument("--component", metavar="NAME", help="only this component's")
    lst.add_argument("--since", metavar="ISO", help="only those raised at or after this time")
    lst.add_argument("--now", metavar="ISO", help="read the response clocks at this time (default: now)")
    lst.add_argument("--format", choices=("text", "json"), default="text")
    lst.set_defaults(func=guarded("incident", _list, DESK_FAILURES))


def _add_show(actions: Subparsers) -> None:
    show = actions.add_parser(
        "show", help="one incident: its response clock, event log and notifications",
        description="One incident with its response clock, its event log (who did what, when) and its "
                    "notifications (recipients of URLs shown without their credentials or tokens).")
    show.add_argument("id", metavar="ID")
    _config_option(show)
    show.add_argument("--now", metavar="ISO", help="read the response clock at this time (default: now)")
    show.add_argument("--format", choices=("text", "json"), default="text")
    show.set_defaults(func=guarded("incident", _show, DESK_FAILURES))


def _action_parser(actions: Subparsers, name: str, help: str, description: str) -> argparse.ArgumentParser:
    parser = actions.add_parser(
        name, help=help,
        description=f"{description} The notifications it asks for are queued in the store's outbox; the running "
                    "agent sends them. Exit 0 done, 1 the action does not apply to the incident as it stands (or a "
                    "store error), 2 an unknown incident or a usage error.")
    parser.add_argument("id", metavar="ID")
    return parser


def _common(parser: argparse.ArgumentParser, func: Callable[[argparse.Namespace], int]) -> None:
    parser.add_argument("--by", metavar="NAME", help="who acts (default: your login name)")
    _config_option(parser)
    parser.add_argument("--format", choices=("text", "json"), default="text")
    parser.set_defaults(func=guarded("incident", func, DESK_FAILURES))


def _add_ack(actions: Subparsers) -> None:
    ack = _action_parser(actions, "ack", "acknowledge an incident: its response clock stops",
                         "Acknowledge the incident: the first acknowledgement stops its response clock.")
    ack.add_argument("--comment", required=True, metavar="TEXT", help="what is being done")
    _common(ack, _ack)


def _add_pause(actions: Subparsers) -> None:
    pause = _action_parser(actions, "pause", "wait on the customer: the response clock stops until resumed",
                           "Pause the incident while waiting on the customer (no remote access granted, customer "
                           "unreachable): the time until `resume` is not counted.")
    pause.add_argument("--reason", required=True, metavar="TEXT", help="what the customer is to do")
    _common(pause, _pause_incident)


def _add_resume(actions: Subparsers) -> None:
    resume = _action_parser(actions, "resume", "end a pause: the response clock runs again",
                            "End the incident's pause.")
    resume.add_argument("--comment", metavar="TEXT")
    _common(resume, _resume)


def _add_resolve(actions: Subparsers) -> None:
    resolve = _action_parser(actions, "resolve", "resolve an incident by hand",
                             "Resolve the incident by hand (a later fault of the component raises a new one).")
    resolve.add_argument("--comment", required=True, metavar="TEXT", help="how it was resolved")
    _common(resolve, _resolve)


def _add_priority(actions: Subparsers) -> None:
    prio = _action_parser(actions, "priority", "change an incident's priority (and so its response target)",
                          "Change the incident's priority to P, one the contract knows; its response target follows.")
    prio.add_argument("priority", metavar="P")
    prio.add_argument("--comment", required=True, metavar="WHY", help="why the priority changes")
    _common(prio, _priority)


# The actions of `slawatch incident`: name -> the function that adds its subparser.
ACTIONS: dict[str, Callable[[Subparsers], None]] = {
    "list": _add_list,
    "show": _add_show,
    "ack": _add_ack,
    "pause": _add_pause,
    "resume": _add_resume,
    "priority": _add_priority,
    "resolve": _add_resolve,
    "clock": _add_clock,
}


def register(sub: Subparsers) -> None:
    """Add `incident ACTION` to the `slawatch` command line."""
    group = sub.add_parser("incident", help="list, show, acknowledge, pause and resolve incidents; the response clock",
                           description="The incident desk's incidents and the contract's response-time clock. "
                                       "Exit 0 ok, 1 an action that does not apply (already acknowledged, resolved, "
                                       "not paused) or a store error, 2 usage, config error or unknown incident.")

    def usage(_args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(func=usage)
    actions = group.add_subparsers(dest="incident_action", metavar="ACTION")
    for add in ACTIONS.values():
        add(actions)

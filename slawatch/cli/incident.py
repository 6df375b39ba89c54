"""`slawatch incident ACTION`: incidents and their response clock; `clock` runs the response-time engine on given
instants."""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from typing import TypeAlias

from reporter.calendars import calendars_of
from reporter.maintenance import format_duration
from reporter.periods import iso_ms, parse_iso
from reporter.response import Pause, ResponseTarget, Verdict, evaluate, target_of
from slawatch.cli.usage import EXIT_OK, EXIT_USAGE, UsageError
from slawatch.config.loader import ConfigError, Loaded, load

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


def _load(path: str) -> Loaded:
    try:
        return load(path)
    except ConfigError as exc:
        raise UsageError("\n".join(str(p) for p in exc.problems)) from None


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


def _priorities(loaded: Loaded) -> list[str]:
    terms = loaded.contract.response_terms()
    names = [r.priority for r in terms.priorities] + [t.priority for t in terms.targets if t.priority is not None]
    return list(dict.fromkeys([terms.default_priority, *names]))


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
    loaded = _load(args.config)
    tier = _tier(loaded, args.customer, args.component)
    known = _priorities(loaded)
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
    clock.set_defaults(func=_guarded(_clock))


# The actions of `slawatch incident`: name -> the function that adds its subparser.
ACTIONS: dict[str, Callable[[Subparsers], None]] = {
    "clock": _add_clock,
}


def _guarded(command: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UsageError as exc:
            print(f"slawatch incident: {exc}", file=sys.stderr)
            return EXIT_USAGE

    return run


def register(sub: Subparsers) -> None:
    """Add `incident ACTION` to the `slawatch` command line."""
    group = sub.add_parser("incident", help="incidents and their response clock",
                           description="Incidents and the contract's response-time clock. Exit 0 ok, "
                                       "2 usage or config error.")

    def usage(_args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(func=usage)
    actions = group.add_subparsers(dest="incident_action", metavar="ACTION")
    for add in ACTIONS.values():
        add(actions)

"""`slawatch maintenance add|list|remove`: planned maintenance windows in the store, with the notice verdict."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from reporter.maintenance import (
    FUTURE_TOLERANCE_MS,
    format_duration,
    format_time,
    iso_time,
    known_targets,
    lead_time_s,
    new_id,
    notice_of,
)
from reporter.periods import parse_iso
from slawatch.cli.usage import EXIT_OK, EXIT_USAGE, UsageError, guarded, load_config, run_with
from slawatch.config.loader import Loaded
from slawatch.model import SCOPES, MaintenanceWindow, Scope
from slawatch.store import SourceError, open_source

DEFAULT_CONFIG_ENV = "SLAWATCH_CONFIG"

STORE_FAILURES: dict[type[Exception], str] = {SourceError: "store error: "}


def parse_time(text: str, option: str) -> int:
    """An ISO 8601 time with an offset or Z -> epoch milliseconds UTC."""
    try:
        return parse_iso(text)
    except ValueError as exc:
        if "no UTC offset" not in str(exc):
            raise UsageError(f"{option} {text!r} is not an ISO 8601 time (write e.g. 2024-05-01T22:00:00+02:00 "
                             f"or 2024-05-01T20:00:00Z)") from None
        naive = text.strip()
        raise UsageError(f"{option} {text!r} has no UTC offset, so it could be any time zone: add one, e.g. "
                         f"{naive}+02:00 or {naive}Z") from None



def check_target(loaded: Loaded, scope: Scope, value: str) -> None:
    """The named component, class or customer must be one the config (and its contract) knows."""
    known = known_targets(loaded, scope)
    if value not in known:
        listed = ", ".join(known[:20]) + (f", … ({len(known)} in all)" if len(known) > 20 else "")
        raise UsageError(f"unknown {scope} {value!r}: {loaded.path} has " + (listed or f"no {scope}s"))


# ---------------------------------------------------------------- commands


def _target(args: argparse.Namespace) -> tuple[Scope, str]:
    for scope in SCOPES:
        value = getattr(args, "klass" if scope == "class" else scope)
        if value is not None:
            return scope, value
    raise UsageError("name what is maintained: --component NAME, --class C or --customer X")


def _add(args: argparse.Namespace) -> int:
    now_ms = int(time.time() * 1000)
    scope, value = _target(args)
    start_ms = parse_time(args.start, "--start")
    end_ms = parse_time(args.end, "--end")
    if end_ms <= start_ms:
        raise UsageError(f"--end {args.end} must be after --start {args.start}")
    announced_ms = now_ms if args.announced_at is None else parse_time(args.announced_at, "--announced-at")
    if announced_ms > now_ms + FUTURE_TOLERANCE_MS:
        raise UsageError(f"--announced-at {args.announced_at} is in the future: give the time the notice was sent")
    reason = args.reason.strip()
    if not reason:
        raise UsageError("--reason must say what the maintenance is")
    loaded = load_config(args.config)
    check_target(loaded, scope, value)
    window = MaintenanceWindow(new_id(), scope, value, start_ms, end_ms, announced_ms, reason, now_ms)
    run_with(lambda: open_source(loaded.config.storage), lambda source: source.add_window(window))
    notice = notice_of(loaded, window)
    needed = format_duration(notice.required_ms / 1000)
    verdict = (f"meets the {needed} notice" if notice.ok else
               f"LATE NOTICE{notice.late_text()}: the contract needs {needed}, so downtime in it counts")
    print(f"{window.id}: {scope} {value}, {format_time(start_ms)} to {format_time(end_ms)} UTC "
          f"({format_duration((end_ms - start_ms) / 1000)}), announced {format_duration(lead_time_s(window))} "
          f"before: {verdict}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    windows = run_with(lambda: open_source(loaded.config.storage), lambda source: source.windows())
    rows = [(w, notice_of(loaded, w)) for w in windows]
    if args.json:
        doc = [{"id": w.id, "scope": w.scope, "value": w.value, "start": iso_time(w.start_ms),
                "end": iso_time(w.end_ms), "announced": iso_time(w.announced_ms), "created": iso_time(w.created_ms),
                "reason": w.reason, "duration_s": (w.end_ms - w.start_ms) / 1000, "lead_time_s": n.lead_ms / 1000,
                "notice_required_s": n.required_ms / 1000, "notice_ok": n.ok, "late_for": list(n.late_for)}
               for w, n in rows]
        print(json.dumps(doc, ensure_ascii=False, indent=2))
        return EXIT_OK
    if not rows:
        print("no maintenance windows")
        return EXIT_OK
    header = ("ID", "TARGET", "START (UTC)", "END (UTC)", "LENGTH", "ANNOUNCED (UTC)", "NOTICE", "MEETS", "REASON")
    table = [header] + [
        (w.id, f"{w.scope} {w.value}", format_time(w.start_ms), format_time(w.end_ms),
         format_duration((w.end_ms - w.start_ms) / 1000), format_time(w.announced_ms),
         format_duration(n.lead_ms / 1000),
         "yes" if n.ok else f"LATE{n.late_text()} (<{format_duration(n.required_ms / 1000)})",
         " ".join(w.reason.split()))
        for w, n in rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header) - 1)]
    for r in table:
        print("  ".join(cell.ljust(width) for cell, width in zip(r, widths, strict=False)) + "  " + r[-1])
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    removed = run_with(lambda: open_source(loaded.config.storage), lambda source: source.remove_window(args.id))
    if not removed:
        print(f"slawatch maintenance: no window {args.id!r} in force (see `slawatch maintenance list`)",
              file=sys.stderr)
        return EXIT_USAGE
    print(f"{args.id}: removed (kept in the store as removed)")
    return EXIT_OK


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add `maintenance add|list|remove` to the `slawatch` command line."""
    group = sub.add_parser("maintenance", help="add, list and remove planned maintenance windows",
                           description="Planned maintenance windows. A window announced at least the contract's "
                                       "maintenance_notice before it starts is not downtime; one announced later is "
                                       "(the report shows it as late notice). Exit 0 ok, 2 usage or config error, "
                                       "1 store error.")

    def usage(_args: argparse.Namespace) -> int:
        group.print_help(sys.stderr)
        return EXIT_USAGE

    group.set_defaults(func=usage)
    commands = group.add_subparsers(dest="maintenance_command", metavar="ACTION")
    default_config = os.environ.get(DEFAULT_CONFIG_ENV)

    add = commands.add_parser("add", help="record a maintenance window and when it was announced",
                              description="Times are ISO 8601 with an offset or Z, e.g. 2024-05-01T22:00:00+02:00.")
    target = add.add_mutually_exclusive_group(required=True)
    target.add_argument("--component", metavar="NAME", help="one component")
    target.add_argument("--class", dest="klass", metavar="C", help="every component of a class")
    target.add_argument("--customer", metavar="X", help="every component of a customer")
    add.add_argument("--start", required=True, metavar="ISO", help="when the window starts")
    add.add_argument("--end", required=True, metavar="ISO", help="when it ends (after --start)")
    add.add_argument("--announced-at", metavar="ISO", help="when the customer was told (default: now)")
    add.add_argument("--reason", required=True, metavar="TEXT", help="what is done, as the report will show it")
    add.add_argument("--config", "-c", required=True, metavar="FILE")
    add.set_defaults(func=guarded("maintenance", _add, STORE_FAILURES))

    lst = commands.add_parser("list", help="the windows in the store, with their notice",
                              description="Every window in force, with its notice lead time and whether it meets "
                                          "the contract's maintenance_notice.")
    lst.add_argument("--config", "-c", required=default_config is None, default=default_config, metavar="FILE",
                     help=f"default: ${DEFAULT_CONFIG_ENV}")
    lst.add_argument("--json", action="store_true", help="print JSON instead of a table")
    lst.set_defaults(func=guarded("maintenance", _list, STORE_FAILURES))

    rm = commands.add_parser("remove", help="withdraw a window (kept in the store, marked removed)")
    rm.add_argument("id", metavar="ID")
    rm.add_argument("--config", "-c", required=True, metavar="FILE")
    rm.set_defaults(func=guarded("maintenance", _remove, STORE_FAILURES))

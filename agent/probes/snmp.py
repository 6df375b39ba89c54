"""The snmp probe: GET OIDs, hold each to its conditions, and notice an agent whose sysUpTime went backwards."""

from __future__ import annotations

import argparse
import operator
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from agent.probes import snmpclient
from agent.probes.options import SNMP_OPTIONS, Env, snmp_access, snmp_access_settings
from agent.probes.snmpclient import Value, normalize_oid
from slawatch.config.probes import SnmpCheck, SnmpProbe
from slawatch.config.units import split_host_port
from slawatch.model import Outcome, Result

SYS_UPTIME = "1.3.6.1.2.1.1.3.0"
TICKS_WRAP = 1 << 32  # TimeTicks is an unsigned 32-bit count of 1/100 s: it wraps after ~497 days

# Process state: the last sysUpTime seen per agent, (host, port) -> (ticks, time.monotonic() when seen),
# so the next probe of the same agent can tell a reboot. Lost on restart: the first probe after a daemon
# restart only records.
LAST_UPTIME: dict[tuple[str, int], tuple[int, float]] = {}


def name_of(check: SnmpCheck) -> str:
    oid = normalize_oid(check.oid)
    return f"{check.label} ({oid})" if check.label else oid


def _matches(expected: str | int, value: Value) -> bool:
    if isinstance(expected, int):
        return isinstance(value.value, int) and value.value == expected
    # A string condition also accepts an integer's decimal text ("1" for up(1)): YAML authors quote.
    return str(value.value) == expected


def check_failure(check: SnmpCheck, value: Value | None) -> str | None:
    """Why `value` fails `check` (every condition set on it must hold), or None when it passes.
    Wrong types and missing objects fail too, naming what was expected. Pure."""
    name = name_of(check)
    if value is None:
        return f"{name}: not in the answer"
    if value.missing:
        return f"{name}: {value.syntax}"
    wants_number = any(x is not None for x in (check.gt, check.ge, check.lt, check.le))
    int_only = (isinstance(check.equals, int)
                or (check.in_ is not None and len(check.in_) > 0 and all(isinstance(x, int) for x in check.in_)))
    if (wants_number or int_only) and not isinstance(value.value, int):
        return f"{name}: wrong type {value.syntax} {value.show()}, expected an integer"
    shown = f"{name} = {value.show()}"
    if check.equals is not None and not _matches(check.equals, value):
        return f"{shown}, expected {check.equals!r}"
    if check.in_ is not None and not any(_matches(x, value) for x in check.in_):
        return f"{shown}, expected one of {', '.join(repr(x) for x in check.in_)}"
    if isinstance(value.value, int):
        number = value.value
        for sign, bound, holds in (
            (">", check.gt, operator.gt),
            (">=", check.ge, operator.ge),
            ("<", check.lt, operator.lt),
            ("<=", check.le, operator.le),
        ):
            if bound is not None and not holds(number, bound):
                return f"{shown}, expected {sign} {bound:g}"
    return None


def assess(checks: Sequence[SnmpCheck], values: Mapping[str, Value]) -> Result:
    """UP when every check holds, else BAD_RESPONSE naming each failing check. Pure."""
    failures = [f for c in checks if (f := check_failure(c, values.get(normalize_oid(c.oid)))) is not None]
    if failures:
        return Result(Outcome.BAD_RESPONSE, "; ".join(failures))
    return Result(Outcome.UP)


def show_ticks(ticks: int) -> str:
    seconds = ticks // 100
    days, rest = divmod(seconds, 86400)
    h, rest = divmod(rest, 3600)
    m, s = divmod(rest, 60)
    if days:
        return f"{days}d{h:02d}h{m:02d}m{s:02d}s"
    return f"{h}h{m:02d}m{s:02d}s" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


def reboot_reason(previous: tuple[int, float] | None, ticks: int, now: float) -> str | None:
    """"rebooted: ..." when sysUpTime went backwards since `previous` = (ticks, monotonic seen), unless the
    drop is the 32-bit wrap the elapsed time predicts (within 10 s + 1 %). Pure."""
    if previous is None:
        return None
    before, seen = previous
    if ticks >= before:
        return None
    elapsed_ticks = max(0.0, now - seen) * 100
    if before + elapsed_ticks >= TICKS_WRAP:
        expected = (before + elapsed_ticks) % TICKS_WRAP
        if abs(ticks - expected) <= 1000 + elapsed_ticks * 0.01:
            return None
    return f"rebooted: sysUpTime went from {show_ticks(before)} to {show_ticks(ticks)}"


def _note_uptime(settings: SnmpProbe, values: Mapping[str, Value]) -> str | None:
    uptime = values.get(SYS_UPTIME)
    if uptime is None or not isinstance(uptime.value, int):
        return None
    key = split_host_port(settings.target, 161)
    now = time.monotonic()
    reason = reboot_reason(LAST_UPTIME.get(key), uptime.value, now)
    LAST_UPTIME[key] = (uptime.value, now)
    return reason


def _with_reboot(result: Result, reboot: str | None) -> Result:
    if reboot is None:
        return result
    if result.outcome is Outcome.UP:
        return Result(Outcome.DEGRADED, reboot, result.latency_s)
    return Result(result.outcome, f"{result.reason}; {reboot}", result.latency_s)


async def probe(settings: SnmpProbe) -> Result:
    oids = [normalize_oid(c.oid) for c in settings.checks]
    if settings.check_reboot and SYS_UPTIME not in oids:
        oids.append(SYS_UPTIME)
    reply = await snmpclient.get(settings, oids)
    if isinstance(reply, Result):
        return reply
    if reply.error_status is not None:
        failed = next((name_of(c) for c in settings.checks if normalize_oid(c.oid) == reply.error_oid),
                      reply.error_oid or "?")
        return Result(Outcome.BAD_RESPONSE, f"{failed}: agent answered {reply.error_status}", reply.latency_s)
    result = assess(settings.checks, reply.values)
    result = Result(result.outcome, result.reason, reply.latency_s)
    return _with_reboot(result, _note_uptime(settings, reply.values) if settings.check_reboot else None)


# The kind's lifecycle: the SNMP engine (built once per event loop) is shared with the ups kind.
warm = snmpclient.warm
close = snmpclient.close


# ---------------------------------------------------------------- the one-shot command line

TARGET = "HOST[:PORT]"
OPTIONS = {**SNMP_OPTIONS, "checks": "--oid"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--oid", required=True, metavar="OID")
    p.add_argument("--equals", metavar="V", help="the value the OID must have")
    snmp_access(p)


def settings_from_args(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    # As in a YAML config, digits are a number: `--equals 2` matches an INTEGER 2.
    equals = int(args.equals) if args.equals is not None and re.fullmatch(r"-?\d+", args.equals) else args.equals
    check = {"oid": args.oid, "equals": equals}
    return {**snmp_access_settings(args, env), "checks": [{k: v for k, v in check.items() if v is not None}]}

"""The ups probe: read UPS-MIB (RFC 1628) over SNMP and map it to the availability of the `power` class.

Mapping (`assess`), the worst line wins:
- upsOutputSource normal(3) -> up.
- battery(5) -> degraded "on battery": the load is powered, mains is gone, the clock is running.
- bypass(4), booster(6), reducer(7) -> degraded, not down: in all three the output IS powered (the power
  class promises power at the outlet). bypass feeds the load straight from the mains with no protection;
  booster/reducer are the automatic voltage regulator correcting a mains sag/surge. Each is worth a
  warning, none is an outage.
- none(2) -> down (no output); other(1) -> down (the UPS cannot say the output is powered).
- upsBatteryStatus batteryLow(3) -> degraded; batteryDepleted(4) -> down (the next mains dip drops the load);
  unknown(1) and batteryNormal(2) change nothing.
- upsAlarmsPresent > 0 is named in the reason; it does not change the outcome (the alarm table says what).
"down" is BAD_RESPONSE: the model has no separate "down" outcome.
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Mapping
from typing import Any

from agent.probes import snmpclient
from agent.probes.base import inner_timeout
from agent.probes.options import SNMP_OPTIONS, Env, snmp_access, snmp_access_settings
from agent.probes.snmpclient import Value
from slawatch.config.probes import UpsProbe
from slawatch.model import Outcome, Result

OIDS = {
    "upsOutputSource": "1.3.6.1.2.1.33.1.4.1.0",
    "upsBatteryStatus": "1.3.6.1.2.1.33.1.2.1.0",
    "upsAlarmsPresent": "1.3.6.1.2.1.33.1.6.1.0",
    "upsEstimatedMinutesRemaining": "1.3.6.1.2.1.33.1.2.3.0",
    "upsEstimatedChargeRemaining": "1.3.6.1.2.1.33.1.2.4.0",
}
REQUIRED = ("upsOutputSource", "upsBatteryStatus", "upsAlarmsPresent")
OPTIONAL = ("upsEstimatedMinutesRemaining", "upsEstimatedChargeRemaining")

OUTPUT_SOURCE: dict[int, tuple[str, Outcome, str]] = {
    1: ("other", Outcome.BAD_RESPONSE, "output source unknown"),
    2: ("none", Outcome.BAD_RESPONSE, "output off"),
    3: ("normal", Outcome.UP, ""),
    4: ("bypass", Outcome.DEGRADED, "on bypass (load unprotected)"),
    5: ("battery", Outcome.DEGRADED, "on battery"),
    6: ("booster", Outcome.DEGRADED, "boosting low mains voltage"),
    7: ("reducer", Outcome.DEGRADED, "reducing high mains voltage"),
}
BATTERY_STATUS: dict[int, tuple[str, Outcome, str]] = {
    1: ("unknown", Outcome.UP, ""),
    2: ("batteryNormal", Outcome.UP, ""),
    3: ("batteryLow", Outcome.DEGRADED, "battery low"),
    4: ("batteryDepleted", Outcome.BAD_RESPONSE, "battery depleted"),
}
_SEVERITY = {Outcome.UP: 0, Outcome.DEGRADED: 1, Outcome.BAD_RESPONSE: 2}


def _enum(name: str, value: Value | None, names: Mapping[int, tuple[str, Outcome, str]]) -> (
        tuple[str, Outcome, str] | str):
    """(shown, outcome, summary) for an enumerated object, or why it is unusable."""
    where = f"{name} ({OIDS[name]})"
    if value is None:
        return f"{where}: not in the answer"
    if value.missing:
        return f"{where}: {value.syntax}"
    if not isinstance(value.value, int):
        return f"{where}: wrong type {value.syntax} {value.show()}, expected an INTEGER enumeration"
    if value.value not in names:
        return f"{where}: {value.value} is not a defined value"
    label, outcome, summary = names[value.value]
    return f"{name}={label}({value.value})", outcome, summary


def assess(values: Mapping[str, Value]) -> Result:
    """Map UPS-MIB values (keyed by object name, e.g. "upsOutputSource") to a Result. Pure."""
    source = _enum("upsOutputSource", values.get("upsOutputSource"), OUTPUT_SOURCE)
    battery = _enum("upsBatteryStatus", values.get("upsBatteryStatus"), BATTERY_STATUS)
    alarms = values.get("upsAlarmsPresent")
    problems = [x for x in (source, battery) if isinstance(x, str)]
    if alarms is None or alarms.missing:
        problems.append(f"upsAlarmsPresent ({OIDS['upsAlarmsPresent']}): "
                        f"{alarms.syntax if alarms else 'not in the answer'}")
    elif not isinstance(alarms.value, int):
        problems.append(f"upsAlarmsPresent ({OIDS['upsAlarmsPresent']}): wrong type {alarms.syntax} "
                        f"{alarms.show()}, expected a Gauge32")
    if problems:
        return Result(Outcome.BAD_RESPONSE, "; ".join(problems))
    assert not isinstance(source, str) and not isinstance(battery, str) and alarms is not None
    assert isinstance(alarms.value, int)

    outcome = max((source[1], battery[1]), key=_SEVERITY.__getitem__)
    parts = [source[0], battery[0]]
    minutes = values.get("upsEstimatedMinutesRemaining")
    if minutes is not None and isinstance(minutes.value, int):
        parts.append(f"{minutes.value} min remaining")
    charge = values.get("upsEstimatedChargeRemaining")
    if charge is not None and isinstance(charge.value, int):
        parts.append(f"{charge.value}% charge")
    if alarms.value > 0:
        parts.append(f"{alarms.value} alarm{'s' if alarms.value != 1 else ''} present")
    summary = ", ".join(s for s in (source[2], battery[2]) if s)
    if outcome is Outcome.UP and alarms.value == 0 and battery[0] == "upsBatteryStatus=batteryNormal(2)":
        return Result(Outcome.UP)
    details = ", ".join(parts)
    return Result(outcome, f"{summary}: {details}" if summary else details)


async def probe(settings: UpsProbe) -> Result:
    deadline = asyncio.get_running_loop().time() + inner_timeout(settings)
    wanted = [*REQUIRED, *OPTIONAL]
    reply = await snmpclient.get(settings, [OIDS[n] for n in wanted], deadline)
    # SNMPv1 fails the whole GET on one missing object (noSuchName): try again without the optional ones.
    if not isinstance(reply, Result) and reply.error_status is not None and reply.error_oid in [
            OIDS[n] for n in OPTIONAL]:
        wanted = list(REQUIRED)
        reply = await snmpclient.get(settings, [OIDS[n] for n in wanted], deadline)
    if isinstance(reply, Result):
        return reply
    if reply.error_status is not None:
        name = next((n for n in wanted if OIDS[n] == reply.error_oid), reply.error_oid or "?")
        shown = f"{name} ({reply.error_oid})" if name != reply.error_oid else name
        return Result(Outcome.BAD_RESPONSE, f"{shown}: agent answered {reply.error_status}", reply.latency_s)
    by_name = {n: reply.values[OIDS[n]] for n in wanted if OIDS[n] in reply.values}
    result = assess(by_name)
    return Result(result.outcome, result.reason, reply.latency_s)


# The kind's lifecycle: the SNMP engine (built once per event loop) is shared with the snmp kind.
warm = snmpclient.warm
close = snmpclient.close


# ---------------------------------------------------------------- the one-shot command line

TARGET = "HOST[:PORT]"
OPTIONS = SNMP_OPTIONS


def add_arguments(p: argparse.ArgumentParser) -> None:
    snmp_access(p)


def settings_from_args(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return snmp_access_settings(args, env)

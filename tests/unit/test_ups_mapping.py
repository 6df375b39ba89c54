"""UPS-MIB (RFC 1628) values -> Result for the power class: the mapping table, case by case."""

from __future__ import annotations

import pytest

from agent.probes.snmpclient import Value
from agent.probes.ups import OIDS, assess
from slawatch.model import Outcome, Result

UP, DEGRADED, DOWN = Outcome.UP, Outcome.DEGRADED, Outcome.BAD_RESPONSE


def ups(source: int | Value | None = 3, battery: int | Value | None = 2, alarms: int | Value | None = 0,
        minutes: int | None = None, charge: int | None = None) -> dict[str, Value]:
    values: dict[str, Value] = {}
    for name, v, syntax in (("upsOutputSource", source, "Integer"), ("upsBatteryStatus", battery, "Integer"),
                            ("upsAlarmsPresent", alarms, "Gauge32"),
                            ("upsEstimatedMinutesRemaining", minutes, "Integer"),
                            ("upsEstimatedChargeRemaining", charge, "Integer")):
        if v is not None:
            values[name] = v if isinstance(v, Value) else Value(syntax, v)
    return values


@pytest.mark.parametrize(("values", "expected"), [
    # plain up: nothing to say
    (ups(), Result(UP)),
    (ups(minutes=45, charge=100), Result(UP)),
    # alarms are named, they do not change the outcome
    (ups(alarms=2, minutes=40), Result(UP, "upsOutputSource=normal(3), upsBatteryStatus=batteryNormal(2), "
                                           "40 min remaining, 2 alarms present")),
    (ups(alarms=1), Result(UP, "upsOutputSource=normal(3), upsBatteryStatus=batteryNormal(2), 1 alarm present")),
    (ups(battery=1), Result(UP, "upsOutputSource=normal(3), upsBatteryStatus=unknown(1)")),
    # on battery: powered, degraded
    (ups(source=5, minutes=30, charge=80, alarms=1),
     Result(DEGRADED, "on battery: upsOutputSource=battery(5), upsBatteryStatus=batteryNormal(2), "
                      "30 min remaining, 80% charge, 1 alarm present")),
    (ups(source=5, battery=3, minutes=12, alarms=2),
     Result(DEGRADED, "on battery, battery low: upsOutputSource=battery(5), upsBatteryStatus=batteryLow(3), "
                      "12 min remaining, 2 alarms present")),
    (ups(battery=3), Result(DEGRADED, "battery low: upsOutputSource=normal(3), upsBatteryStatus=batteryLow(3)")),
    # depleted battery is down even with mains present
    (ups(battery=4), Result(DOWN, "battery depleted: upsOutputSource=normal(3), upsBatteryStatus=batteryDepleted(4)")),
    (ups(source=5, battery=4, minutes=0, charge=0, alarms=3),
     Result(DOWN, "on battery, battery depleted: upsOutputSource=battery(5), upsBatteryStatus=batteryDepleted(4), "
                  "0 min remaining, 0% charge, 3 alarms present")),
    # no output / unknown source: down
    (ups(source=2, battery=1, alarms=1),
     Result(DOWN, "output off: upsOutputSource=none(2), upsBatteryStatus=unknown(1), 1 alarm present")),
    (ups(source=1), Result(DOWN, "output source unknown: upsOutputSource=other(1), upsBatteryStatus=batteryNormal(2)")),
    # output powered without the inverter: degraded (see the module docstring)
    (ups(source=4), Result(DEGRADED, "on bypass (load unprotected): upsOutputSource=bypass(4), "
                                     "upsBatteryStatus=batteryNormal(2)")),
    (ups(source=6), Result(DEGRADED, "boosting low mains voltage: upsOutputSource=booster(6), "
                                     "upsBatteryStatus=batteryNormal(2)")),
    (ups(source=7), Result(DEGRADED, "reducing high mains voltage: upsOutputSource=reducer(7), "
                                     "upsBatteryStatus=batteryNormal(2)")),
    # the worst of source and battery wins
    (ups(source=2, battery=3), Result(DOWN, "output off, battery low: upsOutputSource=none(2), "
                                            "upsBatteryStatus=batteryLow(3)")),
])
def test_mapping(values: dict[str, Value], expected: Result) -> None:
    assert assess(values) == expected


@pytest.mark.parametrize(("values", "reason"), [
    (ups(source=Value("OctetString", "normal")),
     "upsOutputSource (1.3.6.1.2.1.33.1.4.1.0): wrong type OctetString 'normal', expected an INTEGER enumeration"),
    (ups(source=Value("noSuchInstance", None)), "upsOutputSource (1.3.6.1.2.1.33.1.4.1.0): noSuchInstance"),
    (ups(source=Value("noSuchObject", None)), "upsOutputSource (1.3.6.1.2.1.33.1.4.1.0): noSuchObject"),
    (ups(source=None), "upsOutputSource (1.3.6.1.2.1.33.1.4.1.0): not in the answer"),
    (ups(source=9), "upsOutputSource (1.3.6.1.2.1.33.1.4.1.0): 9 is not a defined value"),
    (ups(battery=Value("endOfMibView", None)), "upsBatteryStatus (1.3.6.1.2.1.33.1.2.1.0): endOfMibView"),
    (ups(battery=0), "upsBatteryStatus (1.3.6.1.2.1.33.1.2.1.0): 0 is not a defined value"),
    (ups(alarms=Value("OctetString", "2")),
     "upsAlarmsPresent (1.3.6.1.2.1.33.1.6.1.0): wrong type OctetString '2', expected a Gauge32"),
    (ups(alarms=None), "upsAlarmsPresent (1.3.6.1.2.1.33.1.6.1.0): not in the answer"),
    (ups(source=None, battery=None),
     "upsOutputSource (1.3.6.1.2.1.33.1.4.1.0): not in the answer; "
     "upsBatteryStatus (1.3.6.1.2.1.33.1.2.1.0): not in the answer"),
])
def test_unusable_values_are_bad_responses_naming_the_object(values: dict[str, Value], reason: str) -> None:
    assert assess(values) == Result(Outcome.BAD_RESPONSE, reason)


def test_optional_estimates_that_are_missing_or_odd_are_left_out() -> None:
    values = ups(source=5)
    values["upsEstimatedMinutesRemaining"] = Value("noSuchInstance", None)
    values["upsEstimatedChargeRemaining"] = Value("OctetString", "n/a")
    assert assess(values) == Result(DEGRADED, "on battery: upsOutputSource=battery(5), "
                                              "upsBatteryStatus=batteryNormal(2)")


def test_oids_are_rfc1628() -> None:
    assert OIDS == {
        "upsOutputSource": "1.3.6.1.2.1.33.1.4.1.0",
        "upsBatteryStatus": "1.3.6.1.2.1.33.1.2.1.0",
        "upsAlarmsPresent": "1.3.6.1.2.1.33.1.6.1.0",
        "upsEstimatedMinutesRemaining": "1.3.6.1.2.1.33.1.2.3.0",
        "upsEstimatedChargeRemaining": "1.3.6.1.2.1.33.1.2.4.0",
    }


@pytest.mark.parametrize("source", range(1, 8))
@pytest.mark.parametrize("battery", range(1, 5))
@pytest.mark.parametrize("alarms", [0, 1, 5])
def test_every_defined_combination_maps_and_only_plain_up_has_no_reason(source: int, battery: int,
                                                                        alarms: int) -> None:
    result = assess(ups(source=source, battery=battery, alarms=alarms))
    assert result.outcome in (UP, DEGRADED, DOWN)
    assert (result.reason == "") == (source == 3 and battery == 2 and alarms == 0)
    assert result.up == (source in (3, 4, 5, 6, 7) and battery != 4)

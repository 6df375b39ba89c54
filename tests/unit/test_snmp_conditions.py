"""The snmp probe's pure parts: conditions on values, the reboot rule, value lifting, error indications."""

from __future__ import annotations

from typing import Any

import pytest
from pysnmp.proto import errind, rfc1902, rfc1905

from agent.probes.snmp import assess, check_failure, reboot_reason, show_ticks
from agent.probes.snmpclient import Value, attempts, indication_result, lift
from slawatch.config.probes import SnmpCheck, SnmpProbe
from slawatch.model import Outcome, Result

IF_OPER = "1.3.6.1.2.1.2.2.1.8.2"


def check(**kw: Any) -> SnmpCheck:
    kw.setdefault("oid", IF_OPER)
    return SnmpCheck.model_validate(kw)


INT = Value("Integer", 1)
DOWN = Value("Integer", 2)
TEXT = Value("OctetString", "up")
COUNTER = Value("Counter32", 17)


@pytest.mark.parametrize(("conditions", "value", "failure"), [
    # equals
    ({"equals": 1}, INT, None),
    ({"equals": 1}, DOWN, f"{IF_OPER} = 2, expected 1"),
    ({"equals": 1, "label": "uplink ifOperStatus"}, DOWN, f"uplink ifOperStatus ({IF_OPER}) = 2, expected 1"),
    ({"equals": "1"}, INT, None),  # a quoted number matches the integer's text
    ({"equals": "up"}, TEXT, None),
    ({"equals": "down"}, TEXT, f"{IF_OPER} = 'up', expected 'down'"),
    ({"equals": "up"}, INT, f"{IF_OPER} = 1, expected 'up'"),
    # in
    ({"in": [1, 5]}, INT, None),
    ({"in": [1, 5]}, DOWN, f"{IF_OPER} = 2, expected one of 1, 5"),
    ({"in": ["up", "testing"]}, TEXT, None),
    ({"in": ["1", 7]}, INT, None),
    ({"in": []}, INT, f"{IF_OPER} = 1, expected one of "),
    # numeric comparisons
    ({"gt": 10}, COUNTER, None),
    ({"gt": 17}, COUNTER, f"{IF_OPER} = 17, expected > 17"),
    ({"ge": 17}, COUNTER, None),
    ({"ge": 17.5}, COUNTER, f"{IF_OPER} = 17, expected >= 17.5"),
    ({"lt": 18}, COUNTER, None),
    ({"lt": 17}, COUNTER, f"{IF_OPER} = 17, expected < 17"),
    ({"le": 17}, COUNTER, None),
    ({"le": 16}, COUNTER, f"{IF_OPER} = 17, expected <= 16"),
    ({"ge": 10, "le": 20}, COUNTER, None),
    ({"ge": 10, "le": 15}, COUNTER, f"{IF_OPER} = 17, expected <= 15"),
    ({"gt": -1}, Value("TimeTicks", 0), None),
    ({"equals": 1, "lt": 5}, DOWN, f"{IF_OPER} = 2, expected 1"),
    # no condition: the object only has to exist
    ({}, TEXT, None),
    ({}, Value("noSuchObject", None), f"{IF_OPER}: noSuchObject"),
    # wrong types
    ({"equals": 1}, TEXT, f"{IF_OPER}: wrong type OctetString 'up', expected an integer"),
    ({"in": [1, 2]}, TEXT, f"{IF_OPER}: wrong type OctetString 'up', expected an integer"),
    ({"gt": 0}, Value("OctetString", "5"), f"{IF_OPER}: wrong type OctetString '5', expected an integer"),
    ({"le": 0, "label": "ifDescr"}, Value("IpAddress", "127.0.0.1"),
     f"ifDescr ({IF_OPER}): wrong type IpAddress '127.0.0.1', expected an integer"),
    # missing objects
    ({"equals": 1}, Value("noSuchInstance", None), f"{IF_OPER}: noSuchInstance"),
    ({"equals": 1, "label": "vlan100"}, Value("endOfMibView", None), f"vlan100 ({IF_OPER}): endOfMibView"),
    ({"equals": 1}, None, f"{IF_OPER}: not in the answer"),
])
def test_check_failure(conditions: dict[str, Any], value: Value | None, failure: str | None) -> None:
    assert check_failure(check(**conditions), value) == failure


def test_oid_with_a_leading_dot_is_the_same_object() -> None:
    assert check_failure(check(oid="." + IF_OPER, equals=1), DOWN) == f"{IF_OPER} = 2, expected 1"


def test_assess_all_must_hold_and_every_failure_is_named() -> None:
    checks = [check(oid="1.3.6.1.2.1.2.2.1.8.1", equals=1, label="uplink0"),
              check(oid=IF_OPER, equals=1, label="uplink1"),
              check(oid="1.3.6.1.2.1.2.2.1.8.100", equals=1, label="vlan100")]
    values = {"1.3.6.1.2.1.2.2.1.8.1": INT, IF_OPER: DOWN, "1.3.6.1.2.1.2.2.1.8.100": Value("noSuchInstance", None)}
    assert assess(checks, values) == Result(
        Outcome.BAD_RESPONSE,
        f"uplink1 ({IF_OPER}) = 2, expected 1; vlan100 (1.3.6.1.2.1.2.2.1.8.100): noSuchInstance")
    assert assess(checks[:1], values) == Result(Outcome.UP)


@pytest.mark.parametrize(("previous", "ticks", "now", "reason"), [
    (None, 100, 0.0, None),  # first sight only records
    ((1000, 0.0), 1000, 10.0, None),
    ((1000, 0.0), 2000, 10.0, None),
    ((9_000_000, 0.0), 1_500, 30.0, "rebooted: sysUpTime went from 1d01h00m00s to 15s"),
    ((360_000, 0.0), 6_000, 60.0, "rebooted: sysUpTime went from 1h00m00s to 1m00s"),
    ((1000, 0.0), 999, 0.0, "rebooted: sysUpTime went from 10s to 9s"),
    # the 32-bit wrap after ~497 days is not a reboot when the elapsed time predicts it ...
    ((2**32 - 500, 0.0), 500, 10.0, None),
    ((2**32 - 100, 0.0), 29_900, 300.0, None),
    # ... but a value far from the predicted one is
    ((2**32 - 500, 0.0), 500, 3600.0, "rebooted: sysUpTime went from 497d02h27m47s to 5s"),
])
def test_reboot_reason(previous: tuple[int, float] | None, ticks: int, now: float, reason: str | None) -> None:
    assert reboot_reason(previous, ticks, now) == reason


@pytest.mark.parametrize(("ticks", "shown"), [
    (0, "0s"), (99, "0s"), (100, "1s"), (6_000, "1m00s"), (6_100, "1m01s"), (360_000, "1h00m00s"),
    (8_640_000, "1d00h00m00s"), (8_640_000 + 366_100, "1d01h01m01s"),
])
def test_show_ticks(ticks: int, shown: str) -> None:
    assert show_ticks(ticks) == shown


@pytest.mark.parametrize(("raw", "lifted"), [
    (rfc1902.Integer32(2), Value("Integer32", 2)),
    (rfc1902.Integer(-3), Value("Integer", -3)),
    (rfc1902.Counter32(17), Value("Counter32", 17)),
    (rfc1902.Counter64(2**40), Value("Counter64", 2**40)),
    (rfc1902.Gauge32(3), Value("Gauge32", 3)),
    (rfc1902.TimeTicks(4242), Value("TimeTicks", 4242)),
    (rfc1902.OctetString(b"uplink0"), Value("OctetString", "uplink0")),
    (rfc1902.OctetString(b"\xff\x00"), Value("OctetString", "0xff00")),
    (rfc1902.IpAddress("127.0.0.1"), Value("IpAddress", "127.0.0.1")),
    (rfc1902.ObjectIdentifier("1.3.6.1.4.1.8072"), Value("ObjectIdentifier", "1.3.6.1.4.1.8072")),
    (rfc1905.NoSuchObject(""), Value("noSuchObject", None)),
    (rfc1905.NoSuchInstance(""), Value("noSuchInstance", None)),
    (rfc1905.EndOfMibView(""), Value("endOfMibView", None)),
])
def test_lift(raw: Any, lifted: Value) -> None:
    assert lift(raw) == lifted


V2C = SnmpProbe.model_validate({"kind": "snmp", "target": "127.0.0.1:1161", "checks": [{"oid": "1.3.6.1"}]})
V3 = SnmpProbe.model_validate({"kind": "snmp", "target": "::1", "version": 3, "checks": [{"oid": "1.3.6.1"}],
                               "v3": {"user": "mon", "auth_key": "authkey123", "priv_key": "privkey123"}})
V3_AUTH = V3.model_copy(update={"v3": V3.v3.model_copy(update={"priv_key": None}) if V3.v3 else None})


@pytest.mark.parametrize(("settings", "indication", "expected"), [
    (V2C, errind.requestTimedOut, Result(Outcome.TIMEOUT, "no SNMP answer from 127.0.0.1:1161 within 0.9s "
                                                          "(no agent, wrong community, or filtered)")),
    (V3, errind.requestTimedOut, Result(Outcome.TIMEOUT, "no SNMP answer from [::1]:161 within 0.9s "
                                                         "(no agent, wrong priv_key or priv_protocol, or filtered)")),
    (V3_AUTH, errind.requestTimedOut, Result(Outcome.TIMEOUT, "no SNMP answer from [::1]:161 within 0.9s "
                                                              "(no agent, or filtered)")),
    (V3, errind.wrongDigest, Result(Outcome.REFUSED, "SNMPv3 authentication failed at [::1]:161 for user 'mon': "
                                                     "wrong auth_key or auth_protocol (usmStatsWrongDigests)")),
    (V3, errind.unknownUserName, Result(Outcome.REFUSED, "SNMPv3 user 'mon' is unknown to [::1]:161 "
                                                         "(usmStatsUnknownUserNames)")),
    (V3, errind.unsupportedSecurityLevel,
     Result(Outcome.REFUSED, "SNMPv3 security level not supported for user 'mon' at [::1]:161 "
                             "(check auth_key/priv_key against the agent's user)")),
    (V2C, errind.parseError, Result(Outcome.BAD_RESPONSE, "SNMP error from 127.0.0.1:1161: "
                                                          "SNMP message deserialization error")),
])
def test_indications(settings: SnmpProbe, indication: Any, expected: Result) -> None:
    assert indication_result(indication, settings, 0.9) == expected


def test_wrong_priv_key_is_refused_when_ciphers_exist() -> None:
    result = indication_result(errind.decryptionError, V3, 0.9)
    from agent.probes import snmpclient
    if snmpclient.CIPHERS:
        assert result == Result(Outcome.REFUSED, "SNMPv3 decryption failed at [::1]:161 for user 'mon': "
                                                 "wrong priv_key or priv_protocol (usmStatsDecryptionErrors)")
    else:
        assert result.outcome is Outcome.AGENT_ERROR and "cryptography" in result.reason


@pytest.mark.parametrize(("budget", "expected"), [(0.27, (0.27, 0)), (0.9, (0.9, 0)), (1.99, (1.99, 0)),
                                                  (2.0, (1.0, 1)), (4.5, (2.25, 1))])
def test_attempts(budget: float, expected: tuple[float, int]) -> None:
    assert attempts(budget) == expected

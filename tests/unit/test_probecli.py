"""`slawatch probe`: outcome -> Nagios status, command line -> validated settings, and the output lines."""

from __future__ import annotations

import argparse
import json

import pytest

from slawatch.cli.probe import InputError, build_settings, json_line, nagios_line, register, status
from slawatch.config.probes import HttpProbe, IcmpProbe, SipProbe, SnmpProbe, TcpProbe, UpsProbe
from slawatch.model import Outcome, Result


@pytest.mark.parametrize(("outcome", "label", "code"), [
    (Outcome.UP, "OK", 0),
    (Outcome.DEGRADED, "WARNING", 1),
    (Outcome.TIMEOUT, "CRITICAL", 2),
    (Outcome.REFUSED, "CRITICAL", 2),
    (Outcome.UNREACHABLE, "CRITICAL", 2),
    (Outcome.BAD_RESPONSE, "CRITICAL", 2),
    (Outcome.AGENT_ERROR, "UNKNOWN", 3),
])
def test_status(outcome: Outcome, label: str, code: int) -> None:
    assert status(outcome) == (label, code)


def test_every_outcome_has_a_status() -> None:
    assert {o for o in Outcome} == {o for o in Outcome if status(o)}


def parse(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="slawatch")
    register(parser.add_subparsers(dest="command"))
    return parser.parse_args(["probe", *argv])


def settings(*argv: str, env: dict[str, str] | None = None) -> object:
    args = parse(*argv)
    return build_settings(args.kind, args, env or {})


def test_icmp_settings() -> None:
    s = settings("icmp", "127.0.0.1", "--count", "5", "--max-rtt-ms", "20", "--timeout", "2")
    assert isinstance(s, IcmpProbe)
    assert (s.target, s.count, s.max_rtt_ms, s.timeout_s, s.max_loss_pct) == ("127.0.0.1", 5, 20.0, 2.0, 50.0)


def test_defaults_are_the_models_defaults() -> None:
    s = settings("icmp", "::1")
    assert s == IcmpProbe(kind="icmp", target="::1")


def test_tcp_settings() -> None:
    s = settings("tcp", "127.0.0.1:3260", "--send", "PING\r\n", "--expect", "^PONG", "--tls", "--insecure")
    assert isinstance(s, TcpProbe)
    assert (s.target, s.send, s.expect, s.tls, s.tls_verify) == ("127.0.0.1:3260", "PING\r\n", "^PONG", True, False)


def test_http_settings() -> None:
    s = settings("http", "http://127.0.0.1:8080/health", "--expect-status", "200, 204", "--expect-body", "ok")
    assert isinstance(s, HttpProbe)
    assert (s.expect_status, s.expect_body) == ([200, 204], "ok")


def test_sip_password_comes_from_the_environment() -> None:
    s = settings("sip", "sip:127.0.0.1:5060", "--method", "REGISTER", "--transport", "tcp", "--user", "alice",
                 "--password-env", "SIP_PW", env={"SIP_PW": "s3cret"})
    assert isinstance(s, SipProbe)
    assert (s.method, s.transport, s.username) == ("REGISTER", "tcp", "alice")
    assert s.password is not None and s.password.get_secret_value() == "s3cret"


def test_snmp_v2c_and_v3_settings() -> None:
    v2 = settings("snmp", "127.0.0.1:1161", "--oid", "1.3.6.1.2.1.33.1.4.1.0", "--equals", "3", "--community", "c")
    assert isinstance(v2, SnmpProbe)
    assert (v2.version, v2.community.get_secret_value(), v2.checks[0].equals) == ("2c", "c", 3)
    v3 = settings("snmp", "127.0.0.1", "--oid", "1.3.6.1.2.1.1.3.0", "--v3-user", "ops", "--v3-auth-key-env", "A",
                  "--v3-priv-key-env", "P", env={"A": "authkey123", "P": "privkey123"})
    assert isinstance(v3, SnmpProbe) and v3.v3 is not None
    assert (v3.version, v3.v3.user) == ("3", "ops")
    assert v3.v3.auth_key is not None and v3.v3.auth_key.get_secret_value() == "authkey123"


def test_ups_settings() -> None:
    s = settings("ups", "127.0.0.1:1161", "--community", "ups-onbattery")
    assert isinstance(s, UpsProbe) and s.community.get_secret_value() == "ups-onbattery"


@pytest.mark.parametrize(("argv", "env", "reason"), [
    (("icmp", "bad_host!"), {}, "target: bad host 'bad_host!'"),
    (("icmp", "127.0.0.1", "--count", "0"), {}, "--count: Input should be greater than or equal to 1"),
    (("icmp", "127.0.0.1", "--timeout", "-1"), {}, "--timeout: must be from 0.001 s to 1 h, got -1"),
    (("tcp", "127.0.0.1"), {}, "target: '127.0.0.1' has no port: write host:port"),
    (("tcp", "127.0.0.1:80", "--expect", "("), {},
     "--expect: bad regular expression '(': missing ), unterminated subpattern at position 0"),
    (("http", "ftp://x/"), {}, "target: bad URL 'ftp://x/': must start with http:// or https://"),
    (("sip", "sip:h", "--user", "u", "--password-env", "NOPE"), {},
     "--password-env: environment variable NOPE is not set"),
    (("sip", "sip:h", "--user", "u", "--password-env", "hunter2!"), {},
     "--password-env takes the NAME of an environment variable"),
    (("sip", "sip:h", "--user", "u"), {}, "set both username and password, or neither"),
    (("snmp", "h", "--oid", "1.3.6", "--v3-auth-key-env", "A"), {}, "--v3-auth-key-env needs --v3-user"),
    (("snmp", "h", "--oid", "1.3.6", "--v3-user", "u", "--v3-auth-key-env", "A"), {"A": "short"},
     "SNMPv3: auth_key must be at least 8 characters (RFC 3414)"),
])
def test_bad_input_is_an_input_error(argv: tuple[str, ...], env: dict[str, str], reason: str) -> None:
    with pytest.raises(InputError) as err:
        settings(*argv, env=env)
    assert str(err.value) == reason


def test_no_password_option_on_the_command_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        parse("sip", "sip:h", "--password", "hunter2")
    assert exit_.value.code == 3
    out, err = capsys.readouterr()
    assert "hunter2" not in out + err
    assert out.strip() == "UNKNOWN - slawatch probe sip: secrets come only from the environment: use --password-env VAR"


def test_abbreviated_options_are_refused() -> None:
    with pytest.raises(SystemExit):
        parse("sip", "sip:h", "--password-e", "X")


@pytest.mark.parametrize(("result", "line"), [
    (Result(Outcome.UP, "", 0.000231), "OK - icmp h: up | latency=0.000231s;;;0"),
    (Result(Outcome.DEGRADED, "33% loss (2/3 replies)", 0.5),
     "WARNING - icmp h: 33% loss (2/3 replies) | latency=0.500000s;;;0"),
    (Result(Outcome.TIMEOUT, "no echo reply from h (3 sent)"),
     "CRITICAL - icmp h: no echo reply from h (3 sent) | latency=U;;;0"),
    (Result(Outcome.BAD_RESPONSE, "got a|b\nsecond line"), "CRITICAL - icmp h: got a/b second line | latency=U;;;0"),
    (Result(Outcome.AGENT_ERROR, "boom"), "UNKNOWN - icmp h: boom | latency=U;;;0"),
])
def test_nagios_line(result: Result, line: str) -> None:
    assert nagios_line("icmp", "h", result) == line


def test_nagios_line_without_a_run_has_no_performance_data() -> None:
    assert nagios_line("tcp", "h", Result(Outcome.AGENT_ERROR, "bad"), ran=False) == "UNKNOWN - tcp h: bad"


def test_json_line() -> None:
    doc = json.loads(json_line("tcp", "127.0.0.1:1", Result(Outcome.REFUSED, "connection refused"), 1_700_000_000_123))
    assert doc == {"kind": "tcp", "target": "127.0.0.1:1", "outcome": "refused", "reason": "connection refused",
                   "latency_s": None, "started": "2023-11-14T22:13:20.123Z"}

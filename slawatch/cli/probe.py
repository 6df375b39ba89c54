"""`slawatch probe KIND TARGET`: one probe run printed as a Nagios plugin line (or JSON), exit code 0/1/2/3."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeAlias

from pydantic import TypeAdapter, ValidationError

from slawatch.cli.usage import EXIT_UNKNOWN
from slawatch.config.settings import ProbeBase, ProbeSettings
from slawatch.model import Outcome, Result

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"
Env = Mapping[str, str]

# Nagios plugin states: https://nagios-plugins.org/doc/guidelines.html#AEN78
STATUS: dict[Outcome, tuple[str, int]] = {
    Outcome.UP: ("OK", 0),
    Outcome.DEGRADED: ("WARNING", 1),
    Outcome.TIMEOUT: ("CRITICAL", 2),
    Outcome.REFUSED: ("CRITICAL", 2),
    Outcome.UNREACHABLE: ("CRITICAL", 2),
    Outcome.BAD_RESPONSE: ("CRITICAL", 2),
    Outcome.AGENT_ERROR: ("UNKNOWN", 3),
}

_SETTINGS: TypeAdapter[ProbeSettings] = TypeAdapter(ProbeSettings)
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Settings fields whose command-line option is not simply `--field-name`, for error messages.
_OPTION_OF = {
    "timeout_s": "--timeout", "username": "--user", "password": "--password-env", "packet_interval_s": "--interval",
    "tls_verify": "--insecure", "checks": "--oid", "auth_key": "--v3-auth-key-env", "priv_key": "--v3-priv-key-env",
    "auth_protocol": "--v3-auth-protocol", "priv_protocol": "--v3-priv-protocol", "user": "--v3-user",
    "max_loss_pct": "--max-loss", "v3": "SNMPv3", "target": "target",
}


class InputError(Exception):
    """The command line cannot become valid probe settings; the message says why."""


def status(outcome: Outcome) -> tuple[str, int]:
    """Nagios label and exit code of an outcome."""
    return STATUS[outcome]


# ---------------------------------------------------------------- argument -> settings


def secret_from_env(option: str, name: str | None, environ: Env) -> str | None:
    """A secret named by `--x-env VAR`, never taken from the command line itself."""
    if name is None:
        return None
    if not _ENV_NAME.fullmatch(name):  # perhaps the secret itself was typed here: do not echo it
        raise InputError(f"{option} takes the NAME of an environment variable")
    value = environ.get(name)
    if value is None:
        raise InputError(f"{option}: environment variable {name} is not set")
    return value


def secret_from_file(option: str, path: str | None) -> str | None:
    """A secret read from a file (`--x-file PATH`), its final line break dropped."""
    if path is None:
        return None
    try:
        with open(path, encoding="utf-8") as f:
            value = f.read(65537).rstrip("\r\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"{option}: cannot read {path}: {getattr(exc, 'strerror', None) or exc}") from None
    if not value or len(value) > 65536:
        raise InputError(f"{option}: {path} must hold the secret on one line")
    return value


def _community(args: argparse.Namespace, env: Env) -> str | None:
    given = [o for o, v in (("--community", args.community), ("--community-env", args.community_env),
                            ("--community-file", args.community_file)) if v is not None]
    if len(given) > 1:
        raise InputError(f"{' and '.join(given)} exclude each other")
    if args.community is not None:
        return str(args.community)
    return secret_from_env("--community-env", args.community_env, env) or secret_from_file(
        "--community-file", args.community_file)


def _status_list(text: str | None) -> list[str] | None:
    return None if text is None else [part.strip() for part in text.split(",") if part.strip()]


def _sip(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"transport": args.transport, "method": args.method, "username": args.user,
            "password": secret_from_env("--password-env", args.password_env, env),
            "tls_verify": False if args.insecure else None}


def _icmp(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"count": args.count, "packet_interval_s": args.interval, "max_loss_pct": args.max_loss,
            "max_rtt_ms": args.max_rtt_ms}


def _tcp(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"send": args.send, "expect": args.expect, "tls": args.tls or None,
            "tls_verify": False if args.insecure else None}


def _http(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"method": args.method, "expect_status": _status_list(args.expect_status),
            "expect_body": args.expect_body, "username": args.user,
            "password": secret_from_env("--password-env", args.password_env, env),
            "tls_verify": False if args.insecure else None}


def _haproxy(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"backend": args.backend, "min_up": args.min_up, "username": args.user,
            "password": secret_from_env("--password-env", args.password_env, env)}


def _snmp_access(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    if args.v3_user is None:
        for option in ("v3_auth_key_env", "v3_priv_key_env", "v3_auth_protocol", "v3_priv_protocol"):
            if getattr(args, option) is not None:
                raise InputError(f"--{option.replace('_', '-')} needs --v3-user")
        return {"version": args.snmp_version, "community": _community(args, env)}
    for option in ("community", "community_env", "community_file"):
        if getattr(args, option) is not None:
            raise InputError(f"--{option.replace('_', '-')} and --v3-user exclude each other")
    v3 = {"user": args.v3_user, "auth_protocol": args.v3_auth_protocol, "priv_protocol": args.v3_priv_protocol,
          "auth_key": secret_from_env("--v3-auth-key-env", args.v3_auth_key_env, env),
          "priv_key": secret_from_env("--v3-priv-key-env", args.v3_priv_key_env, env)}
    return {"version": "3", "v3": {k: v for k, v in v3.items() if v is not None}}


def _snmp_value(text: str | None) -> str | int | None:
    # As in a YAML config, digits are a number: `--equals 2` matches an INTEGER 2.
    return int(text) if text is not None and re.fullmatch(r"-?\d+", text) else text


def _snmp(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    check = {"oid": args.oid, "equals": _snmp_value(args.equals)}
    return {**_snmp_access(args, env), "checks": [{k: v for k, v in check.items() if v is not None}]}


def _ups(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return _snmp_access(args, env)


# ---------------------------------------------------------------- the command line per kind


def _tls_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")


class _SecretOnCommandLine(argparse.Action):
    """Refuse a secret typed on the command line (visible in `ps` and shell history), without echoing it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error(f"secrets come only from the environment: use {option_string}-env VAR")


def _refuse(p: argparse.ArgumentParser, *options: str) -> None:
    for option in options:
        p.add_argument(option, action=_SecretOnCommandLine, help=argparse.SUPPRESS)


def _credentials(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", metavar="U")
    p.add_argument("--password-env", metavar="VAR", help="read the password from environment variable VAR")
    _refuse(p, "--password")


def _sip_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transport", choices=("udp", "tcp", "tls"))
    p.add_argument("--method", choices=("OPTIONS", "REGISTER"))
    _credentials(p)
    _tls_options(p)


def _icmp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, metavar="N", help="echo requests to send (default 3)")
    p.add_argument("--interval", type=float, metavar="S", help="seconds between requests (default 0.2)")
    p.add_argument("--max-loss", type=float, metavar="PCT", help="CRITICAL above this loss %% (default 50)")
    p.add_argument("--max-rtt-ms", type=float, metavar="MS", help="WARNING above this average round trip")


def _tcp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--send", metavar="S", help="text to send once connected (use $'...\\r\\n' for escapes)")
    p.add_argument("--expect", metavar="REGEX", help="what the answer must match")
    p.add_argument("--tls", action="store_true", help="TLS handshake after connecting")
    _tls_options(p)


def _http_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=("GET", "HEAD", "POST", "PUT", "OPTIONS"))
    p.add_argument("--expect-status", metavar="CODES", help="comma-separated, e.g. 200,204 (default any 2xx)")
    p.add_argument("--expect-body", metavar="REGEX")
    _credentials(p)
    _tls_options(p)


def _haproxy_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", required=True, metavar="NAME")
    p.add_argument("--min-up", type=int, metavar="N", help="servers that must be UP (default 1)")
    _credentials(p)


def _snmp_access_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--community-env", metavar="VAR", help="read the v1/v2c community from environment variable VAR")
    p.add_argument("--community-file", metavar="PATH", help="read the v1/v2c community from the file PATH")
    p.add_argument("--community", metavar="C", help="v1/v2c community (default public); visible to every user in "
                                                    "`ps`: prefer --community-env or --community-file")
    p.add_argument("--snmp-version", choices=("1", "2c"), help="without --v3-user (default 2c)")
    p.add_argument("--v3-user", metavar="U", help="SNMPv3 user (implies version 3)")
    p.add_argument("--v3-auth-protocol", choices=("MD5", "SHA", "SHA224", "SHA256", "SHA384", "SHA512"))
    p.add_argument("--v3-auth-key-env", metavar="VAR", help="read the auth key from environment variable VAR")
    p.add_argument("--v3-priv-protocol", choices=("DES", "3DES", "AES", "AES192", "AES256"))
    p.add_argument("--v3-priv-key-env", metavar="VAR", help="read the privacy key from environment variable VAR")
    _refuse(p, "--v3-auth-key", "--v3-priv-key")


def _snmp_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--oid", required=True, metavar="OID")
    p.add_argument("--equals", metavar="V", help="the value the OID must have")
    _snmp_access_args(p)


@dataclass(frozen=True, slots=True)
class Kind:
    """One `slawatch probe KIND` subcommand: its help, its target, its options and how they become settings."""

    help: str
    target: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    settings: Callable[[argparse.Namespace, Env], dict[str, Any]]


KINDS: dict[str, Kind] = {
    "sip": Kind("SIP OPTIONS or REGISTER", "sip:HOST[:PORT]", _sip_args, _sip),
    "icmp": Kind("ICMP echo (ping)", "HOST", _icmp_args, _icmp),
    "tcp": Kind("TCP connect, optional TLS and send/expect", "HOST:PORT", _tcp_args, _tcp),
    "http": Kind("HTTP(S) request", "URL", _http_args, _http),
    "haproxy": Kind("HAProxy backend from the stats CSV", "URL", _haproxy_args, _haproxy),
    "snmp": Kind("SNMP GET of one OID", "HOST[:PORT]", _snmp_args, _snmp),
    "ups": Kind("UPS-MIB status over SNMP", "HOST[:PORT]", _snmp_access_args, _ups),
}


def _field_option(loc: tuple[int | str, ...]) -> str:
    names = [str(part) for part in loc if isinstance(part, str)]
    if not names:
        return "settings"
    field = names[-1]
    return _OPTION_OF.get(field, "--" + field.replace("_", "-"))


def validation_reason(exc: ValidationError) -> str:
    """'--count: Input should be less than or equal to 100', for every error, without pydantic's prefixes."""
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])[1:]  # [0] is the union's tag (the kind)
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        parts.append(f"{_field_option(loc)}: {msg}" if loc else msg)
    return "; ".join(parts)


def build_settings(kind: str, args: argparse.Namespace, environ: Env) -> ProbeBase:
    """Validate the command line through the same pydantic model as the config file."""
    raw = {"kind": kind, "target": args.target, "timeout_s": args.timeout, **KINDS[kind].settings(args, environ)}
    try:
        settings: ProbeBase = _SETTINGS.validate_python({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        raise InputError(validation_reason(exc)) from None
    return settings


# ---------------------------------------------------------------- output


def _one_line(text: str) -> str:
    # '|' starts the performance data of a plugin line, and Nagios keeps only the first line.
    return " ".join(text.replace("|", "/").split())


def nagios_line(kind: str, target: str, result: Result, *, ran: bool = True) -> str:
    """`OK - icmp 10.0.0.1: up | latency=0.000231s;;;0`; latency U when it could not be measured, and no
    performance data at all when the probe never ran (bad input)."""
    label, _ = status(result.outcome)
    line = f"{label} - {kind} {_one_line(target)}: {_one_line(result.reason) or str(result.outcome)}"
    if not ran:
        return line
    latency = "U" if result.latency_s is None else f"{result.latency_s:.6f}s"
    return f"{line} | latency={latency};;;0"


def json_line(kind: str, target: str, result: Result, started_ms: int | None) -> str:
    started = None if started_ms is None else (
        datetime.fromtimestamp(started_ms / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"))
    return json.dumps({"kind": kind, "target": target, "outcome": str(result.outcome), "reason": result.reason,
                       "latency_s": result.latency_s, "started": started})


def _run(args: argparse.Namespace) -> int:
    kind: str = args.kind
    target: str = args.target
    started_ms: int | None = None
    try:
        settings = build_settings(kind, args, os.environ)
    except InputError as exc:
        result = Result(Outcome.AGENT_ERROR, str(exc))
    else:
        from agent.probes import run_probe  # the probe libraries load only when a probe runs

        run = asyncio.run(run_probe(settings))
        started_ms, result = run.started_ms, run.result
    if args.json:
        print(json_line(kind, target, result, started_ms))
    else:
        print(nagios_line(kind, target, result, ran=started_ms is not None))
    return status(result.outcome)[1]


class _PluginParser(argparse.ArgumentParser):
    """A usage error is UNKNOWN (exit 3) for a monitoring plugin, not argparse's exit 2."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"UNKNOWN - {self.prog}: {message}")
        sys.exit(EXIT_UNKNOWN)


def register(sub: SubParsers) -> None:
    """Add `probe KIND TARGET [options]`, one subcommand per probe kind."""
    probe = sub.add_parser("probe", help="run one probe now and print a Nagios plugin line",
                           description="Run one probe and print `STATUS - kind target: reason | perfdata` "
                                       "(exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), or one JSON object.")
    kinds = probe.add_subparsers(dest="kind", metavar="KIND", required=True, parser_class=_PluginParser)
    for name, kind in KINDS.items():
        p = kinds.add_parser(name, help=kind.help, description=f"{kind.help}.", allow_abbrev=False)
        p.add_argument("target", metavar=kind.target)
        kind.add_arguments(p)
        p.add_argument("--timeout", type=float, default=5.0, metavar="S", help="deadline in seconds (default 5)")
        p.add_argument("--json", action="store_true", help="print one JSON object instead of the plugin line")
        p.set_defaults(func=_run)

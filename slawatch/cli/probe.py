"""`slawatch probe KIND TARGET`: one probe run printed as a Nagios plugin line (or JSON), exit code 0/1/2/3.

The kinds and their options come from the probe registry: each kind's module is imported only when its subcommand
is parsed or its help shown, so a command line loads no probe library it does not run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, NoReturn, TypeAlias

from pydantic import TypeAdapter, ValidationError

from agent.probes import Kind, kind, run_probe
from agent.probes.options import Env, InputError
from slawatch.cli.usage import EXIT_UNKNOWN
from slawatch.config.probes import PROBE_KINDS, PROBE_SETTINGS, ProbeBase, ProbeSettings
from slawatch.model import Outcome, Result

SubParsers: TypeAlias = "argparse._SubParsersAction[argparse.ArgumentParser]"

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
# Settings fields whose command-line option is not simply `--field-name`, for error messages; a kind adds its own.
_OPTION_OF = {"timeout_s": "--timeout", "username": "--user", "password": "--password-env",
              "tls_verify": "--insecure", "target": "target"}


def status(outcome: Outcome) -> tuple[str, int]:
    """Nagios label and exit code of an outcome."""
    return STATUS[outcome]


# ---------------------------------------------------------------- argument -> settings


def _field_option(loc: tuple[int | str, ...], options: dict[str, str]) -> str:
    names = [str(part) for part in loc if isinstance(part, str)]
    if not names:
        return "settings"
    field = names[-1]
    return options.get(field, "--" + field.replace("_", "-"))


def validation_reason(exc: ValidationError, probe_kind: Kind | None = None) -> str:
    """'--count: Input should be less than or equal to 100', for every error, without pydantic's prefixes."""
    options = {**_OPTION_OF, **(probe_kind.options if probe_kind else {})}
    parts = []
    for err in exc.errors(include_url=False, include_input=False):
        loc = tuple(err["loc"])[1:]  # [0] is the union's tag (the kind)
        msg = str(err["msg"]).removeprefix("Value error, ").removeprefix("Assertion failed, ")
        parts.append(f"{_field_option(loc, options)}: {msg}" if loc else msg)
    return "; ".join(parts)


def build_settings(name: str, args: argparse.Namespace, environ: Env) -> ProbeBase:
    """Validate the command line through the same pydantic model as the config file."""
    probe_kind = kind(name)
    raw = {"kind": name, "target": args.target, "timeout_s": args.timeout,
           **probe_kind.settings_from_args(args, environ)}
    try:
        settings: ProbeBase = _SETTINGS.validate_python({k: v for k, v in raw.items() if v is not None})
    except ValidationError as exc:
        raise InputError(validation_reason(exc, probe_kind)) from None
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
        run = asyncio.run(run_probe(settings))
        started_ms, result = run.started_ms, run.result
    if args.json:
        print(json_line(kind, target, result, started_ms))
    else:
        print(nagios_line(kind, target, result, ran=started_ms is not None))
    return status(result.outcome)[1]


class _KindParser(argparse.ArgumentParser):
    """The parser of one `slawatch probe KIND`: the kind's options are added when it is first used (the kind's
    module imported then), and a usage error is UNKNOWN (exit 3) for a monitoring plugin, not argparse's exit 2."""

    def __init__(self, *args: Any, kind_name: str, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.kind_name = kind_name
        self._complete = False

    def complete(self) -> None:
        if self._complete:
            return
        self._complete = True
        probe_kind = kind(self.kind_name)
        self.add_argument("target", metavar=probe_kind.target)
        probe_kind.add_arguments(self)
        self.add_argument("--timeout", type=float, default=5.0, metavar="S", help="deadline in seconds (default 5)")
        self.add_argument("--json", action="store_true", help="print one JSON object instead of the plugin line")

    def parse_known_args(self, args: Sequence[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None) -> tuple[argparse.Namespace, list[str]]:
        self.complete()
        return super().parse_known_args(args, namespace)

    def format_usage(self) -> str:
        self.complete()
        return super().format_usage()

    def format_help(self) -> str:
        self.complete()
        return super().format_help()

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        print(f"UNKNOWN - {self.prog}: {message}")
        sys.exit(EXIT_UNKNOWN)


def kind_help(settings: type[ProbeBase]) -> str:
    """A kind's one-line help: the first line of its settings class's docstring."""
    return (settings.__doc__ or "").strip().splitlines()[0].rstrip(".")


def register(sub: SubParsers) -> None:
    """Add `probe KIND TARGET [options]`, one subcommand per probe kind."""
    probe = sub.add_parser("probe", help="run one probe now and print a Nagios plugin line",
                           description="Run one probe and print `STATUS - kind target: reason | perfdata` "
                                       "(exit 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN), or one JSON object.")
    kinds = probe.add_subparsers(dest="kind", metavar="KIND", required=True, parser_class=_KindParser)
    for name, settings in zip(PROBE_KINDS, PROBE_SETTINGS, strict=True):
        help_text = kind_help(settings)
        p = kinds.add_parser(name, help=help_text, description=f"{help_text}.", allow_abbrev=False, kind_name=name)
        p.set_defaults(func=_run)

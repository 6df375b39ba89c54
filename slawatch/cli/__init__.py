"""The `slawatch` command line: the composition root that wires the agent and the reporter."""

from __future__ import annotations

import argparse
import contextlib
import importlib
import os
import sys
from collections.abc import Callable, Iterable, Sequence

from slawatch import __version__
from slawatch.cli.usage import EXIT_FAILURE, EXIT_OK, EXIT_UNKNOWN, EXIT_USAGE

Command = Callable[[argparse.Namespace], int]

# Each command's module adds its subcommand with `register(sub)`. A module is imported only when its command
# runs (or for the full help), a lazy import for start-up time: `slawatch probe`, run by Nagios thousands of
# times a day, loads neither the reporter nor the store libraries.
COMMANDS: dict[str, str] = {
    "check-config": "slawatch.cli.check_config",
    "agent": "slawatch.cli.agent",
    "agents": "slawatch.cli.agents",
    "server": "slawatch.cli.server",
    "demo": "slawatch.cli.demo",
    "probe": "slawatch.cli.probe",
    "report": "slawatch.cli.report",
    "maintenance": "slawatch.cli.maintenance",
    "incident": "slawatch.cli.incident",
    "user": "slawatch.cli.user",
}


def build_parser(commands: Iterable[str] = COMMANDS) -> argparse.ArgumentParser:
    """The parser with the given commands (default: all of them)."""
    parser = argparse.ArgumentParser(
        prog="slawatch",
        description="Uptime monitoring agent and contract-grade SLA availability reporter.",
    )
    parser.add_argument("--version", action="version", version=f"slawatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in commands:
        importlib.import_module(COMMANDS[name]).register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    argv_given = argv
    argv = list(sys.argv[1:] if argv is None else argv)
    # Only the command named is imported; anything else (no command, --help, a typo) gets every command.
    parser = build_parser(argv[:1] if argv[:1] and argv[0] in COMMANDS else COMMANDS)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # `slawatch probe` is a Nagios plugin: a usage error there is UNKNOWN (3), not argparse's 2.
        if exc.code == EXIT_USAGE and argv[:1] == ["probe"]:
            raise SystemExit(EXIT_UNKNOWN) from None
        raise
    func: Command | None = getattr(args, "func", None)
    try:
        if func is None:
            parser.print_help()
            code = EXIT_OK
        else:
            code = func(args)
        sys.stdout.flush()
    except BrokenPipeError:
        # The reader went away (`slawatch check-config FILE | head -1`): not an error worth a traceback.
        # Point stdout at /dev/null so that the flush at exit does not fail again (Python docs, "SIGPIPE").
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_FAILURE
    if argv_given is None and getattr(args, "exit_at_once", False):
        # A one-shot command run as the process (not called in-process): its output is out, so the process ends
        # here instead of the interpreter freeing what the command loaded one object at a time (~0.25 s for a
        # config of 100 000 components) — nothing is left to write or close.
        with contextlib.suppress(OSError):  # a closed stderr: nothing more could be said anyway
            sys.stderr.flush()
        os._exit(code)
    return code


if __name__ == "__main__":
    sys.exit(main())

"""The `slawatch` command line: the composition root that wires the agent and the reporter."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Callable, Sequence

from reporter import maintenance
from slawatch import __version__
from slawatch.cli import agent as agentcli
from slawatch.cli import probe as probecli
from slawatch.cli import report as reportcli
from slawatch.config.loader import ConfigError, Loaded, load

EXIT_OK = 0
EXIT_CONFIG = 2

Command = Callable[[argparse.Namespace], int]


def _check_config(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.file)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{args.file}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return EXIT_CONFIG
    print(summary(loaded))
    return EXIT_OK


def summary(loaded: Loaded) -> str:
    config, contract = loaded.config, loaded.contract
    by_class_tier = Counter((c.klass, config.tier_of(c) or "?") for c in config.components)
    kinds = Counter(p.kind for c in config.components for p in c.probes)
    lines = [f"{loaded.path}: OK — agent {config.agent.id}, contract {contract.name} {contract.version}"]
    lines.append(f"components: {len(config.components)}")
    for (klass, tier), n in sorted(by_class_tier.items()):
        target = contract.target_pct(klass, tier)
        lines.append(f"  {klass:<14} {tier:<9} {n:>5}   target {target:g} %")
    lines.append("probes: " + (", ".join(f"{k} {n}" for k, n in sorted(kinds.items())) or "none"))
    storage = config.storage
    where = []
    if storage.sqlite is not None:
        where.append(f"sqlite {storage.sqlite.path}")
    if storage.influxdb is not None:
        db = storage.influxdb
        name = f"db={db.database}" if db.api == "v1" else f"bucket={db.bucket}"
        where.append(f"influxdb {db.api} {db.url} {name}")
    spool = storage.spool
    lines.append(f"storage: {', '.join(where)}; spool {spool.path} (max {spool.max_bytes.human_readable()})")
    lines.append(f"customers: {', '.join(f'{c.name} ({c.tier})' for c in config.customers) or 'none'}")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="slawatch",
        description="Uptime monitoring agent and contract-grade SLA availability reporter.",
    )
    parser.add_argument("--version", action="version", version=f"slawatch {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    check = sub.add_parser("check-config", help="validate a config file and the contract it names",
                           description="Validate a config file and its contract. Exit 0 with a summary, "
                                       "or 2 with every error and its location.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=_check_config)
    for register in _EXTENSIONS:
        register(sub)
    return parser


# Each command group adds its subcommands to the parser.
_EXTENSIONS: list[Callable[[argparse._SubParsersAction[argparse.ArgumentParser]], None]] = [
    agentcli.register,
    probecli.register,
    reportcli.register,
    maintenance.register,
]


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:
        # `slawatch probe` is a Nagios plugin: a usage error there is UNKNOWN (3), not argparse's 2.
        if exc.code == 2 and argv[:1] == ["probe"]:
            raise SystemExit(3) from None
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
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main())

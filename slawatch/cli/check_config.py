"""`slawatch check-config FILE`: validate a config file and its contract, print a summary or every located error."""

from __future__ import annotations

import argparse
import asyncio
import importlib.util
import sys
from collections import Counter

from slawatch.cli.usage import EXIT_OK, EXIT_USAGE, loop_problem
from slawatch.config.loader import ConfigError, Loaded, load
from slawatch.store.pgconnect import PasswordError, password, shown_dsn


def _check_config(args: argparse.Namespace) -> int:
    try:
        loaded = load(args.file, for_good=True)  # read once, then summed up: see load
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        count = len(exc.problems)
        print(f"{args.file}: {count} error{'s' if count != 1 else ''}", file=sys.stderr)
        return EXIT_USAGE
    problems = storage_problems(loaded) + notify_problems(loaded)
    why = loop_problem(loaded.config.agent.loop)
    if why is not None:
        problems.append(("agent.loop", why))
    if problems:
        for where, why in problems:
            print(f"{loaded.path}: {where}: {why}", file=sys.stderr)
        print(f"{args.file}: {len(problems)} error{'s' if len(problems) != 1 else ''}", file=sys.stderr)
        return EXIT_USAGE
    print(summary(loaded))
    # Kept until the process ends: freeing 100 000 components object by object takes longer than summing them up.
    args.loaded = loaded
    return EXIT_OK


def storage_problems(loaded: Loaded) -> list[tuple[str, str]]:
    """What keeps the configured PostgreSQL store from being opened before any connection: the asyncpg library
    missing, a password source that cannot be read (the message names the source, never the password)."""
    settings = loaded.config.storage.postgres
    if settings is None:
        return []
    problems = []
    if importlib.util.find_spec("asyncpg") is None:
        problems.append(("storage.postgres", f"the PostgreSQL store ({shown_dsn(settings)}) needs the asyncpg "
                                             f"library: pip install 'asyncpg>=0.29,<1'"))
    try:
        password(settings)
    except PasswordError as exc:
        where = "storage.postgres.password_env" if settings.password_env else "storage.postgres.password_file"
        problems.append((where, str(exc)))
    return problems


def notify_problems(loaded: Loaded) -> list[tuple[str, str]]:
    """The notification recipients that cannot be reached at all (checked by the channels that would send)."""
    notify = loaded.config.notify
    if not (notify.noc or notify.escalation.to or any(c.notify for c in loaded.config.customers)):
        return []
    # lazy: the channels load Apprise and the report's renderer (~0.5 s), which only a config with recipients needs
    from slawatch.cli.desk import IncidentDesk, recipient_problems

    channels = IncidentDesk.channels_of(loaded)
    try:
        return recipient_problems(loaded, channels)
    finally:
        asyncio.run(channels.close())


SHOWN_CUSTOMERS = 20


def summary(loaded: Loaded) -> str:
    config, contract = loaded.config, loaded.contract
    tier_of = {c.name: c.tier for c in reversed(config.customers)}  # config.tier_of, without a call per component
    by_class_tier = Counter((c.klass, c.tier or tier_of.get(c.customer or "") or "?") for c in config.components)
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
    if storage.postgres is not None:
        where.append(f"postgres {shown_dsn(storage.postgres)}")
    if storage.samples is not None:
        where.append(f"samples to {', '.join(storage.samples) or 'none'}")
    spool = storage.spool
    lines.append(f"storage: {', '.join(where)}; spool {spool.path} (max {spool.max_bytes.human_readable()})")
    shown = [f"{c.name} ({c.tier})" for c in config.customers[:SHOWN_CUSTOMERS]]
    if len(config.customers) > SHOWN_CUSTOMERS:  # a provider's 1 000 customers would be one line of 30 000 characters
        tiers = Counter(c.tier for c in config.customers)
        shown.append(f"… {len(config.customers) - SHOWN_CUSTOMERS} more; {len(config.customers)} in all: "
                     + ", ".join(f"{tier} {n}" for tier, n in sorted(tiers.items())))
    lines.append(f"customers: {', '.join(shown) or 'none'}")
    notify = config.notify
    records = f"postgres {shown_dsn(storage.postgres)}" if storage.postgres is not None else storage.records_path
    contacts = sum(len(c.notify) for c in config.customers)
    desk = (f"incidents: raised and notified to {len(notify.noc)} NOC recipient(s), {contacts} customer "
            f"contact(s), {len(notify.escalation.to)} escalation recipient(s); records in "
            f"{records}" if config.desk.enabled else "incidents: off (desk.enabled: false)")
    lines.append(desk)
    return "\n".join(lines)


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser("check-config", help="validate a config file and the contract it names",
                           description="Validate a config file and its contract. Exit 0 with a summary, "
                                       "or 2 with every error and its location.")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=_check_config, exit_at_once=True)

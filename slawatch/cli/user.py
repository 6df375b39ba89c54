"""`slawatch user add|passwd|remove|list`: the console's accounts, kept in the store with Argon2 password hashes."""

from __future__ import annotations

import argparse
import getpass
import os
import sys
import time
from pathlib import Path

from console.passwords import PasswordError, hash_password
from slawatch.cli.usage import EXIT_OK, UsageError, guarded, load_config, run_with
from slawatch.config.loader import Loaded
from slawatch.model import ROLES, Role, User
from slawatch.store import SourceError, UserStore, open_user_store

NAME_MAX = 64


def _check_name(name: str) -> str:
    if not name or len(name) > NAME_MAX or not name.isprintable() or name != name.strip():
        raise UsageError(f"a user name is 1 to {NAME_MAX} printable characters, without spaces at either end")
    return name


def _customers(loaded: Loaded, role: Role, given: list[str] | None) -> tuple[str, ...]:
    given = given or []
    if role != "customer":
        if given:
            raise UsageError(f"--customer is for customer accounts: an {role} sees every customer")
        return ()
    if not given:
        raise UsageError("a customer account needs at least one --customer NAME")
    known = {c.name for c in loaded.config.customers}
    unknown = [c for c in given if c not in known]
    if unknown:
        listed = ", ".join(sorted(known)) or "none"
        raise UsageError(f"unknown customer(s) {', '.join(unknown)}: {loaded.path} has {listed}")
    return tuple(dict.fromkeys(given))


def _password(args: argparse.Namespace) -> str:
    """From --password-file, --password-env, or asked twice on the terminal: never from the command line."""
    if args.password_file is not None:
        try:
            text = Path(args.password_file).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"cannot read --password-file {args.password_file}: {exc}") from None
        password = text.rstrip("\r\n")
    elif args.password_env is not None:
        value = os.environ.get(args.password_env)
        if value is None:
            raise UsageError(f"--password-env {args.password_env}: no such environment variable")
        password = value
    else:
        if not sys.stdin.isatty():
            raise UsageError("no terminal to ask the password on: use --password-file FILE or --password-env VAR")
        password = getpass.getpass("Password: ")
        if getpass.getpass("Again: ") != password:
            raise UsageError("the two passwords differ")
    try:
        return hash_password(password)
    except PasswordError as exc:
        raise UsageError(str(exc)) from None


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _add(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    name = _check_name(args.name)
    role: Role = args.role
    customers = _customers(loaded, role, args.customer)
    now = _now_ms()
    user = User(name, role, _password(args), customers, now, now)
    if not run_with(lambda: open_user_store(loaded.config.storage), lambda users: users.add(user)):
        raise UsageError(f"user {name!r} exists already (change it with `slawatch user passwd`, or remove it first)")
    print(f"added {role} {name}" + (f" (customers: {', '.join(customers)})" if customers else ""))
    return EXIT_OK


def _passwd(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    name = _check_name(args.name)

    async def work(users: UserStore) -> bool:
        old = await users.get(name)
        if old is None:
            raise UsageError(f"no user {name!r}")
        role: Role = args.role or old.role
        customers = _customers(loaded, role, args.customer) if (args.role or args.customer) else old.customers
        return await users.replace(User(name, role, password_hash, customers, old.created_ms, _now_ms()))

    password_hash = _password(args)
    if not run_with(lambda: open_user_store(loaded.config.storage), work):
        raise UsageError(f"no user {name!r}")
    print(f"changed {name}: its sessions end")
    return EXIT_OK


def _remove(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    name = _check_name(args.name)
    if not run_with(lambda: open_user_store(loaded.config.storage), lambda users: users.remove(name)):
        raise UsageError(f"no user {name!r}")
    print(f"removed {name}")
    return EXIT_OK


def _list(args: argparse.Namespace) -> int:
    loaded = load_config(args.config)
    found = run_with(lambda: open_user_store(loaded.config.storage), lambda users: users.users())
    if not found:
        print(f"no console user yet: run `slawatch user add NAME --role admin --config {loaded.path}`")
        return EXIT_OK
    width = max(len(u.name) for u in found)
    for u in found:
        print(f"{u.name:<{width}}  {u.role:<8}  {', '.join(u.customers)}".rstrip())
    return EXIT_OK


def _password_options(parser: argparse.ArgumentParser) -> None:
    given = parser.add_mutually_exclusive_group()
    given.add_argument("--password-file", metavar="FILE", help="read the password from the first line of FILE")
    given.add_argument("--password-env", metavar="VAR", help="read the password from environment variable VAR")


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    user = sub.add_parser("user", help="console accounts: add, passwd, remove, list",
                          description="The console's local accounts. The password is asked on the terminal (or read "
                                      "from --password-file / --password-env), never given on the command line.")
    actions = user.add_subparsers(dest="action", metavar="ACTION", required=True)

    add = actions.add_parser("add", help="add an account")
    add.add_argument("name", metavar="NAME")
    add.add_argument("--role", required=True, choices=ROLES,
                     help="admin or operator: everything; customer: only the customers given with --customer")
    add.add_argument("--customer", action="append", metavar="NAME", help="a customer the account sees (repeatable)")
    add.add_argument("--config", "-c", required=True, metavar="FILE")
    _password_options(add)
    add.set_defaults(func=guarded("user", _add, {SourceError: ""}))

    passwd = actions.add_parser("passwd", help="set a new password (and optionally a new role or customers)")
    passwd.add_argument("name", metavar="NAME")
    passwd.add_argument("--role", choices=ROLES)
    passwd.add_argument("--customer", action="append", metavar="NAME")
    passwd.add_argument("--config", "-c", required=True, metavar="FILE")
    _password_options(passwd)
    passwd.set_defaults(func=guarded("user", _passwd, {SourceError: ""}))

    rm = actions.add_parser("remove", help="remove an account (its sessions end)")
    rm.add_argument("name", metavar="NAME")
    rm.add_argument("--config", "-c", required=True, metavar="FILE")
    rm.set_defaults(func=guarded("user", _remove, {SourceError: ""}))

    lst = actions.add_parser("list", help="list the accounts (never their passwords)")
    lst.add_argument("--config", "-c", required=True, metavar="FILE")
    lst.set_defaults(func=guarded("user", _list, {SourceError: ""}))

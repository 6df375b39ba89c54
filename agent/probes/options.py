"""The one-shot command line's options that several probe kinds share: credentials, TLS, SNMP access, and secrets
read from the environment or a file, never from the command line itself."""

from __future__ import annotations

import argparse
import re
from collections.abc import Mapping
from typing import Any

Env = Mapping[str, str]

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class InputError(Exception):
    """The command line cannot become valid probe settings; the message says why."""


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


class _SecretOnCommandLine(argparse.Action):
    """Refuse a secret typed on the command line (visible in `ps` and shell history), without echoing it."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: object,
                 option_string: str | None = None) -> None:
        parser.error(f"secrets come only from the environment: use {option_string}-env VAR")


def refuse(p: argparse.ArgumentParser, *options: str) -> None:
    for option in options:
        p.add_argument(option, action=_SecretOnCommandLine, help=argparse.SUPPRESS)


def tls_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--insecure", action="store_true", help="do not verify the TLS certificate")


def tls_verify(args: argparse.Namespace) -> bool | None:
    return False if args.insecure else None


def credentials(p: argparse.ArgumentParser) -> None:
    p.add_argument("--user", metavar="U")
    p.add_argument("--password-env", metavar="VAR", help="read the password from environment variable VAR")
    refuse(p, "--password")


def credential_settings(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"username": args.user, "password": secret_from_env("--password-env", args.password_env, env)}


# ---------------------------------------------------------------- SNMP access (the snmp and ups kinds)


SNMP_OPTIONS = {"auth_key": "--v3-auth-key-env", "priv_key": "--v3-priv-key-env", "auth_protocol": "--v3-auth-protocol",
                "priv_protocol": "--v3-priv-protocol", "user": "--v3-user", "v3": "SNMPv3"}
"""The option behind each SNMP access setting, for error messages."""


def snmp_access(p: argparse.ArgumentParser) -> None:
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
    refuse(p, "--v3-auth-key", "--v3-priv-key")


def _community(args: argparse.Namespace, env: Env) -> str | None:
    given = [o for o, v in (("--community", args.community), ("--community-env", args.community_env),
                            ("--community-file", args.community_file)) if v is not None]
    if len(given) > 1:
        raise InputError(f"{' and '.join(given)} exclude each other")
    if args.community is not None:
        return str(args.community)
    return secret_from_env("--community-env", args.community_env, env) or secret_from_file(
        "--community-file", args.community_file)


def snmp_access_settings(args: argparse.Namespace, env: Env) -> dict[str, Any]:
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

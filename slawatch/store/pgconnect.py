"""How to reach the PostgreSQL store: the DSN as settings give it, the password from the environment or a file,
and the DSN as it may be shown (every PostgreSQL piece, stores and leader lock, connects through here)."""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import urlsplit

from slawatch.config.settings import PostgresSettings

MAX_PASSWORD_BYTES = 4096


class PasswordError(Exception):
    """The password source named in the settings cannot be read; the message never holds the password."""


def password(settings: PostgresSettings) -> str | None:
    """The password from `password_env` or `password_file` (its first line), or None (trust, peer, .pgpass)."""
    if settings.password_env is not None:
        value = os.environ.get(settings.password_env)
        if value is None:
            raise PasswordError(f"the environment variable {settings.password_env} (postgres.password_env) is not set")
        return value
    if settings.password_file is not None:
        try:
            with open(settings.password_file, "rb") as f:
                raw = f.read(MAX_PASSWORD_BYTES + 1)
        except OSError as exc:
            raise PasswordError(f"cannot read postgres.password_file {settings.password_file}: "
                                f"{exc.strerror or exc}") from None
        if len(raw) > MAX_PASSWORD_BYTES:
            raise PasswordError(f"postgres.password_file {settings.password_file} is longer than "
                                f"{MAX_PASSWORD_BYTES} bytes: not a password file")
        return raw.decode("utf-8", "replace").splitlines()[0] if raw.strip() else ""
    return None


def connect_kwargs(settings: PostgresSettings) -> dict[str, Any]:
    """Keyword arguments for asyncpg.connect / create_pool: the DSN, the password and the timeouts."""
    kwargs: dict[str, Any] = {"dsn": settings.dsn, "timeout": settings.timeout_s,
                              "command_timeout": settings.statement_timeout_s}
    secret = password(settings)
    if secret is not None:
        kwargs["password"] = secret
    return kwargs


def shown_dsn(settings: PostgresSettings) -> str:
    """The DSN for messages and store names: user, host, port and database (it never holds a password)."""
    parts = urlsplit(settings.dsn)
    return parts._replace(query="", fragment="").geturl()


__all__ = ["PasswordError", "connect_kwargs", "password", "shown_dsn"]

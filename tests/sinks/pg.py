"""Helpers of the PostgreSQL store tests: settings for a test database, synchronous reads for assertions."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from slawatch.config.settings import PostgresSettings

T = TypeVar("T")


def pg_settings(dsn: str, **kw: Any) -> PostgresSettings:
    return PostgresSettings(dsn=dsn, timeout_s=kw.pop("timeout_s", 10.0), **kw)


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine to its end on a loop of its own, in a thread (callable from inside a running loop)."""
    out: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            out.append(asyncio.run(coro))
        except BaseException as exc:  # handed to the caller
            errors.append(exc)

    thread = threading.Thread(target=target)
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return out[0]


async def fetch(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return [dict(r) for r in await conn.fetch(sql, *args)]
    finally:
        await conn.close()


async def execute(dsn: str, sql: str, *args: Any) -> str:
    import asyncpg

    conn = await asyncpg.connect(dsn)
    try:
        return str(await conn.execute(sql, *args))
    finally:
        await conn.close()


def read_rows(dsn: str, sql: str, *args: Any) -> list[dict[str, Any]]:
    """Rows of one SELECT as dicts, from synchronous test code."""
    return run_sync(fetch(dsn, sql, *args))

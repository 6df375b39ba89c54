"""Which `slawatch server` leads: a PostgreSQL session advisory lock, or a file lock beside SQLite's records."""

from __future__ import annotations

import asyncio
import fcntl
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from slawatch.config.settings import PostgresSettings, StorageSettings
from slawatch.store import SourceError
from slawatch.store.pgconnect import connect_kwargs, shown_dsn

if TYPE_CHECKING:
    import asyncpg  # the type only: the module loads where PostgreSQL is configured

log = logging.getLogger(__name__)

LOCK_KEY = int.from_bytes(b"slawatch", "big") >> 1
"""The advisory lock's key (a bigint) every server of one database contends for: "slawatch" read as a number."""


class LeaderError(SourceError):
    """Leadership could not be tried or checked (the store is unreachable): not held."""


class Leader(Protocol):
    """One server's claim on leadership. `acquire` tries once and never waits for the holder; `check` confirms
    the claim is still good; `lost` is set the moment a held claim goes (a dropped connection, a replaced file)."""

    name: str
    lost: asyncio.Event

    @property
    def held(self) -> bool: ...

    async def acquire(self) -> bool:
        """Take leadership if no one holds it; True when this server holds it now. LeaderError: the store failed."""
        ...

    async def check(self) -> bool:
        """Whether leadership is still held (False, and `lost` set, when it went)."""
        ...

    async def release(self) -> None:
        """Give leadership up (a clean stop: another server takes it at its next try)."""
        ...


class PostgresLeader:
    """A session advisory lock on a connection of its own: held as long as that session lives. PostgreSQL frees it
    when the session ends (a server killed, its host gone, the connection cut), so no lease time is trusted; a lost
    connection is leadership lost at once."""

    def __init__(self, settings: PostgresSettings, *, key: int = LOCK_KEY) -> None:
        self.settings = settings
        self.key = key
        self.name = f"postgres advisory lock {key} on {shown_dsn(settings)}"
        self.lost = asyncio.Event()
        self._conn: asyncpg.Connection[Any] | None = None
        self._held = False

    @property
    def held(self) -> bool:
        return self._held

    async def _connection(self) -> asyncpg.Connection[Any]:
        import asyncpg  # lazy: loaded only where PostgreSQL is configured

        if self._conn is None or self._conn.is_closed():
            try:
                conn = await asyncpg.connect(**connect_kwargs(self.settings))
            except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                raise LeaderError(f"cannot connect to {shown_dsn(self.settings)}: {exc}") from None
            conn.add_termination_listener(self._terminated)
            self._conn = conn
        return self._conn

    def _terminated(self, conn: object) -> None:
        if conn is self._conn:
            self._lose("its PostgreSQL connection closed")

    def _lose(self, why: str) -> None:
        if self._held:
            log.warning("leadership lost: %s", why)
            self._held = False
            self.lost.set()

    async def acquire(self) -> bool:
        import asyncpg  # lazy, as above

        if self._held:
            return True
        conn = await self._connection()
        try:
            got = bool(await conn.fetchval("SELECT pg_try_advisory_lock($1)", self.key))
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            await self._drop()
            raise LeaderError(f"cannot take the leader lock on {shown_dsn(self.settings)}: {exc}") from None
        if got:
            self.lost.clear()
            self._held = True
        return got

    async def check(self) -> bool:
        import asyncpg  # lazy, as above

        if not self._held or self._conn is None:
            return False
        try:  # the session is alive, so its lock is: a round trip within the settings' timeout proves it
            await self._conn.fetchval("SELECT 1")
        except (TimeoutError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self._lose(f"the leader lock's connection failed: {exc}")
            await self._drop()
        return self._held

    async def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._lose("its PostgreSQL connection was dropped")
        if conn is not None:
            conn.terminate()  # no goodbye over a connection that failed: it may hang

    async def release(self) -> None:
        conn, self._conn = self._conn, None
        self._held = False
        if conn is None:
            return
        try:
            await conn.close(timeout=self.settings.timeout_s)  # the session ends: PostgreSQL frees the lock
        except Exception:  # going anyway: PostgreSQL frees the lock when the session dies
            conn.terminate()


class FileLeader:
    """An exclusive flock on a file beside the records (several servers on one host with SQLite). The kernel
    frees it when the process dies, however it dies."""

    def __init__(self, path: Path, *, holder: str = "") -> None:
        self.path = path
        self.holder = holder
        self.name = f"file lock {path}"
        self.lost = asyncio.Event()
        self._fd: int | None = None

    @property
    def held(self) -> bool:
        return self._fd is not None

    def _try(self) -> int | None:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            # Locked, but maybe a file someone removed meanwhile (and a new one that another server locks).
            if os.fstat(fd).st_ino != os.stat(self.path).st_ino:
                raise BlockingIOError
            os.ftruncate(fd, 0)
            os.write(fd, f"{self.holder} pid {os.getpid()}\n".encode())  # who leads, for an operator's look
        except (BlockingIOError, FileNotFoundError):
            os.close(fd)
            return None
        except BaseException:
            os.close(fd)
            raise
        return fd

    async def acquire(self) -> bool:
        if self._fd is not None:
            return True
        try:
            fd = await asyncio.to_thread(self._try)
        except OSError as exc:
            raise LeaderError(f"cannot take the leader lock {self.path}: {exc.strerror or exc}") from None
        if fd is None:
            return False
        self.lost.clear()
        self._fd = fd
        return True

    def _same_file(self, fd: int) -> bool:
        try:
            return os.fstat(fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            return False

    async def check(self) -> bool:
        fd = self._fd
        if fd is None:
            return False
        if not await asyncio.to_thread(self._same_file, fd):
            log.warning("leadership lost: the lock file %s was removed or replaced", self.path)
            self._close()
            self.lost.set()
        return self._fd is not None

    def _close(self) -> None:
        fd, self._fd = self._fd, None
        if fd is not None:
            os.close(fd)  # closing the last descriptor of the open file frees the flock

    async def release(self) -> None:
        self._close()


def open_leader(storage: StorageSettings, holder: str) -> Leader:
    """PostgreSQL's advisory lock when the store is PostgreSQL, else a lock file beside the records file."""
    if storage.postgres is not None:
        return PostgresLeader(storage.postgres)
    records = storage.records_path
    return FileLeader(records.with_name(records.name + ".leader"), holder=holder)


async def campaign(leader: Leader, stop: asyncio.Event, check_s: float, *,
                   on_gain: Callable[[], Awaitable[None]], on_loss: Callable[[], Awaitable[None]]) -> None:
    """Try for leadership every `check_s` while following; while leading, check it as often and act on its loss at
    once. `on_gain` and `on_loss` run in turn, never overlapping; at `stop`, `on_loss` runs before leadership is
    given up, so another server takes over only once this one has stopped leading."""
    leading = False
    failing = ""
    try:
        while not stop.is_set():
            if not leading:
                try:
                    leading = await leader.acquire()
                except LeaderError as exc:
                    if str(exc) != failing:  # said once, not at every try
                        log.warning("cannot try for leadership: %s", exc)
                    failing = str(exc)
                else:
                    failing = ""
                if leading:
                    log.info("leading (%s)", leader.name)
                    try:
                        await on_gain()
                    except Exception:
                        # Leading without what leading runs helps no one: let another server (or a later try) lead.
                        log.exception("cannot start leading: leadership given up")
                        leading = False
                        await leader.release()
                        await _wait_any(stop, None, check_s)
                else:
                    await _wait_any(stop, None, check_s)
                continue
            await _wait_any(stop, leader.lost, check_s)
            if stop.is_set():
                break
            if not leader.held or not await leader.check():
                leading = False
                await on_loss()
    finally:
        if leading:
            await on_loss()
        await leader.release()


async def _wait_any(stop: asyncio.Event, other: asyncio.Event | None, seconds: float) -> None:
    waiters = {asyncio.ensure_future(stop.wait())}
    if other is not None:
        waiters.add(asyncio.ensure_future(other.wait()))
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waiters:
            w.cancel()


__all__ = ["LOCK_KEY", "FileLeader", "Leader", "LeaderError", "PostgresLeader", "campaign", "open_leader"]

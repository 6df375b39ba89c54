"""A real PostgreSQL (Debian's postgresql-15) in a temporary directory on a random loopback port, for tests and
benchmarks.

Use `start_postgres()` (the tests' `postgres` fixture does, once per session) and `create_database()` for a
fresh database per test. initdb refuses to run as root: as root the cluster is made and run by the `postgres`
user in a directory it owns. Authentication is `trust` on 127.0.0.1 only (a throwaway server).
"""

from __future__ import annotations

import asyncio
import contextlib
import glob
import itertools
import os
import pwd
import queue
import re
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from slawatch.testing import PeerMissing, free_port

SUPERUSER = "slawatch"
PACKAGE = "postgresql"


def postgres_bindir() -> Path:
    """The directory of initdb, pg_ctl and createdb (Debian's /usr/lib/postgresql/N/bin, 15 preferred)."""
    for candidate in ["/usr/lib/postgresql/15/bin", *sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True)]:
        if os.path.exists(os.path.join(candidate, "pg_ctl")) and os.path.exists(os.path.join(candidate, "initdb")):
            return Path(candidate)
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).parent
    raise PeerMissing(f"pg_ctl/initdb not found (apt-get install -y {PACKAGE})", "postgresql")


def _run_as() -> str | None:
    """The user the server runs as: `postgres` when we are root (initdb refuses root), else ourselves."""
    if os.geteuid() != 0:
        return None
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise PeerMissing(f"running as root and there is no `postgres` user (apt-get install -y {PACKAGE})",
                          "postgresql") from None
    return "postgres"


@dataclass
class PostgresServer:
    """One PostgreSQL cluster in `dir`, listening on 127.0.0.1:`port` (and a socket in `dir`)."""

    bindir: Path
    dir: Path
    user: str | None = None
    port: int = field(default_factory=free_port)
    durable: bool = False
    """False (tests): fsync and synchronous commit off, since the cluster is thrown away."""
    spare: int = 0
    """Empty databases a background thread keeps made ahead, so that `create_database()` need not wait (tests)."""
    _names: Any = field(default_factory=lambda: itertools.count(1), repr=False)
    _spares: queue.Queue[str] = field(default_factory=lambda: queue.Queue(maxsize=8), repr=False)
    _filler: threading.Thread | None = field(default=None, repr=False)
    _stopping: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def data(self) -> Path:
        return self.dir / "data"

    @property
    def log_path(self) -> Path:
        return self.dir / "postgres.log"

    def dsn(self, database: str = "postgres") -> str:
        """A DSN for `database` as the superuser (no password: trust on loopback)."""
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{database}"

    def _run(self, argv: list[str], timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(argv, user=self.user, capture_output=True, text=True, timeout=timeout_s,
                              stdin=subprocess.DEVNULL, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"{Path(argv[0]).name} failed ({done.returncode}): {done.stderr.strip()[-2000:]}"
                               f" {self.log_tail()}")
        return done

    def init(self) -> None:
        """initdb (once): a cluster with the superuser SUPERUSER, UTF-8, trust authentication."""
        if (self.data / "PG_VERSION").exists():
            return
        self._run([str(self.bindir / "initdb"), "-D", str(self.data), "-A", "trust", "-U", SUPERUSER,
                   "-E", "UTF8", "--locale=C", "--no-sync", "--no-instructions"])

    def start(self, timeout_s: float = 30.0) -> None:
        """pg_ctl start and wait until it accepts connections."""
        self.init()
        options = [f"-p {self.port}", f"-k {self.dir}", "-c listen_addresses=127.0.0.1", "-c max_connections=200",
                   "-c shared_buffers=64MB"]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._run([str(self.bindir / "pg_ctl"), "-D", str(self.data), "-o", " ".join(options),
                   "-l", str(self.log_path), "-w", "-t", str(int(timeout_s)), "start"], timeout_s=timeout_s + 5)

    def stop(self, mode: str = "fast", timeout_s: float = 30.0) -> None:
        """Shut down by signal, as pg_ctl does (`fast` closes the sessions, `immediate` is like a crash), and wait
        for the postmaster to exit; SIGKILL when it does not in time."""
        pid = self.pid()
        if pid is None:
            return
        sig = {"smart": signal.SIGTERM, "fast": signal.SIGINT, "immediate": signal.SIGQUIT}[mode]
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        if not _wait_gone(pid, timeout_s):
            self.kill()

    def kill(self) -> None:
        """SIGKILL the postmaster (a crash); its children exit when they notice."""
        pid = self.pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 10.0)

    def restart(self) -> None:
        self.stop()
        self.start()

    def pid(self) -> int | None:
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def create_database(self, name: str | None = None) -> str:
        """Create a fresh, empty database (named `name`, else t1, t2, ...) and return its DSN. Callable from inside
        a running event loop (the statement runs on a loop of its own, in a thread)."""
        if name is None and self.spare > 0:
            if self._filler is None:
                self._filler = threading.Thread(target=self._fill, name="postgres-spares", daemon=True)
                self._filler.start()
            with contextlib.suppress(queue.Empty):
                return self.dsn(self._spares.get(timeout=30))
        name = name or f"t{next(self._names)}"
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"database name {name!r}: lower-case letters, digits and _ only")
        self.execute(f"CREATE DATABASE {name} TEMPLATE template0")
        return self.dsn(name)

    def _fill(self) -> None:
        """Keep `spare` empty databases made ahead (stops at the first error: the caller then makes its own)."""
        while not self._stopping.is_set():
            name = f"t{next(self._names)}"
            try:
                self.execute(f"CREATE DATABASE {name} TEMPLATE template0")
            except Exception:  # the server is stopping or gone: create_database() says why
                return
            while not self._stopping.is_set():
                try:
                    self._spares.put(name, timeout=0.2)
                    break
                except queue.Full:
                    continue
            while self._spares.qsize() >= self.spare and not self._stopping.wait(0.02):
                pass

    def execute(self, sql: str, database: str = "postgres") -> None:
        """Run one SQL statement as the superuser (asyncpg, on a loop of its own in a thread)."""
        async def run() -> None:
            import asyncpg  # lazy: only the tests and benchmarks that start a server need it

            conn = await asyncpg.connect(self.dsn(database), timeout=30)
            try:
                await conn.execute(sql)
            finally:
                await conn.close()

        errors: list[BaseException] = []

        def target() -> None:
            try:
                asyncio.run(run())
            except BaseException as exc:  # handed to the caller's thread
                errors.append(exc)

        thread = threading.Thread(target=target, name="postgres-execute")
        thread.start()
        thread.join()
        if errors:
            raise errors[0]

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run SQL with psql (unaligned, tuples only) and return its output."""
        return self._run([str(self.bindir / "psql"), "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1",
                          "-h", "127.0.0.1", "-p", str(self.port), "-U", SUPERUSER, "-d", database,
                          "-c", sql]).stdout

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def remove(self) -> None:
        """Stop the server and delete its directory."""
        self._stopping.set()
        if self._filler is not None:
            self._filler.join(60)
        self.stop()
        shutil.rmtree(self.dir, ignore_errors=True)


def _wait_gone(pid: int, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.02)
    return False


def start_postgres(*, durable: bool = False, spare: int = 0) -> PostgresServer:
    """Start a fresh PostgreSQL in a new temporary directory (PeerMissing when the binaries are missing).

    The directory is made here, not in a test's tmp_path: the `postgres` user must be able to reach it."""
    bindir = postgres_bindir()
    user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="slawatch-pg-"))
    if user is not None:
        entry = pwd.getpwnam(user)
        os.chown(root, entry.pw_uid, entry.pw_gid)
    server = PostgresServer(bindir=bindir, dir=root, user=user, durable=durable, spare=spare)
    try:
        server.start()
    except BaseException:
        server.remove()
        raise
    return server


__all__ = ["SUPERUSER", "PostgresServer", "postgres_bindir", "start_postgres"]

"""A console on a real SQLite store for the tests: a config with two customers, stored states and samples, users,
and an aiohttp test client that signs in through the login form."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

from aiohttp import (
    ClientResponse,
    test_utils,  # as `test_utils.X`: a module named test_* is taken for a test module
)

from console.app import make_console
from console.context import CONSOLE_KEY, Console
from console.passwords import hash_password
from slawatch.config.loader import Loaded, bundled_contract, load
from slawatch.model import (
    ComponentRef,
    Heartbeat,
    Incident,
    IncidentState,
    Outcome,
    Point,
    Sample,
    StateChange,
    User,
)
from slawatch.store.sqlite import SqliteSink, SqliteSource
from slawatch.store.sqlite_desk import SqliteDeskStore
from slawatch.store.sqlite_users import SqliteUserStore

PASSWORD = "correct horse battery"
SMTP_SECRET = "smtp-pa55-do-not-show"
INFLUX_TOKEN = "influx-t0ken-do-not-show"
XSS = "<script>alert(1)</script>"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


def write_config(tmp: Path, *, extra_components: str = "", console: str = "{}", storage_extra: str = "") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "console.yaml"
    more = f", {storage_extra}" if storage_extra else ""
    cfg.write_text(f"""
agent: {{id: a1, listen: "127.0.0.1:9", heartbeat_s: 1}}
storage: {{sqlite: {{path: {tmp / 'store.db'}}}, spool: {{path: {tmp / 'spool'}}}{more}}}
contract: {bundled_contract()}
customers: [{{name: acme, tier: gold}}, {{name: globex, tier: silver}}]
report:
  smtp: {{host: 127.0.0.1, port: 2525, starttls: true, username: mailer, password: "{SMTP_SECRET}"}}
console: {console}
components:
  - name: pbx-1
    class: sip
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:5060"}}]
  - name: san-1
    class: san
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:3260"}}]
  - name: lb-9
    class: load_balancer
    customer: globex
    probes: [{{kind: tcp, target: "127.0.0.1:8443"}}]
  - name: core-1
    class: network
    customer: globex
    probes: [{{kind: tcp, target: "127.0.0.1:80"}}]
{extra_components}""")
    return cfg


def ref(loaded: Loaded, name: str) -> ComponentRef:
    comp = next(c for c in loaded.config.components if c.name == name)
    return ComponentRef(name, comp.klass, loaded.config.tier_of(comp) or "", comp.customer or "")


def incident(id: str, ref: ComponentRef, start_ms: int, priority: str = "P1") -> Incident:
    """An open incident of `ref`, raised a minute after its fault started."""
    return Incident(id, ref, "down", start_ms, start_ms + 60_000, priority, IncidentState.OPEN, "TCP refused",
                    ("a1",), updated_ms=start_ms + 60_000, version=1)


def change(loaded: Loaded, name: str, ts_ms: int, up: bool, reason: str = "", degraded: bool = False) -> StateChange:
    return StateChange(ref(loaded, name), "a1", ts_ms, up, reason, degraded)


def sample(loaded: Loaded, name: str, ts_ms: int, latency_ms: float | None, outcome: Outcome = Outcome.UP,
           reason: str = "") -> Sample:
    return Sample(ref(loaded, name), "tcp", "tcp", "a1", ts_ms, outcome, reason, latency_ms)


async def write(loaded: Loaded, points: Sequence[Point]) -> None:
    sink = SqliteSink(loaded.config.storage.sqlite)  # type: ignore[arg-type]
    try:
        await sink.write(points)
    finally:
        await sink.close()


def beats(start_ms: int, end_ms: int) -> list[Heartbeat]:
    return [Heartbeat("a1", t, 1.0) for t in range(start_ms, end_ms, 1000)]


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


@dataclass
class Site:
    loaded: Loaded
    client: test_utils.TestClient
    users: SqliteUserStore
    desk_store: SqliteDeskStore
    clock: Clock

    @property
    def console(self) -> Console:
        return self.client.server.app[CONSOLE_KEY]

    async def add_user(self, name: str, role: str = "operator", customers: tuple[str, ...] = (),
                       password: str = PASSWORD) -> None:
        assert await self.users.add(User(name, role, hash_password(password), customers, 1, 1))  # type: ignore[arg-type]

    async def csrf(self, path: str = "/login") -> str:
        resp = await self.client.get(path)
        found = CSRF.search(await resp.text())
        assert found, f"no CSRF token on {path}"
        return found.group(1)

    async def login(self, name: str, password: str = PASSWORD) -> ClientResponse:
        token = await self.csrf("/login")
        return await self.client.post("/login", data={"name": name, "password": password, "csrf": token},
                                      allow_redirects=False)

    async def refresh(self) -> None:
        await self.console.board.refresh()
        await self.console.board.refresh_figures()


@asynccontextmanager
async def site(tmp_path: Path, now_ms: int, *, cfg: Path | None = None, **config: str) -> AsyncIterator[Site]:
    """The console on `cfg`, or on write_config's (with `config`)."""
    loaded = load(cfg or write_config(tmp_path, **config))
    storage = loaded.config.storage
    source = SqliteSource(storage.sqlite)  # type: ignore[arg-type]
    desk_store = SqliteDeskStore(storage.records_path)
    users = SqliteUserStore(storage.records_path)
    clock = Clock(now_ms)
    app = make_console(loaded, source, desk_store, users, clock=clock)
    client = test_utils.TestClient(test_utils.TestServer(app, host="127.0.0.1"))
    await client.start_server()
    try:
        yield Site(loaded, client, users, desk_store, clock)
    finally:
        await client.close()
        await source.close()
        await desk_store.close()
        await users.close()

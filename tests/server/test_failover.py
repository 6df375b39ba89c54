"""Two `slawatch server` processes on one store (SQLite with a lock file; PostgreSQL with its advisory lock): one
leads; the leader SIGKILLed while an incident is open and unacknowledged, the other takes over within seconds and
sends the escalation exactly once; an acknowledgement in the follower's console is delivered by the leader; both
restarted, nothing is sent again."""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from console.passwords import hash_password
from slawatch.config.loader import load
from slawatch.model import NotificationState, User
from slawatch.store import open_desk_store, open_sinks, open_user_store
from slawatch.testing.serverproc import ServerProcess, down, write_config
from slawatch.testing.webhook import Webhook, start_webhook

pytestmark = [pytest.mark.timeout(90)]

PASSWORD = "correct horse battery"
CSRF = re.compile(r'name="csrf" value="([^"]+)"')
TAKEOVER_S = 5.0
"""Within this a follower leads after the leader is killed (leader_check_s 0.5 s, plus its start of the desk)."""


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    receiver = await start_webhook()
    yield receiver
    await receiver.stop()


@pytest.fixture
def spawn() -> Iterator[Callable[[Path, str], ServerProcess]]:
    started: list[ServerProcess] = []

    def start(cfg: Path, server_id: str) -> ServerProcess:
        server = ServerProcess(cfg, server_id)
        started.append(server)
        return server

    yield start
    for server in started:
        if server.proc.poll() is None:
            server.kill()


async def until(check: Callable[[], Any], what: str, timeout: float = 15.0) -> Any:
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


async def logged(server: ServerProcess, pattern: str, timeout: float = 20.0) -> dict[str, Any]:
    _, record = await asyncio.to_thread(server.wait_for, pattern, timeout)
    return record


def sent(hook: Webhook) -> Counter[tuple[str, str]]:
    """(incident, kind) of every notification the receiver got, with how many times."""
    data = [r.json().get("data", {}) for r in hook.received]
    return Counter((d.get("incident", ""), d.get("kind", "")) for d in data)


async def store_changes(cfg: Path, *changes: Any) -> None:
    """What an agent stores when it confirms a change: written straight through the store's sink."""
    loaded = load(cfg)
    for sink in open_sinks(loaded.config.storage):
        try:
            await sink.write(list(changes))
        finally:
            await sink.close()


async def delivered(cfg: Path, incident: str, kind: str) -> bool:
    """Whether the outbox marks `kind` about `incident` sent (its delivery is no longer in flight)."""
    store = open_desk_store(load(cfg).config.storage)
    try:
        return any(n.kind == kind and n.state is NotificationState.SENT for n in await store.notifications(incident))
    finally:
        await store.close()


async def add_operator(cfg: Path, name: str) -> None:
    users = open_user_store(load(cfg).config.storage)
    try:
        assert await users.add(User(name, "operator", hash_password(PASSWORD), (), 1, 1))
    finally:
        await users.close()


async def ack_in_console(server: ServerProcess, incident: str) -> None:
    """Sign in to `server`'s console and acknowledge `incident` through its form, as an operator does."""
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(server.url, cookie_jar=jar) as http:
        async with http.get("/login") as resp:
            token = CSRF.search(await resp.text())
        assert token is not None
        async with http.post("/login", data={"name": "op", "password": PASSWORD, "csrf": token.group(1)},
                             allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()
        async with http.get(f"/incidents/{incident}") as resp:
            assert resp.status == 200
            token = CSRF.search(await resp.text())
        assert token is not None
        async with http.post(f"/incidents/{incident}/ack", data={"csrf": token.group(1), "comment": "on it"},
                             allow_redirects=False) as resp:
            assert resp.status == 303, await resp.text()


async def leader_of(servers: list[ServerProcess]) -> tuple[ServerProcess, ServerProcess]:
    """(the one that leads, the other) once one of two servers leads and the other serves."""
    leader = await until(lambda: next((s for s in servers if s.has(rf"server {s.id} leads")), None), "a leader",
                         timeout=30)
    follower = next(s for s in servers if s is not leader)
    await logged(follower, rf"^server {follower.id} serving", timeout=30)
    return leader, follower


@pytest.mark.parametrize("store", ["sqlite", pytest.param("postgres", marks=pytest.mark.peer("postgresql"))])
async def test_leader_killed_the_other_escalates_once_and_a_follower_ack_is_delivered(
        tmp_path: Path, hook: Webhook, spawn: Callable[[Path, str], ServerProcess], store: str,
        request: pytest.FixtureRequest) -> None:
    storage = ""  # SQLite and a lock file beside it
    if store == "postgres":  # PostgreSQL, its advisory lock, and LISTEN/NOTIFY for the states
        storage = f'postgres: {{dsn: "{request.getfixturevalue("pg_dsn")}"}}, spool: {{path: {tmp_path / "spool"}}}'
    cfg = write_config(tmp_path, hook.port, storage=storage)
    await add_operator(cfg, "op")
    leader, follower = await leader_of([spawn(cfg, "srv-a"), spawn(cfg, "srv-b")])

    # An agent confirms the component down: the leader raises the incident from the store and notifies the NOC.
    stored = time.monotonic()
    await store_changes(cfg, down(time.time_ns() // 1_000_000 - 2_000))
    opened = await until(lambda: [k for k in sent(hook) if k[1] == "open"], "the incident's open notification")
    confirm_to_open_s = time.monotonic() - stored
    incident = opened[0][0]
    while not await delivered(cfg, incident, "open"):  # killed in flight, it would be sent again: see the docs
        await asyncio.sleep(0.05)

    # The leader dies with the incident open, unacknowledged and its escalation due 4 s after the raise.
    leader.kill()
    killed = time.monotonic()
    assert sent(hook)[(incident, "escalation")] == 0
    again = spawn(cfg, leader.id)  # back as a follower, for the console step below
    await logged(follower, rf"^server {follower.id} leads", timeout=TAKEOVER_S)
    takeover_s = time.monotonic() - killed
    await until(lambda: sent(hook)[(incident, "escalation")], "the escalation from the new leader")

    # An operator acknowledges it in the console of the follower.
    await logged(again, rf"^server {again.id} serving", timeout=30)
    acked = time.monotonic()
    await ack_in_console(again, incident)
    await until(lambda: sent(hook)[(incident, "ack")], "the ack notification from the leader", timeout=10)
    ack_delivered_s = time.monotonic() - acked
    assert not again.has(f"server {again.id} leads")

    # Both restarted: the new leader loads the same records and sends nothing again.
    before = sent(hook)
    assert follower.stop() == 0
    assert again.stop() == 0
    await leader_of([spawn(cfg, "srv-a"), spawn(cfg, "srv-b")])
    await asyncio.sleep(1.0)  # the desk's passes (tick 0.2 s) and the sender's looks at the outbox, several over
    assert sent(hook) == before
    assert before == Counter({(incident, "open"): 1, (incident, "escalation"): 1, (incident, "ack"): 1})
    print(f"{store}: confirmation stored -> open notification {confirm_to_open_s:.2f}s; leader killed -> other leads "
          f"{takeover_s:.2f}s; follower console ack -> delivered {ack_delivered_s:.2f}s")

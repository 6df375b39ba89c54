"""Test-run rules: a missing peer skips (fails under CI=true), a test that starts a server says so; shared fixtures.

Helpers are imported from `slawatch.testing` (real peers) or `tests.<dir>.<module>`, never from a conftest.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from slawatch.testing import SERVERS, PeerMissing
from slawatch.testing.influxd import Influxd, start_influxd
from slawatch.testing.postgres import PostgresServer, start_postgres

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
RUNNING = pytest.StashKey["pytest.Item | None"]()
# Fixtures being set up now (innermost last), and the servers each fixture was seen to start, by (baseid, name):
# a module-scoped server fixture starts once, so the tests after the first one are checked by what it started.
SETTING_UP = pytest.StashKey[list[tuple[str, str]]]()
STARTED_BY = pytest.StashKey[dict[tuple[str, str], set[str]]]()


def peer_names(item: pytest.Item) -> set[str]:
    """The servers the test declares with `@pytest.mark.peer(NAME, ...)` (or a module's `pytestmark`)."""
    return {str(name) for mark in item.iter_markers("peer") for name in mark.args}


def require_marker(item: pytest.Item, server: str, how: str) -> None:
    if server not in peer_names(item):
        pytest.fail(f"{item.nodeid} {how} {server} but is not marked @pytest.mark.peer({server!r}): "
                    f"mark it, so that `pytest -m 'not peer'` leaves it out", pytrace=False)


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--event-loop", choices=("asyncio", "uvloop"), default="asyncio",
                     help="the event loop the async tests run on, as `agent.loop` chooses it for the agent")


class OnUvloop:
    """`--event-loop uvloop`: every async test runs on uvloop (the optional extra `slawatch[uvloop]`)."""

    def pytest_asyncio_loop_factories(self, config: pytest.Config, item: pytest.Item) -> dict[str, Any]:
        import uvloop

        return {"uvloop": uvloop.new_event_loop}


def pytest_configure(config: pytest.Config) -> None:
    if config.getoption("event_loop") == "uvloop":
        config.pluginmanager.register(OnUvloop(), "slawatch-uvloop")
    config.stash[RUNNING] = None
    config.stash[SETTING_UP] = []
    config.stash[STARTED_BY] = {}

    def audit(event: str, args: tuple[Any, ...]) -> None:
        # Every way of starting a process ends in subprocess.Popen (asyncio's too): a server binary started by
        # a test without the peer marker fails that test, whichever helper started it.
        if event != "subprocess.Popen":
            return
        item = config.stash.get(RUNNING, None)
        if item is None:
            return
        executable, argv = args[0], args[1]
        program = executable or (argv.split()[0] if isinstance(argv, str | bytes) else argv[0])
        server = SERVERS.get(Path(os.fsdecode(program)).name)
        if server is not None:
            if config.stash[SETTING_UP]:
                config.stash[STARTED_BY].setdefault(config.stash[SETTING_UP][-1], set()).add(server)
            require_marker(item, server, "starts")

    sys.addaudithook(audit)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None) -> Generator[None, object, object]:
    item.config.stash[RUNNING] = item
    try:
        return (yield)
    finally:
        item.config.stash[RUNNING] = None


@contextlib.contextmanager
def missing_peer_skips(item: pytest.Item) -> Iterator[None]:
    try:
        yield
    except PeerMissing as exc:
        if exc.server is not None:
            require_marker(item, exc.server, "needs")
        if IN_CI:
            pytest.fail(f"CI=true and a required peer is missing: {exc.reason}", pytrace=False)
        pytest.skip(exc.reason)


@pytest.hookimpl(wrapper=True)
def pytest_fixture_setup(fixturedef: pytest.FixtureDef[Any],
                         request: pytest.FixtureRequest) -> Generator[None, Any, Any]:
    setting_up = request.config.stash[SETTING_UP]
    setting_up.append((fixturedef.baseid, fixturedef.argname))
    try:
        return (yield)
    finally:
        setting_up.pop()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_setup(item: pytest.Item) -> Generator[None, None, None]:
    for (baseid, name), servers in item.config.stash[STARTED_BY].items():
        if name in item.fixturenames and item.nodeid.startswith(baseid):
            for server in servers:
                require_marker(item, server, f"uses fixture {name!r}, which starts")
    with missing_peer_skips(item):
        return (yield)


@pytest.hookimpl(wrapper=True)
def pytest_runtest_call(item: pytest.Item) -> Generator[None, None, None]:
    with missing_peer_skips(item):
        return (yield)


@pytest.fixture(scope="module")
def influxd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One influxd (no auth) per test module."""
    server = start_influxd(tmp_path_factory.mktemp("influxd"))
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def influxd_auth(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    """One influxd with `auth-enabled = true` and an admin user (ADMIN_USER/ADMIN_PASSWORD) per module."""
    server = start_influxd(tmp_path_factory.mktemp("influxd-auth"), auth=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def postgres(request: pytest.FixtureRequest) -> Iterator[PostgresServer]:
    """One PostgreSQL server per test session (tests mark `@pytest.mark.peer("postgresql")`); stopped by signal."""
    # A session fixture's set-up is not seen by this conftest's pytest_fixture_setup (its hooks apply under tests/
    # only): record what it starts here, so that every test using it must carry the marker.
    setting_up = request.config.stash[SETTING_UP]
    setting_up.append(("", "postgres"))
    try:
        server = start_postgres(spare=2)  # two empty databases made ahead: pg_dsn need not wait
    finally:
        setting_up.pop()
    try:
        yield server
    finally:
        server.remove()


@pytest.fixture
def pg_dsn(postgres: PostgresServer) -> str:
    """The DSN of a fresh, empty database on the session's PostgreSQL (trust: no password)."""
    return postgres.create_database()

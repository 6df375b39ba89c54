"""Fixtures for the end-to-end tests that run the real agent as a subprocess."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from slawatch.testing.agentproc import AgentProcess, TcpTarget


@pytest.fixture
def tcp_target() -> Iterator[TcpTarget]:
    """A loopback TCP service, up at the start."""
    srv = TcpTarget()
    srv.up()
    yield srv
    srv.down()


@pytest.fixture
def spawn() -> Iterator[Callable[..., AgentProcess]]:
    """Start agents with `spawn(cfg, ...)`; any still running at the end of the test is killed."""
    started: list[AgentProcess] = []

    def start(cfg: Path, **kw: object) -> AgentProcess:
        agent = AgentProcess(cfg, **kw)  # type: ignore[arg-type]
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.kill()
        elif agent.proc.stderr is not None and not agent.proc.stderr.closed:
            agent._close()

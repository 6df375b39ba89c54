"""Hostile peers against the tcp and http probes through `run_probe`: a result with a reason, on time."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import time
from collections.abc import Awaitable, Callable

import pytest

from agent import probes
from agent.probes import Run, run_probe
from slawatch.config.probes import HttpProbe, ProbeBase, TcpProbe
from slawatch.model import Outcome, Result
from slawatch.testing.servers import MB, flood_peer, silent_peer, syn_blackhole, trickle_peer

pytestmark = pytest.mark.timeout(15)

TIMEOUT_S = 1.0
SLACK_S = 0.1
HEADERS = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n\r\n"

Peer = Callable[[], contextlib.AbstractAsyncContextManager[int]]

PEERS: dict[str, Peer] = {
    "silent": silent_peer,
    "one-byte-per-second": lambda: trickle_peer(b"x" * 100),
    "10MB-flood": lambda: flood_peer(10 * MB),
    "http-headers-then-one-byte-per-second": lambda: trickle_peer(b"x" * 100, prefix=HEADERS % 100),
    "http-status-line-one-byte-per-second": lambda: trickle_peer(HEADERS % 2 + b"ok"),
    "http-headers-then-10MB-body": lambda: flood_peer(10 * MB, prefix=HEADERS % (10 * MB)),
    "http-10MB-of-header": lambda: flood_peer(10 * MB, prefix=b"HTTP/1.1 200 OK\r\nX-Junk: "),
}


async def timed(settings: ProbeBase) -> tuple[Run, float]:
    t0 = time.perf_counter()
    run = await run_probe(settings)
    return run, time.perf_counter() - t0


def assert_failed_in_time(run: Run, elapsed: float) -> None:
    assert run.result.outcome in (Outcome.TIMEOUT, Outcome.BAD_RESPONSE), run.result
    assert run.result.reason, run.result
    assert "no answer within" not in run.result.reason, "the inner deadline should have fired first"
    assert elapsed <= TIMEOUT_S + SLACK_S, f"{elapsed:.3f}s: {run.result}"


@pytest.mark.parametrize("peer", sorted(PEERS))
async def test_tcp_with_expect(peer: str) -> None:
    async with PEERS[peer]() as port:
        run, elapsed = await timed(TcpProbe(kind="tcp", target=f"127.0.0.1:{port}", timeout_s=TIMEOUT_S,
                                            send="HELLO\r\n", expect="^220 "))
    assert_failed_in_time(run, elapsed)


@pytest.mark.parametrize("peer", sorted(PEERS))
async def test_tcp_tls(peer: str) -> None:
    async with PEERS[peer]() as port:
        run, elapsed = await timed(TcpProbe(kind="tcp", target=f"127.0.0.1:{port}", timeout_s=TIMEOUT_S,
                                            tls=True, tls_verify=False, expect="^220 "))
    assert_failed_in_time(run, elapsed)


@pytest.mark.parametrize("peer", sorted(PEERS))
@pytest.mark.parametrize("condition", ["status-only", "expect_body"])
async def test_http(peer: str, condition: str) -> None:
    extra = {"expect_body": "^never$"} if condition == "expect_body" else {}
    async with PEERS[peer]() as port:
        run, elapsed = await timed(HttpProbe(kind="http", target=f"http://127.0.0.1:{port}/", timeout_s=TIMEOUT_S,
                                             **extra))
    assert_failed_in_time(run, elapsed)  # the body is read, and bounded, with or without a body condition


@pytest.mark.parametrize("kind", ["tcp", "http"])
async def test_connect_that_never_completes(kind: str) -> None:
    with syn_blackhole() as port:
        settings: ProbeBase = (
            TcpProbe(kind="tcp", target=f"127.0.0.1:{port}", timeout_s=TIMEOUT_S) if kind == "tcp" else
            HttpProbe(kind="http", target=f"http://127.0.0.1:{port}/", timeout_s=TIMEOUT_S))
        run, elapsed = await timed(settings)
    assert run.result.outcome is Outcome.TIMEOUT
    assert run.result.reason == f"connect to 127.0.0.1:{port} timed out after 0.9s"
    assert elapsed <= TIMEOUT_S + SLACK_S


async def test_reasons_name_what_happened() -> None:
    async with silent_peer() as port:
        run, _ = await timed(HttpProbe(kind="http", target=f"http://127.0.0.1:{port}/", timeout_s=TIMEOUT_S))
    assert run.result.reason == "no response within 0.9s after connect"
    async with flood_peer(10 * MB) as port:
        run, _ = await timed(TcpProbe(kind="tcp", target=f"127.0.0.1:{port}", timeout_s=TIMEOUT_S, expect="^220"))
    assert run.result.reason.startswith("expected '^220', no match in the first 65536 bytes; received 65536 bytes")
    async with trickle_peer(b"x" * 100) as port:
        run, _ = await timed(TcpProbe(kind="tcp", target=f"127.0.0.1:{port}", timeout_s=TIMEOUT_S, expect="^220"))
    assert run.result.reason == "expected '^220', no match within 0.9s; received 1 bytes: 'x'"
    async with flood_peer(10 * MB, prefix=HEADERS % (10 * MB)) as port:
        run, _ = await timed(HttpProbe(kind="http", target=f"http://127.0.0.1:{port}/", timeout_s=TIMEOUT_S,
                                       expect_body="never"))
    assert run.result.reason == "body larger than 1048576 bytes (Content-Length 10485760)"



def replaced_tcp(monkeypatch: pytest.MonkeyPatch, probe: Callable[[ProbeBase], Awaitable[Result]]) -> None:
    monkeypatch.setitem(probes._LOADED, "tcp", dataclasses.replace(probes.kind("tcp"), probe=probe))


@pytest.fixture
def hanging_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tcp kind replaced by a probe that ignores its own deadline (a bug, or a library that hangs)."""
    async def hang(settings: ProbeBase) -> Result:
        await asyncio.sleep(3600)
        raise AssertionError("not reached")

    replaced_tcp(monkeypatch, hang)


@pytest.fixture
def instant_tcp(monkeypatch: pytest.MonkeyPatch) -> None:
    async def up(settings: ProbeBase) -> Result:
        await asyncio.sleep(0)
        return Result(Outcome.UP, "", 0.001)

    replaced_tcp(monkeypatch, up)


async def in_own_task(settings: ProbeBase, then_s: float = 0.0) -> tuple[Run, float, int]:
    """run_probe in a task of its own (as the scheduler runs it), then `then_s` more in that task: the run, its
    time, and the task's pending cancellations at the end."""
    async def run() -> tuple[Run, float, int]:
        found, elapsed = await timed(settings)
        await asyncio.sleep(then_s)
        task = asyncio.current_task()
        assert task is not None
        return found, elapsed, task.cancelling()
    return await asyncio.create_task(run())


async def test_the_outer_deadline_stops_a_probe_that_ignores_its_own(hanging_tcp: None) -> None:
    timeouts = ("0.2", "0.3", "0.2")
    runs = await asyncio.gather(*(in_own_task(TcpProbe(kind="tcp", target="127.0.0.1:9", timeout_s=float(t)))
                                  for t in timeouts))
    for (run, elapsed, cancelling), t in zip(runs, timeouts, strict=True):
        assert run.result == Result(Outcome.TIMEOUT, f"no answer within {t}s")
        assert float(t) <= elapsed <= float(t) + probes.DEADLINE_TICK_S + SLACK_S
        assert cancelling == 0  # the cancellation the deadline made was taken back


async def test_a_cancelled_run_is_cancelled_not_timed_out(hanging_tcp: None) -> None:
    task = asyncio.create_task(run_probe(TcpProbe(kind="tcp", target="127.0.0.1:9", timeout_s=0.3)))
    await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def test_a_run_that_ended_is_not_cancelled_at_its_deadline(instant_tcp: None) -> None:
    # the task that ran it goes on past the run's deadline
    run, _, cancelling = await in_own_task(TcpProbe(kind="tcp", target="127.0.0.1:9", timeout_s=0.1),
                                           then_s=0.1 + 3 * probes.DEADLINE_TICK_S)
    assert run.result.outcome is Outcome.UP and cancelling == 0

"""The tcp probe against real loopback peers, and its failure mapping from tables."""

from __future__ import annotations

import asyncio
import errno
import re
import socket
import ssl
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent.probes import base, tcp
from slawatch.config.probes import TcpProbe
from slawatch.model import Outcome, Result
from slawatch.testing import need, need_binary
from slawatch.testing.servers import (
    closed_port,
    line_peer,
    self_signed_cert,
    server_context,
    silent_peer,
    syn_blackhole,
)

pytestmark = pytest.mark.timeout(15)


def settings(port: int, **kw: Any) -> TcpProbe:
    return TcpProbe(kind="tcp", target=f"127.0.0.1:{port}", timeout_s=kw.pop("timeout_s", 2.0), **kw)


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Path, Path]]:
    openssl = need_binary("openssl", "openssl")
    yield self_signed_cert(tmp_path_factory.mktemp("tls"), openssl)


# ---------------------------------------------------------------- pure mapping


@pytest.mark.parametrize(("exc", "outcome", "reason"), [
    (ConnectionRefusedError(errno.ECONNREFUSED, "Connect call failed"), Outcome.REFUSED, "connection refused"),
    (OSError(errno.EHOSTUNREACH, "No route to host"), Outcome.UNREACHABLE, "no route to host"),
    (OSError(errno.ENETUNREACH, "Network is unreachable"), Outcome.UNREACHABLE, "network unreachable"),
    (OSError(errno.ETIMEDOUT, "Connection timed out"), Outcome.TIMEOUT, "connect timed out (no answer to SYN)"),
    (ConnectionResetError(errno.ECONNRESET, "reset"), Outcome.BAD_RESPONSE, "connection reset by peer"),
    (socket.gaierror(socket.EAI_NONAME, "Name or service not known"), Outcome.UNREACHABLE,
     "cannot resolve host: Name or service not known"),
    (OSError(errno.EACCES, "Permission denied"), Outcome.UNREACHABLE, "connect failed: Permission denied"),
])
def test_connect_failure_table(exc: OSError, outcome: Outcome, reason: str) -> None:
    assert base.connect_failure(exc) == Result(outcome, reason)


def test_tls_failure_names_the_cause() -> None:
    err = ssl.SSLCertVerificationError(1, "[SSL: CERTIFICATE_VERIFY_FAILED] certificate verify failed")
    err.verify_message = "self-signed certificate"
    assert base.tls_failure(err) == Result(Outcome.BAD_RESPONSE,
                                          "TLS handshake failed: certificate verify failed: self-signed certificate")
    plain = ssl.SSLError(1, "[SSL: WRONG_VERSION_NUMBER] wrong version number")
    plain.reason = "WRONG_VERSION_NUMBER"
    assert base.tls_failure(plain).reason == "TLS handshake failed: wrong version number"
    assert base.tls_failure(ConnectionResetError()).reason == "TLS handshake failed: peer closed the connection"


@pytest.mark.parametrize(("data", "quoted"), [
    (b"", "''"),
    (b"554 go away\r\n", "'554 go away\\r\\n'"),
    (b"\xff\xfeok", "'\ufffd\ufffdok'"),
    (b"x" * 200, "'" + "x" * 80 + "'…"),
])
def test_quote_is_short_and_printable(data: bytes, quoted: str) -> None:
    assert base.quote(data) == quoted


def test_expect_failure_quotes_what_came() -> None:
    r = tcp.expect_failure("^220", b"554 no\r\n", "connection closed")
    assert r == Result(Outcome.BAD_RESPONSE, "expected '^220', connection closed; received 8 bytes: '554 no\\r\\n'")
    assert tcp.expect_failure("^220", b"", "connection closed").reason == \
        "connection closed before anything was received (expected '^220')"
    assert tcp.matches(re.compile("^220 "), b"220 ready\r\n")


# ---------------------------------------------------------------- real peers


async def test_connect_only_is_up() -> None:
    async with line_peer() as port:
        r = await tcp.probe(settings(port))
    assert r.outcome is Outcome.UP and r.reason == ""
    assert r.latency_s is not None and 0 < r.latency_s < 1


async def test_connect_only_closes_with_a_reset_and_leaves_no_time_wait() -> None:
    """The peer sees a reset, not an orderly close, so no socket of the probe's waits in TIME_WAIT afterwards."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    try:
        r = await tcp.probe(settings(port))
        assert r.outcome is Outcome.UP
        listener.settimeout(2.0)
        conn, (_, probe_port) = listener.accept()
        with conn:
            conn.settimeout(2.0)
            with pytest.raises(ConnectionResetError):
                conn.recv(1)  # an orderly close would read b""
        waiting = [line for line in Path("/proc/net/tcp").read_text().splitlines()[1:]
                   if line.split()[1].endswith(f":{probe_port:04X}") and line.split()[3] == "06"]  # 06: TIME_WAIT
        assert waiting == []
    finally:
        listener.close()


async def test_refused_on_a_closed_port() -> None:
    r = await tcp.probe(settings(closed_port()))
    assert r == Result(Outcome.REFUSED, "connection refused")


async def test_connect_timeout_when_syns_are_dropped() -> None:
    with syn_blackhole() as port:
        t0 = time.perf_counter()
        r = await tcp.probe(settings(port, timeout_s=1.0))
    assert r.outcome is Outcome.TIMEOUT
    assert r.reason == f"connect to 127.0.0.1:{port} timed out after 0.9s"
    assert time.perf_counter() - t0 < 1.0


async def test_connects_in_flight_together_each_get_their_own_outcome() -> None:
    """Connects in flight at once share the loop's Watch (one epoll set): each ends with its own socket's outcome,
    and the descriptors that refused and timed-out connects freed serve later connects on the same loop."""
    with syn_blackhole() as dropped:
        async with line_peer() as up:
            refused = closed_port()
            for _ in range(3):
                ports = [up, refused, dropped] * 20
                results = await asyncio.gather(*(tcp.probe(settings(p, timeout_s=0.3)) for p in ports))
                pairs = zip(ports, results, strict=True)
                seen = {(port, r.outcome, r.reason if port != up else "") for port, r in pairs}
                assert seen == {(up, Outcome.UP, ""), (refused, Outcome.REFUSED, "connection refused"),
                                (dropped, Outcome.TIMEOUT, f"connect to 127.0.0.1:{dropped} timed out after 0.27s")}
    if hasattr(base.select, "epoll"):
        watched = base.watch(asyncio.get_running_loop())
        assert watched is not None and not watched._callbacks  # every connect took its callback out


async def test_connect_deadlines_each_fire_on_time_whatever_their_order() -> None:
    """Connects in flight share one timer for their deadlines: a later connect with an earlier deadline, and one
    with a later deadline, each time out at their own."""
    async def timed(timeout_s: float, port: int) -> tuple[Result, float]:
        t0 = time.perf_counter()
        r = await tcp.probe(settings(port, timeout_s=timeout_s))
        return r, time.perf_counter() - t0

    with syn_blackhole() as dropped:
        slow = asyncio.create_task(timed(1.0, dropped))
        await asyncio.sleep(0.05)
        fast = await asyncio.gather(timed(0.3, dropped), timed(0.5, dropped))
        (r_slow, t_slow), = await asyncio.gather(slow)
    for (r, elapsed), budget_s in [*zip(fast, (0.27, 0.45), strict=True), ((r_slow, t_slow), 0.9)]:
        assert r == Result(Outcome.TIMEOUT, f"connect to 127.0.0.1:{dropped} timed out after {budget_s:g}s")
        assert budget_s <= elapsed < budget_s + 0.1


async def test_banner_expect_matches() -> None:
    async with line_peer(b"220 smtp.example ESMTP\r\n") as port:
        r = await tcp.probe(settings(port, expect=r"^220 "))
    assert r.outcome is Outcome.UP


async def test_send_expect_round_trip() -> None:
    async with line_peer(b"", {b"PING": b"+PONG\r\n"}) as port:
        r = await tcp.probe(settings(port, send="PING\r\n", expect=r"\+PONG"))
    assert r.outcome is Outcome.UP


async def test_expect_mismatch_on_close_quotes_the_banner() -> None:
    async with line_peer(b"554 not today\r\n") as port:
        r = await tcp.probe(settings(port, send="QUIT\r\n", expect="^220"))
    assert r == Result(Outcome.BAD_RESPONSE,
                       "expected '^220', connection closed; received 15 bytes: '554 not today\\r\\n'")


async def test_expect_mismatch_when_the_peer_keeps_the_line_open() -> None:
    async with line_peer(b"554 not today\r\n") as port:
        t0 = time.perf_counter()
        r = await tcp.probe(settings(port, expect="^220", timeout_s=0.5))
    assert r.outcome is Outcome.BAD_RESPONSE
    assert r.reason == "expected '^220', no match within 0.45s; received 15 bytes: '554 not today\\r\\n'"
    assert time.perf_counter() - t0 < 0.6


async def test_expect_bounded_by_max_read_bytes() -> None:
    async with line_peer(b"y" * 5000) as port:
        r = await tcp.probe(settings(port, expect="^220", max_read_bytes=1024))
    assert r.outcome is Outcome.BAD_RESPONSE
    assert r.reason.startswith("expected '^220', no match in the first 1024 bytes; received 1024 bytes: 'yyy")


async def test_silent_peer_with_expect_times_out() -> None:
    async with silent_peer() as port:
        r = await tcp.probe(settings(port, expect="^220", timeout_s=0.5))
    assert r == Result(Outcome.TIMEOUT, "waiting for data after connect timed out after 0.45s")


async def test_tls_without_verification_is_up(cert: tuple[Path, Path]) -> None:
    async with line_peer(b"OK ready\r\n", tls=server_context(*cert)) as port:
        r = await tcp.probe(settings(port, tls=True, tls_verify=False, expect="^OK"))
    assert r.outcome is Outcome.UP, r.reason


async def test_tls_verification_rejects_a_self_signed_cert(cert: tuple[Path, Path]) -> None:
    async with line_peer(b"OK ready\r\n", tls=server_context(*cert)) as port:
        r = await tcp.probe(settings(port, tls=True, tls_verify=True))
    assert r == Result(Outcome.BAD_RESPONSE, "TLS handshake failed: certificate verify failed: self-signed certificate")


async def test_tls_to_a_plain_service_says_so() -> None:
    async with line_peer(b"220 plain text here, not TLS\r\n" * 4) as port:
        r = await tcp.probe(settings(port, tls=True, tls_verify=False))
    assert r.outcome is Outcome.BAD_RESPONSE
    assert r.reason.startswith("TLS handshake failed: "), r.reason


async def test_tls_to_a_silent_peer_times_out_in_the_handshake() -> None:
    async with silent_peer() as port:
        r = await tcp.probe(settings(port, tls=True, timeout_s=0.5))
    assert r == Result(Outcome.TIMEOUT, "TLS handshake timed out after 0.45s")


async def test_ipv6_loopback_target() -> None:
    try:
        server = await asyncio.start_server(lambda r, w: w.close(), "::1", 0)
    except OSError as exc:
        need(False, f"IPv6 loopback (::1) is not available on this machine: {exc}")
        raise
    async with server:
        port = server.sockets[0].getsockname()[1]
        r = await tcp.probe(TcpProbe(kind="tcp", target=f"[::1]:{port}", timeout_s=2.0))
    assert r.outcome is Outcome.UP, r.reason

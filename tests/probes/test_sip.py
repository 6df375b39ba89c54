"""The sip probe against real peers on loopback (SIPp, Kamailio, hostile asyncio servers) and its pure parts."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import pytest
from pydantic import SecretStr

from agent.probes import base, run_probe
from agent.probes.sip import Target, classify, parse_target, probe
from agent.probes.sipmessage import parse_message
from slawatch.config.probes import SipProbe
from slawatch.model import Outcome, Result
from slawatch.testing import free_port, need, need_binary
from slawatch.testing.sipp import Sipp, listening

HERE = Path(__file__).parent / "sip"
pytestmark = pytest.mark.timeout(15)


def sip(target: str, **kw: Any) -> SipProbe:
    if "password" in kw:
        kw["password"] = SecretStr(kw["password"])
    return SipProbe(kind="sip", target=target, **{"timeout_s": 2.0, **kw})


async def timed(settings: SipProbe) -> tuple[Result, float]:
    """Run through the real wrapper (the outer deadline) and measure the wall time."""
    t0 = time.perf_counter()
    run = await run_probe(settings)
    return run.result, time.perf_counter() - t0


# --- pure parts, from tables ---

@pytest.mark.parametrize(("uri", "transport", "expected"), [
    ("sip:127.0.0.1", "udp", Target("sip", None, "127.0.0.1", 5060, "udp")),
    ("sip:127.0.0.1:5080", "tcp", Target("sip", None, "127.0.0.1", 5080, "tcp")),
    ("sip:alice@pbx.example:5062", "udp", Target("sip", "alice", "pbx.example", 5062, "udp")),
    ("sip:[::1]", "tls", Target("sip", None, "::1", 5061, "tls")),
    ("sip:[::1]:5070;transport=tcp", "tcp", Target("sip", None, "::1", 5070, "tcp")),
    ("sips:pbx.example", "udp", Target("sips", None, "pbx.example", 5061, "tls")),
])
def test_parse_target(uri: str, transport: str, expected: Target) -> None:
    assert parse_target(uri, transport) == expected


U, D, B = Outcome.UP, Outcome.DEGRADED, Outcome.BAD_RESPONSE


@pytest.mark.parametrize(("status", "reason", "method", "policy", "kw", "expected"), [
    (200, "OK", "OPTIONS", {}, {}, Result(U)),
    (202, "Accepted", "REGISTER", {}, {}, Result(U)),
    (401, "Unauthorized", "OPTIONS", {}, {}, Result(U, "SIP 401 Unauthorized (alive, auth required)")),
    (407, "Proxy Authentication Required", "OPTIONS", {}, {},
     Result(U, "SIP 407 Proxy Authentication Required (alive, auth required)")),
    (503, "Service Unavailable", "OPTIONS", {}, {}, Result(B, "SIP 503 Service Unavailable")),
    (503, "Service Unavailable", "OPTIONS", {"503": "degraded"}, {}, Result(D, "SIP 503 Service Unavailable")),
    (503, "Service Unavailable", "OPTIONS", {"5xx": "up"}, {}, Result(U, "SIP 503 Service Unavailable")),
    (503, "Service Unavailable", "OPTIONS", {"5xx": "up", "503": "down"}, {},
     Result(B, "SIP 503 Service Unavailable")),
    (200, "OK", "OPTIONS", {"2xx": "degraded"}, {}, Result(D, "SIP 200 OK")),
    (404, "Not Found", "OPTIONS", {}, {}, Result(B, "SIP 404 Not Found")),
    (405, "", "OPTIONS", {}, {}, Result(B, "SIP 405")),
    (486, "Busy\x1b[31m", "OPTIONS", {}, {}, Result(B, "SIP 486 Busy\\x1b[31m")),
    (401, "Unauthorized", "REGISTER", {}, {},
     Result(B, "SIP 401 Unauthorized (auth required, no username/password configured)")),
    (401, "Unauthorized", "REGISTER", {}, {"credentials": True, "auth_answered": True},
     Result(B, "SIP 401 Unauthorized (credentials rejected)")),
    (403, "Forbidden", "REGISTER", {}, {"credentials": True, "auth_answered": True},
     Result(B, "SIP 403 Forbidden (credentials rejected)")),
    (403, "Forbidden", "REGISTER", {}, {}, Result(B, "SIP 403 Forbidden")),
])
def test_classify(status: int, reason: str, method: str, policy: dict[str, str], kw: dict[str, bool],
                  expected: Result) -> None:
    assert classify(status, reason, method, policy, **kw) == expected


# --- SIPp as the peer ---

@dataclass
class Peer:
    port: int
    proc: subprocess.Popen[bytes]
    messages: Path


@pytest.fixture
def sipp(tmp_path: Path) -> Iterator[Callable[[str, str], Peer]]:
    need_binary("sipp", "sip-tester")
    peers: list[Sipp] = []

    def start(scenario: str, transport: str = "udp") -> Peer:
        peer = Sipp(HERE / scenario, tmp_path, transport=transport, messages=tmp_path / f"{scenario}.msg")
        peers.append(peer.start())
        assert peer.proc is not None and peer.messages is not None
        return Peer(peer.port, peer.proc, peer.messages)

    yield start
    for peer in peers:
        peer.stop()


TRANSPORTS = pytest.mark.parametrize("transport", ["udp", "tcp"])


@pytest.mark.peer("sipp")
@TRANSPORTS
async def test_options_200(sipp: Callable[[str, str], Peer], transport: str) -> None:
    peer = sipp("options_200.xml", transport)
    result, _elapsed = await timed(sip(f"sip:127.0.0.1:{peer.port}", transport=transport))
    assert result.outcome is Outcome.UP and result.reason == ""
    assert result.latency_s is not None and result.latency_s < 0.5
    print(f"OPTIONS over {transport} to SIPp: {result.latency_s * 1000:.3f} ms")


@pytest.mark.peer("sipp")
@TRANSPORTS
async def test_options_503_is_down_with_its_reason(sipp: Callable[[str, str], Peer], transport: str) -> None:
    peer = sipp("options_503.xml", transport)
    result, _ = await timed(sip(f"sip:127.0.0.1:{peer.port}", transport=transport))
    assert result == Result(Outcome.BAD_RESPONSE, "SIP 503 Service Unavailable", result.latency_s)


@pytest.mark.peer("sipp")
async def test_options_503_degraded_by_policy(sipp: Callable[[str, str], Peer]) -> None:
    peer = sipp("options_503.xml", "udp")
    result, _ = await timed(sip(f"sip:127.0.0.1:{peer.port}", responses={"5xx": "degraded"}))
    assert (result.outcome, result.reason) == (Outcome.DEGRADED, "SIP 503 Service Unavailable")


@pytest.mark.peer("sipp")
@TRANSPORTS
async def test_options_401_is_up_auth_required(sipp: Callable[[str, str], Peer], transport: str) -> None:
    peer = sipp("options_401.xml", transport)
    result, _ = await timed(sip(f"sip:127.0.0.1:{peer.port}", transport=transport))
    assert (result.outcome, result.reason) == (Outcome.UP, "SIP 401 Unauthorized (alive, auth required)")


@pytest.mark.peer("sipp")
async def test_provisional_is_ignored_latency_to_final(sipp: Callable[[str, str], Peer]) -> None:
    peer = sipp("options_100_then_200.xml", "udp")
    result, _ = await timed(sip(f"sip:127.0.0.1:{peer.port}"))
    assert result.outcome is Outcome.UP
    assert result.latency_s is not None and 0.29 < result.latency_s < 0.6


@pytest.mark.peer("sipp")
@TRANSPORTS
async def test_malformed_answer(sipp: Callable[[str, str], Peer], transport: str) -> None:
    peer = sipp("options_malformed.xml", transport)
    result, _ = await timed(sip(f"sip:127.0.0.1:{peer.port}", transport=transport))
    assert result.outcome is Outcome.BAD_RESPONSE
    assert result.reason == "malformed SIP response: bad header line 'this header line has no colon'"


@pytest.mark.peer("sipp")
async def test_no_answer_udp_retransmits_per_timer_a(sipp: Callable[[str, str], Peer]) -> None:
    peer = sipp("options_silent.xml", "udp")
    result, elapsed = await timed(sip(f"sip:127.0.0.1:{peer.port}", timeout_s=2.0))
    # inner deadline 1.8 s: sent at 0, 0.5 and 1.5 s
    assert result == Result(Outcome.TIMEOUT, "no SIP answer within 2s (3 UDP transmissions)")
    assert 1.7 < elapsed < 2.1
    peer.proc.terminate()
    peer.proc.wait(3)
    assert peer.messages.read_text().count("OPTIONS sip:") == 3


@pytest.mark.peer("sipp")
async def test_no_answer_tcp(sipp: Callable[[str, str], Peer]) -> None:
    peer = sipp("options_silent.xml", "tcp")
    result, elapsed = await timed(sip(f"sip:127.0.0.1:{peer.port}", transport="tcp", timeout_s=1.0))
    assert result == Result(Outcome.TIMEOUT, "no SIP answer within 1s over TCP")
    assert elapsed < 1.1


@pytest.mark.parametrize(("password", "expected"), [
    ("s3cret", Result(Outcome.UP)),
    ("wrong", Result(Outcome.BAD_RESPONSE, "SIP 403 Forbidden (credentials rejected)")),
])
@pytest.mark.peer("sipp")
async def test_register_md5_digest_against_sipp(sipp: Callable[[str, str], Peer], password: str,
                                                expected: Result) -> None:
    peer = sipp("register_md5.xml", "udp")
    result, _ = await timed(sip(f"sip:127.0.0.1:{peer.port}", method="REGISTER", username="alice",
                                password=password))
    assert (result.outcome, result.reason) == (expected.outcome, expected.reason)
    peer.proc.terminate()
    peer.proc.wait(3)
    trace = peer.messages.read_text()
    registers = [block for block in trace.split("\n\n") if "REGISTER sip:127.0.0.1" in block]
    assert len(registers) == 2, trace
    assert all("Expires: 0" in r for r in registers)  # a query: no binding is ever left behind
    assert 'Authorization: Digest username="alice", realm="slawatch.test"' in registers[1]
    assert "algorithm=MD5, qop=auth, nc=00000001" in registers[1] and 'opaque="op4que"' in registers[1]


@pytest.mark.peer("sipp")
async def test_register_without_credentials(sipp: Callable[[str, str], Peer]) -> None:
    peer = sipp("register_md5.xml", "udp")
    result, _ = await timed(sip(f"sip:127.0.0.1:{peer.port}", method="REGISTER"))
    assert result.reason == "SIP 401 Unauthorized (auth required, no username/password configured)"


# --- Kamailio: TLS and a SHA-256 digest registrar ---

@dataclass
class Kamailio:
    udp_port: int
    tls_port: int
    ca: Path


@pytest.fixture(scope="module")
def kamailio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kamailio]:
    binary = need_binary("kamailio", "kamailio kamailio-tls-modules")
    openssl = need_binary("openssl", "openssl")
    d = tmp_path_factory.mktemp("kamailio")

    def ssl(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True)

    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    ssl("req", "-x509", *ec, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2", "-subj", "/CN=slawatch test CA")
    ssl("req", *ec, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1")
    (d / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n")
    ssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
        "-out", "server.pem", "-days", "2", "-extfile", "ext.cnf")
    udp_port, tls_port = free_port(socket.SOCK_DGRAM), free_port()
    cfg = (HERE / "kamailio.cfg").read_text()
    for name, value in [("UDP_PORT", udp_port), ("TLS_PORT", tls_port), ("CERT", d / "server.pem"),
                        ("KEY", d / "server.key")]:
        cfg = cfg.replace(f"@{name}@", str(value))
    (d / "kamailio.cfg").write_text(cfg)
    (d / "run").mkdir()
    log = open(d / "kamailio.log", "wb")  # noqa: SIM115 - closed at teardown
    proc = subprocess.Popen([binary, "-f", str(d / "kamailio.cfg"), "-DD", "-E", "-m", "32", "-M", "4",
                             "-Y", str(d / "run"), "-P", str(d / "kamailio.pid")], stdout=log, stderr=log,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not (listening(tls_port, "tcp") and listening(udp_port, "udp")):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"kamailio did not start: {(d / 'kamailio.log').read_text()[-2000:]}")
            time.sleep(0.05)
        yield Kamailio(udp_port, tls_port, d / "ca.pem")
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


@pytest.mark.peer("kamailio")
async def test_tls_without_verification(kamailio: Kamailio) -> None:
    result, _ = await timed(sip(f"sip:127.0.0.1:{kamailio.tls_port}", transport="tls", tls_verify=False))
    assert result.outcome is Outcome.UP and result.latency_s is not None
    print(f"OPTIONS over TLS to Kamailio, request to final response: {result.latency_s * 1000:.3f} ms")


@pytest.mark.peer("kamailio")
async def test_tls_verified_with_the_test_ca(kamailio: Kamailio) -> None:
    result, _ = await timed(sip(f"sip:127.0.0.1:{kamailio.tls_port}", transport="tls", tls_ca=kamailio.ca))
    assert result.outcome is Outcome.UP


@pytest.mark.peer("kamailio")
async def test_tls_sips_uri_with_the_test_ca(kamailio: Kamailio) -> None:
    result, _ = await timed(sip(f"sips:127.0.0.1:{kamailio.tls_port}", tls_ca=kamailio.ca))
    assert result.outcome is Outcome.UP


@pytest.mark.peer("kamailio")
async def test_tls_unknown_ca_fails_with_certificate_reason(kamailio: Kamailio) -> None:
    result, _ = await timed(sip(f"sip:127.0.0.1:{kamailio.tls_port}", transport="tls"))
    assert result.outcome is Outcome.BAD_RESPONSE
    assert result.reason.startswith("TLS handshake failed: certificate verify failed")


@pytest.mark.peer("kamailio")
async def test_options_udp_to_kamailio(kamailio: Kamailio) -> None:
    result, _ = await timed(sip(f"sip:127.0.0.1:{kamailio.udp_port}"))
    assert result.outcome is Outcome.UP  # Kamailio drops ill-formed requests silently: this one is well formed


@pytest.mark.parametrize(("user", "password", "expected"), [
    ("alice", "s3cret", Result(Outcome.UP)),
    ("alice", "wrong", Result(Outcome.BAD_RESPONSE, "SIP 403 Forbidden (credentials rejected)")),
])
@pytest.mark.peer("kamailio")
@pytest.mark.parametrize("transport", ["udp", "tls"])
async def test_register_sha256_digest_against_kamailio(kamailio: Kamailio, user: str, password: str,
                                                       expected: Result, transport: str) -> None:
    # The registrar answers 400 unless the REGISTER carried Expires: 0 (see kamailio.cfg).
    port = kamailio.udp_port if transport == "udp" else kamailio.tls_port
    result, _ = await timed(sip(f"sip:127.0.0.1:{port}", transport=transport, tls_ca=kamailio.ca,
                                method="REGISTER", username=user, password=password))
    assert (result.outcome, result.reason) == (expected.outcome, expected.reason)


# --- closed ports and hostile peers ---

async def test_closed_udp_port_is_refused() -> None:
    port = free_port(socket.SOCK_DGRAM)
    result, elapsed = await timed(sip(f"sip:127.0.0.1:{port}"))
    assert result.outcome is Outcome.REFUSED
    assert result.reason.startswith("connection refused (ICMP port unreachable)")
    assert elapsed < 0.6


async def test_closed_tcp_port_is_refused() -> None:
    port = free_port()
    result, _ = await timed(sip(f"sip:127.0.0.1:{port}", transport="tcp"))
    assert (result.outcome, result.reason) == (Outcome.REFUSED, f"connection refused by TCP 127.0.0.1:{port}")


@contextlib.asynccontextmanager
async def stream_peer(handler: Callable[[asyncio.StreamReader, asyncio.StreamWriter], Any]) -> AsyncIterator[int]:
    tasks: set[asyncio.Task[Any]] = set()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        try:
            with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
                await handler(reader, writer)
        finally:
            writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def _silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await asyncio.sleep(30)


async def _one_byte_per_second(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    for byte in b"SIP/2.0 200 OK\r\nVia: x\r\n":
        writer.write(bytes([byte]))
        await writer.drain()
        await asyncio.sleep(1)


async def _ten_megabytes(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    chunk = b"SIP/2.0 200 OK\r\n" + b"X-Junk: " + b"A" * (1 << 20)
    for _ in range(10):
        writer.write(chunk)
        await writer.drain()


async def _huge_content_length(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")
    writer.write(b"SIP/2.0 200 OK\r\nContent-Length: 10000000\r\n\r\n" + b"B" * 100_000)
    await writer.drain()
    await asyncio.sleep(5)


async def _close_at_once(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    await reader.readuntil(b"\r\n\r\n")


@pytest.mark.parametrize(("handler", "outcome", "reason"), [
    (_silent, Outcome.TIMEOUT, "no SIP answer within 2s over TCP"),
    (_one_byte_per_second, Outcome.TIMEOUT, "no SIP answer within 2s over TCP, 2 bytes of an unfinished message"),
    (_ten_megabytes, Outcome.BAD_RESPONSE, "malformed SIP response: SIP message over 64 KiB (no end of headers)"),
    (_huge_content_length, Outcome.BAD_RESPONSE,
     "malformed SIP response: SIP message over 64 KiB (Content-Length 10000000)"),
    (_close_at_once, Outcome.BAD_RESPONSE, "connection closed by the peer without a SIP answer"),
])
async def test_hostile_tcp_peers(handler: Callable[..., Any], outcome: Outcome, reason: str) -> None:
    async with stream_peer(handler) as port:
        result, elapsed = await timed(sip(f"sip:127.0.0.1:{port}", transport="tcp", timeout_s=2.0))
    assert (result.outcome, result.reason) == (outcome, reason)
    assert elapsed < 2.1


class _Responder(asyncio.DatagramProtocol):
    """A minimal UAS over UDP: answers each request with `status`, echoing the headers that identify it."""

    def __init__(self, status: str) -> None:
        self.status = status
        self.transport: asyncio.DatagramTransport | None = None
        self.requests: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.requests.append(data)
        req = parse_message(data)
        lines = [f"SIP/2.0 {self.status}"] + [f"{name}: {req.header(name)}" for name in
                                             ("via", "from", "to", "call-id", "cseq")] + ["Content-Length: 0"]
        assert self.transport is not None
        self.transport.sendto(("\r\n".join(lines) + "\r\n\r\n").encode(), addr)


async def test_ipv6_loopback_and_request_shape() -> None:
    need(socket.has_ipv6, "this Python has no IPv6")
    loop = asyncio.get_running_loop()
    try:
        transport, responder = await loop.create_datagram_endpoint(lambda: _Responder("200 OK"),
                                                                   local_addr=("::1", 0))
    except OSError as exc:
        need(False, f"no ::1 here: {exc}")
        raise
    try:
        port = transport.get_extra_info("sockname")[1]
        result, _ = await timed(sip(f"sip:alice@[::1]:{port}"))
    finally:
        transport.close()
    assert result.outcome is Outcome.UP
    req = parse_message(responder.requests[0])
    assert req.method == "OPTIONS"
    via = req.header("via") or ""
    assert via.startswith("SIP/2.0/UDP [::1]:") and ";branch=z9hG4bK" in via and via.endswith(";rport")
    assert req.header("user-agent") == "slawatch/0.1.0"
    assert req.header("to") == f"<sip:alice@[::1]:{port}>"
    assert (req.header("from") or "").split(";tag=")[1]
    assert req.header("contact") == f"<sip:slawatch@{via.split()[1].split(';')[0]}>"
    assert req.header("max-forwards") == "70" and req.header("content-length") == "0"


async def test_stray_answers_are_ignored() -> None:
    """A response for another transaction (wrong branch) does not end this one."""
    loop = asyncio.get_running_loop()

    class Stray(_Responder):
        def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
            assert self.transport is not None
            self.transport.sendto(data.replace(b"branch=z9hG4bK-", b"branch=z9hG4bK-other")
                                  .replace(b"OPTIONS sip:", b"SIP/2.0 200 OK\r\nX: sip:", 1), addr)
            super().datagram_received(data, addr)

    transport, _ = await loop.create_datagram_endpoint(lambda: Stray("486 Busy Here"), local_addr=("127.0.0.1", 0))
    try:
        result, _ = await timed(sip(f"sip:127.0.0.1:{transport.get_extra_info('sockname')[1]}"))
    finally:
        transport.close()
    assert (result.outcome, result.reason) == (Outcome.BAD_RESPONSE, "SIP 486 Busy Here")


async def test_probe_never_raises_on_a_missing_ca_file(tmp_path: Path) -> None:
    port = free_port()
    result = await probe(sip(f"sip:127.0.0.1:{port}", transport="tls", tls_ca=tmp_path / "missing.pem"))
    assert result.outcome is Outcome.AGENT_ERROR and result.reason.startswith("cannot load tls_ca ")
    assert result.reason.endswith("missing.pem: No such file or directory")


def _response(request: bytes, status: str = "200 OK", **changed: str) -> bytes:
    """A response to `request` echoing the headers that identify it; `changed` replaces some (call_id=...)."""
    req = parse_message(request)
    names = ("via", "from", "to", "call-id", "cseq")
    lines = [f"SIP/2.0 {status}"] + [f"{n}: {changed.get(n.replace('-', '_'), req.header(n))}" for n in names]
    return ("\r\n".join([*lines, "Content-Length: 0"]) + "\r\n\r\n").encode()


class _Scripted(asyncio.DatagramProtocol):
    """Answers every request with the datagrams `script(request)` makes, all at once (one burst)."""

    def __init__(self, script: Callable[[bytes], list[bytes]]) -> None:
        self.script = script
        self.transport: asyncio.DatagramTransport | None = None
        self.requests = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        self.requests += 1
        assert self.transport is not None
        for datagram in self.script(data):
            self.transport.sendto(datagram, addr)


@contextlib.asynccontextmanager
async def udp_peer(script: Callable[[bytes], list[bytes]]) -> AsyncIterator[_Scripted]:
    loop = asyncio.get_running_loop()
    transport, peer = await loop.create_datagram_endpoint(lambda: _Scripted(script), local_addr=("127.0.0.1", 0))
    try:
        yield peer
    finally:
        transport.close()


def _port(peer: _Scripted) -> int:
    assert peer.transport is not None
    return int(peer.transport.get_extra_info("sockname")[1])


def _strays(request: bytes, count: int) -> list[bytes]:
    """Answers to other transactions: another Via branch or another Call-ID, alternately."""
    via = parse_message(request).header("via") or ""
    other_branch = via.replace("branch=z9hG4bK-", "branch=z9hG4bK-other")
    return [_response(request, "200 OK", via=other_branch) if i % 2 else
            _response(request, "200 OK", call_id=f"stray-{i}@elsewhere") for i in range(count)]


@pytest.mark.parametrize("strays", [99, 150])  # a burst of 160+ overflows the socket buffer
async def test_udp_flood_of_strays_does_not_hide_the_answer(strays: int) -> None:
    """Answers to other transactions arrive in one burst just before the real one (the probe once kept a
    bounded queue of whatever arrived, and lost the answer behind them)."""
    async with udp_peer(lambda request: [*_strays(request, strays), _response(request)]) as peer:
        result, elapsed = await timed(sip(f"sip:127.0.0.1:{_port(peer)}"))
    assert (result.outcome, result.reason) == (Outcome.UP, "")
    assert peer.requests == 1 and elapsed < 0.4  # answered on the first transmission, not a retransmission


async def test_udp_timeout_counts_the_strays() -> None:
    async with udp_peer(lambda request: _strays(request, 5)) as peer:
        result, _ = await timed(sip(f"sip:127.0.0.1:{_port(peer)}", timeout_s=1.0))
    assert result == Result(Outcome.TIMEOUT, "no SIP answer within 1s (2 UDP transmissions; "
                                             "10 SIP messages for other transactions ignored)")


async def test_udp_garbage_then_a_valid_answer_is_up() -> None:
    async with udp_peer(lambda request: [b"\x00\xffnot SIP at all", b"SIP/2.0 200 OK\r\n\r\n",
                                         _response(request, "200 OK")]) as peer:
        result, _ = await timed(sip(f"sip:127.0.0.1:{_port(peer)}"))
    assert (result.outcome, result.reason) == (Outcome.UP, "")


async def test_udp_garbage_only_is_malformed_by_the_deadline() -> None:
    async with udp_peer(lambda request: [b"\x00\xffnot SIP at all", b"SIP/2.0 200 OK\r\n\r\n"]) as peer:
        result, elapsed = await timed(sip(f"sip:127.0.0.1:{_port(peer)}", timeout_s=1.0))
    # the first garbage is reported, at the inner deadline (0.9 s), not as a timeout
    assert result == Result(Outcome.BAD_RESPONSE, "malformed SIP response: no end of headers (blank line)")
    assert 0.85 < elapsed < 1.0
    assert peer.requests == 2  # retransmitted meanwhile (timer A), in case a valid answer comes


async def test_udp_runs_in_flight_together_each_get_their_own_answer() -> None:
    """UDP runs at once share the loop's Watch (one epoll set): each gets its own socket's answer or its own ICMP
    port unreachable, and each takes its reader out when it ends."""
    closed = free_port(socket.SOCK_DGRAM)
    async with udp_peer(lambda request: [_response(request)]) as peer:
        up = _port(peer)
        targets = [up, closed] * 20
        results = await asyncio.gather(*(probe(sip(f"sip:127.0.0.1:{port}")) for port in targets))
    seen = {(port, r.outcome, r.reason.split(" (")[0]) for port, r in zip(targets, results, strict=True)}
    assert seen == {(up, Outcome.UP, ""), (closed, Outcome.REFUSED, "connection refused")}
    watched = base.watch(asyncio.get_running_loop())
    assert watched is None or not watched._callbacks

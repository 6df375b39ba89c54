"""The `sip` probe: one OPTIONS or REGISTER transaction over UDP, TCP or TLS, read as a Result."""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import logging
import math
import secrets
import socket
import ssl
from collections.abc import Awaitable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any, Protocol, TypeVar

from agent.probes.address import literal_once, resolve
from agent.probes.base import inner_timeout, sock_connect, watch
from agent.probes.options import Env, credential_settings, credentials, tls_options, tls_verify
from agent.probes.sipmessage import (
    MAX_MESSAGE_BYTES,
    Request,
    SipMessage,
    SipParseError,
    authorization,
    format_host,
    matches,
    parse_message,
    pick_challenge,
    printable,
    stream_message_length,
)
from slawatch import __version__
from slawatch.config.probes import SIP_URI, SipProbe
from slawatch.model import Outcome, Result

log = logging.getLogger(__name__)

T1_S = 0.5  # RFC 3261 timer T1: first retransmission interval over UDP, doubling each time
T2_S = 4.0  # RFC 3261 timer T2: the cap of that interval (and the interval once a 1xx arrived)
CLOSE_WAIT_S = 0.05  # how long a stream close may wait for the peer's side of the goodbye
USER_AGENT = f"slawatch/{__version__}"
UDP_READ_BYTES = 65536  # any datagram whole: a longer SIP message is malformed anyway

_T = TypeVar("_T")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a probe goes: parsed from `sip:[USER@]HOST[:PORT]` and the configured transport."""

    scheme: str
    user: str | None
    host: str
    port: int
    transport: str  # udp, tcp or tls

    @property
    def hostport(self) -> str:
        return f"{format_host(self.host)}:{self.port}"


def parse_target(uri: str, transport: str) -> Target:
    """`sip:HOST`, `sip:HOST:PORT`, `sip:USER@HOST:PORT`, `sip:[v6]:PORT`; `sips:` always means TLS."""
    m = SIP_URI.fullmatch(uri.strip())
    if not m:
        raise ValueError(f"bad SIP URI {uri!r}")
    scheme = m.group(1).lower()
    transport = "tls" if scheme == "sips" else transport.lower()
    port = int(m.group(4)) if m.group(4) else (5061 if transport == "tls" else 5060)
    return Target(scheme, m.group(2), m.group(3).strip("[]"), port, transport)


# A target is parsed once per distinct string, not on every run (Target is immutable).
_target = functools.lru_cache(maxsize=65536)(parse_target)


def classify(status: int, reason: str, method: str, policy: Mapping[str, str], *,
             credentials: bool = False, auth_answered: bool = False) -> Result:
    """The final response's status code read through the configured policy and then the defaults.

    Defaults: 2xx up; 401/407 to OPTIONS up (the server is alive and wants auth); anything else,
    503 included, down as bad_response with the status line as the reason."""
    line = f"SIP {status} {printable(reason)}".rstrip()
    action = policy.get(str(status)) or policy.get(f"{status // 100}xx")
    if action == "up":
        return Result(Outcome.UP, "" if 200 <= status < 300 else line)
    if action == "degraded":
        return Result(Outcome.DEGRADED, line)
    if action == "down":
        return Result(Outcome.BAD_RESPONSE, line)
    if 200 <= status < 300:
        return Result(Outcome.UP)
    if status in (401, 407):
        if method == "OPTIONS":
            return Result(Outcome.UP, f"{line} (alive, auth required)")
        if not credentials:
            return Result(Outcome.BAD_RESPONSE, f"{line} (auth required, no username/password configured)")
    if auth_answered and status in (401, 403, 407):
        return Result(Outcome.BAD_RESPONSE, f"{line} (credentials rejected)")
    return Result(Outcome.BAD_RESPONSE, line)


class _PeerClosed(Exception):
    """The stream peer closed the connection before answering."""


class _LocalProblem(Exception):
    """Something on this side (a CA file that cannot be read) keeps the probe from running."""


class _Channel(Protocol):
    reliable: bool
    local: tuple[str, int]
    received: int  # bytes of a message not complete yet (stream transports), for the reason

    @property
    def strays(self) -> int:
        """Messages that answered something else (datagram transports), for the reason."""

    @property
    def malformed(self) -> SipParseError | None:
        """The first undecodable datagram, reported only when nothing valid came before the deadline."""

    def expect(self, request: Request) -> None: ...

    def send(self, data: bytes) -> None: ...

    async def receive(self) -> SipMessage: ...

    async def close(self, deadline: float) -> None: ...


class _UdpProtocol(asyncio.DatagramProtocol):
    """Judges each datagram as it arrives against the transaction in progress and keeps only what answers it:
    the latest provisional and the first final response. A flood of strays costs no memory and cannot push
    the real answer out; garbage is remembered, not fatal, since a valid answer may still follow."""

    def __init__(self) -> None:
        self.request: Request | None = None
        self.final: SipMessage | None = None
        self.provisional: SipMessage | None = None  # not yet handed to the transaction
        self.error: Exception | None = None
        self.malformed: SipParseError | None = None
        self.strays = 0
        self.waiter: asyncio.Future[None] | None = None

    def expect(self, request: Request) -> None:
        self.request, self.final, self.provisional, self.error = request, None, None, None
        self.malformed, self.strays = None, 0

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        if self.request is None or self.final is not None:
            return
        try:
            msg = parse_message(data)
        except SipParseError as exc:
            if self.malformed is None:
                self.malformed = exc
            return
        if not matches(msg, self.request):
            self.strays += 1  # a stray or late answer to something else
            return
        if msg.status < 200:
            self.provisional = msg
        else:
            self.final = msg
        self._wake()

    def error_received(self, exc: Exception) -> None:
        if self.error is None:
            self.error = exc
        self._wake()


class _UdpChannel:
    """A connected UDP socket read by a reader callback, as asyncio's datagram transport does (one datagram per
    wake-up), without building the transport: that was about a fifth of a UDP probe's CPU."""

    reliable = False

    def __init__(self, sock: socket.socket, loop: asyncio.AbstractEventLoop) -> None:
        self.sock, self.loop = sock, loop
        self.protocol = _UdpProtocol()
        sockname = sock.getsockname()
        self.local = (str(sockname[0]), int(sockname[1]))
        self.received = 0
        self._fd = sock.fileno()
        self._watch = watch(loop)
        if self._watch is not None:
            self._watch.add_reader(self._fd, self._readable)
        else:
            loop.add_reader(self._fd, self._readable)

    def _readable(self) -> None:
        try:
            data = self.sock.recv(UDP_READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:  # ICMP port unreachable comes back as ConnectionRefusedError
            self.protocol.error_received(exc)
            return
        self.protocol.datagram_received(data, ())

    @property
    def strays(self) -> int:
        return self.protocol.strays

    @property
    def malformed(self) -> SipParseError | None:
        return self.protocol.malformed

    def expect(self, request: Request) -> None:
        self.protocol.expect(request)

    def send(self, data: bytes) -> None:
        try:
            self.sock.send(data)
        except (BlockingIOError, InterruptedError):
            pass  # the send buffer is full: lost like a datagram on the way, the retransmission timer covers it
        except OSError as exc:
            self.protocol.error_received(exc)

    async def receive(self) -> SipMessage:
        p = self.protocol
        while True:
            if p.final is not None:
                return p.final
            if p.provisional is not None:
                msg, p.provisional = p.provisional, None
                return msg
            if p.error is not None:
                exc, p.error = p.error, None
                raise exc
            p.waiter = asyncio.get_running_loop().create_future()
            try:
                await p.waiter
            finally:
                p.waiter = None

    async def close(self, deadline: float) -> None:
        if self._watch is not None:
            self._watch.forget(self._fd)
        else:
            self.loop.remove_reader(self._fd)
        self.sock.close()


class _StreamChannel:
    reliable = True

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        sockname = writer.get_extra_info("sockname")
        self.local = (str(sockname[0]), int(sockname[1]))
        self.buffer = b""
        self.received = 0
        self.strays = 0
        self.malformed: SipParseError | None = None  # a stream cannot resync after garbage: parsing raises

    def expect(self, request: Request) -> None:
        pass

    def send(self, data: bytes) -> None:
        self.writer.write(data)

    async def receive(self) -> SipMessage:
        while True:
            self.buffer = self.buffer.lstrip(b"\r\n")  # keep-alive CRLFs between messages
            length = stream_message_length(self.buffer)  # raises past 64 KiB: every read is bounded
            if length is not None:
                data, self.buffer = self.buffer[:length], self.buffer[length:]
                self.received = len(self.buffer)
                return parse_message(data)
            chunk = await self.reader.read(MAX_MESSAGE_BYTES)
            if not chunk:
                raise _PeerClosed
            self.buffer += chunk
            self.received = len(self.buffer)

    async def close(self, deadline: float) -> None:
        # A polite close (TLS close_notify) if it is quick; never past the deadline, never a leaked socket.
        self.writer.close()
        remaining = min(CLOSE_WAIT_S, deadline - asyncio.get_running_loop().time())
        try:
            await asyncio.wait_for(self.writer.wait_closed(), max(0.0, remaining))
        except (TimeoutError, OSError):
            self.writer.transport.abort()


@dataclass(slots=True)
class _State:
    """What the probe got to, so that a timeout can say where it stopped."""

    target: Target
    phase: str = "resolve"
    transmissions: int = 0
    provisional: str | None = None
    authenticated: bool = False
    channel: _Channel | None = field(default=None)

    def timeout_reason(self, timeout_s: float) -> str:
        t = f"{timeout_s:g}s"
        if self.phase == "resolve":
            return f"cannot resolve {self.target.host} within {t}"
        if self.phase == "connect":
            return f"TCP connect to {self.target.hostport} timed out after {t}"
        if self.phase == "tls":
            return f"TLS handshake with {self.target.hostport} not finished within {t}"
        what = "to the authenticated REGISTER " if self.authenticated else ""
        if self.provisional is not None:
            head = f"only a provisional SIP {self.provisional} {what}within {t}"
        else:
            head = f"no SIP answer {what}within {t}"
        if self.target.transport == "udp":
            sent = f"{self.transmissions} UDP transmission{'s' if self.transmissions != 1 else ''}"
            strays = self.channel.strays if self.channel is not None else 0
            ignored = f"; {strays} SIP message{'s' if strays != 1 else ''} for other transactions ignored"
            return f"{head} ({sent}{ignored if strays else ''})"
        partial = self.channel.received if self.channel is not None else 0
        tail = f", {partial} bytes of an unfinished message" if partial else ""
        return f"{head} over {self.target.transport.upper()}{tail}"


async def _before(aw: Awaitable[_T], deadline: float) -> _T:
    """Await with the probe's own deadline (raises TimeoutError when it passes); a timer, not wait_for's task."""
    async with asyncio.timeout_at(deadline):
        return await aw


def _tls_context(settings: SipProbe) -> ssl.SSLContext:
    if not settings.tls_verify:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        return ctx
    try:
        return ssl.create_default_context(cafile=str(settings.tls_ca) if settings.tls_ca else None)
    except (OSError, ssl.SSLError) as exc:  # missing, unreadable or not PEM
        raise _LocalProblem(f"cannot load tls_ca {settings.tls_ca}: {exc.strerror or exc}") from exc


async def _open(settings: SipProbe, state: _State, deadline: float) -> _Channel:
    loop = asyncio.get_running_loop()
    target = state.target
    ctx = _tls_context(settings) if target.transport == "tls" else None
    kind = socket.SOCK_DGRAM if target.transport == "udp" else socket.SOCK_STREAM
    infos = literal_once(target.host, target.port, kind)  # an address needs no lookup, nor a timer around it
    if infos is None:
        infos = await _before(resolve(target.host, target.port, kind), deadline)
    family, _, _, _, sockaddr = infos[0]
    address = (str(sockaddr[0]), int(sockaddr[1]))
    state.phase = "connect"
    if target.transport == "udp":
        sock = socket.socket(family, socket.SOCK_DGRAM)
        try:
            sock.setblocking(False)
            sock.connect(sockaddr)  # a UDP connect only sets the peer: it does not wait
            return _UdpChannel(sock, loop)
        except BaseException:
            sock.close()
            raise
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setblocking(False)
        await _before(sock_connect(sock, address), deadline)
    except BaseException:
        sock.close()
        raise
    if ctx is not None:
        state.phase = "tls"
    reader, writer = await _before(asyncio.open_connection(
        sock=sock, ssl=ctx, server_hostname=target.host if ctx else None, limit=MAX_MESSAGE_BYTES), deadline)
    return _StreamChannel(reader, writer)


async def _transaction(channel: _Channel, request: Request, state: _State, deadline: float) -> SipMessage:
    """Send one request and wait for its final response, retransmitting over UDP (timers A/E)."""
    loop = asyncio.get_running_loop()
    data = request.encode()
    state.phase, state.transmissions, state.provisional = "answer", 1, None
    channel.expect(request)
    channel.send(data)
    interval = T1_S
    next_send = math.inf if channel.reliable else loop.time() + interval
    while True:
        wake = min(next_send, deadline)
        try:
            async with asyncio.timeout_at(wake):
                msg = await channel.receive()
        except TimeoutError:
            now = loop.time()
            if now >= deadline:
                if channel.malformed is not None:  # garbage, and nothing valid after it
                    raise channel.malformed from None
                raise
            if now >= next_send:
                channel.send(data)
                state.transmissions += 1
                interval = T2_S if state.provisional else min(interval * 2, T2_S)
                next_send = now + interval
            continue
        if not matches(msg, request):
            continue  # a stray or late answer to something else
        if msg.status < 200:
            state.provisional = msg.status_line
            if not channel.reliable:
                next_send = loop.time() + T2_S
            continue
        return msg


def _requests(settings: SipProbe, target: Target, local: tuple[str, int]) -> Request:
    host = format_host(target.host)
    default_port = 5061 if target.transport == "tls" else 5060
    hostport = host if target.port == default_port else f"{host}:{target.port}"
    local_hp = f"{format_host(local[0])}:{local[1]}"
    param = "" if target.transport == "udp" else f";transport={target.transport}"
    if target.scheme == "sips" and target.transport == "tls":
        param = ""
    user = settings.username or "slawatch"  # who is asking; the target's user part is who is asked
    if settings.method == "REGISTER":
        user = settings.username or target.user or user
        uri = f"{target.scheme}:{hostport}"
        from_uri = to_uri = f"{target.scheme}:{user}@{host}"
        extra: tuple[tuple[str, str], ...] = (("Expires", "0"),)  # query and leave no binding behind
    else:
        uri = f"{target.scheme}:{target.user + '@' if target.user else ''}{hostport}"
        to_uri = uri
        from_uri = f"{target.scheme}:{user}@{host}"
        extra = (("Accept", "application/sdp"),)
    token = secrets.token_hex(26)  # the branch, the tag and the Call-ID from one draw (one system call, not three)
    return Request(
        method=settings.method, uri=uri, transport=target.transport.upper(), local_host=local[0],
        local_port=local[1], branch=f"z9hG4bK-{token[:16]}", from_uri=from_uri,
        from_tag=token[16:28], to_uri=to_uri, call_id=f"{token[28:]}@slawatch",
        cseq=1, contact_uri=f"{target.scheme}:{user}@{local_hp}{param}", user_agent=USER_AGENT, extra=extra)


async def _exchange(settings: SipProbe, state: _State, deadline: float) -> Result:
    loop = asyncio.get_running_loop()
    channel = await _open(settings, state, deadline)
    state.channel = channel
    try:
        request = _requests(settings, state.target, channel.local)
        started = loop.time()
        response = await _transaction(channel, request, state, deadline)
        credentials = settings.username is not None and settings.password is not None
        if settings.method == "REGISTER" and response.status in (401, 407) and credentials:
            assert settings.username is not None and settings.password is not None
            header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
            offered = response.header_values(header)
            challenge = pick_challenge(offered)
            if challenge is None:
                what = "; ".join(printable(v, 60) for v in offered) or f"no {header} header"
                return Result(Outcome.BAD_RESPONSE,
                              f"SIP {response.status_line}: no usable digest challenge ({what})",
                              loop.time() - started)
            answer = authorization(challenge, username=settings.username,
                                   password=settings.password.get_secret_value(), method=request.method,
                                   uri=request.uri, cnonce=secrets.token_hex(8))
            auth_header = "Authorization" if response.status == 401 else "Proxy-Authorization"
            request = replace(request, branch=f"z9hG4bK-{secrets.token_hex(8)}", cseq=request.cseq + 1,
                              extra=(*request.extra, (auth_header, answer)))
            state.authenticated = True
            response = await _transaction(channel, request, state, deadline)
        latency = loop.time() - started
        verdict = classify(response.status, response.reason, settings.method, settings.responses,
                           credentials=credentials, auth_answered=state.authenticated)
        return Result(verdict.outcome, verdict.reason, latency)
    finally:
        await channel.close(deadline)


def _os_error(exc: OSError, state: _State) -> Result:
    target = state.target
    where = f"{target.transport.upper()} {target.hostport}"
    if isinstance(exc, socket.gaierror):
        return Result(Outcome.UNREACHABLE, f"cannot resolve {target.host}: {exc.strerror}")
    if isinstance(exc, ConnectionRefusedError):
        if target.transport == "udp":
            return Result(Outcome.REFUSED, f"connection refused (ICMP port unreachable) by {where}")
        return Result(Outcome.REFUSED, f"connection refused by {where}")
    if isinstance(exc, ConnectionResetError):
        return Result(Outcome.BAD_RESPONSE, f"connection reset by {where}")
    if exc.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH, errno.EADDRNOTAVAIL):
        return Result(Outcome.UNREACHABLE, f"{where}: {exc.strerror}")
    return Result(Outcome.UNREACHABLE, f"{where}: {exc.strerror or exc}")


async def probe(settings: SipProbe) -> Result:
    """One SIP transaction against `settings.target`; never raises."""
    state: _State | None = None
    try:
        state = _State(_target(settings.target, settings.transport))
        deadline = asyncio.get_running_loop().time() + inner_timeout(settings)
        return await _exchange(settings, state, deadline)
    except TimeoutError:
        assert state is not None
        return Result(Outcome.TIMEOUT, state.timeout_reason(settings.timeout_s))
    except SipParseError as exc:
        return Result(Outcome.BAD_RESPONSE, f"malformed SIP response: {exc}")
    except _LocalProblem as exc:
        return Result(Outcome.AGENT_ERROR, str(exc))
    except _PeerClosed:
        return Result(Outcome.BAD_RESPONSE, "connection closed by the peer without a SIP answer")
    except ssl.SSLCertVerificationError as exc:
        return Result(Outcome.BAD_RESPONSE, f"TLS handshake failed: certificate verify failed: {exc.verify_message}")
    except ssl.SSLError as exc:
        return Result(Outcome.BAD_RESPONSE, f"TLS handshake failed: {exc.reason or exc}")
    except OSError as exc:
        if state is None:
            return Result(Outcome.AGENT_ERROR, f"{type(exc).__name__}: {exc}")
        return _os_error(exc, state)
    except Exception as exc:  # a probe never raises: a bug becomes a visible agent_error
        log.exception("sip probe of %s failed unexpectedly", settings.target)
        return Result(Outcome.AGENT_ERROR, f"{type(exc).__name__}: {exc}")


# ---------------------------------------------------------------- the one-shot command line

TARGET = "sip:HOST[:PORT]"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--transport", choices=("udp", "tcp", "tls"))
    p.add_argument("--method", choices=("OPTIONS", "REGISTER"))
    credentials(p)
    tls_options(p)


def settings_from_args(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"transport": args.transport, "method": args.method, **credential_settings(args, env),
            "tls_verify": tls_verify(args)}

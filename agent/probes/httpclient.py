"""HTTP/1.1 client for the probe kinds that speak HTTP (http, haproxy): one request in a budget, failures as Results.

Every run opens a fresh connection, so it measures connect + TLS like a user's first request would, and nothing
outlives the run. The wire is an asyncio Protocol around httptools (llhttp, the parser of Node.js and, in its own
build, of aiohttp). CPU per request measured here with bench/http_clients.py (concurrency 100, a loopback aiohttp
server, three rounds on a busy 2-core machine): this client 290–350 µs; httptools in a bare Protocol 255–270;
aiohttp's low-level protocol (not public API) 300–320; httptools behind asyncio streams 285–390; h11 350–410; an
aiohttp ClientSession per request, as before, 670–870 (one shared session 530–740); a bare TCP connect 135–150.
The request path of a ClientSession (connector, tracing, cookie jar, URL objects, timers) was most of the cost.
"""

from __future__ import annotations

import asyncio
import base64
import codecs
import errno
import functools
import socket
import ssl
import zlib
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast
from urllib.parse import quote as percent_quote
from urllib.parse import urljoin, urlsplit

import httptools

from agent.probes.address import AddrInfo, literal, resolve
from agent.probes.base import QUOTE_LIMIT, Watch, connect_failure, quote, sock_connect, tls_failure, watch
from slawatch import __version__
from slawatch.config.units import redact_url
from slawatch.model import Outcome, Result

MAX_REDIRECTS = 10
MAX_HEAD_BYTES = 64 << 10
"""Status line and headers together; a peer that sends more is not answering HTTP (aiohttp allowed 8 KiB a line)."""

USER_AGENT = f"slawatch/{__version__}"
REDIRECTS = frozenset({301, 302, 303, 307, 308})

# Characters left as they are in a request target (RFC 3986 pchar, "/" and "?", and "%" of escapes already there).
_PATH_SAFE = "/%:@!$&'()*+,;=~"
_QUERY_SAFE = _PATH_SAFE + "?"


# ---------------------------------------------------------------- interpretation (pure)


def status_line(status: int, phrase: str | None = None) -> str:
    """'HTTP 500 Internal Server Error' (the standard phrase when the server sent none)."""
    if not phrase:
        try:
            phrase = HTTPStatus(status).phrase
        except ValueError:
            phrase = ""
    return f"HTTP {status} {phrase}".rstrip()


def check_status(status: int, phrase: str | None, expected: Collection[int] | None,
                 location: str | None = None) -> Result | None:
    """None when the status is acceptable (the expected set, by default any 2xx), else why not."""
    if (status in expected) if expected else (200 <= status < 300):
        return None
    reason = status_line(status, _clip(phrase))
    if 300 <= status < 400 and location is not None:
        reason += f" (redirect to {_clip(location)}; follow_redirects is off)"
    if expected:
        reason += f", expected {' or '.join(str(s) for s in sorted(expected))}"
    return Result(Outcome.BAD_RESPONSE, reason)


def _clip(text: str | None) -> str | None:
    """What a peer sent, cut to QUOTE_LIMIT characters for a reason (a head may be 64 KiB)."""
    return text if text is None or len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT] + "…"


def basic_auth(username: str, password: str) -> str:
    """The Authorization header value for HTTP Basic (RFC 7617), UTF-8."""
    if ":" in username:
        raise ValueError(f"username {username!r} contains ':', which HTTP Basic auth cannot carry")
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


@dataclass(frozen=True, slots=True)
class Target:
    """Where a URL's request goes and what its request line and Host header say."""

    tls: bool
    host: str
    port: int
    authority: str  # the Host header: host[:port] as the URL wrote it, IPv6 in brackets
    path: str  # the request target: path and query, percent-encoded
    literal: tuple[AddrInfo, ...] | None  # the address of an IP literal (no lookup on each run), None for a name

    @property
    def origin(self) -> tuple[bool, str, int]:
        return self.tls, self.host, self.port

    @property
    def address(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@functools.lru_cache(maxsize=65536)
def parse_target(url: str) -> Target:
    """The Target of an http(s) URL (ValueError when there is none); each distinct URL is parsed once."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"{redact_url(url)}: not http:// or https://")
    host = parts.hostname  # lower case, without brackets or user info
    port = parts.port  # ValueError when out of range or not a number
    if not host:
        raise ValueError(f"{redact_url(url)}: no host")
    if not host.isascii():
        host = host.encode("idna").decode("ascii")  # UnicodeError is a ValueError
    authority = parts.netloc.rpartition("@")[2]
    if not authority.isascii():
        authority = f"[{host}]" if ":" in host else host
        authority += f":{port}" if port else ""
    path = percent_quote(parts.path or "/", safe=_PATH_SAFE)
    if parts.query:
        path += "?" + percent_quote(parts.query, safe=_QUERY_SAFE)
    port = port or (443 if scheme == "https" else 80)
    addresses = literal(host, port, socket.SOCK_STREAM)
    return Target(scheme == "https", host, port, authority, path, None if addresses is None else tuple(addresses))


def redirected(url: str, location: str, status: int, method: str) -> tuple[str, str, bool]:
    """Where a redirect leads: the absolute URL, the method, and whether the request body goes along (a 303,
    and a 301/302 after POST, turn into a GET without one, as browsers and aiohttp do)."""
    after = urljoin(url, location.strip())
    if (status == 303 and method != "HEAD") or (status in (301, 302) and method == "POST"):
        return after, "GET", False
    return after, method, True


def request_head(method: str, target: Target, headers: Mapping[str, str], body_bytes: int | None) -> bytes:
    """Request line and headers; the configured headers replace the defaults of the same name."""
    given = {name.lower() for name in headers}
    lines = [f"{method} {target.path} HTTP/1.1"]
    for name, value in (("Host", target.authority), ("User-Agent", USER_AGENT), ("Accept", "*/*"),
                        ("Connection", "close")):
        if name.lower() not in given:
            lines.append(f"{name}: {value}")
    lines.extend(f"{name}: {value}" for name, value in headers.items())
    if "content-length" not in given and (body_bytes is not None or method in ("POST", "PUT")):
        lines.append(f"Content-Length: {body_bytes or 0}")
    lines.append("\r\n")
    return "\r\n".join(lines).encode()


@functools.lru_cache(maxsize=256)
def charset(content_type: str | None) -> str | None:
    """The charset parameter of a Content-Type, when Python knows it (a server sends the same few again and again)."""
    for param in (content_type or "").split(";")[1:]:
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset":
            value = value.strip().strip('"')
            try:
                return codecs.lookup(value).name
            except LookupError:
                return None
    return None


def _unsafe_header(headers: Mapping[str, str]) -> str | None:
    """The name of a configured header that would break the request's framing (line breaks), if any."""
    for name, value in headers.items():
        if not name or any(c in name for c in "\r\n:") or "\r" in value or "\n" in value:
            return name
    return None


# ---------------------------------------------------------------- transport


@dataclass(frozen=True, slots=True)
class Reply:
    """A response as far as it was read: `body` is None when nobody asked for it; header names in lower case
    (a repeated header's values joined by ", ")."""

    status: int
    phrase: str | None
    headers: Mapping[str, str]
    body: bytes | None
    charset: str | None


class _Progress:
    """How far a fetch got, for the reason of a timeout."""

    __slots__ = ("exchange", "phase", "target")

    def __init__(self, target: Target) -> None:
        self.target = target
        self.phase = "connect"
        self.exchange: _Exchange | None = None


class _Exchange(asyncio.Protocol):
    """One request and its response on a fresh connection. `done` resolves once the caller can be answered: None
    when the response is complete as far as wanted (head only, or head and body), else the failure."""

    __slots__ = ("body", "body_bytes", "declared", "decoder", "done", "first", "head_received", "headers",
                 "max_body_bytes", "parser", "phrase", "received", "request", "status", "until_eof", "want_body")

    def __init__(self, done: asyncio.Future[Result | None], request: bytes,
                 want_body: Callable[[int, Mapping[str, str]], bool], max_body_bytes: int) -> None:
        self.done = done
        self.request = request
        self.want_body = want_body
        self.max_body_bytes = max_body_bytes
        self.parser = httptools.HttpResponseParser(self)
        # As lenient as aiohttp is with responses: a probe judges a device's health, not its HTTP grammar, and
        # appliances' built-in servers send bare LF line ends or odd header bytes.
        self.parser.set_dangerous_leniencies(lenient_headers=True, lenient_optional_cr_before_lf=True,
                                             lenient_spaces_after_chunk_size=True)
        self.head_received = False
        self.received = 0
        self.first = b""
        self.status = 0
        self.phrase = bytearray()
        self.headers: dict[str, str] = {}
        self.body: list[bytes] | None = None
        self.body_bytes = 0
        self.declared: int | None = None
        self.until_eof = False
        self.decoder: zlib._Decompress | None = None

    # asyncio.Protocol

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports write alike but are not asyncio's classes.
        cast(asyncio.WriteTransport, transport).write(self.request)

    def data_received(self, data: bytes) -> None:
        if self.done.done():
            return
        if not self.received:
            self.first = data[: QUOTE_LIMIT * 4]
        self.received += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # a 101 (or Upgrade): its head was handled like any other's
            self._finish()
        except httptools.HttpParserError as exc:
            self._fail(f"malformed HTTP response: {exc or type(exc).__name__}; received {quote(self.first)}")
        if not self.head_received and self.received > MAX_HEAD_BYTES:
            self._fail(f"response head larger than {MAX_HEAD_BYTES} bytes")

    def connection_lost(self, exc: Exception | None) -> None:
        if self.done.done():
            return
        if self.body is not None and self.until_eof and exc is None:
            self.on_message_complete()  # the body was delimited by the end of the connection
            return
        if not self.received:
            self._fail("server closed the connection without a response" if exc is None else
                       f"{_lost(exc)} before a response")
        elif not self.head_received:
            self._fail(f"{_lost(exc)} in the middle of the response head ({self.received} bytes received)")
        else:
            of = f" of {self.declared}" if self.declared is not None else ""
            self._fail(f"body broken off after {self.body_bytes}{of} bytes ({_lost(exc)})")

    # httptools callbacks

    def on_message_begin(self) -> None:
        self.phrase.clear()
        self.headers.clear()

    def on_status(self, status: bytes) -> None:
        self.phrase += status

    def on_header(self, name: bytes, value: bytes) -> None:
        key = name.decode("latin-1").lower()
        text = value.decode("latin-1")
        self.headers[key] = f"{self.headers[key]}, {text}" if key in self.headers else text

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200 and status != 101:
            return  # an interim response (100 Continue, 103 Early Hints): the final one follows
        self.status = status
        self.head_received = True
        if self.done.done() or not self.want_body(status, self.headers):
            self._finish()
            return
        length = self.headers.get("content-length")
        if length is not None and length.strip().isdigit():
            self.declared = int(length)
            if self.declared > self.max_body_bytes:
                self._fail(f"body larger than {self.max_body_bytes} bytes (Content-Length {self.declared})")
                return
        self.until_eof = length is None and "chunked" not in self.headers.get("transfer-encoding", "").lower()
        coding = self.headers.get("content-encoding", "").strip().lower()
        if coding in ("gzip", "x-gzip", "deflate"):
            # The request asks for no encoding; a server may send one anyway, or the config asks for it.
            self.decoder = zlib.decompressobj(16 + zlib.MAX_WBITS if "gzip" in coding else zlib.MAX_WBITS)
        self.body = []

    def on_body(self, body: bytes) -> None:
        if self.body is None or self.done.done():
            return
        if self.decoder is not None:
            try:
                body = self.decoder.decompress(body, self.max_body_bytes + 1 - self.body_bytes)
            except zlib.error as exc:
                self._fail(f"body cannot be decoded ({self.headers.get('content-encoding')}): {exc}")
                return
        self.body_bytes += len(body)
        if self.body_bytes > self.max_body_bytes or (self.decoder is not None and self.decoder.unconsumed_tail):
            self._fail(f"body larger than {self.max_body_bytes} bytes")
            return
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.head_received:
            return  # the end of an interim response
        if self.decoder is not None and self.body is not None and not self.done.done():
            try:
                self.on_body(b"")
                if not self.decoder.eof:
                    raise zlib.error("compressed data ends early")
            except zlib.error as exc:
                self._fail(f"body cannot be decoded ({self.headers.get('content-encoding')}): {exc}")
        self._finish()

    # outcomes

    def _finish(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def _fail(self, reason: str) -> None:
        if not self.done.done():
            self.done.set_result(Result(Outcome.BAD_RESPONSE, reason))

    def reply(self) -> Reply:
        phrase = _clip(self.phrase[: QUOTE_LIMIT * 2].decode("latin-1").strip()) or None
        body = None if self.body is None else b"".join(self.body)
        return Reply(self.status, phrase, self.headers, body, charset(self.headers.get("content-type")))


def _lost(exc: Exception | None) -> str:
    """How a connection ended, for a reason."""
    if exc is None:
        return "server closed the connection"
    if isinstance(exc, ssl.SSLError):
        return f"TLS error ({str(exc.reason or exc).lower().replace('_', ' ')})"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror.lower()
    return f"connection lost ({type(exc).__name__})"


@functools.lru_cache(maxsize=2)
def client_context(verify: bool) -> ssl.SSLContext:
    """One context per verification mode for the process: building one loads the CA store (milliseconds)."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


async def connect(target: Target) -> socket.socket:
    """A connected non-blocking socket: each address of the target's host in turn; raise the first failure (Python
    3.11's create_connection merges several into one OSError without an errno, which would hide "connection
    refused")."""
    first: OSError | None = None
    addresses = target.literal or await resolve(target.host, target.port, socket.SOCK_STREAM)
    for family, _type, _proto, _name, sockaddr in addresses:
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setblocking(False)
            await sock_connect(sock, sockaddr, as_loop=True)  # without the loop's selector calls per connect
        except OSError as exc:
            sock.close()
            first = first or exc
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    raise first or OSError(errno.EADDRNOTAVAIL, "no address")


async def fetch(url: str, *, budget_s: float, method: str = "GET", headers: Mapping[str, str] | None = None,
                data: bytes | None = None, auth: tuple[str, str] | None = None, verify: bool = True,
                follow_redirects: bool = True, read_body: bool | Callable[[int], bool] = False,
                max_body_bytes: int = 1 << 20) -> Reply | Result:
    """One request within `budget_s`; a Reply, or the failure as a Result. Never raises (but cancellation).

    `auth` is (username, password) for HTTP Basic; the header is dropped on a redirect to another origin.
    `read_body` is a yes or no, or a function of the status code that says whether the body is worth reading.
    """
    sent = dict(headers or {})
    bad = _unsafe_header(sent)
    if bad is not None:
        return Result(Outcome.AGENT_ERROR, f"header {bad!r} in the config is not a valid HTTP header")
    if auth is not None:
        try:
            sent["Authorization"] = basic_auth(*auth)
        except ValueError as exc:
            return Result(Outcome.AGENT_ERROR, f"bad credentials in the config: {exc}")
    try:
        target = parse_target(url)
    except ValueError as exc:
        return Result(Outcome.AGENT_ERROR, f"bad URL: {exc}")
    progress = _Progress(target)
    try:
        async with asyncio.timeout(budget_s):
            hops = 0
            while True:
                got = await _exchange(target, method, sent, data, verify, follow_redirects, read_body,
                                      max_body_bytes, progress)
                if isinstance(got, Result) or not follow_redirects or got.status not in REDIRECTS:
                    return got
                location = got.headers.get("location")
                if location is None:
                    return got
                if hops == MAX_REDIRECTS:
                    return Result(Outcome.BAD_RESPONSE, f"more than {MAX_REDIRECTS} redirects (last {redact_url(url)})")
                hops += 1
                url, method, keep_body = redirected(url, location, got.status, method)
                data = data if keep_body else None
                try:
                    after = parse_target(url)
                except ValueError as exc:
                    return Result(Outcome.BAD_RESPONSE, f"redirect to a URL we cannot follow: {exc}")
                if after.origin != target.origin:
                    sent.pop("Authorization", None)  # credentials go to the origin they were configured for
                target = progress.target = after
    except TimeoutError:
        return Result(Outcome.TIMEOUT, _timeout_reason(progress, budget_s))


async def _exchange(target: Target, method: str, headers: Mapping[str, str], data: bytes | None, verify: bool,
                    follow_redirects: bool, read_body: bool | Callable[[int], bool], max_body_bytes: int,
                    progress: _Progress) -> Reply | Result:
    """One request on a fresh connection, closed (without waiting on a TLS close_notify) before returning."""
    loop = asyncio.get_running_loop()

    def want_body(status: int, heads: Mapping[str, str]) -> bool:
        if method == "HEAD" or (follow_redirects and status in REDIRECTS and "location" in heads):
            return False
        return read_body if isinstance(read_body, bool) else read_body(status)

    progress.phase = "connect"
    try:
        sock = await connect(target)
    except OSError as exc:
        return connect_failure(exc)
    done: asyncio.Future[Result | None] = loop.create_future()
    request = request_head(method, target, headers, None if data is None else len(data)) + (data or b"")
    exchange = progress.exchange = _Exchange(done, request, want_body, max_body_bytes)
    transport: asyncio.Transport | None = None
    try:
        if target.tls:
            progress.phase = "TLS handshake"
            try:
                transport, _ = await loop.create_connection(lambda: exchange, sock=sock, ssl=client_context(verify),
                                                            server_hostname=target.host)
            except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                return tls_failure(exc)
        else:
            watched = watch(loop)
            if watched is not None:
                progress.phase = "response"
                return await _plain(loop, watched, sock, exchange)
            transport, _ = await loop.create_connection(lambda: exchange, sock=sock)
        progress.phase = "response"
        failure = await done
        return failure if failure is not None else exchange.reply()
    finally:
        if transport is not None:
            transport.abort()


READ_BYTES = 256 * 1024  # at most this much per read, as asyncio's socket transport reads


async def _plain(loop: asyncio.AbstractEventLoop, watched: Watch, sock: socket.socket,
                 exchange: _Exchange) -> Reply | Result:
    """Plain HTTP on the bare socket: the request sent and the response read on the loop's `Watch` and fed to the
    exchange as a transport would (`data_received`, `connection_lost`). An asyncio transport for one request and
    its response was about a third of a probe's CPU: its object, two registrations on the loop's selector, and the
    callbacks of its close. Closes the socket."""
    done = exchange.done
    fd = sock.fileno()

    def readable() -> None:
        if done.done():
            return
        try:
            data = sock.recv(READ_BYTES)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            exchange.connection_lost(exc)
            return
        if data:
            exchange.data_received(data)
        else:
            exchange.connection_lost(None)

    try:
        try:
            try:
                sent = sock.send(exchange.request)
            except (BlockingIOError, InterruptedError):
                sent = 0
            if sent < len(exchange.request):  # a large body: the rest as room frees up in the socket's buffer
                await loop.sock_sendall(sock, memoryview(exchange.request)[sent:])
        except OSError as exc:
            exchange.connection_lost(exc)
        if not done.done():
            watched.add_reader(fd, readable)
        failure = await done
    finally:
        watched.forget(fd)
        sock.close()
    return failure if failure is not None else exchange.reply()


def _timeout_reason(progress: _Progress, budget_s: float) -> str:
    after = f"{budget_s:.3g}s"
    exchange = progress.exchange
    if progress.phase == "connect":
        return f"connect to {progress.target.address} timed out after {after}"
    if progress.phase == "TLS handshake":
        return f"TLS handshake with {progress.target.address} timed out after {after}"
    assert exchange is not None
    if exchange.body is not None:
        return f"body not complete within {after} ({exchange.body_bytes} bytes read)"
    if exchange.received:
        return f"response head not complete within {after} ({exchange.received} bytes received)"
    return f"no response within {after} after connect"

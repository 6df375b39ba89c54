"""What every probe kind may use: the inner deadline, a peer's bytes quoted for a reason, failed connects and TLS
handshakes as outcomes. A kind module imports this and helper modules, never another kind."""

from __future__ import annotations

import asyncio
import errno
import os
import socket
import ssl
from typing import Any

from slawatch.config.probes import ProbeBase
from slawatch.model import Outcome, Result

QUOTE_LIMIT = 80
"""At most this many characters of what a peer sent go into a reason."""

_UNREACHABLE = {
    errno.EHOSTUNREACH: "no route to host",
    errno.ENETUNREACH: "network unreachable",
    errno.EHOSTDOWN: "host is down",
    errno.EADDRNOTAVAIL: "address not available on this host",
}


def inner_timeout(settings: ProbeBase) -> float:
    """A deadline for the library inside a probe, a little shorter than the outer one, so it fails first
    with a precise reason."""
    return max(settings.timeout_s * 0.9, settings.timeout_s - 0.25)


def quote(data: bytes, limit: int = QUOTE_LIMIT) -> str:
    """What a peer sent, as a short repr for a reason: decoded UTF-8 (bad bytes replaced), truncated."""
    text = data[: limit * 4].decode("utf-8", "replace")
    if len(text) > limit or len(data) > limit * 4:
        return repr(text[:limit]) + "…"
    return repr(text)


def connect_failure(exc: BaseException) -> Result:
    """Map a failed connect (or the resolver behind it) to an outcome a network engineer can act on."""
    if isinstance(exc, socket.gaierror):
        return Result(Outcome.UNREACHABLE, f"cannot resolve host: {exc.strerror or exc}")
    if isinstance(exc, ConnectionRefusedError):
        return Result(Outcome.REFUSED, "connection refused")
    if isinstance(exc, ssl.SSLError):
        return tls_failure(exc)
    if isinstance(exc, ConnectionResetError):
        return Result(Outcome.BAD_RESPONSE, "connection reset by peer")
    if isinstance(exc, OSError) and exc.errno in _UNREACHABLE:
        return Result(Outcome.UNREACHABLE, _UNREACHABLE[exc.errno])
    if isinstance(exc, OSError) and exc.errno == errno.ETIMEDOUT:
        return Result(Outcome.TIMEOUT, "connect timed out (no answer to SYN)")
    if isinstance(exc, OSError) and exc.errno is not None:
        return Result(Outcome.UNREACHABLE, f"connect failed: {exc.strerror or errno.errorcode.get(exc.errno)}")
    return Result(Outcome.UNREACHABLE, f"connect failed: {type(exc).__name__}: {exc}")


def tls_failure(exc: BaseException) -> Result:
    """A TLS handshake that failed: the peer answered, but not with a certificate/handshake we accept."""
    if isinstance(exc, ssl.SSLCertVerificationError):
        detail = exc.verify_message or exc.reason or str(exc)
        return Result(Outcome.BAD_RESPONSE, f"TLS handshake failed: certificate verify failed: {detail}")
    if isinstance(exc, ssl.SSLError):
        detail = exc.reason or exc.strerror or str(exc)
        return Result(Outcome.BAD_RESPONSE, f"TLS handshake failed: {str(detail).lower().replace('_', ' ')}")
    if isinstance(exc, ConnectionError | asyncio.IncompleteReadError):
        return Result(Outcome.BAD_RESPONSE, "TLS handshake failed: peer closed the connection")
    return Result(Outcome.BAD_RESPONSE, f"TLS handshake failed: {type(exc).__name__}: {exc}")


def _wake(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _expire(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def sock_connect(sock: socket.socket, address: Any, deadline: float | None = None) -> None:
    """`loop.sock_connect` for a non-blocking socket and a resolved address, without what it does besides: it
    resolves the address again and reads the socket's family and type (enum conversions), about a tenth of a
    connect-only probe's CPU. Raises the OSError subclass of the errno (ConnectionRefusedError ...), or
    TimeoutError at `deadline` (event-loop time; a bare timer, cheaper than a Timeout around the call)."""
    err = sock.connect_ex(address)
    if err in (errno.EINPROGRESS, errno.EINTR):
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[None] = loop.create_future()
        fd = sock.fileno()
        loop.add_writer(fd, _wake, waiter)
        timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            loop.remove_writer(fd)
            if timer is not None:
                timer.cancel()
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
    if err:
        raise OSError(err, os.strerror(err))

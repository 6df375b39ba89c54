"""What every probe kind may use: the inner deadline, a peer's bytes quoted for a reason, failed connects and TLS
handshakes as outcomes. A kind module imports this and helper modules, never another kind."""

from __future__ import annotations

import asyncio
import errno
import functools
import heapq
import os
import select
import socket
import ssl
import weakref
from collections.abc import Callable
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


class Watch:
    """Sockets of probe runs watched by an epoll set of their own, which the event loop reads as one descriptor.

    `loop.add_writer` + `remove_writer` around every connect (and `add_reader` + `remove_reader` around every UDP
    exchange) cost a tenth of a connect-only probe's CPU on asyncio's selector loop: a KeyError raised and formatted
    twice for every new descriptor, a transport lookup, two epoll_ctl calls. Here a connect is one `epoll.register`
    with EPOLLONESHOT (it fires once and is never unregistered: closing the socket takes it out of the set), a reader
    one level-triggered registration, each a dict entry. The caller `forget`s a socket and closes it at once.

    The connects' deadlines share one timer, set for the earliest one still waiting: a connect's deadline is a
    heap entry, not a timer handle made and cancelled on the loop's heap (most connects end long before it)."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._epoll = select.epoll()
        self._callbacks: dict[int, Callable[[], object]] = {}
        self._deadlines: list[tuple[float, int, asyncio.Future[None]]] = []  # heap
        self._seq = 0
        self._armed: float | None = None  # the instant the timer is set for
        # The loop is not kept here: this object lives in a weak mapping keyed by the loop.
        loop.add_reader(self._epoll.fileno(), self._ready)

    def connect(self, loop: asyncio.AbstractEventLoop, fd: int, deadline: float | None = None) -> asyncio.Future[None]:
        """A future resolved once `fd` (a non-blocking socket connecting) is writable or failed; with TimeoutError
        at `deadline` (event-loop time) if it is still waiting then."""
        waiter = loop.create_future()
        self._add(fd, _CONNECTED, functools.partial(_wake, waiter))
        if deadline is not None:
            self._seq += 1
            heapq.heappush(self._deadlines, (deadline, self._seq, waiter))
            if self._armed is None or deadline < self._armed:
                self._arm(loop, deadline)
        return waiter

    def _arm(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        self._armed = when
        loop.call_at(when, self._expire, loop, when)

    def _expire(self, loop: asyncio.AbstractEventLoop, when: float) -> None:
        if when != self._armed:
            return  # superseded by an earlier deadline, whose timer set the next one
        self._armed = None
        heap = self._deadlines
        while heap and (heap[0][0] <= when or heap[0][2].done()):
            _expire(heapq.heappop(heap)[2])
        if heap:
            self._arm(loop, heap[0][0])

    def add_reader(self, fd: int, callback: Callable[[], object]) -> None:
        """Call `callback` whenever `fd` is readable (or has an error pending), as `loop.add_reader` does."""
        self._add(fd, _READABLE, callback)

    def _add(self, fd: int, events: int, callback: Callable[[], object]) -> None:
        try:
            self._epoll.register(fd, events)
        except FileExistsError:  # a socket still open after an earlier connect here (its registration fired)
            self._epoll.modify(fd, events)
        self._callbacks[fd] = callback

    def forget(self, fd: int) -> None:
        """No more callbacks for `fd`; the caller closes it now (a readable one left open would keep the set ready)."""
        self._callbacks.pop(fd, None)

    def _ready(self) -> None:
        for fd, _events in self._epoll.poll(0, _EVENTS_PER_READ):
            callback = self._callbacks.get(fd)
            if callback is not None:
                try:
                    callback()
                except Exception as exc:  # as the loop does for its own callbacks: the others still run
                    asyncio.get_running_loop().call_exception_handler(
                        {"message": f"exception in the callback of descriptor {fd}", "exception": exc})

    def close(self) -> None:
        self._epoll.close()


_CONNECTED = getattr(select, "EPOLLOUT", 4) | getattr(select, "EPOLLONESHOT", 1 << 30)
_READABLE = getattr(select, "EPOLLIN", 1)
_EVENTS_PER_READ = 1024  # then other callbacks run; the loop calls again while more are ready
_WATCHES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, Watch] = weakref.WeakKeyDictionary()


def watch(loop: asyncio.AbstractEventLoop) -> Watch | None:
    """The loop's `Watch`, made on first use; None where there is no epoll (then the loop's own add_writer and
    add_reader are used)."""
    found = _WATCHES.get(loop)
    if found is None and hasattr(select, "epoll") and not loop.is_closed():
        found = _WATCHES[loop] = Watch(loop)
    return found


async def sock_connect(sock: socket.socket, address: Any, deadline: float | None = None, *,
                       as_loop: bool = False) -> None:
    """`loop.sock_connect` for a non-blocking socket and a resolved address, without what it does besides: it
    resolves the address again and reads the socket's family and type (enum conversions), about a tenth of a
    connect-only probe's CPU; and the wait on the loop's `Watch` rather than its selector. Raises the OSError
    subclass of the errno (ConnectionRefusedError ...), or TimeoutError at `deadline` (event-loop time; on the
    Watch's one timer, cheaper than a Timeout around the call). With `as_loop`, a failure seen after waiting says what
    `loop.sock_connect`'s says ("Connect call failed ADDRESS")."""
    err = sock.connect_ex(address)
    if err in (errno.EINPROGRESS, errno.EINTR):
        loop = asyncio.get_running_loop()
        fd = sock.fileno()
        watched = watch(loop)
        timer = None
        if watched is not None:
            waiter = watched.connect(loop, fd, deadline)
        else:
            waiter = loop.create_future()
            loop.add_writer(fd, _wake, waiter)
            timer = None if deadline is None else loop.call_at(deadline, _expire, waiter)
        try:
            await waiter
        finally:
            if watched is not None:
                watched.forget(fd)
            else:
                loop.remove_writer(fd)
            if timer is not None:
                timer.cancel()
        err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
        if err and as_loop:
            raise OSError(err, f"Connect call failed {address}")
    if err:
        raise OSError(err, os.strerror(err))

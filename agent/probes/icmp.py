"""ICMP echo probe on icmplib's sockets and packets (aioping is not used: each of its raw sockets receives every
reply, and above ~100 concurrent pings it collapses to ~330/s with ~20 % false timeouts)."""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import errno
import functools
import ipaddress
import itertools
import os
import socket
import struct
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from icmplib import (
    DestinationUnreachable,
    ICMPError,
    ICMPReply,
    ICMPSocketError,
    ICMPv4Socket,
    ICMPv6Socket,
    NameLookupError,
    SocketBroadcastError,
    SocketPermissionError,
    TimeExceeded,
    async_resolve,
)

from agent.probes.base import inner_timeout
from agent.probes.options import Env
from slawatch.config.probes import IcmpProbe
from slawatch.model import Outcome, Result

_ECHO_REPLY = {4: 0, 6: 129}
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN}
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # Linux values; the socket module has them from 3.12 on
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
_SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
_SO_EE_ORIGIN_ICMP, _SO_EE_ORIGIN_ICMP6 = 2, 3
_RAW_RCVBUF = 8 << 20
_MAX_READS = 256
_IDENTS = itertools.count(os.getpid() + 1)  # echo identifiers (masked to 16 bits), as icmplib's, without its lock
PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")
_ECHO_REQUEST = {4: 8, 6: 128}
_TTL = 64  # what icmplib set before every send (with a traffic class of 0): set once per socket here
# Every request carries the same payload, of icmplib's default size (56 bytes, as ping's). Replies are matched by
# identifier and sequence, never by payload; icmplib drew 56 random bytes per request (and resolved the address
# and set TTL and traffic class again): a fifth of an ICMP run's CPU.
PAYLOAD = bytes(range(0x10, 0x10 + 56))
_PAYLOAD_SUM = sum(struct.unpack(f"!{len(PAYLOAD) // 2}H", PAYLOAD))


def echo_request(version: int, ident: int, seq: int) -> bytes:
    """An echo request packet (ICMP header + PAYLOAD), its checksum summed from the payload's, computed once."""
    kind = _ECHO_REQUEST[version]
    total = (kind << 8) + ident + seq + _PAYLOAD_SUM
    total = (total & 0xFFFF) + (total >> 16)
    total = (total & 0xFFFF) + (total >> 16)
    return struct.pack("!BBHHH", kind, 0, ~total & 0xFFFF, ident, seq) + PAYLOAD


@functools.lru_cache(maxsize=65536)
def _sockaddr(address: str, family: int, kind: int) -> Any:
    """sendto's address for a numeric one, once per address (as icmplib did per send: a scope id is resolved)."""
    return socket.getaddrinfo(address, None, family, kind)[0][4]


@dataclass(frozen=True, slots=True)
class Echoes:
    """What came back for the packets sent: RTTs of echo replies, and ICMP or send errors (one per packet)."""

    sent: int
    rtts_ms: tuple[float, ...] = ()
    errors: tuple[str, ...] = ()


class NoPermission(Exception):
    """Neither a raw nor a datagram ICMP socket may be opened by this process."""


def judge(settings: IcmpProbe, host: str, echoes: Echoes) -> Result:
    """Turn the replies into a Result: loss and RTT thresholds (pure)."""
    sent, received = echoes.sent, len(echoes.rtts_ms)
    if received == 0:
        if echoes.errors:
            return Result(Outcome.UNREACHABLE, f"{echoes.errors[0]} ({sent} sent)")
        return Result(Outcome.TIMEOUT, f"no echo reply from {host} ({sent} sent)")
    avg_ms = sum(echoes.rtts_ms) / received
    loss_pct = 100.0 * (sent - received) / sent
    latency_s = avg_ms / 1000.0
    replies = f"{received}/{sent} replies"
    if loss_pct > settings.max_loss_pct:
        outcome = Outcome.UNREACHABLE if echoes.errors else Outcome.TIMEOUT
        return Result(outcome, f"{loss_pct:.0f}% loss from {host} ({replies}), above {settings.max_loss_pct:g}%",
                      latency_s)
    problems = []
    if loss_pct > 0:
        problems.append(f"{loss_pct:.0f}% loss ({replies})")
    if settings.max_rtt_ms is not None and avg_ms > settings.max_rtt_ms:
        problems.append(f"rtt avg {avg_ms:.3g} ms above {settings.max_rtt_ms:g} ms")
    if problems:
        return Result(Outcome.DEGRADED, ", ".join(problems), latency_s)
    return Result(Outcome.UP, "", latency_s)


def permission_reason(gid: int, group_range: str | None) -> str:
    """The message for a process that may open no ICMP socket at all."""
    now = f" (it is {group_range})" if group_range else ""
    return f"ICMP needs root, CAP_NET_RAW, or net.ipv4.ping_group_range covering gid {gid}{now}"


def _ping_group_range() -> str | None:
    try:
        return " ".join(PING_GROUP_RANGE.read_text().split())  # procfs: no disk I/O behind it
    except OSError:
        return None


def may_ping() -> bool:
    """Whether this process may open an ICMP socket: as root, or with one of its groups in
    net.ipv4.ping_group_range (CAP_NET_RAW alone is not seen here)."""
    if os.geteuid() == 0:
        return True
    try:
        low, high = map(int, (_ping_group_range() or "").split())
    except ValueError:
        return False
    return any(low <= g <= high for g in [*os.getgroups(), os.getegid()])


def reply_filter(version: int) -> bytes:
    """A classic BPF program keeping only echo replies and the ICMP errors that can answer an echo request.

    A raw ICMP socket gets a copy of every ICMP packet of the host, the echo requests we send to loopback included;
    dropping the rest in the kernel spares the event loop. An IPv4 raw socket sees the IP header first, an IPv6 one
    starts at the ICMPv6 header."""
    echo_reply, unreachable, exceeded = (129, 1, 3) if version == 6 else (0, 3, 11)
    program = [
        (0x01, 0, 0, 0) if version == 6 else (0xB1, 0, 0, 0),  # X = 0  |  X = 4 * (IP header length)
        (0x50, 0, 0, 0),                  # A = ICMP type
        (0x15, 2, 0, echo_reply),
        (0x15, 1, 0, unreachable),
        (0x15, 0, 1, exceeded),
        (0x06, 0, 0, 0x40000),            # accept (up to 256 KiB)
        (0x06, 0, 0, 0),                  # drop
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    code = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(code))  # struct sock_fprog; the kernel copies it
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


class Collector:
    """One probe run's packets: the requests sent, and the replies or errors that answered them."""

    def __init__(self, count: int, version: int, address: str, settled: asyncio.Future[None]) -> None:
        self.count, self.version, self.address = count, version, address
        self.requests: dict[int, float] = {}  # sequence -> when it was sent (epoch s, as a reply's time)
        self.rtts: dict[int, float] = {}
        self.errors: dict[int, str] = {}
        self.settled = settled  # resolved once every request is answered (a future: no Event and its waiters)

    def sent(self, seq: int, at: float, error: ICMPSocketError | None = None) -> None:
        self.requests[seq] = at
        if error is not None:
            self.errors[seq] = _socket_error(error, self.address)
        self._check()

    def reply(self, reply: ICMPReply) -> None:
        seq = reply.sequence
        sent_at = self.requests.get(seq)
        if sent_at is None or seq in self.rtts or seq in self.errors:
            return
        if reply.type == _ECHO_REPLY[self.version]:
            self.rtts[seq] = (reply.time - sent_at) * 1000.0
        else:
            try:
                reply.raise_for_status()
            except DestinationUnreachable as exc:
                self.errors[seq] = f"{self.address}: ICMP destination unreachable ({exc})"
            except TimeExceeded as exc:
                self.errors[seq] = f"{self.address}: ICMP time exceeded ({exc})"
            except ICMPError:
                return
        self._check()

    def local_error(self, seq: int, code: int) -> None:
        if seq in self.requests and seq not in self.rtts and seq not in self.errors:
            self.errors[seq] = f"{self.address}: {os.strerror(code).lower()}"
            self._check()

    def _check(self) -> None:
        if len(self.requests) == self.count and len(self.rtts) + len(self.errors) >= self.count:
            _settle(self.settled)

    def echoes(self) -> Echoes:
        return Echoes(len(self.requests), tuple(self.rtts.values()), tuple(self.errors.values()))


class EchoSocket:
    """An ICMP socket read by one event-loop callback that hands each reply to the run whose id it carries.

    A raw socket is shared by every run of its event loop: one socket per probe would make each of N concurrent
    runs receive (and the kernel copy) all N runs' replies, which at 1000 concurrent probes costs seconds of CPU
    and overflows receive buffers into false loss. A datagram socket is the kernel's per-socket demultiplexing
    already, so each run has its own."""

    def __init__(self, icmp_sock: ICMPv4Socket | ICMPv6Socket, version: int) -> None:
        self.icmp, self.version = icmp_sock, version
        self.privileged: bool = icmp_sock.is_privileged
        self.runs: dict[int, Collector] = {}
        self.users = 0
        self._sock: socket.socket = icmp_sock.sock
        self._sock.setblocking(False)
        self._family_type = (int(self._sock.family), int(self._sock.type))  # read once: enum conversions
        if version == 6:
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_UNICAST_HOPS, _TTL)
            self._sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_TCLASS, 0)
        else:
            self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_TTL, _TTL)
            self._sock.setsockopt(socket.IPPROTO_IP, socket.IP_TOS, 0)
        self._loop = asyncio.get_running_loop()
        self._loop.add_reader(self._sock.fileno(), self._readable)

    def send(self, address: str, ident: int, seq: int) -> None:
        """Send one echo request, as icmplib's send does (its exceptions), with our fixed payload."""
        try:
            self._sock.sendto(echo_request(self.version, ident, seq), _sockaddr(address, *self._family_type))
        except PermissionError:  # icmplib's name for it, a firewall included
            raise SocketBroadcastError() from None
        except OSError as err:
            raise ICMPSocketError(str(err)) from None

    def _route(self, ident: int) -> Collector | None:
        if self.privileged:
            return self.runs.get(ident)
        return next(iter(self.runs.values()), None)  # the kernel already matched the id

    def _readable(self) -> None:
        if not self.privileged:
            self._drain_errors()
        for _ in range(_MAX_READS):  # then let other callbacks run; the reader is called again if more is queued
            try:
                packet = self._sock.recv(2048)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # the pending error of a datagram socket: its details came from the error queue
            reply = self.icmp._parse_reply(packet, None, time.time())
            run = self._route(reply.id) if reply is not None else None
            if run is not None:
                run.reply(reply)

    def _drain_errors(self) -> None:
        # With RECVERR, each ICMP error a datagram socket gets waits in its error queue, quoting our request (so
        # its sequence) with the ICMP type and code; left there, it would keep the socket readable for ever.
        while True:
            try:
                data, ancdata, _, _ = self._sock.recvmsg(2048, 512, socket.MSG_ERRQUEUE)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                return
            run = self._route(0)
            if run is None or len(data) < 8:
                continue
            seq = struct.unpack_from("!H", data, 6)[0]
            for _, _, cmsg in ancdata:
                if len(cmsg) < 8:
                    continue
                code, origin, icmp_type, icmp_code = struct.unpack_from("=IBBB", cmsg)
                if origin in (_SO_EE_ORIGIN_ICMP, _SO_EE_ORIGIN_ICMP6):
                    run.reply(ICMPReply(source=None, family=self.version, id=0, sequence=seq, type=icmp_type,
                                        code=icmp_code, bytes_received=len(data), time=time.time()))
                else:
                    run.local_error(seq, code)

    def close(self) -> None:
        self._loop.remove_reader(self._sock.fileno())
        self.icmp.close()


# Raw sockets shared per event loop and IP version, closed when their last run ends.
_SHARED: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, dict[int, EchoSocket]] = weakref.WeakKeyDictionary()


def _open(version: int) -> EchoSocket:
    """A raw socket when root (icmplib builds the packets), else a kernel-managed datagram socket; each falls
    back to the other, because CAP_NET_RAW and ping_group_range are independent of the uid."""
    kind = ICMPv6Socket if version == 6 else ICMPv4Socket
    order = (True, False) if os.geteuid() == 0 else (False, True)
    for privileged in order:
        try:
            icmp_sock = kind(None, privileged)
        except SocketPermissionError:
            continue
        raw = icmp_sock.sock
        if privileged:
            _attach_filter(raw, reply_filter(version))
            try:  # room for a burst of replies to every concurrent run while the loop is busy
                raw.setsockopt(socket.SOL_SOCKET, _SO_RCVBUFFORCE, _RAW_RCVBUF)
            except OSError:
                raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, _RAW_RCVBUF)
        else:
            # Without RECVERR a datagram ICMP socket drops the ICMP errors (destination unreachable) it gets.
            level, option = (socket.IPPROTO_IPV6, _IPV6_RECVERR) if version == 6 else (socket.IPPROTO_IP, _IP_RECVERR)
            raw.setsockopt(level, option, 1)
        return EchoSocket(icmp_sock, version)
    raise NoPermission(permission_reason(os.getegid(), _ping_group_range()))


def acquire(version: int) -> EchoSocket:
    """The loop's shared raw socket for `version`, or a datagram socket of this run's own; `release` it after.
    (Two plain calls: a generator context manager per run cost more than what it wraps.)"""
    shared = _SHARED.setdefault(asyncio.get_running_loop(), {})
    sock = shared.get(version)
    if sock is None:
        sock = _open(version)
        if sock.privileged:
            shared[version] = sock
    sock.users += 1
    return sock


def release(sock: EchoSocket) -> None:
    sock.users -= 1
    if sock.users == 0:
        shared = _SHARED.get(asyncio.get_running_loop(), {})
        if shared.get(sock.version) is sock:
            del shared[sock.version]
        sock.close()


@functools.lru_cache(maxsize=65536)
def _literal(host: str) -> tuple[str, int] | None:
    """(host, IP version) for an address literal, parsed once per target; None for a name."""
    try:
        return host, ipaddress.ip_address(host).version
    except ValueError:
        return None


async def _resolve(host: str) -> tuple[str, int]:
    address = (await async_resolve(host))[0]  # IPv4 first, then IPv6
    return address, ipaddress.ip_address(address).version


def _settle(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)


def _socket_error(exc: ICMPSocketError, address: str) -> str:
    if isinstance(exc, SocketBroadcastError):  # icmplib's name for any EPERM on sendto, a firewall included
        return f"sending to {address} is not permitted (broadcast address or local firewall)"
    text = str(exc)
    for code in _UNREACHABLE_ERRNOS:
        if f"[Errno {code}]" in text:
            return f"{address}: {os.strerror(code).lower()}"
    return f"{address}: {text}"


async def exchange(sock: EchoSocket, address: str, count: int, interval_s: float, deadline: float) -> Echoes:
    """Send `count` echo requests `interval_s` apart; collect the answers until all came or `deadline`
    (event-loop time)."""
    ident = next(_IDENTS) & 0xFFFF
    while ident in sock.runs:  # 65536 runs in flight on one loop would be needed to wrap around
        ident = next(_IDENTS) & 0xFFFF
    loop = asyncio.get_running_loop()
    settled: asyncio.Future[None] = loop.create_future()
    run = Collector(count, sock.version, address, settled)
    sock.runs[ident] = run

    def send(seq: int) -> None:
        at = time.time()
        try:
            sock.send(address, ident, seq)
        except ICMPSocketError as exc:
            run.sent(seq, at, exc)
        else:
            run.sent(seq, at)

    async def send_rest() -> None:
        for seq in range(1, count):
            await asyncio.sleep(interval_s)
            send(seq)

    # The first request goes now; a task sends the others (most probes send one: no task for them). At the
    # deadline a bare timer settles the run with what came.
    sender = None
    timer = loop.call_at(deadline, _settle, settled)
    try:
        send(0)
        if count > 1:
            sender = asyncio.create_task(send_rest())
        await settled
    finally:
        timer.cancel()
        del sock.runs[ident]
        if sender is not None:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
    return run.echoes()


async def probe(settings: IcmpProbe) -> Result:
    """Ping `settings.target` `count` times and judge loss and average RTT."""
    loop = asyncio.get_running_loop()
    budget = inner_timeout(settings)
    deadline = loop.time() + budget
    host = settings.target
    if (settings.count - 1) * settings.packet_interval_s >= budget:
        return Result(Outcome.AGENT_ERROR, f"{settings.count} packets {settings.packet_interval_s:g}s apart do not "
                                           f"fit in timeout_s {settings.timeout_s:g}")
    found = _literal(host)
    if found is not None:
        address, version = found
    else:
        try:
            async with asyncio.timeout_at(deadline):
                address, version = await _resolve(host)
        except NameLookupError:
            return Result(Outcome.UNREACHABLE, f"cannot resolve {host}")
        except TimeoutError:
            return Result(Outcome.TIMEOUT, f"resolving {host} took over {budget:g}s")
    try:
        sock = acquire(version)
        try:
            echoes = await exchange(sock, address, settings.count, settings.packet_interval_s, deadline)
        finally:
            release(sock)
    except NoPermission as exc:
        return Result(Outcome.AGENT_ERROR, str(exc))
    except ICMPSocketError as exc:
        return Result(Outcome.AGENT_ERROR, f"cannot open an ICMPv{version} socket: {exc}")
    shown = host if address == host else f"{host} ({address})"
    return judge(settings, shown, echoes)


# ---------------------------------------------------------------- the one-shot command line

TARGET = "HOST"
OPTIONS = {"packet_interval_s": "--interval", "max_loss_pct": "--max-loss"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--count", type=int, metavar="N", help="echo requests to send (default 3)")
    p.add_argument("--interval", type=float, metavar="S", help="seconds between requests (default 0.2)")
    p.add_argument("--max-loss", type=float, metavar="PCT", help="CRITICAL above this loss %% (default 50)")
    p.add_argument("--max-rtt-ms", type=float, metavar="MS", help="WARNING above this average round trip")


def settings_from_args(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"count": args.count, "packet_interval_s": args.interval, "max_loss_pct": args.max_loss,
            "max_rtt_ms": args.max_rtt_ms}

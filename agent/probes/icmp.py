"""ICMP echo probe on icmplib's asyncio sockets (aioping is not used: each of its raw sockets receives every
reply, and above ~100 concurrent pings it collapses to ~330/s with ~20 % false timeouts)."""

from __future__ import annotations

import asyncio
import ctypes
import errno
import ipaddress
import os
import socket
import struct
from dataclasses import dataclass
from pathlib import Path

from icmplib import (
    AsyncSocket,
    DestinationUnreachable,
    ICMPError,
    ICMPReply,
    ICMPRequest,
    ICMPSocketError,
    ICMPv4Socket,
    ICMPv6Socket,
    NameLookupError,
    SocketBroadcastError,
    SocketPermissionError,
    TimeExceeded,
    TimeoutExceeded,
    async_resolve,
)
from icmplib.utils import unique_identifier

from agent.model import Outcome, Result
from agent.settings import IcmpProbe

_ECHO_REPLY = {4: 0, 6: 129}
_UNREACHABLE_ERRNOS = {errno.ENETUNREACH, errno.EHOSTUNREACH, errno.EADDRNOTAVAIL, errno.ENETDOWN}
_IP_RECVERR = getattr(socket, "IP_RECVERR", 11)  # Linux values; the socket module has them from 3.12 on
_IPV6_RECVERR = getattr(socket, "IPV6_RECVERR", 25)
_SO_ATTACH_FILTER = getattr(socket, "SO_ATTACH_FILTER", 26)
PING_GROUP_RANGE = Path("/proc/sys/net/ipv4/ping_group_range")


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


def echo_filter(version: int, ident: int) -> bytes:
    """A classic BPF program that keeps only echo replies and ICMP errors about requests carrying `ident`.

    Every raw ICMP socket gets a copy of every ICMP packet; without this, N concurrent probes each parse N × count
    packets, and the copies overflow the receive buffers (false loss from ~100 concurrent probes on). An IPv4 raw
    socket sees the IP header first; an IPv6 one starts at the ICMPv6 header. An error quotes our request after
    its own 8-byte header and the quoted IP header (20 bytes for IPv4, 40 for IPv6), so its id sits further on."""
    echo_reply, unreachable, exceeded, quoted_id = (129, 1, 3, 52) if version == 6 else (0, 3, 11, 32)
    first = (0x01, 0, 0, 0) if version == 6 else (0xB1, 0, 0, 0)  # X = 0  |  X = 4 * (IP header length)
    program = [
        first,
        (0x50, 0, 0, 0),                  # A = type
        (0x15, 0, 2, echo_reply),         # echo reply? else to the error checks
        (0x48, 0, 0, 4),                  # A = id of the reply
        (0x15, 4, 5, ident),              # ours: accept, else drop
        (0x15, 1, 0, unreachable),
        (0x15, 0, 3, exceeded),
        (0x48, 0, 0, quoted_id),          # A = id of the quoted request
        (0x15, 0, 1, ident),
        (0x06, 0, 0, 0x40000),            # accept (up to 256 KiB)
        (0x06, 0, 0, 0),                  # drop
    ]
    return b"".join(struct.pack("HBBI", *insn) for insn in program)


def _attach_filter(sock: socket.socket, program: bytes) -> None:
    code = ctypes.create_string_buffer(program)
    fprog = struct.pack("HL", len(program) // 8, ctypes.addressof(code))  # struct sock_fprog; the kernel copies it
    sock.setsockopt(socket.SOL_SOCKET, _SO_ATTACH_FILTER, fprog)


def open_socket(version: int, ident: int) -> AsyncSocket:
    """A raw socket when root (icmplib builds the packets), else a kernel-managed datagram socket; each falls
    back to the other, because CAP_NET_RAW and ping_group_range are independent of the uid."""
    kind = ICMPv6Socket if version == 6 else ICMPv4Socket
    order = (True, False) if os.geteuid() == 0 else (False, True)
    for privileged in order:
        try:
            icmp_sock = kind(None, privileged)
        except SocketPermissionError:
            continue
        if privileged:
            _attach_filter(icmp_sock.sock, echo_filter(version, ident))
        else:
            # Without RECVERR a datagram ICMP socket drops the ICMP errors (destination unreachable) it gets;
            # with it, they surface as the errno of the next receive.
            level, option = (socket.IPPROTO_IPV6, _IPV6_RECVERR) if version == 6 else (socket.IPPROTO_IP, _IP_RECVERR)
            icmp_sock.sock.setsockopt(level, option, 1)
        return AsyncSocket(icmp_sock)
    raise NoPermission(permission_reason(os.getegid(), _ping_group_range()))


async def _resolve(host: str) -> tuple[str, int]:
    try:
        return host, ipaddress.ip_address(host).version
    except ValueError:
        pass
    address = (await async_resolve(host))[0]  # IPv4 first, then IPv6
    return address, ipaddress.ip_address(address).version


def _socket_error(exc: ICMPSocketError, address: str) -> str:
    if isinstance(exc, SocketBroadcastError):  # icmplib's name for any EPERM on sendto, a firewall included
        return f"sending to {address} is not permitted (broadcast address or local firewall)"
    text = str(exc)
    for code in _UNREACHABLE_ERRNOS:
        if f"[Errno {code}]" in text:
            return f"{address}: {os.strerror(code).lower()}"
    return f"{address}: {text}"


async def exchange(sock: AsyncSocket, address: str, version: int, ident: int, count: int, interval_s: float,
                   deadline: float) -> Echoes:
    """Send `count` echo requests `interval_s` apart and collect the answers until all came or `deadline`
    (event-loop time). Replies are matched on id and sequence, so one raw socket ignores other probes' echoes.

    Sending and receiving are separate tasks, and every receive waits up to the deadline: icmplib drops a packet it
    read after the timeout it was given, which short per-packet timeouts on a busy loop turn into false loss."""
    loop = asyncio.get_running_loop()
    requests: dict[int, ICMPRequest] = {}
    rtts: dict[int, float] = {}
    errors: dict[int, str] = {}
    settled = asyncio.Event()

    def check() -> None:
        if len(requests) == count and len(rtts) + len(errors) >= count:
            settled.set()

    async def send_all() -> None:
        for seq in range(count):
            if seq:
                await asyncio.sleep(interval_s)
            request = ICMPRequest(destination=address, id=ident, sequence=seq)
            requests[seq] = request
            try:
                sock.send(request)
            except ICMPSocketError as exc:
                errors[seq] = _socket_error(exc, address)
            check()

    async def receive_all() -> None:
        while (remaining := deadline - loop.time()) > 0:
            try:
                reply: ICMPReply = await sock.receive(None, remaining)
            except TimeoutExceeded:
                return
            except ICMPSocketError as exc:  # a datagram socket reports ICMP errors as a socket error
                pending = [seq for seq in requests if seq not in rtts and seq not in errors]
                if pending:
                    errors[pending[0]] = _socket_error(exc, address)
                    check()
                continue
            mine = requests.get(reply.sequence)
            if mine is None or reply.id != mine.id or reply.sequence in rtts or reply.sequence in errors:
                continue
            if reply.type == _ECHO_REPLY[version]:
                rtts[reply.sequence] = (reply.time - mine.time) * 1000.0
            else:
                try:
                    reply.raise_for_status()
                except DestinationUnreachable as exc:
                    errors[reply.sequence] = f"{address}: ICMP destination unreachable ({exc})"
                except TimeExceeded as exc:
                    errors[reply.sequence] = f"{address}: ICMP time exceeded ({exc})"
                except ICMPError:
                    continue
            check()

    tasks = [asyncio.create_task(send_all()), asyncio.create_task(receive_all())]
    try:
        async with asyncio.timeout_at(deadline):
            await settled.wait()
    except TimeoutError:
        pass
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return Echoes(len(requests), tuple(rtts.values()), tuple(errors.values()))


async def probe(settings: IcmpProbe) -> Result:
    """Ping `settings.target` `count` times and judge loss and average RTT."""
    from agent.probes import inner_timeout  # the package imports this module first

    loop = asyncio.get_running_loop()
    budget = inner_timeout(settings)
    deadline = loop.time() + budget
    host = settings.target
    if (settings.count - 1) * settings.packet_interval_s >= budget:
        return Result(Outcome.AGENT_ERROR, f"{settings.count} packets {settings.packet_interval_s:g}s apart do not "
                                           f"fit in timeout_s {settings.timeout_s:g}")
    try:
        async with asyncio.timeout_at(deadline):
            address, version = await _resolve(host)
    except NameLookupError:
        return Result(Outcome.UNREACHABLE, f"cannot resolve {host}")
    except TimeoutError:
        return Result(Outcome.TIMEOUT, f"resolving {host} took over {budget:g}s")
    try:
        ident = unique_identifier()
        sock = open_socket(version, ident)
    except NoPermission as exc:
        return Result(Outcome.AGENT_ERROR, str(exc))
    except ICMPSocketError as exc:
        return Result(Outcome.AGENT_ERROR, f"cannot open an ICMPv{version} socket: {exc}")
    with sock:
        echoes = await exchange(sock, address, version, ident, settings.count, settings.packet_interval_s, deadline)
    shown = host if address == host else f"{host} ({address})"
    return judge(settings, shown, echoes)

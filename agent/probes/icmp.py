"""ICMP echo probe on icmplib's asyncio sockets (aioping is not used: each of its raw sockets receives every
reply, and above ~100 concurrent pings it collapses to ~330/s with ~20 % false timeouts)."""

from __future__ import annotations

import asyncio
import errno
import ipaddress
import os
import socket
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
        return Result(Outcome.DEGRADED, f"{host}: " + ", ".join(problems), latency_s)
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


def open_socket(version: int) -> AsyncSocket:
    """A raw socket when root (icmplib builds the packets), else a kernel-managed datagram socket; each falls
    back to the other, because CAP_NET_RAW and ping_group_range are independent of the uid."""
    kind = ICMPv6Socket if version == 6 else ICMPv4Socket
    order = (True, False) if os.geteuid() == 0 else (False, True)
    for privileged in order:
        try:
            icmp_sock = kind(None, privileged)
        except SocketPermissionError:
            continue
        if not privileged:
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


async def exchange(sock: AsyncSocket, address: str, version: int, count: int, interval_s: float,
                   deadline: float) -> Echoes:
    """Send `count` echo requests `interval_s` apart and collect the answers until all came or `deadline`
    (event-loop time). Replies are matched on id and sequence, so one raw socket ignores other probes' echoes."""
    loop = asyncio.get_running_loop()
    ident = unique_identifier()
    requests: dict[int, ICMPRequest] = {}
    rtts: dict[int, float] = {}
    errors: dict[int, str] = {}
    next_send = loop.time()
    while True:
        now = loop.time()
        if len(requests) < count and now >= next_send:
            seq = len(requests)
            request = ICMPRequest(destination=address, id=ident, sequence=seq)
            requests[seq] = request
            try:
                sock.send(request)
            except ICMPSocketError as exc:
                errors[seq] = _socket_error(exc, address)
            next_send += interval_s
            continue
        if len(requests) == count and len(rtts) + len(errors) >= count:
            break
        wake = deadline if len(requests) == count else min(next_send, deadline)
        if now >= deadline:
            break
        try:
            reply: ICMPReply = await sock.receive(None, max(wake - now, 0.001))
        except TimeoutExceeded:
            continue
        except ICMPSocketError as exc:  # a datagram socket reports ICMP errors as a socket error
            pending = [seq for seq in requests if seq not in rtts and seq not in errors]
            if not pending:
                continue
            errors[pending[0]] = _socket_error(exc, address)
            continue
        mine = requests.get(reply.sequence)
        if mine is None or reply.id != mine.id or reply.sequence in rtts or reply.sequence in errors:
            continue
        if reply.type == _ECHO_REPLY[version]:
            rtts[reply.sequence] = (reply.time - mine.time) * 1000.0
            continue
        try:
            reply.raise_for_status()
        except ICMPError as exc:
            if isinstance(exc, DestinationUnreachable):
                errors[reply.sequence] = f"{address}: ICMP destination unreachable ({exc})"
            elif isinstance(exc, TimeExceeded):
                errors[reply.sequence] = f"{address}: ICMP time exceeded ({exc})"
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
        sock = open_socket(version)
    except NoPermission as exc:
        return Result(Outcome.AGENT_ERROR, str(exc))
    except ICMPSocketError as exc:
        return Result(Outcome.AGENT_ERROR, f"cannot open an ICMPv{version} socket: {exc}")
    with sock:
        echoes = await exchange(sock, address, version, settings.count, settings.packet_interval_s, deadline)
    shown = host if address == host else f"{host} ({address})"
    return judge(settings, shown, echoes)

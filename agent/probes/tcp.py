"""TCP probe: connect, optional TLS, optional send/expect; for iSCSI portals (3260) and any TCP service."""

from __future__ import annotations

import argparse
import asyncio
import errno
import functools
import re
import socket
import ssl
import struct
import time
from typing import Any

from agent.probes.address import literal_once, resolve
from agent.probes.base import connect_failure, inner_timeout, quote, sock_connect, tls_failure
from agent.probes.options import Env, tls_options, tls_verify
from slawatch.config.probes import TcpProbe
from slawatch.config.units import split_host_port
from slawatch.model import Outcome, Result

# ---------------------------------------------------------------- interpretation (pure)


def expect_failure(pattern: str, data: bytes, why: str) -> Result:
    """The peer did not send what `expect` wants; quote what it did send."""
    if not data:
        return Result(Outcome.BAD_RESPONSE, f"{why} before anything was received (expected {pattern!r})")
    return Result(Outcome.BAD_RESPONSE, f"expected {pattern!r}, {why}; received {len(data)} bytes: {quote(data)}")


def matches(regex: re.Pattern[str], data: bytes) -> bool:
    return regex.search(data.decode("utf-8", "replace")) is not None


@functools.lru_cache(maxsize=2)
def client_context(verify: bool) -> ssl.SSLContext:
    """One context per verification mode for the process: building one loads the CA store (milliseconds)."""
    ctx = ssl.create_default_context()
    if not verify:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


# ---------------------------------------------------------------- transport


async def probe(target: TcpProbe) -> Result:
    """Connect (and handshake, send, expect) within the inner deadline; never raises."""
    t0 = time.perf_counter()
    loop = asyncio.get_running_loop()
    budget = inner_timeout(target)
    deadline = loop.time() + budget
    host, port = _address(target.target)
    if not target.tls and target.send is None and target.expect is None:
        try:
            await connect_only(host, port, deadline)
        except TimeoutError:
            return Result(Outcome.TIMEOUT, f"connect to {host}:{port} timed out after {budget:.3g}s")
        except OSError as exc:
            return connect_failure(exc)
        return Result(Outcome.UP, latency_s=time.perf_counter() - t0)
    phase = "connect"
    writer: asyncio.StreamWriter | None = None
    received = b""
    try:
        async with asyncio.timeout_at(deadline):
            try:
                reader, writer = await connect(host, port, limit=min(target.max_read_bytes, 1 << 16))
            except OSError as exc:
                return connect_failure(exc)
            if target.tls:
                phase = "TLS handshake"
                try:
                    await writer.start_tls(client_context(target.tls_verify),
                                           server_hostname=target.server_name or host)
                except (OSError, ssl.SSLError, asyncio.IncompleteReadError) as exc:
                    return tls_failure(exc)
            if target.send is not None:
                phase = "send"
                writer.write(target.send.encode())
                await writer.drain()
            if target.expect is not None:
                phase = "expect"
                regex = re.compile(target.expect)
                while len(received) < target.max_read_bytes:
                    chunk = await reader.read(target.max_read_bytes - len(received))
                    if not chunk:
                        return expect_failure(target.expect, received, "connection closed")
                    received += chunk
                    if matches(regex, received):
                        break
                else:
                    return expect_failure(target.expect, received,
                                          f"no match in the first {target.max_read_bytes} bytes")
    except TimeoutError:
        if phase == "expect" and received and target.expect is not None:
            return expect_failure(target.expect, received, f"no match within {budget:.3g}s")
        what = {"connect": f"connect to {host}:{port}", "expect": "waiting for data after connect"}.get(phase, phase)
        return Result(Outcome.TIMEOUT, f"{what} timed out after {budget:.3g}s")
    except (ConnectionError, OSError) as exc:
        return Result(Outcome.BAD_RESPONSE, f"{phase} failed: {exc.strerror or type(exc).__name__}"
                      + (f" after {len(received)} bytes: {quote(received)}" if received else ""))
    finally:
        if writer is not None:
            await close_stream(writer)
    return Result(Outcome.UP, latency_s=time.perf_counter() - t0)


# Targets are parsed once per distinct string, not on every run.
_address = functools.lru_cache(maxsize=65536)(split_host_port)


_NONBLOCK = getattr(socket, "SOCK_NONBLOCK", 0)  # made non-blocking at once: no fcntl call after
# A connect-only probe closes with a reset, as HAProxy's connect checks do: a close with FIN leaves the socket in
# TIME_WAIT on the monitoring host for a minute (6 000 connect probes every 10 s keep ~36 000 there, and the ports
# they hold), and it costs the kernel two more segments each way.
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s


async def connect_only(host: str, port: int, deadline: float) -> None:
    """Connect and close, with a bare non-blocking socket: a probe that sends and reads nothing needs no
    stream objects (they cost about a third of a connect-only probe's CPU). Each address in turn, as below;
    TimeoutError at `deadline` (event-loop time)."""
    infos = literal_once(host, port, socket.SOCK_STREAM)  # an address needs no lookup, nor a timer around it
    if infos is None:
        async with asyncio.timeout_at(deadline):
            infos = await resolve(host, port, socket.SOCK_STREAM)
    first: OSError | None = None
    for family, _type, _proto, _name, sockaddr in infos:
        sock = socket.socket(family, socket.SOCK_STREAM | _NONBLOCK)
        try:
            if not _NONBLOCK:
                sock.setblocking(False)
            await sock_connect(sock, sockaddr, deadline)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
            return
        except TimeoutError:
            raise
        except OSError as exc:
            first = first or exc
        finally:
            sock.close()
    raise first or OSError(errno.EADDRNOTAVAIL, "no address")


async def connect(host: str, port: int, limit: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Try each address of `host` in turn; raise the first failure (Python 3.11 merges several into one OSError
    without an errno, which would hide "connection refused")."""
    infos = await resolve(host, port, socket.SOCK_STREAM)
    first: OSError | None = None
    for _family, _type, _proto, _name, sockaddr in infos:
        try:
            return await asyncio.open_connection(str(sockaddr[0]), port, limit=limit)
        except OSError as exc:
            first = first or exc
    raise first or OSError(errno.EADDRNOTAVAIL, "no address")


async def close_stream(writer: asyncio.StreamWriter, grace_s: float = 0.05) -> None:
    """Close politely if the peer lets us within `grace_s`, else drop the connection: never outlive the deadline."""
    writer.close()
    try:
        async with asyncio.timeout(grace_s):
            await writer.wait_closed()
    except (TimeoutError, OSError, ssl.SSLError):
        writer.transport.abort()
    except BaseException:
        writer.transport.abort()
        raise


# ---------------------------------------------------------------- the one-shot command line

TARGET = "HOST:PORT"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--send", metavar="S", help="text to send once connected (use $'...\\r\\n' for escapes)")
    p.add_argument("--expect", metavar="REGEX", help="what the answer must match")
    p.add_argument("--tls", action="store_true", help="TLS handshake after connecting")
    tls_options(p)


def settings_from_args(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"send": args.send, "expect": args.expect, "tls": args.tls or None, "tls_verify": tls_verify(args)}

"""HTTP client candidates for the http probe: CPU µs per request (fresh connection, whole body read) at a concurrency.

Each candidate GETs `/` from the aiohttp server of bench/probes.py (in its own process, not counted) on a new
connection, reads the whole body and closes, `--concurrency` at a time, `--requests` times per round, round after
round so that the candidates share the machine's ups and downs. `probe-client` is agent.probes.httpclient.fetch
itself; `tcp-connect` (connect and close) is the floor. h11 is not a dependency: without it that row is skipped.
Run from the repository root:

    .venv/bin/python bench/http_clients.py [--requests 3000] [--concurrency 100] [--rounds 3] [--only a,b]
"""

from __future__ import annotations

import argparse
import asyncio
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import httptools
from aiohttp.client_proto import ResponseHandler

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.probes import httpclient
from bench.probes import HTTP_PEER, peer
from slawatch.model import Result

Client = Callable[[int], Awaitable[None]]
REQUEST = b"GET / HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUser-Agent: bench\r\nAccept: */*\r\nConnection: close\r\n\r\n"


async def _connect(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setblocking(False)
    try:
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    except BaseException:
        sock.close()
        raise
    return sock


def _check(status: int, body: bytes) -> None:
    if status != 200 or body != b"ok":
        raise RuntimeError(f"unexpected answer {status} {body[:40]!r}")


async def probe_client(port: int) -> None:
    reply = await httpclient.fetch(f"http://127.0.0.1:{port}/", budget_s=5, read_body=True)
    if isinstance(reply, Result):
        raise RuntimeError(reply.reason)
    _check(reply.status, reply.body or b"")


async def aiohttp_session_per_request(port: int) -> None:
    """What the probe did before: a ClientSession with its own one-connection connector per request."""
    connector = aiohttp.TCPConnector(limit=1, force_close=True)
    async with (aiohttp.ClientSession(connector=connector, trust_env=False) as session, asyncio.timeout(5),
                session.get(f"http://127.0.0.1:{port}/") as resp):
        _check(resp.status, await resp.read())


_SESSIONS: dict[asyncio.AbstractEventLoop, aiohttp.ClientSession] = {}


async def aiohttp_shared_session(port: int) -> None:
    """One ClientSession per event loop, a fresh connection per request (force_close)."""
    loop = asyncio.get_running_loop()
    session = _SESSIONS.get(loop)
    if session is None:
        session = _SESSIONS[loop] = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0, force_close=True), trust_env=False)
    async with asyncio.timeout(5), session.get(f"http://127.0.0.1:{port}/") as resp:
        _check(resp.status, await resp.read())


async def aiohttp_low_level(port: int) -> None:
    """aiohttp's own client protocol and parser on a bare connection (aiohttp.client_proto: not public API)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(5):
        transport, proto = await loop.create_connection(lambda: ResponseHandler(loop), sock=await _connect(port))
        try:
            proto.set_response_params(read_until_eof=True)
            transport.write(REQUEST % port)
            message, payload = await proto.read()
            _check(message.code, await payload.read())
        finally:
            transport.abort()


class _Collector:
    """httptools callbacks: the status and body of one response."""

    def __init__(self, done: asyncio.Future[None]) -> None:
        self.done = done
        self.parser = httptools.HttpResponseParser(self)
        self.body: list[bytes] = []

    def on_body(self, body: bytes) -> None:
        self.body.append(body)

    def on_message_complete(self) -> None:
        if not self.done.done():
            self.done.set_result(None)

    def feed(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            if not self.done.done():
                self.done.set_exception(exc)


class _HttptoolsProtocol(asyncio.Protocol):
    def __init__(self, collector: _Collector) -> None:
        self.collector = collector

    def data_received(self, data: bytes) -> None:
        self.collector.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.collector.done.done():
            self.collector.done.set_exception(ConnectionError("closed before the end of the response"))


async def httptools_protocol(port: int) -> None:
    """httptools in an asyncio Protocol (the probe client's way, without its checks)."""
    loop = asyncio.get_running_loop()
    collector = _Collector(loop.create_future())
    async with asyncio.timeout(5):
        transport, _ = await loop.create_connection(lambda: _HttptoolsProtocol(collector), sock=await _connect(port))
        try:
            transport.write(REQUEST % port)
            await collector.done
        finally:
            transport.abort()
    _check(collector.parser.get_status_code(), b"".join(collector.body))


async def httptools_streams(port: int) -> None:
    """httptools behind asyncio streams (StreamReader/StreamWriter)."""
    loop = asyncio.get_running_loop()
    collector = _Collector(loop.create_future())
    async with asyncio.timeout(5):
        reader, writer = await asyncio.open_connection(sock=await _connect(port))
        try:
            writer.write(REQUEST % port)
            while not collector.done.done():
                data = await reader.read(65536)
                if not data:
                    raise ConnectionError("closed before the end of the response")
                collector.feed(data)
        finally:
            writer.transport.abort()
    await collector.done
    _check(collector.parser.get_status_code(), b"".join(collector.body))


def _h11_client() -> Client | None:
    try:
        import h11
    except ImportError:
        return None

    class H11Protocol(asyncio.Protocol):
        def __init__(self, done: asyncio.Future[None], port: int) -> None:
            self.done, self.port = done, port
            self.conn = h11.Connection(h11.CLIENT)
            self.status = 0
            self.body: list[bytes] = []

        def connection_made(self, transport: asyncio.BaseTransport) -> None:
            assert isinstance(transport, asyncio.Transport)
            headers = [("Host", f"127.0.0.1:{self.port}"), ("User-Agent", "bench"), ("Connection", "close")]
            transport.write(self.conn.send(h11.Request(method="GET", target="/", headers=headers)) +
                            self.conn.send(h11.EndOfMessage()))

        def data_received(self, data: bytes) -> None:
            self.conn.receive_data(data)
            try:
                while (event := self.conn.next_event()) not in (h11.NEED_DATA, h11.PAUSED):
                    if isinstance(event, h11.Response):
                        self.status = event.status_code
                    elif isinstance(event, h11.Data):
                        self.body.append(bytes(event.data))
                    elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                        if not self.done.done():
                            self.done.set_result(None)
                        return
            except h11.RemoteProtocolError as exc:
                if not self.done.done():
                    self.done.set_exception(exc)

        def connection_lost(self, exc: Exception | None) -> None:
            if not self.done.done():
                self.done.set_exception(ConnectionError("closed before the end of the response"))

    async def h11_protocol(port: int) -> None:
        """h11 (pure Python) in an asyncio Protocol."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        async with asyncio.timeout(5):
            transport, proto = await loop.create_connection(lambda: H11Protocol(done, port), sock=await _connect(port))
            try:
                await done
            finally:
                transport.abort()
        _check(proto.status, b"".join(proto.body))

    return h11_protocol


async def tcp_connect(port: int) -> None:
    """Connect and close: the floor every candidate stands on."""
    async with asyncio.timeout(5):
        (await _connect(port)).close()


async def measure(client: Client, port: int, requests: int, concurrency: int) -> tuple[float, float]:
    """(CPU µs per request, requests per second) over `requests` requests, after a short warm-up."""
    left = 0

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await client(port)

    left = 50
    await asyncio.gather(*(worker() for _ in range(10)))
    left = requests
    c0, t0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    cpu, wall = time.process_time() - c0, time.perf_counter() - t0
    for session in _SESSIONS.values():
        await session.close()
    _SESSIONS.clear()
    return cpu / requests * 1e6, requests / wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=3000, help="per candidate and round (default 3000)")
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", help="comma-separated candidate names")
    args = parser.parse_args()
    candidates: dict[str, Client | None] = {
        "probe-client": probe_client,
        "aiohttp-session-per-request": aiohttp_session_per_request,
        "aiohttp-shared-session": aiohttp_shared_session,
        "aiohttp-low-level": aiohttp_low_level,
        "httptools-protocol": httptools_protocol,
        "httptools-streams": httptools_streams,
        "h11-protocol": _h11_client(),
        "tcp-connect": tcp_connect,
    }
    names = args.only.split(",") if args.only else list(candidates)
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in names}
    print(f"{args.requests} requests × {args.rounds} rounds at concurrency {args.concurrency}", flush=True)
    with peer(HTTP_PEER) as port:
        for r in range(args.rounds):
            for name in names:
                client = candidates[name]
                if client is None:
                    continue
                cell = asyncio.run(measure(client, port, args.requests, args.concurrency))
                results[name].append(cell)
                print(f"  round {r + 1} {name}: {cell[0]:,.0f} µs CPU, {cell[1]:,.0f}/s", file=sys.stderr, flush=True)
    print()
    print("| candidate | CPU µs/request, each round | requests/s, each round |")
    print("|---|---|---|")
    for name, cells in results.items():
        if not cells:
            print(f"| {name} | not installed | |")
            continue
        cpu = " / ".join(f"{c:,.0f}" for c, _ in cells)
        rate = " / ".join(f"{r:,.0f}" for _, r in cells)
        print(f"| {name} | {cpu} | {rate} |")


if __name__ == "__main__":
    main()

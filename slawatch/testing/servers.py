"""In-process loopback servers for probe tests, friendly and hostile: async context managers yielding a port.

Every server binds 127.0.0.1 on a port the kernel picks, and on exit closes its listener and every connection
it accepted (the tests run with warnings as errors: an unclosed transport fails them).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

from aiohttp import web

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]

MB = 1 << 20


@contextlib.asynccontextmanager
async def serve(handler: Handler, *, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """Run `handler` for every connection; on exit drop the connections and cancel the handlers."""
    tasks: set[asyncio.Task[None]] = set()
    writers: set[asyncio.StreamWriter] = set()

    async def guarded(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        tasks.add(task)
        writers.add(writer)
        with contextlib.suppress(OSError, ssl.SSLError, asyncio.IncompleteReadError):
            await handler(reader, writer)
            await writer.drain()
        writer.close()

    server = await asyncio.start_server(guarded, "127.0.0.1", 0, ssl=tls)
    port = int(server.sockets[0].getsockname()[1])
    try:
        yield port
    finally:
        server.close()
        for w in writers:
            w.transport.abort()
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await server.wait_closed()


async def _drain_input(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    while await reader.read(65536):
        pass


def line_peer(banner: bytes = b"", answers: dict[bytes, bytes] | None = None, *,
              tls: ssl.SSLContext | None = None) -> contextlib.AbstractAsyncContextManager[int]:
    """Send `banner`, then answer each line found in `answers` (stripped of CR LF); hang up on QUIT or EOF."""
    table = answers or {}

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(banner)
        await writer.drain()
        while (line := await reader.readline()) and line.rstrip(b"\r\n") != b"QUIT":
            writer.write(table.get(line.rstrip(b"\r\n"), b"ERR unknown command\r\n"))
            await writer.drain()

    return serve(handler, tls=tls)


def silent_peer() -> contextlib.AbstractAsyncContextManager[int]:
    """Accept, read whatever comes, never answer."""
    return serve(_drain_input)


def trickle_peer(data: bytes = b"x" * 1000, *, prefix: bytes = b"",
                 interval_s: float = 1.0) -> contextlib.AbstractAsyncContextManager[int]:
    """Send `prefix` at once, then `data` one byte per `interval_s` (first byte right away)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(prefix)
        for i in range(len(data)):
            writer.write(data[i:i + 1])
            await writer.drain()
            await asyncio.sleep(interval_s)

    return serve(handler)


def flood_peer(total: int = 10 * MB, *, prefix: bytes = b"",
               fill: bytes = b"A") -> contextlib.AbstractAsyncContextManager[int]:
    """Send `prefix` then `total` bytes of `fill` as fast as the reader takes them."""
    block = fill * (65536 // len(fill))

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(prefix)
        sent = 0
        while sent < total:
            piece = block[: total - sent]
            writer.write(piece)
            await writer.drain()
            sent += len(piece)

    return serve(handler)


def closed_port() -> int:
    """A loopback port with nothing listening (connect is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextlib.contextmanager
def syn_blackhole() -> Iterator[int]:
    """A loopback port whose accept queue is full: the kernel drops new SYNs, so connect hangs (no RST)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(0)
    port = int(listener.getsockname()[1])
    fillers = []
    try:
        for _ in range(3):
            c = socket.socket()
            c.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                c.connect(("127.0.0.1", port))
            fillers.append(c)
        yield port
    finally:
        for c in fillers:
            c.close()
        listener.close()


def self_signed_cert(directory: Path, openssl: str = "openssl") -> tuple[Path, Path]:
    """A throwaway certificate for CN/SAN 127.0.0.1, made with the openssl CLI: (certfile, keyfile)."""
    cert, key = directory / "cert.pem", directory / "key.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
                    "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True, timeout=30)
    return cert, key


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    return ctx


@contextlib.asynccontextmanager
async def web_peer(app: web.Application) -> AsyncIterator[int]:
    """Serve an aiohttp app on a loopback port; handlers still running at exit are cancelled promptly."""
    runner = web.AppRunner(app, shutdown_timeout=0.1, handle_signals=False, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield site.port
    finally:
        await runner.cleanup()

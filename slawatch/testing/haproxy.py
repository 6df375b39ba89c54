"""HAProxy (Debian's haproxy) in front of a pool of aiohttp backends on loopback: its stats CSV is what the haproxy
probe reads; closing a backend makes HAProxy's health check mark that member DOWN within ~200 ms."""

from __future__ import annotations

import contextlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

from slawatch.testing import free_port, need_binary
from slawatch.testing.servers import web_peer

CONFIG = """\
global
    nbthread 1

defaults
    mode http
    timeout connect 1s
    timeout client 5s
    timeout server 5s

frontend stats
    bind 127.0.0.1:{stats}
    stats enable
    stats uri /stats

frontend stats_private
    bind 127.0.0.1:{private}
    stats enable
    stats uri /stats
    stats auth ops:s3cret

frontend www
    bind 127.0.0.1:{frontend}
    default_backend web

backend web
    option httpchk GET /health
    default-server check inter 200ms fall 1 rise 1
{servers}
"""


def backend_app(name: str) -> web.Application:
    async def health(request: web.Request) -> web.Response:
        return web.Response(text=f"{name} ok")

    app = web.Application()
    app.router.add_get("/health", health)
    return app


@dataclass
class Haproxy:
    """A running HAProxy: backend `web` with members web1..webN, each served in its own exit stack (close one to
    take that member down); stats at `url()`, the same behind `ops:s3cret` on `private`."""

    stats: int
    private: int
    backends: list[contextlib.AsyncExitStack]
    log: Path
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)

    def url(self, port: int | None = None) -> str:
        return f"http://127.0.0.1:{port or self.stats}/stats"

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for stack in self.backends:
            await stack.aclose()


async def start_haproxy(directory: Path, members: int = 3) -> Haproxy:
    """HAProxy with `members` aiohttp backends on this event loop; `await lb.stop()` when done."""
    binary = need_binary("haproxy", "haproxy")
    stacks: list[contextlib.AsyncExitStack] = []
    ports = []
    for i in range(1, members + 1):
        stack = contextlib.AsyncExitStack()
        ports.append(await stack.enter_async_context(web_peer(backend_app(f"web{i}"))))
        stacks.append(stack)
    servers = "\n".join(f"    server web{i} 127.0.0.1:{p}" for i, p in enumerate(ports, 1))
    config = directory / "haproxy.cfg"
    stats, private = free_port(), free_port()
    config.write_text(CONFIG.format(stats=stats, private=private, frontend=free_port(), servers=servers))
    log = directory / "haproxy.log"
    return Haproxy(stats, private, stacks, log, _spawn(binary, config, log))


def _spawn(binary: str, config: Path, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen([binary, "-f", str(config), "-db"], stdout=out, stderr=subprocess.STDOUT)

"""A webhook receiver on loopback (aiohttp) that keeps every request, for the notification tests and benchmarks."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass(frozen=True, slots=True)
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    at: float = 0.0  # time.time() when the body was in

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Webhook:
    """Answers `/status/CODE` with CODE (body "refused by the test receiver"), never answers `/hang` (until stopped),
    and 200 to anything else. Every request that got a body in is in `received`; `keep=False` only counts them."""

    keep: bool = True
    received: list[Request] = field(default_factory=list)
    count: int = 0
    port: int = 0
    _runner: web.AppRunner | None = None
    _stopping: asyncio.Event = field(default_factory=asyncio.Event)

    async def _handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.count += 1
        if self.keep:
            self.received.append(Request(request.method, request.path, dict(request.headers), body, time.time()))
        if request.path.startswith("/hang"):
            await self._stopping.wait()
            return web.Response(status=503)
        code = request.match_info["tail"].split("/")
        if len(code) >= 2 and code[0] == "status" and code[1].isdigit():
            return web.Response(status=int(code[1]), text="refused by the test receiver")
        return web.Response(text="ok")

    async def start(self, host: str = "127.0.0.1") -> Webhook:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        # No access log: a request line holds the URL's path, which the tests check never reaches a log.
        self._runner = web.AppRunner(app, access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        return self

    async def stop(self) -> None:
        self._stopping.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def start_webhook(host: str = "127.0.0.1", *, keep: bool = True) -> Webhook:
    """A Webhook listening on a port the kernel picks on `host`; `await hook.stop()` when done."""
    return await Webhook(keep=keep).start(host)

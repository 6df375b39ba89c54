"""The agent's HTTP face on `agent.listen`: /metrics (Prometheus), /healthz, and a status page at /."""

from __future__ import annotations

import asyncio
import html
import logging
import resource
import time
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import cast

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agent.daemon import Agent
from agent.state import format_duration

log = logging.getLogger(__name__)

AGENT_KEY = web.AppKey("agent", Agent)
# One descriptor in this many may serve HTTP clients; the rest stay for probes, the spool and the stores.
FD_SHARE = 8
_BUSY = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def _metrics(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    body = generate_latest(agent.metrics.registry)
    return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})


async def _healthz(request: web.Request) -> web.Response:
    """200 and status "ok", or 503 and status "unhealthy" with the reasons (a dead drain, a failing store...)."""
    agent = request.app[AGENT_KEY]
    reasons = agent.health()
    return web.json_response({
        "status": "unhealthy" if reasons else "ok", "reasons": reasons, "agent": agent.agent_id,
        "uptime_s": round(time.time() - agent.started, 3), "components": len(agent.states),
        "probe_runs": agent.probe_runs,
    }, status=503 if reasons else 200)


async def _status(request: web.Request) -> web.Response:
    agent = request.app[AGENT_KEY]
    now_ms = time.time_ns() // 1_000_000
    rows = []
    for name in sorted(agent.states):
        st = agent.states[name]
        label, css = ("UP", "up") if st.up else (("DOWN", "down") if st.up is False else ("PENDING", "pending"))
        if st.up and st.degraded:
            label, css = "DEGRADED", "degraded"
        since = "" if st.since_ms is None else (
            f"{datetime.fromtimestamp(st.since_ms / 1000, UTC):%Y-%m-%d %H:%M:%S} UTC "
            f"({format_duration(now_ms - st.since_ms)})")
        rows.append(f"<tr class={css}><td>{html.escape(name)}</td><td>{html.escape(st.ref.klass)}</td>"
                    f"<td>{html.escape(st.ref.tier)}</td><td>{html.escape(st.ref.customer)}</td>"
                    f"<td class=state>{label}</td><td>{since}</td>"
                    f"<td>{html.escape('; '.join(st.degraded.values()))}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset=utf-8><title>slawatch {html.escape(agent.agent_id)}</title>
<meta http-equiv=refresh content=10><style>
body{{font-family:system-ui,sans-serif;margin:2em}} table{{border-collapse:collapse}}
td,th{{padding:.3em .8em;border-bottom:1px solid #ddd;text-align:left}}
.up .state{{color:#137333;font-weight:bold}} .down .state{{color:#c5221f;font-weight:bold}}
.pending .state{{color:#b06000}} .degraded .state{{color:#b06000;font-weight:bold}}</style></head><body>
<h1>slawatch — agent {html.escape(agent.agent_id)}</h1>
<table><tr><th>component</th><th>class</th><th>tier</th><th>customer</th><th>state</th><th>since</th><th>note</th></tr>
{''.join(rows)}</table></body></html>"""
    return web.Response(text=page, content_type="text/html")


Mount = Callable[[web.Application], None]
"""Adds more routes to the agent's application before it starts (the console, passed in by the composition root)."""


def make_app(agent: Agent, mount: Mount | None = None) -> web.Application:
    """/metrics and /healthz, then what `mount` adds; without it, the bare status page at /."""
    app = web.Application()
    app[AGENT_KEY] = agent
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    if mount is None:
        app.router.add_get("/", _status)
    else:
        mount(app)
    return app


def connection_cap(max_connections: int, nofile_soft: int) -> int:
    """The listener's connection cap: the setting, lowered so that probing keeps most descriptors."""
    return max(1, min(max_connections, nofile_soft // FD_SHARE))


class Listener:
    """The agent's HTTP listener: aiohttp's request handling behind a connection cap and a header deadline.

    Past the cap a new connection gets a 503 and is closed at once (refuse, don't starve: an idle client must
    never take the descriptors the probes need). A connection that has not sent a complete request head within
    `header_timeout_s` is closed; between requests aiohttp's keep-alive timeout, set to the same value, applies.
    """

    def __init__(self, agent: Agent, *, max_connections: int, header_timeout_s: float,
                 mount: Mount | None = None) -> None:
        self.cap = max_connections
        self.header_timeout_s = header_timeout_s
        self.active = 0
        self.refused = 0
        self.header_timeouts = 0
        self._at_cap = False
        self._runner = web.AppRunner(make_app(agent, mount), access_log=None, keepalive_timeout=header_timeout_s)
        self._server: asyncio.Server | None = None
        agent.metrics.watch(self._metrics)

    async def start(self, host: str, port: int) -> None:
        await self._runner.setup()
        self._server = await asyncio.get_running_loop().create_server(
            lambda: _Connection(self), host, port, backlog=128)

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        await self._runner.cleanup()

    def handler(self) -> web.RequestHandler:
        server = self._runner.server
        assert server is not None, "start() first"
        return server()

    def admit(self, transport: asyncio.Transport) -> bool:
        """Count a new connection in, or answer 503 and close it when the listener is at its cap."""
        if self.active < self.cap:
            self.active += 1
            return True
        self.refused += 1
        if not self._at_cap:
            self._at_cap = True
            log.warning("HTTP listener at its cap of %d connections (agent.max_connections): refusing new ones",
                        self.cap)
        transport.write(_BUSY)
        transport.close()
        return False

    def release(self) -> None:
        self.active -= 1
        if self._at_cap and self.active < self.cap // 2:
            self._at_cap = False
            log.info("HTTP listener below its cap again (%d open); %d connections refused so far",
                     self.active, self.refused)

    def _metrics(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        yield GaugeMetricFamily("slawatch_http_connections", "Open connections to the agent's HTTP listener",
                                value=self.active)
        yield GaugeMetricFamily("slawatch_http_connections_max", "The HTTP listener's connection cap",
                                value=self.cap)
        yield CounterMetricFamily("slawatch_http_connections_refused",
                                  "Connections closed at once: the listener was at its cap", value=self.refused)
        yield CounterMetricFamily("slawatch_http_header_timeouts", "Connections closed for sending no complete "
                                  "request head in time", value=self.header_timeouts)


class _Connection(asyncio.Protocol):
    """One listener connection in front of aiohttp's handler: counted against the cap, and given a deadline for
    its first request head (aiohttp on its own waits for it for ever)."""

    def __init__(self, listener: Listener) -> None:
        self._listener = listener
        self._inner: web.RequestHandler | None = None
        self._transport: asyncio.Transport | None = None
        self._deadline: asyncio.TimerHandle | None = None
        self._tail = b""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # Not an isinstance check: uvloop's transports are not asyncio's classes (agent.loop: uvloop).
        transport = cast(asyncio.Transport, transport)
        if not self._listener.admit(transport):
            return
        self._transport = transport
        self._deadline = asyncio.get_running_loop().call_later(self._listener.header_timeout_s, self._too_slow)
        self._inner = self._listener.handler()
        self._inner.connection_made(transport)

    def data_received(self, data: bytes) -> None:
        if self._inner is None:
            return
        if self._deadline is not None:
            seen = self._tail + data
            if b"\r\n\r\n" in seen or b"\n\n" in seen:
                self._deadline.cancel()
                self._deadline = None
                self._tail = b""
            else:
                self._tail = seen[-3:]
        self._inner.data_received(data)

    def eof_received(self) -> None:
        if self._inner is not None:
            self._inner.eof_received()  # aiohttp keeps no half-open connection: returns None, the transport closes

    def connection_lost(self, exc: Exception | None) -> None:
        if self._inner is None:
            return
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._listener.release()
        inner, self._inner = self._inner, None
        inner.connection_lost(exc)

    def pause_writing(self) -> None:
        if self._inner is not None:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._inner is not None:
            self._inner.resume_writing()

    def _too_slow(self) -> None:
        self._deadline = None
        if self._transport is not None:
            self._listener.header_timeouts += 1
            self._transport.abort()


async def serve(agent: Agent, host: str, port: int, mount: Mount | None = None) -> Listener:
    """Start the listener with the agent's limits; the cap leaves most of the open-file limit to probing. `mount`
    adds routes beside /metrics and /healthz (the console)."""
    settings = agent.loaded.config.agent
    soft = resource.getrlimit(resource.RLIMIT_NOFILE)[0]
    if soft == resource.RLIM_INFINITY:
        soft = settings.max_connections * FD_SHARE
    cap = connection_cap(settings.max_connections, soft)
    if cap < settings.max_connections:
        log.warning("HTTP listener capped at %d connections, below agent.max_connections (%d): the open-file "
                    "limit is %d", cap, settings.max_connections, soft)
    listener = Listener(agent, max_connections=cap, header_timeout_s=settings.header_timeout_s, mount=mount)
    try:
        await listener.start(host, port)
    except BaseException:
        await listener.close()
        raise
    log.info("HTTP listener: at most %d connections, %g s for a request head", cap, settings.header_timeout_s)
    return listener

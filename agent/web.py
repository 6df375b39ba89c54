"""The agent's HTTP face on `agent.listen`: /metrics (Prometheus), /healthz, and a status page at /."""

from __future__ import annotations

import html
import time
from datetime import UTC, datetime

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from agent.daemon import Agent
from agent.state import format_duration

AGENT_KEY = web.AppKey("agent", Agent)


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


def make_app(agent: Agent) -> web.Application:
    app = web.Application()
    app[AGENT_KEY] = agent
    app.router.add_get("/metrics", _metrics)
    app.router.add_get("/healthz", _healthz)
    app.router.add_get("/", _status)
    return app


async def serve(agent: Agent, host: str, port: int) -> web.AppRunner:
    runner = web.AppRunner(make_app(agent), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port)
    await site.start()
    return runner

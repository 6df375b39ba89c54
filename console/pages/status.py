"""A customer's public status page (`/status/CUSTOMER`, for the customers in `console.public`): read-only, no sign-in;
each component's name, state (up, degraded, down, maintenance) and month-to-date availability, and nothing else: no
reason, no agent, no incident."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from aiohttp import web

from console.board import Figure, Status
from console.context import Console, Ctx
from slawatch import __version__
from slawatch.model import ComponentRef, MaintenanceWindow
from slawatch.store import SourceError

PUBLIC_STATES = {"up": "up", "degraded": "degraded", "down": "down", "unmonitored": "no data"}


@dataclass(frozen=True, slots=True)
class PublicRow:
    """What the public sees of one component."""

    name: str
    state: str
    pct: float | None


def public_rows(customer: str, statuses: Iterable[Status], figures: Mapping[str, Figure],
                windows: Sequence[MaintenanceWindow], now_ms: int) -> list[PublicRow]:
    """The customer's components (config order): a window in progress shows as maintenance, whatever the probes say;
    nothing else of a Status is carried over."""
    rows = []
    for st in statuses:
        if st.customer != customer:
            continue
        ref = ComponentRef(st.name, st.klass, st.tier, st.customer)
        state = PUBLIC_STATES[st.state]
        if any(w.start_ms <= now_ms < w.end_ms and w.applies_to(ref) for w in windows):
            state = "maintenance"
        fig = figures.get(st.name)
        rows.append(PublicRow(st.name, state, fig.pct if fig is not None else None))
    return rows


async def _windows(console: Console) -> list[MaintenanceWindow]:
    """The windows in progress, read at most once per refresh of the states (the page is open to anyone)."""
    read_ms = console.board.snapshot.read_ms
    cached = console.extra.get("status.windows")
    if isinstance(cached, tuple) and cached[0] == read_ms:
        return cached[1]  # type: ignore[no-any-return]
    try:
        windows = await console.source.windows(read_ms, read_ms + 1)
    except SourceError:
        windows = cached[1] if isinstance(cached, tuple) else []  # the last known: a public page shows no error text
    console.extra["status.windows"] = (read_ms, windows)
    return windows


async def show(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    console = ctx.console
    customer = request.match_info["customer"]
    if customer not in console.loaded.config.console.public:
        raise web.HTTPNotFound(text="no such status page", content_type="text/plain")
    board = console.board
    snap = board.snapshot
    key = (customer, snap.read_ms, board.figures_ms, console.loaded)
    cached = console.extra.get(f"status.page.{customer}")
    if isinstance(cached, tuple) and cached[0] == key:
        text, etag = cached[1], cached[2]
    else:
        rows = public_rows(customer, snap.statuses.values(), board.figures, await _windows(console), snap.read_ms)
        page = console.templates.get_template("status.html")
        text = page.render(customer=customer, rows=rows, read_ms=snap.read_ms, figures_ms=board.figures_ms,
                           version=__version__, refresh_s=max(30, round(console.loaded.config.console.refresh_s)),
                           stale=bool(snap.error) or not snap.read_ms)
        etag = '"' + hashlib.sha256(text.encode()).hexdigest()[:24] + '"'
        console.extra[f"status.page.{customer}"] = (key, text, etag)
    headers = {"Cache-Control": "no-cache", "ETag": etag}
    if etag in request.headers.get("If-None-Match", ""):
        return web.Response(status=304, headers=headers)
    return web.Response(text=text, content_type="text/html", headers=headers)

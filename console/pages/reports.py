"""Reports (`/reports`): the monthly archive per customer and month to view and download, and a customer's month to
date on demand. Every download checks the user's customers on the server: another customer's report is a 404."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from dataclasses import dataclass

from aiohttp import web

from console import archive
from console.context import Console, Ctx
from console.scope import may_see
from reporter.periods import month_of, month_period
from reporter.render import render_csv, render_html, render_json
from reporter.report import Report, build_report
from slawatch.model import Heartbeats, Interval, MaintenanceWindow, StateChange
from slawatch.store import SourceError

TO_DATE = ("html", "csv", "json")
"""The formats of a month to date (the PDF comes with the archived months, when the archive holds one)."""
SANDBOX = "sandbox; default-src 'none'; style-src 'unsafe-inline'; img-src data:"
"""An archived HTML report is shown as a document of its own origin: nothing in it can reach the console."""


def _not_found() -> web.HTTPNotFound:
    return web.HTTPNotFound(text="no such report", content_type="text/plain")


def customers(console: Console, ctx: Ctx) -> list[str]:
    """The configured customers the user may see (for a month to date)."""
    assert ctx.user is not None
    user = ctx.user
    config = console.loaded.config
    return [c.name for c in config.customers if may_see(user, c.name)
            and any(comp.customer == c.name for comp in config.components)]


async def _listing(console: Console) -> list[archive.Archived]:
    return await asyncio.to_thread(archive.listing, console.loaded.config.report.archive)


async def show(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    user = ctx.user
    console = ctx.console
    root = console.loaded.config.report.archive
    mine = [a for a in await _listing(console) if may_see(user, a.customer)]
    now = console.board.clock()
    tz = console.loaded.config.report.timezone
    year, month = month_of(now, tz)
    return ctx.render("reports.html", title="Reports", archived=archive.by_month(mine), archive_set=root is not None,
                      to_date=customers(console, ctx), to_date_formats=TO_DATE, this_month=f"{year:04d}-{month:02d}",
                      period_start=month_period(year, month, tz).start_ms, now=now, tz=tz)


async def download(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """One archived file, found in the archive's listing (never a path made of the URL), if the user may see its
    customer; an HTML report or PDF is shown in the browser unless `?download` asks for the file."""
    assert ctx.user is not None
    found = archive.find(await _listing(ctx.console), request.match_info["month"], request.match_info["file"])
    if found is None or not may_see(ctx.user, found.customer):
        raise _not_found()  # another customer's report is answered exactly as one that does not exist
    inline = found.fmt in ("html", "pdf") and "download" not in request.query
    name = f"slawatch-{found.month}-{found.filename}"
    response = web.FileResponse(found.path, headers={
        "Content-Type": archive.FORMATS[found.fmt] + ("; charset=utf-8" if found.fmt != "pdf" else ""),
        "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
        "Cache-Control": "private, no-cache", "Content-Security-Policy": SANDBOX})
    return response


class _ReadAhead:
    """What build_report reads over one period, read once on the event loop beforehand: the maths then runs in a
    thread on these lists (the only three reads it makes)."""

    def __init__(self, changes: list[StateChange], heartbeats: Heartbeats, windows: list[MaintenanceWindow]) -> None:
        self._changes, self._heartbeats, self._windows = changes, heartbeats, windows

    async def changes(self, start_ms: int, end_ms: int, components: Sequence[str] | None = None
                      ) -> list[StateChange]:
        wanted = None if components is None else set(components)
        return [c for c in self._changes if wanted is None or c.ref.component in wanted]

    async def heartbeats(self, start_ms: int, end_ms: int) -> Heartbeats:
        return self._heartbeats

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[MaintenanceWindow]:
        return self._windows


@dataclass(frozen=True, slots=True)
class ToDate:
    """A customer's month-to-date report and its renderings, kept for `figures_s` (one build per customer then)."""

    report: Report
    built_s: float
    files: dict[str, str]


def _build_in_thread(console: Console, period: Interval, month: tuple[int, int], customer: str, read: _ReadAhead
                     ) -> ToDate:
    async def build() -> Report:
        return await build_report(console.loaded, read, period, month=month, customer=customer)  # type: ignore[arg-type]

    report = asyncio.run(build())
    return ToDate(report, time.monotonic(), {"html": render_html(report), "csv": render_csv(report),
                                             "json": render_json(report)})


async def month_to_date(console: Console, customer: str) -> ToDate:
    """The month so far for one customer: the reporter's own build and renderers (cached for `figures_s`; one build
    at a time, in a thread, so that a large customer never holds up the event loop and the probes in it)."""
    cache: dict[str, ToDate] = console.extra.setdefault("reports.to_date", {})
    lock: asyncio.Lock = console.extra.setdefault("reports.lock", asyncio.Lock())
    max_age_s = console.loaded.config.console.figures_s
    async with lock:
        hit = cache.get(customer)
        if hit is not None and time.monotonic() - hit.built_s < max_age_s:
            return hit
        config = console.loaded.config
        now = console.board.clock()
        tz = config.report.timezone
        year, month = month_of(now, tz)
        start = month_period(year, month, tz).start_ms
        period = Interval(start, max(start, now))
        names = [c.name for c in config.components if c.customer == customer]
        read = _ReadAhead(await console.source.changes(period.start_ms, period.end_ms, names),
                     await console.source.heartbeats(period.start_ms, period.end_ms),
                     await console.source.windows(period.start_ms, period.end_ms))
        built = await asyncio.to_thread(_build_in_thread, console, period, (year, month), customer, read)
        for name in [n for n in cache if n not in {c.name for c in config.customers}]:
            del cache[name]  # a customer removed by a reload
        cache[customer] = built
        return built


async def to_date(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """`/reports/to-date/CUSTOMER.FMT`: the month so far, rendered as the monthly report is."""
    assert ctx.user is not None
    customer, _, fmt = request.match_info["file"].rpartition(".")
    if fmt not in TO_DATE or customer not in customers(ctx.console, ctx):
        raise _not_found()
    try:
        built = await month_to_date(ctx.console, customer)
    except SourceError as exc:
        return web.Response(status=503, text=f"The store could not be read: {exc}", content_type="text/plain",
                            headers={"Cache-Control": "no-store"})
    label = built.report.label
    inline = fmt == "html" and "download" not in request.query
    name = f"slawatch-{label}-to-date-{customer}.{fmt}"
    return web.Response(text=built.files[fmt], content_type=archive.FORMATS[fmt], charset="utf-8", headers={
        "Content-Disposition": f'{"inline" if inline else "attachment"}; filename="{name}"',
        "Cache-Control": "private, no-store", "Content-Security-Policy": SANDBOX})

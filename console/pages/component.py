"""A component's page (`/components/NAME`): its probes and their last results, the month's state changes and outage
ledger, a latency chart, its maintenance windows and its incidents."""

from __future__ import annotations

from collections.abc import Sequence

from aiohttp import web

from console.board import Status, figures, spark
from console.context import Ctx
from console.scope import may_see
from reporter.periods import month_of, month_period
from slawatch.model import ComponentRef, Interval, MaintenanceWindow, Sample, StateChange
from slawatch.store import SourceError


def _last_per_probe(samples: Sequence[Sample]) -> dict[tuple[str, str], Sample]:
    last: dict[tuple[str, str], Sample] = {}
    for s in samples:
        last[(s.probe, s.agent)] = s
    return last


async def show(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    console = ctx.console
    name = request.match_info["name"]
    config = console.loaded.config
    comp = next((c for c in config.components if c.name == name), None)
    # Another customer's component is answered exactly as one that does not exist.
    if comp is None or not may_see(ctx.user, comp.customer):
        raise web.HTTPNotFound(text="no such component", content_type="text/plain")
    board = console.board
    status: Status | None = board.snapshot.statuses.get(name)
    now = board.clock()
    tz = config.report.timezone
    month = month_period(*month_of(now, tz), tz)
    period = Interval(month.start_ms, max(month.start_ms, now))
    span_start = now - round(config.console.latency_span_s * 1000)
    error = ""
    changes: list[StateChange] = []
    samples: list[Sample] = []
    windows: list[MaintenanceWindow] = []
    try:
        changes = await console.source.changes(period.start_ms, period.end_ms, [name])
        beats = await console.source.heartbeats(period.start_ms, period.end_ms)
        windows = await console.source.windows(period.start_ms, None)
        samples = await console.source.samples(span_start, now, [name])
    except SourceError as exc:
        error = str(exc)
        beats = {}
    figure = figures(console.loaded, period, changes, beats, windows).get(name) if not error else None
    ref = ComponentRef(name, status.klass if status else comp.klass, status.tier if status else "",
                       comp.customer or "")
    ref_windows = [w for w in windows if w.applies_to(ref)]
    incidents = []
    if console.desk_store is not None:
        try:
            incidents = await console.desk_store.incidents(component=name)
        except SourceError as exc:
            error = error or str(exc)
    chart = spark([(s.ts_ms, s.latency_ms) for s in samples], span_start, now, width=720, height=160)
    return ctx.render("component.html", title=name, comp=comp, status=status, figure=figure,
                      changes=[c for c in changes if c.ts_ms >= period.start_ms], last=_last_per_probe(samples),
                      chart=chart, windows=ref_windows, incidents=list(reversed(incidents)), error=error,
                      period=period, span_s=config.console.latency_span_s, span_start=span_start, now=now)


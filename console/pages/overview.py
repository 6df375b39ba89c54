"""The overview (`/`): counts, every component the user may see grouped by customer, and the JSON it polls."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from markupsafe import Markup

from console.board import STATES, Figure, Spark, Status, by_customer, counts
from console.context import Console, Ctx, compressed
from console.formats import iso, when
from console.scope import may_see, sees_everything
from reporter.calendars import Calendar, calendars_of
from reporter.response import evaluate, target_of
from slawatch.model import Incident, IncidentState, User
from slawatch.store import SourceError

MAX_QUERY = 200


@dataclass(frozen=True, slots=True)
class Deadline:
    incident: Incident
    deadline_ms: int | None
    remaining_s: float | None


def matches(st: Status, query: str, state: str) -> bool:
    """The overview's filter (the same as the page's script): a state, and words all found in the name, class,
    tier, customer or reason (case-insensitive)."""
    if state and st.state != state:
        return False
    if not query:
        return True
    text = f"{st.name} {st.klass} {st.tier} {st.customer} {st.reason}".lower()
    return all(word in text for word in query.lower().split())


def visible(console: Console, user: User) -> list[Status]:
    return [st for st in console.board.snapshot.statuses.values() if may_see(user, st.customer)]


class Rows:
    """Each component's table row, kept as ready pieces: its state part (rendered again when the status changes),
    its figures part (when the month-to-date figures change) and its sparkline (numbers only, made when new). A
    page of 10 000 rows is then a join of ready strings, not 10 000 template runs; `keep_warm` renders the pieces
    in the background, a few hundred at a time, so that no page view pays for them all at once."""

    def __init__(self) -> None:
        self._heads: dict[str, tuple[Status, Markup]] = {}
        self._tails: dict[str, tuple[Figure | None, tuple[object, ...] | None, Markup]] = {}
        self._sparks: dict[str, tuple[Spark | None, Markup]] = {}
        self._rows: dict[str, tuple[Markup, Markup, Markup, Markup]] = {}

    def row(self, console: Console, st: Status, fig: Figure | None, spark: Spark | None) -> Markup:
        # Each piece is kept with what it was made from; an identical object is a hit without comparing fields
        # (every read of the store makes new, mostly equal, statuses: an equal one is kept for the next page).
        name = st.name
        head = self._heads.get(name)
        if head is None or (head[0] is not st and head[0] != st):
            macro = console.templates.get_template("_rows.html").module.row_head  # type: ignore[attr-defined]
            head = self._heads[name] = (st, Markup(macro(st)))
        elif head[0] is not st:
            head = self._heads[name] = (st, head[1])
        tail = self._tails.get(name)
        if tail is None or tail[0] is not fig:
            values = None if fig is None else (fig.pct, fig.target_pct, fig.met, fig.budget_ms)
            if tail is None or tail[1] != values:
                macro = console.templates.get_template("_rows.html").module.row_tail  # type: ignore[attr-defined]
                tail = self._tails[name] = (fig, values, Markup(macro(fig)))
            else:
                tail = self._tails[name] = (fig, values, tail[2])
        line = self._sparks.get(name)
        if line is None or line[0] is not spark:
            line = self._sparks[name] = (spark, spark_svg(spark))
        joined = self._rows.get(name)
        if joined is None or joined[0] is not head[1] or joined[1] is not line[1] or joined[2] is not tail[2]:
            # Plain str joins of pieces that are all markup already (Markup's + would escape-check each).
            joined = self._rows[name] = (head[1], line[1], tail[2], Markup(str.__add__(str.__add__(head[1], line[1]),
                                                                                        tail[2])))
        return joined[3]


def spark_svg(s: Spark | None) -> Markup:
    """A sparkline as inline SVG, written out here: numbers only, so nothing in it needs escaping."""
    if s is None:
        return Markup("")
    return Markup(f'<svg class="spark" width="{s.width:d}" height="{s.height:d}" role="img" '
                  f'aria-label="latency up to {s.top_ms:.1f} ms"><polyline points="{_numbers(s.points)}"/></svg>')


def _numbers(points: str) -> str:
    if not all(c in "0123456789., -" for c in points):
        raise ValueError("a sparkline's points are numbers")
    return points


async def keep_warm(console: Console) -> None:
    """Render the rows' pieces after every read of the board."""
    while True:
        await console.board.changed.wait()
        await warm(console)


async def warm(console: Console) -> None:
    """One pass over every row, yielding to the event loop every few hundred."""
    rows = _rows(console)
    board = console.board
    for i, st in enumerate(list(board.snapshot.statuses.values())):
        rows.row(console, st, board.figures.get(st.name), board.sparks.get(st.name))
        if i % 200 == 199:
            await asyncio.sleep(0)


def _rows(console: Console) -> Rows:
    rows = console.extra.get("overview.rows")
    if not isinstance(rows, Rows):
        rows = console.extra["overview.rows"] = Rows()
    return rows


def _calendars(console: Console) -> Mapping[str, Calendar]:
    cached = console.extra.get("overview.calendars")
    if not isinstance(cached, tuple) or cached[0] is not console.loaded:
        cached = console.extra["overview.calendars"] = (
            console.loaded, calendars_of(console.loaded.contract.response_terms()))
    return cached[1]  # type: ignore[no-any-return]


async def incidents(console: Console, user: User, now_ms: int) -> tuple[list[Incident], list[Deadline]]:
    """The active incidents the user may see, and those unacknowledged with less than `near_deadline_s` left."""
    if console.desk_store is None:
        return [], []
    try:
        active = [i for i in await console.desk_store.active() if may_see(user, i.ref.customer)]
    except SourceError:
        return [], []
    near: list[Deadline] = []
    limit_s = console.loaded.config.console.near_deadline_s
    for inc in active:
        if inc.state is not IncidentState.OPEN:
            continue
        target = target_of(console.loaded.contract, inc.priority, inc.ref.tier)
        verdict = evaluate(_calendars(console), target, inc.raised_ms, None, inc.pause_spans, now_ms)
        if verdict.remaining_s is not None and verdict.remaining_s <= limit_s:
            near.append(Deadline(inc, verdict.deadline_ms, verdict.remaining_s))
    return active, near


def _filters(request: web.Request) -> tuple[str, str]:
    query = request.query.get("q", "")[:MAX_QUERY].strip()
    state = request.query.get("state", "")
    return query, state if state in STATES else ""


async def show(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    console = ctx.console
    board = console.board
    query, state = _filters(request)
    mine = visible(console, ctx.user)
    shown = [st for st in mine if matches(st, query, state)]
    rows = _rows(console)
    figures, sparks = board.figures, board.sparks
    # Each customer's rows joined here, one string per table: a template loop over 10 000 rows costs more.
    groups = [(customer, Markup("".join([str.__add__(rows.row(console, st, figures.get(st.name),
                                                              sparks.get(st.name)), "\n") for st in items])))
              for customer, items in by_customer(shown)]
    active, near = await incidents(console, ctx.user, board.clock())
    return ctx.render("overview.html", title="Overview", counts=counts(mine), total=len(mine), shown=len(shown),
                      groups=groups, query=query, state=state, states=STATES, active=len(active), near=near,
                      snapshot=board.snapshot, figures_ms=board.figures_ms)


def _status_json(console: Console, st: Status) -> str:
    """A status as the poll sends it, made once per change of the status."""
    made = console.extra.setdefault("overview.status_json", {})
    hit = made.get(st.name)
    if hit is not None and hit[0] == st:
        return str(hit[1])
    text = json.dumps({"name": st.name, "state": st.state, "since_iso": iso(st.since_ms), "since": when(st.since_ms),
                       "reason": st.reason})
    made[st.name] = (st, text)
    return text


async def _answer(console: Console, user: User, since: int, new_figures: bool) -> str:
    snap = console.board.snapshot
    mine = visible(console, user)
    changed: Sequence[Status] = [st for st in mine if snap.seqs.get(st.name, 0) > since]
    active, near = await incidents(console, user, console.board.clock())
    doc: dict[str, Any] = {
        "seq": snap.seq, "read_ms": snap.read_ms, "error": snap.error, "counts": counts(mine),
        "incidents": {"active": len(active), "near_deadline": len(near)},
        "figures_ms": console.board.figures_ms}
    body = json.dumps(doc)[:-1] + ', "changed": [' + ",".join(_status_json(console, st) for st in changed) + "]}"
    if new_figures:  # new month-to-date figures and sparklines: once per computation
        made = console.board.figures_json
        members = ",".join(made[st.name] for st in mine if st.name in made)
        body = body[:-1] + ', "figures": {' + members + "}}"
    return body


MAX_SHARED = 256
"""Poll answers kept per read of the store at most (each `since` a client sends is a question of its own)."""


def _scope(user: User) -> tuple[str, ...]:
    """Users with the same scope get the same answer to the same question."""
    return ("*",) if sees_everything(user) else ("customers", *sorted(user.customers))


def _shared(console: Console) -> dict[tuple[object, ...], str]:
    """The poll answers made from the board's current read: dropped when it reads the store again, so an answer
    is at most one `refresh_s` old, as the states in it are. Fifty open overviews then cost one answer (and one
    read of the incidents) per refresh between them, not fifty: the agent's probes share this event loop."""
    board = console.board
    stamp = (board.snapshot.read_ms, board.snapshot.seq, board.snapshot.error, board.figures_ms)
    cached = console.extra.get("overview.answers")
    if (not isinstance(cached, tuple) or cached[0] != stamp or cached[1] is not console.loaded
            or len(cached[2]) >= MAX_SHARED):
        cached = console.extra["overview.answers"] = (stamp, console.loaded, {})
    return cached[2]  # type: ignore[no-any-return]


async def api(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """The overview's poll: counts, and the components the user may see that changed after `since` (all without
    it), as JSON; the same question from users of the same scope gets the same answer until the next read."""
    assert ctx.user is not None
    console = ctx.console
    snap = console.board.snapshot
    try:
        since = int(request.query.get("since", "-1"))
    except ValueError:
        since = -1
    if since > snap.seq or since < -1:  # counted by an earlier run of the console: everything is news
        since = -1
    try:
        figures_seen = int(request.query.get("figures", "0"))
    except ValueError:
        figures_seen = 0
    new_figures = console.board.figures_ms != figures_seen
    shared = _shared(console)
    key = (_scope(ctx.user), since, new_figures)
    body = shared.get(key)
    if body is None:
        body = await _answer(console, ctx.user, since, new_figures)
        shared[key] = body
    return compressed(web.Response(text=body, content_type="application/json", headers={"Cache-Control": "no-store"}))

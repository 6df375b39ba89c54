"""Planned maintenance (`/maintenance`): the windows of this month on, with their notice verdict; adding one, with
the contract's notice rule shown before it is saved (a preview step, and live as the form is filled in); removing
one after a confirmation. Customer accounts see the windows over their components and change nothing."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

from aiohttp import web

from console import flash
from console.context import Ctx, form_value
from console.scope import may_act, may_see, sees_everything
from reporter.maintenance import (
    FUTURE_TOLERANCE_MS,
    Notice,
    format_duration,
    known_targets,
    new_id,
    notice_of,
)
from reporter.periods import iso_ms, month_of, month_period, parse_iso
from slawatch.config.loader import Loaded
from slawatch.model import SCOPES, MaintenanceWindow, Scope, User
from slawatch.store import SourceError

log = logging.getLogger(__name__)

MAX_REASON_CHARS = 500
MAX_VALUE_CHARS = 200
MAX_ID_CHARS = 40
CUSTOMERS_LOOK = "Customer accounts see their maintenance windows; the provider adds and removes them."


def verdict_words(notice: Notice) -> str:
    """The notice rule's verdict as the form and the list say it: 'announced 80h ahead: excluded from downtime',
    'late: 10h of the required 72h notice, counts as downtime'."""
    need = format_duration(notice.required_ms / 1000)
    if notice.ok:
        return f"announced {format_duration(notice.lead_ms / 1000)} ahead: excluded from downtime"
    if notice.lead_ms < 0:
        return (f"late{notice.late_text()}: announced {format_duration(-notice.lead_ms / 1000)} after it began, "
                f"{need} notice required, counts as downtime")
    return (f"late{notice.late_text()}: {format_duration(notice.lead_ms / 1000)} of the required {need} notice, "
            "counts as downtime")


def notice_for(loaded: Loaded, user: User, window: MaintenanceWindow) -> Notice | None:
    """The window's notice verdict as `user` is shown it, or None when it covers none of what the user may see.
    A customer account's verdict is for its own customers only: another customer's notice is not its business."""
    notice = notice_of(loaded, window)
    if sees_everything(user):
        return notice
    if not any(may_see(user, name) for name in notice.covers):
        return None
    return notice_of(loaded, window, among=lambda name: may_see(user, name))


@dataclass(frozen=True, slots=True)
class Listed:
    window: MaintenanceWindow
    notice: Notice
    verdict: str


async def index(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    console = ctx.console
    loaded = console.loaded
    now = console.board.clock()
    tz = loaded.config.report.timezone
    year, month = month_of(now, tz)
    start = month_period(year, month, tz).start_ms
    error = ""
    windows: list[MaintenanceWindow] = []
    try:
        windows = await console.source.windows(start, None)
    except SourceError as exc:
        error = str(exc)
    shown: list[Listed] = []
    for w in sorted(windows, key=lambda w: (w.start_ms, w.id)):
        notice = notice_for(loaded, ctx.user, w)
        if notice is not None:
            shown.append(Listed(w, notice, verdict_words(notice)))
    return ctx.render("maintenance.html", title="Maintenance", now=now, month=f"{year}-{month:02d}",
                      current=[x for x in shown if x.window.start_ms <= now < x.window.end_ms],
                      coming=[x for x in shown if x.window.start_ms > now],
                      past=[x for x in reversed(shown) if x.window.end_ms <= now],
                      may_act=may_act(ctx.user), customers_look=CUSTOMERS_LOOK, error=error,
                      note=flash.take(ctx.session))


# ---------------------------------------------------------------- adding a window


@dataclass(frozen=True, slots=True)
class Draft:
    """The add form as filled in (text as typed, shown back as it was)."""

    scope: str = "component"
    value: str = ""
    start: str = ""
    end: str = ""
    announced: str = ""
    reason: str = ""


def draft_of(form: Mapping[str, Any]) -> Draft:
    return Draft(form_value(form, "scope", 20), form_value(form, "value", MAX_VALUE_CHARS + 1).strip(),
                 form_value(form, "start", 64), form_value(form, "end", 64), form_value(form, "announced", 64),
                 form_value(form, "reason", MAX_REASON_CHARS + 1).strip())


def _instant(text: str, field: str, problems: list[str]) -> int | None:
    """A time from the form: as a datetime-local field sends it (UTC, as the console shows every time), or ISO 8601
    with an offset."""
    if not text.strip():
        problems.append(f"{field}: give a time")
        return None
    try:
        return parse_iso(text, "UTC")
    except ValueError:
        problems.append(f"{field}: {text[:64]!r} is not a time (write 2026-06-01T22:00, in UTC)")
        return None


def window_of(loaded: Loaded, draft: Draft, now_ms: int) -> tuple[MaintenanceWindow | None, list[str]]:
    """The window the draft describes, or what is wrong with it (the command line's rules)."""
    problems: list[str] = []
    scope: Scope | None = next((s for s in SCOPES if s == draft.scope), None)
    if scope is None:
        problems.append("scope: choose component, class or customer")
    elif not draft.value:
        problems.append(f"{scope}: name the {scope}")
    elif draft.value not in known_targets(loaded, scope):
        problems.append(f"{scope}: there is no {scope} {draft.value[:MAX_VALUE_CHARS]!r} in the configuration")
    start = _instant(draft.start, "start", problems)
    end = _instant(draft.end, "end", problems)
    announced = _instant(draft.announced, "announced", problems) if draft.announced.strip() else now_ms
    if start is not None and end is not None and end <= start:
        problems.append("end: must be after the start")
    if announced is not None and announced > now_ms + FUTURE_TOLERANCE_MS:
        problems.append("announced: that is in the future; give the time the customer was told")
    if not draft.reason:
        problems.append("reason: say what is done (the report shows it)")
    elif len(draft.reason) > MAX_REASON_CHARS:
        problems.append(f"reason: at most {MAX_REASON_CHARS} characters")
    if problems or scope is None or start is None or end is None or announced is None:
        return None, problems
    return MaintenanceWindow(new_id(), scope, draft.value, start, end, announced, draft.reason, now_ms), []


def _when(ts_ms: int) -> str:
    return iso_ms(ts_ms)[:16].replace("T", " ")


def preview_of(loaded: Loaded, window: MaintenanceWindow) -> tuple[bool, str]:
    """Whether the window meets the notice rule, and what the form says of it before it is saved (the preview step
    and the live verdict alike): 'component pbx-1, 2026-06-01 22:00 to 2026-06-02 02:00 UTC (4h): announced 80h
    ahead: excluded from downtime'."""
    found = notice_of(loaded, window)
    return found.ok, (f"{window.scope} {window.value}, {_when(window.start_ms)} to {_when(window.end_ms)} UTC "
                      f"({format_duration((window.end_ms - window.start_ms) / 1000)}): {verdict_words(found)}")


def _local(ts_ms: int) -> str:
    """An instant as a datetime-local field takes it (UTC, to the minute)."""
    return iso_ms(ts_ms)[:16]


def _choices(loaded: Loaded) -> dict[str, list[str]]:
    return {scope: known_targets(loaded, scope) for scope in SCOPES}


def _forbidden() -> web.HTTPForbidden:
    return web.HTTPForbidden(text=CUSTOMERS_LOOK, content_type="text/plain")


async def form(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    if not may_act(ctx.user):
        raise _forbidden()
    return _form(ctx, Draft(announced=_local(ctx.console.board.clock())), None, [])


async def submit(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """The add form's POST: `step=preview` (or any problem) shows the form again with the notice verdict and a
    Save button; `step=save` stores the window and goes back to the list."""
    assert ctx.user is not None
    if not may_act(ctx.user):
        raise _forbidden()
    console = ctx.console
    posted = await request.post()
    draft = draft_of(posted)
    now = console.board.clock()
    window, problems = window_of(console.loaded, draft, now)
    if window is None or form_value(posted, "step", 10) != "save":
        return _form(ctx, draft, window, problems, http_status=200 if window is not None else 422)
    try:
        await console.source.add_window(window)
    except SourceError as exc:
        return _form(ctx, draft, window, [f"the store could not be written: {exc}"], http_status=503)
    _, words = preview_of(console.loaded, window)
    log.info("console: maintenance %s (%s %s) added by %s", window.id, window.scope, window.value, ctx.user.name)
    flash.put(ctx.session, True, f"Added {window.id}: {words}.")
    raise web.HTTPSeeOther("/maintenance")


def _form(ctx: Ctx, draft: Draft, window: MaintenanceWindow | None, problems: list[str], *,
          http_status: int = 200) -> web.Response:
    ok, preview = preview_of(ctx.console.loaded, window) if window is not None else (None, "")
    return ctx.render("maintenance_form.html", http_status=http_status, title="Add maintenance", draft=draft,
                      scopes=SCOPES, choices=_choices(ctx.console.loaded), problems=problems, preview=preview,
                      preview_ok=ok)


async def notice(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    """The add form's live verdict, as JSON: the same words the preview step shows, or what is still missing."""
    assert ctx.user is not None
    if not may_act(ctx.user):
        return web.json_response({"error": CUSTOMERS_LOOK}, status=403)
    window, problems = window_of(ctx.console.loaded, draft_of(request.query), ctx.console.board.clock())
    if window is None:
        return web.json_response({"ok": None, "text": "", "problems": problems},
                                 headers={"Cache-Control": "no-store"})
    ok, text = preview_of(ctx.console.loaded, window)
    return web.json_response({"ok": ok, "text": text, "problems": []}, headers={"Cache-Control": "no-store"})


# ---------------------------------------------------------------- removing a window


async def _visible(ctx: Ctx, id: str) -> tuple[MaintenanceWindow, Notice]:
    """The window in force with this id, when the user may see it; else 404, as for one that does not exist."""
    assert ctx.user is not None
    found = None
    if 0 < len(id) <= MAX_ID_CHARS:
        found = next((w for w in await ctx.console.source.windows() if w.id == id), None)
    notice = notice_for(ctx.console.loaded, ctx.user, found) if found is not None else None
    if found is None or notice is None:
        raise web.HTTPNotFound(text="no such maintenance window", content_type="text/plain")
    return found, notice


async def confirm(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    window, found = await _visible(ctx, request.match_info["id"])
    if not may_act(ctx.user):
        raise _forbidden()
    return ctx.render("maintenance_remove.html", title=f"Remove {window.id}", w=window, verdict=verdict_words(found),
                      now=ctx.console.board.clock(), note=flash.take(ctx.session))


async def remove(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    assert ctx.user is not None
    window, _ = await _visible(ctx, request.match_info["id"])
    if not may_act(ctx.user):
        raise _forbidden()
    try:
        removed = await ctx.console.source.remove_window(window.id)
    except SourceError as exc:
        flash.put(ctx.session, False, f"Not removed: the store could not be written ({exc}).")
        raise web.HTTPSeeOther(f"/maintenance/{quote(window.id)}/remove") from None
    if removed:
        log.info("console: maintenance %s removed by %s", window.id, ctx.user.name)
        flash.put(ctx.session, True, f"Removed {window.id} ({window.scope} {window.value}); the store keeps it, "
                                     "marked removed.")
    else:
        flash.put(ctx.session, False, f"{window.id} was removed meanwhile.")
    raise web.HTTPSeeOther("/maintenance")

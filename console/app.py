"""The console's web application: its pages in one table, the guard every request passes (accounts, sessions, CSRF,
scoping), and `mount`, which adds it to an aiohttp application (the agent's listener, or one of its own)."""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any
from urllib.parse import quote

from aiohttp import web
from aiohttp_session import Session, get_session, session_middleware
from aiohttp_session.cookie_storage import EncryptedCookieStorage
from cryptography.fernet import Fernet

from console import board as board_mod
from console.board import Board
from console.context import CONSOLE_KEY, Console, Ctx, Page, pw_tag, templates, token_matches
from console.health import HealthFn
from console.limits import LoginLimiter
from console.pages import agents, component, incidents, login, maintenance, overview, reports, status
from slawatch import __version__
from slawatch.config.loader import Loaded
from slawatch.model import User
from slawatch.store import DeskStore, Source, SourceError, UserStore

log = logging.getLogger(__name__)

STATIC = Path(__file__).with_name("static")
COOKIE = "slawatch_console"
CSRF_FIELD = "csrf"
CSRF_HEADER = "X-CSRF-Token"


# Every route of the console. A new page is one module in console/pages/, one template, and one line here.
PAGES: tuple[Page, ...] = (
    Page("GET", "/", overview.show, "overview"),
    Page("GET", "/api/overview", overview.api, "overview-api"),
    Page("GET", "/components/{name}", component.show, "component"),
    Page("GET", "/incidents", incidents.index, "incidents"),
    Page("GET", "/incidents/{id}", incidents.show, "incident"),
    Page("POST", "/incidents/{id}/{action:" + "|".join(incidents.ACTIONS) + "}", incidents.act, "incident-act"),
    Page("GET", "/maintenance", maintenance.index, "maintenance"),
    Page("GET", "/maintenance/new", maintenance.form, "maintenance-form"),
    Page("POST", "/maintenance/new", maintenance.submit, "maintenance-add"),
    Page("GET", "/api/maintenance/notice", maintenance.notice, "maintenance-notice-api"),
    Page("GET", "/maintenance/{id}/remove", maintenance.confirm, "maintenance-confirm"),
    Page("POST", "/maintenance/{id}/remove", maintenance.remove, "maintenance-remove"),
    Page("GET", "/reports", reports.show, "reports"),
    Page("GET", "/reports/to-date/{file}", reports.to_date, "reports-to-date"),
    Page("GET", r"/reports/{month:\d{4}-\d{2}}/{file}", reports.download, "reports-file"),
    Page("GET", "/agents", agents.show, "agents"),
    Page("GET", "/status/{customer}", status.show, "status", public=True),
    Page("GET", "/login", login.form, "login", public=True),
    Page("POST", "/login", login.submit, "login-submit", public=True),
    Page("POST", "/logout", login.logout, "logout"),
)

# Work a page keeps going in the background while the console runs (started and cancelled with the application).
BACKGROUND: tuple[Callable[[Console], Coroutine[Any, Any, None]], ...] = (overview.keep_warm,)


class SecretError(ValueError):
    """The session key file cannot be used; the message says what to do."""


def load_secret(path: Path) -> Fernet:
    """The session key in `path`, created (0600, a fresh Fernet key) when there is none yet."""
    try:
        key = path.read_bytes().strip()
        if path.stat().st_mode & 0o077:
            log.warning("console: the session key %s can be read by others: chmod 600 it", path)
    except FileNotFoundError:
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Fernet.generate_key()
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it a moment ago: use theirs
            key = path.read_bytes().strip()
        else:
            with os.fdopen(fd, "wb") as f:
                f.write(key + b"\n")
            log.info("console: created the session key %s", path)
    except OSError as exc:
        raise SecretError(f"cannot read the console's session key {path} (console.secret_file): {exc}") from None
    try:
        return Fernet(key)
    except ValueError:
        raise SecretError(f"{path} (console.secret_file) holds no session key: remove it and a new one is made at "
                          f"the next start (signing everyone out)") from None


class _CookieStorage(EncryptedCookieStorage):
    """Encrypted session cookie; with `secure_cookies: auto` Secure is set when the request came over https."""

    def __init__(self, key: Fernet, *, secure: str | bool, max_age_s: int) -> None:
        super().__init__(key, cookie_name=COOKIE, max_age=max_age_s, httponly=True, samesite="Lax",
                         secure=secure if isinstance(secure, bool) else None)
        self._auto = secure == "auto"

    async def save_session(self, request: web.Request, response: web.StreamResponse, session: Session) -> None:
        if self._auto:  # set and used with no await between: no other request sees it
            self._cookie_params["secure"] = True if request.secure else None
        await super().save_session(request, response, session)


NO_USER = "no console user yet: run `slawatch user add NAME --role admin --config {config}`"


def _page_of(request: web.Request) -> Page | None:
    route = request.match_info.route
    page = route.handler.__dict__.get("page") if route is not None else None
    return page if isinstance(page, Page) else None


def _wrap(page: Page) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        return await _guarded(request, page)

    handle.__dict__["page"] = page
    return handle


async def _guarded(request: web.Request, page: Page) -> web.StreamResponse:
    """Every console request: no user configured → refuse; a POST without the session's CSRF token → 403; a
    page that needs a user without one → the login form (401 for the API)."""
    console = request.app[CONSOLE_KEY]
    try:
        n_users = await console.users.count()
    except SourceError as exc:
        log.warning("console: cannot read the accounts: %s", exc)
        return _plain(console, 503, "The console cannot read its accounts from the store; see the agent's log.")
    if n_users == 0:
        return _plain(console, 503, NO_USER.format(config=console.loaded.path))
    session = await get_session(request)
    token = session.get("csrf")
    if not isinstance(token, str) or len(token) < 32:
        token = session["csrf"] = secrets.token_urlsafe(32)
    if request.method not in ("GET", "HEAD", "OPTIONS"):
        sent = request.headers.get(CSRF_HEADER)
        if sent is None and request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
            sent = str((await request.post()).get(CSRF_FIELD, ""))
        if not sent or not token_matches(sent, token):
            return _plain(console, 403, "This form has expired or did not come from this console: reload the page "
                                        "and try again.")
    user: User | None = None
    name = session.get("user")
    if isinstance(name, str):
        user = await console.users.get(name)
        if user is None or session.get("pw") != pw_tag(user):
            session.invalidate()  # removed, or the password changed since: sign in again
            session["csrf"] = token
            user = None
    if user is None and not page.public:
        if request.path.startswith("/api/"):
            return web.json_response({"error": "sign in first"}, status=401)
        raise web.HTTPSeeOther(f"/login?next={quote(request.path_qs, safe='')}")
    return await page.handler(request, Ctx(request, console, user, session, token))


def _plain(console: Console, status: int, message: str) -> web.Response:
    page = console.templates.get_template("message.html")
    return web.Response(text=page.render(message=message, status=status, version=__version__), status=status,
                        content_type="text/html", headers={"Cache-Control": "no-store"})


@web.middleware
async def _headers(request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
                   ) -> web.StreamResponse:
    response = await handler(request)
    if _page_of(request) is not None or request.path.startswith("/static/"):
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("X-Frame-Options", "DENY")
        response.headers.setdefault("Referrer-Policy", "same-origin")
        response.headers.setdefault("Content-Security-Policy",
                                    "default-src 'self'; img-src 'self' data:; style-src 'self'; "
                                    "script-src 'self'; frame-ancestors 'none'; form-action 'self'")
    return response


def mount(app: web.Application, console: Console, *, secret: Fernet) -> None:
    """Add the console's routes, middlewares and background work to `app` (before it starts). Other routes of
    `app` (/metrics, /healthz) pass through untouched: the session is only read by console pages."""
    settings = console.loaded.config.console
    app[CONSOLE_KEY] = console
    storage = _CookieStorage(secret, secure=settings.secure_cookies, max_age_s=round(settings.session_max_age_s))
    app.middlewares.append(_headers)
    app.middlewares.append(session_middleware(storage))
    for page in PAGES:
        app.router.add_route(page.method, page.path, _wrap(page), name=f"console-{page.name}")
    app.router.add_static("/static/", STATIC, name="console-static")

    tasks: list[asyncio.Task[None]] = []

    async def start(_app: web.Application) -> None:
        console.board.start()
        tasks.extend(asyncio.create_task(work(console), name=f"console-{work.__name__}") for work in BACKGROUND)

    async def stop(_app: web.Application) -> None:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        tasks.clear()
        await console.board.stop()

    app.on_startup.append(start)
    app.on_cleanup.append(stop)


def make_console(loaded: Loaded, source: Source, desk_store: DeskStore | None, users: UserStore, *,
                 secret: Fernet | None = None, board: Board | None = None,
                 clock: Callable[[], int] = board_mod.wall_ms, local_health: HealthFn | None = None
                 ) -> web.Application:
    """The console on an application of its own (a central server, tests); its stores stay the caller's to close."""
    app = web.Application()
    mount(app, new_console(loaded, source, desk_store, users, board=board, clock=clock, local_health=local_health),
          secret=secret or load_secret(loaded.config.console.secret_path(loaded.config.storage)))
    return app


def new_console(loaded: Loaded, source: Source, desk_store: DeskStore | None, users: UserStore, *,
                board: Board | None = None, clock: Callable[[], int] = board_mod.wall_ms,
                local_health: HealthFn | None = None) -> Console:
    settings = loaded.config.console
    return Console(loaded, source, desk_store, users, board or Board(loaded, source, clock=clock),
                   LoginLimiter(settings.login_attempts, settings.login_lock_s), templates(),
                   local_health=local_health)

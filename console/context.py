"""What a console page works with: the console's dependencies, the request's context (user, session, CSRF token),
and the helpers every page shares."""

from __future__ import annotations

import asyncio
import base64
import hmac
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import jinja2
from aiohttp import web
from aiohttp_session import Session

from console.board import Board
from console.formats import duration, iso, pct, when
from console.health import HealthFn
from console.limits import LoginLimiter
from slawatch import __version__
from slawatch.config.loader import Loaded
from slawatch.model import User
from slawatch.store import DeskStore, Source, UserStore

# The navigation bar: (label, path). Pages not built yet answer 404 until they are.
NAV: tuple[tuple[str, str], ...] = (
    ("Overview", "/"), ("Incidents", "/incidents"), ("Maintenance", "/maintenance"), ("Reports", "/reports"),
    ("Agents & stores", "/agents"),
)


@dataclass(slots=True)
class Console:
    """What the console's pages read: the config, the store (states, windows), the desk's records and the accounts.
    Never the agent's memory: the same console serves inside `slawatch agent` and on a central host."""

    loaded: Loaded
    source: Source
    desk_store: DeskStore | None
    users: UserStore
    board: Board
    limiter: LoginLimiter
    templates: jinja2.Environment
    extra: dict[str, Any] = field(default_factory=dict)
    verifying: asyncio.Semaphore = field(default_factory=lambda: asyncio.Semaphore(1))
    """Password checks (Argon2, CPU-heavy by design) run one at a time."""
    # The agent in this process, when the console runs inside `slawatch agent` (the agents page shows it).
    local_health: HealthFn | None = None

    def apply(self, loaded: Loaded) -> None:
        """A reloaded config: new components, customers and settings (the secret and the stores stay)."""
        self.loaded = loaded
        self.board.apply(loaded)
        self.limiter.configure(loaded.config.console.login_attempts, loaded.config.console.login_lock_s)


CONSOLE_KEY = web.AppKey("console", Console)


@dataclass(frozen=True, slots=True)
class Ctx:
    """One request as a page sees it: the console, the signed-in user (None on public pages), the session's CSRF
    token, and `render` for a template with the base page's variables."""

    request: web.Request
    console: Console
    user: User | None
    session: Session
    token: str

    @property
    def csrf(self) -> str:
        """The session's CSRF token for a form or a script, masked afresh each time (see `mask_token`)."""
        return mask_token(self.token)

    def render(self, template: str, *, http_status: int = 200, **values: Any) -> web.Response:
        page = self.console.templates.get_template(template)
        text = page.render(user=self.user, csrf=self.csrf, nav=NAV, path=self.request.path, version=__version__,
                           refresh_s=self.console.loaded.config.console.refresh_s, **values)
        return compressed(web.Response(text=text, status=http_status, content_type="text/html",
                                       headers={"Cache-Control": "no-store"}))


COMPRESS_FROM = 32 * 1024
"""Bodies from this size are sent compressed to a client that accepts it (the overview of 10 000 components is
megabytes); aiohttp compresses them off the event loop."""


def compressed(response: web.Response) -> web.Response:
    body = response.body
    if isinstance(body, bytes | bytearray) and len(body) >= COMPRESS_FROM:
        response.enable_compression()
    return response


def mask_token(token: str) -> str:
    """The token XORed with a fresh random pad, pad first (base64): a compressed page never carries the same bytes
    twice, so its size tells nothing about the token (BREACH)."""
    raw = token.encode()
    pad = secrets.token_bytes(len(raw))
    return base64.urlsafe_b64encode(pad + bytes(a ^ b for a, b in zip(pad, raw, strict=True))).decode()


def token_matches(sent: str, token: str) -> bool:
    """Whether `sent` is `token` masked by `mask_token`."""
    try:
        data = base64.urlsafe_b64decode(sent.encode("ascii"))
    except (ValueError, UnicodeEncodeError):
        return False
    half = len(data) // 2
    if not token or len(data) != 2 * len(token.encode()):
        return False
    unmasked = bytes(a ^ b for a, b in zip(data[:half], data[half:], strict=True))
    return hmac.compare_digest(unmasked, token.encode())


Handler = Callable[[web.Request, Ctx], Awaitable[web.StreamResponse]]


@dataclass(frozen=True, slots=True)
class Page:
    """One route of the console. `public`: served without a signed-in user (the login form)."""

    method: str
    path: str
    handler: Handler
    name: str
    public: bool = False


def templates() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.PackageLoader("console", "templates"), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["when"] = when
    env.filters["iso"] = iso
    env.filters["duration"] = duration
    env.filters["pct"] = pct
    return env


def pw_tag(user: User) -> str:
    """A short tag of the password hash kept in the session: a changed password ends every session."""
    return hmac.new(b"slawatch-console", user.password_hash.encode(), "sha256").hexdigest()[:16]


def sign_in(session: Session, user: User) -> None:
    session.invalidate()  # a fresh session (and CSRF token) at every sign-in: no fixation
    session["user"] = user.name
    session["pw"] = pw_tag(user)
    session["csrf"] = secrets.token_urlsafe(32)


def may_redirect_to(target: str) -> str:
    """A `next` target that stays on this console (a path of printable characters, not `//host` nor `/\\host`,
    which a browser would take for another site), else "/"."""
    if target == "/" or (_LOCAL_PATH.fullmatch(target) is not None and target.isprintable()):
        return target
    return "/"


_LOCAL_PATH = re.compile(r"/[^/\\\s][^\\\s]*")


def form_value(form: Mapping[str, Any], name: str, limit: int = 4096) -> str:
    value = form.get(name, "")
    return value[:limit] if isinstance(value, str) else ""

"""Sign in and out: the login form, its rate limit, logout."""

from __future__ import annotations

import logging
import time

from aiohttp import web

from console.context import Ctx, form_value, may_redirect_to, sign_in
from console.passwords import verify_async
from reporter.maintenance import format_duration

log = logging.getLogger(__name__)


def _keys(request: web.Request, name: str) -> list[str]:
    return [f"user:{name}", f"addr:{request.remote or ''}"]


async def form(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    if ctx.user is not None:
        raise web.HTTPSeeOther(may_redirect_to(request.query.get("next", "/")))
    return ctx.render("login.html", title="Sign in", next=may_redirect_to(request.query.get("next", "/")),
                      name="", error="")


async def submit(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    posted = await request.post()
    name = form_value(posted, "name", 200).strip()
    password = form_value(posted, "password", 2048)
    target = may_redirect_to(form_value(posted, "next", 2048) or "/")
    limiter = ctx.console.limiter
    keys = _keys(request, name)
    now = time.monotonic()
    left = limiter.locked_for(keys, now)
    if left > 0:
        return ctx.render("login.html", http_status=429, title="Sign in", next=target, name=name,
                          error=f"Too many wrong passwords: signing in is locked for {format_duration(left)} "
                                f"(the lock lasts {format_duration(limiter.lock_s)} after the last wrong one).")
    user = await ctx.console.users.get(name) if name else None
    # One check at a time: a burst of sign-ins waits its turn instead of taking every core from the probes.
    async with ctx.console.verifying:
        good = await verify_async(user.password_hash if user is not None else None, password)
    if not good or user is None:
        limiter.failed(keys, time.monotonic())
        log.warning("console: failed sign-in for %r from %s", name[:64], request.remote)
        left = limiter.locked_for(keys, time.monotonic())
        error = "Wrong name or password."
        if left > 0:
            error += (f" Signing in is now locked for {format_duration(left)} after "
                      f"{limiter.attempts} wrong passwords.")
        return ctx.render("login.html", http_status=401 if left <= 0 else 429, title="Sign in", next=target, name=name,
                          error=error)
    limiter.succeeded(keys[:1])
    sign_in(ctx.session, user)
    log.info("console: %s signed in from %s", user.name, request.remote)
    raise web.HTTPSeeOther(target)


async def logout(request: web.Request, ctx: Ctx) -> web.StreamResponse:
    ctx.session.invalidate()
    raise web.HTTPSeeOther("/login")

"""The console over HTTP on a real SQLite store: no user → no console; sign-in, sessions and logout; CSRF on every
POST; the login rate limit; customer scoping (404); escaping; no secret on any page; the overview's poll."""

from __future__ import annotations

import asyncio
import dataclasses
import re
import ssl
import time
from pathlib import Path

import pytest
from aiohttp import test_utils, web
from aiohttp_session import Session
from cryptography.fernet import Fernet

from console.app import COOKIE, NO_USER, SecretError, _CookieStorage, load_secret
from console.context import NAV
from console.passwords import hash_password
from slawatch.model import Outcome
from tests.console.site import (
    INFLUX_TOKEN,
    PASSWORD,
    SMTP_SECRET,
    XSS,
    Site,
    beats,
    change,
    incident,
    ref,
    sample,
    site,
    write,
)

pytestmark = pytest.mark.timeout(60)

NOW = (int(time.time()) // 60) * 60_000
PAGES = ("/", "/components/pbx-1", "/api/overview", "/login")


async def stored(s: Site) -> None:
    """pbx-1 down with a hostile reason, san-1 degraded after being up, lb-9 up, core-1 never seen."""
    loaded = s.loaded
    await write(loaded, [
        change(loaded, "pbx-1", NOW - 600_000, True), change(loaded, "pbx-1", NOW - 120_000, False, XSS),
        change(loaded, "san-1", NOW - 900_000, True), change(loaded, "san-1", NOW - 300_000, True,
                                                             "pool short of members", degraded=True),
        change(loaded, "lb-9", NOW - 700_000, True),
        *beats(NOW - 900_000, NOW),
        *(sample(loaded, "san-1", NOW - 60_000 + i * 5000, 2.0 + i) for i in range(10)),
        sample(loaded, "pbx-1", NOW - 5000, None, Outcome.REFUSED, XSS),
    ])
    await s.refresh()


async def test_without_any_user_every_page_says_how_to_add_one(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        for path in PAGES:
            resp = await s.client.get(path, allow_redirects=False)
            text = await resp.text()
            assert resp.status == 503, path
            assert NO_USER.format(config=s.loaded.path).replace("`", "&#96;") in text or \
                f"slawatch user add NAME --role admin --config {s.loaded.path}" in text, path
        resp = await s.client.post("/login", data={"name": "x", "password": "y"})
        assert resp.status == 503
        await s.add_user("ops")
        assert (await s.client.get("/login")).status == 200


async def test_sign_in_session_cookie_and_sign_out(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops")
        await stored(s)
        first = await s.client.get("/", allow_redirects=False)
        assert first.status == 303 and first.headers["Location"] in ("/login?next=%2F", "/login?next=/")
        assert (await s.client.get("/api/overview")).status == 401

        bad = await s.login("ops", "wrong password")
        assert bad.status == 401 and "Wrong name or password." in await bad.text()
        unknown = await s.login("nobody", PASSWORD)
        assert unknown.status == 401 and "Wrong name or password." in await unknown.text()

        ok = await s.login("ops")
        assert ok.status == 303 and ok.headers["Location"] == "/"
        cookie = ok.headers["Set-Cookie"]
        assert "HttpOnly" in cookie and "SameSite=Lax" in cookie and "Max-Age=43200" in cookie
        assert "Secure" not in cookie  # plain http here, and secure_cookies: auto
        page = await s.client.get("/")
        assert page.status == 200 and "pbx-1" in await page.text()

        token = await s.csrf("/")
        out = await s.client.post("/logout", data={"csrf": token}, allow_redirects=False)
        assert out.status == 303 and out.headers["Location"] == "/login"
        assert (await s.client.get("/", allow_redirects=False)).status == 303


async def test_secure_cookies_true_sets_secure(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, console="{secure_cookies: true}") as s:
        await s.add_user("ops")
        form = await s.client.get("/login")  # the anonymous session that carries the form's CSRF token
        assert "Secure" in form.headers["Set-Cookie"] and "HttpOnly" in form.headers["Set-Cookie"]


async def test_the_session_key_file_is_made_0600(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        key = s.loaded.config.console.secret_path(s.loaded.config.storage)
        assert key.exists() and key.stat().st_mode & 0o777 == 0o600


def test_a_session_key_file_that_holds_no_key_is_a_clear_error(tmp_path: Path) -> None:
    key = tmp_path / "console.key"
    key.write_text("not a key\n")
    with pytest.raises(SecretError, match="holds no session key: remove it"):
        load_secret(key)
    fresh = tmp_path / "new" / "console.key"
    first = load_secret(fresh)
    assert fresh.stat().st_mode & 0o777 == 0o600
    token = first.encrypt(b"x")
    assert load_secret(fresh).decrypt(token) == b"x"  # the same key at the next start


async def test_a_new_password_or_a_removed_account_ends_the_session(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops")
        await s.add_user("other")
        assert (await s.login("ops")).status == 303
        assert (await s.client.get("/", allow_redirects=False)).status == 200
        user = await s.users.get("ops")
        assert user is not None
        assert await s.users.replace(dataclasses.replace(user, password_hash=hash_password("a new password!")))
        assert (await s.client.get("/", allow_redirects=False)).status == 303
        assert (await s.login("ops", "a new password!")).status == 303
        assert (await s.client.get("/", allow_redirects=False)).status == 200
        assert await s.users.remove("ops")
        assert (await s.client.get("/", allow_redirects=False)).status == 303


async def test_every_post_needs_the_sessions_csrf_token(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops")
        # A cross-site form post: no token at all.
        resp = await s.client.post("/login", data={"name": "ops", "password": PASSWORD},
                                   headers={"Origin": "https://evil.example"}, allow_redirects=False)
        assert resp.status == 403
        assert (await s.client.get("/", allow_redirects=False)).status == 303  # not signed in
        assert (await s.login("ops")).status == 303
        for data in ({}, {"csrf": ""}, {"csrf": "x" * 43}):
            resp = await s.client.post("/logout", data=data, allow_redirects=False)
            assert resp.status == 403, data
            assert (await s.client.get("/", allow_redirects=False)).status == 200  # still signed in
        # A token from another session is no good either.
        async with site(tmp_path / "other", NOW) as other:
            await other.add_user("ops")
            foreign = await other.csrf()
        resp = await s.client.post("/logout", data={"csrf": foreign}, allow_redirects=False)
        assert resp.status == 403
        # The header works for scripts.
        token = await s.csrf("/")
        resp = await s.client.post("/logout", headers={"X-CSRF-Token": token}, allow_redirects=False)
        assert resp.status == 303


async def test_five_wrong_passwords_lock_the_login_and_say_for_how_long(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, console="{login_attempts: 5, login_lock_s: 2}") as s:
        await s.add_user("ops")
        await s.add_user("ops2")
        for i in range(4):
            assert (await s.login("ops", f"wrong {i}")).status == 401
        fifth = await s.login("ops", "wrong 4")
        assert fifth.status == 429 and "locked for 2s" in await fifth.text()
        locked = await s.login("ops")  # the right password, but locked
        text = await locked.text()
        assert locked.status == 429 and re.search(r"locked for [12]s", text), text
        assert (await s.client.get("/", allow_redirects=False)).status == 303
        # The same address is locked for every user.
        assert (await s.login("ops2")).status == 429
        time.sleep(2.1)  # the lock is on the monotonic clock: wait it out
        assert (await s.login("ops")).status == 303


async def test_a_customer_account_sees_only_its_customers(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("acme-noc", "customer", ("acme",))
        await stored(s)
        await s.desk_store.open(incident("INC-2026-000001", ref(s.loaded, "lb-9"), NOW - 60_000), [], [])
        await s.desk_store.open(incident("INC-2026-000002", ref(s.loaded, "pbx-1"), NOW - 120_000), [], [])
        assert (await s.login("acme-noc")).status == 303
        page = await (await s.client.get("/")).text()
        assert "pbx-1" in page and "san-1" in page
        assert "lb-9" not in page and "core-1" not in page and "globex" not in page
        assert '<b data-count="incidents">1</b>' in page
        missing = await s.client.get("/components/no-such-thing")
        other = await s.client.get("/components/lb-9")
        assert other.status == missing.status == 404
        assert await other.text() == await missing.text()
        assert (await s.client.get("/components/pbx-1")).status == 200
        doc = await (await s.client.get("/api/overview")).json()
        assert {c["name"] for c in doc["changed"]} == {"pbx-1", "san-1"}
        assert sum(doc["counts"].values()) == 2 and doc["incidents"]["active"] == 1
        searched = await (await s.client.get("/?q=lb-9")).text()
        assert "lb-9" not in searched.replace('value="lb-9"', "")


async def test_an_operator_sees_everything(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops", "operator")
        await stored(s)
        assert (await s.login("ops")).status == 303
        page = await (await s.client.get("/")).text()
        for name in ("pbx-1", "san-1", "lb-9", "core-1", "acme", "globex"):
            assert name in page
        assert (await s.client.get("/components/lb-9")).status == 200


async def test_what_the_store_says_is_escaped(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops")
        await stored(s)
        assert (await s.login("ops")).status == 303
        for path in ("/", "/components/pbx-1", f"/?q={XSS}", f"/?state={XSS}"):
            text = await (await s.client.get(path)).text()
            assert "<script>alert" not in text, path
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text, path
        login = await s.client.get(f"/login?next={XSS}")
        assert "<script>alert" not in await login.text()


async def test_no_secret_of_the_config_on_any_page(tmp_path: Path) -> None:
    influx = f"influxdb: {{url: 'http://127.0.0.1:9', database: d, api: v1, username: u, password: {INFLUX_TOKEN}}}"
    async with site(tmp_path, NOW, storage_extra=influx) as s:
        await s.add_user("ops", "admin")
        await stored(s)
        user = await s.users.get("ops")
        assert user is not None
        pages = [await (await s.client.get(p)).text() for p in ("/login",)]
        assert (await s.login("ops")).status == 303
        for path in ("/", "/components/pbx-1", "/components/san-1", "/api/overview", "/?q=password"):
            pages.append(await (await s.client.get(path)).text())
        for text in pages:
            for secret in (SMTP_SECRET, INFLUX_TOKEN, PASSWORD, user.password_hash, "$argon2"):
                assert secret not in text


async def test_overview_states_since_and_figures(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops")
        await stored(s)
        statuses = s.console.board.snapshot.statuses
        assert (statuses["pbx-1"].state, statuses["pbx-1"].since_ms) == ("down", NOW - 120_000)
        # DEGRADED since the degraded change, not since the component was last up.
        assert (statuses["san-1"].state, statuses["san-1"].since_ms) == ("degraded", NOW - 300_000)
        assert statuses["san-1"].reason == "pool short of members"
        assert (statuses["lb-9"].state, statuses["core-1"].state) == ("up", "unmonitored")
        assert (await s.login("ops")).status == 303
        page = await (await s.client.get("/")).text()
        for state, n in (("down", 1), ("degraded", 1), ("up", 1), ("unmonitored", 1)):
            assert f'<b data-count="{state}">{n}</b>' in page
        assert '<svg class="spark"' in page  # san-1's latency
        assert "error budget left" in page and s.console.board.figures["pbx-1"].pct is not None
        only_down = await (await s.client.get("/?state=down")).text()
        assert 'data-name="pbx-1"' in only_down and 'data-name="san-1"' not in only_down
        search = await (await s.client.get("/?q=pool+short")).text()
        assert 'data-name="san-1"' in search and 'data-name="pbx-1"' not in search


async def test_the_poll_answers_what_changed_since(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops")
        await stored(s)
        assert (await s.login("ops")).status == 303
        doc = await (await s.client.get("/api/overview")).json()
        seq = doc["seq"]
        assert len(doc["changed"]) == 4
        assert (await (await s.client.get(f"/api/overview?since={seq}")).json())["changed"] == []
        await write(s.loaded, [change(s.loaded, "lb-9", NOW + 1000, False, "TCP refused"), *beats(NOW, NOW + 2000)])
        s.clock.now_ms = NOW + 2000
        await s.console.board.refresh()
        doc = await (await s.client.get(f"/api/overview?since={seq}")).json()
        assert [(c["name"], c["state"], c["reason"]) for c in doc["changed"]] == [("lb-9", "down", "TCP refused")]
        assert doc["counts"]["down"] == 2
        # A number from before a restart of the console: everything again.
        assert len((await (await s.client.get("/api/overview?since=999999")).json())["changed"]) == 4


async def test_component_page(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops")
        await stored(s)
        await s.desk_store.open(incident("INC-2026-000007", ref(s.loaded, "pbx-1"), NOW - 120_000), [], [])
        assert (await s.login("ops")).status == 303
        text = await (await s.client.get("/components/pbx-1")).text()
        assert 'href="/incidents/INC-2026-000007"' in text
        assert "refused" in text  # the probe's last result
        assert "Outages this month" in text and "DOWN" in text
        assert "<td>ongoing</td>" in text  # pbx-1 is still down: its outage has no end yet
        san = await (await s.client.get("/components/san-1")).text()
        assert '<svg class="spark" width="720"' in san and "DEGRADED" in san


async def test_navigation_leaves_room_for_the_other_pages(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops")
        assert (await s.login("ops")).status == 303
        page = await (await s.client.get("/")).text()
        for label, href in NAV:
            assert f'href="{href}"' in page and label.replace("&", "&amp;") in page
        static = await s.client.get("/static/console.js")
        assert static.status == 200 and "fetch(" in await static.text()


async def test_incidents_near_their_response_deadline(tmp_path: Path) -> None:
    """The bundled contract: urgent incidents on gold components must be acknowledged within 2 h."""
    async with site(tmp_path, NOW) as s:
        await s.add_user("ops")
        await stored(s)
        pbx = ref(s.loaded, "pbx-1")
        minute = 60_000
        for n, raised_ago in ((1, 100), (2, 10), (3, 180)):  # 20 min left, 110 min left, 1 h late
            opened = incident(f"INC-2026-00000{n}", dataclasses.replace(pbx, component=f"pbx-{n}"),
                              NOW - raised_ago * minute - minute, priority="urgent")
            assert await s.desk_store.open(opened, [], [])
        assert (await s.login("ops")).status == 303
        page = await (await s.client.get("/")).text()
        assert '<b data-count="incidents">3</b>' in page and '<b data-count="near">2</b>' in page
        assert "INC-2026-000001</a> pbx-1 (urgent):\n20m left" in page
        assert "INC-2026-000003</a> pbx-3 (urgent):\nlate by 1h" in page
        assert "INC-2026-000002</a>" not in page
        doc = await (await s.client.get("/api/overview")).json()
        assert doc["incidents"] == {"active": 3, "near_deadline": 2}


def test_secure_cookies_auto_follows_the_request_scheme() -> None:
    storage = _CookieStorage(Fernet(Fernet.generate_key()), secure="auto", max_age_s=600)
    for sslcontext, secure in ((None, False), (ssl.create_default_context(), True)):
        request = test_utils.make_mocked_request("GET", "/", sslcontext=sslcontext)
        response = web.Response()
        session = Session("id", data=None, new=True, max_age=600)
        session["csrf"] = "x"
        asyncio.run(storage.save_session(request, response, session))
        assert response.cookies[COOKIE]["secure"] == (True if secure else ""), sslcontext
        assert response.cookies[COOKIE]["httponly"] is True and response.cookies[COOKIE]["samesite"] == "Lax"

"""The http probe against a real aiohttp server on loopback, and its interpretation from tables."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from agent.probes import http, httpclient, run_probe
from slawatch.config.probes import HttpProbe, JsonCondition
from slawatch.model import Outcome, Result
from slawatch.testing import PeerMissing, need_binary
from slawatch.testing.servers import (
    MB,
    Handler,
    closed_port,
    flood_peer,
    self_signed_cert,
    serve,
    server_context,
    silent_peer,
    trickle_peer,
    web_peer,
)

pytestmark = pytest.mark.timeout(15)


# ---------------------------------------------------------------- pure interpretation


@pytest.mark.parametrize(("status", "phrase", "expected", "location", "reason"), [
    (200, "OK", None, None, None),
    (204, "", None, None, None),
    (500, "Internal Server Error", None, None, "HTTP 500 Internal Server Error"),
    (503, "", None, None, "HTTP 503 Service Unavailable"),
    (404, "Not Found", [200, 401], None, "HTTP 404 Not Found, expected 200 or 401"),
    (401, "Unauthorized", [200, 401], None, None),
    (302, "Found", None, "/login", "HTTP 302 Found (redirect to /login; follow_redirects is off)"),
    (299, "", None, None, None),
    (599, "", None, None, "HTTP 599"),
    (503, "x" * 100, None, None, "HTTP 503 " + "x" * 80 + "…"),
    (301, "Moved", None, "/" + "y" * 100, "HTTP 301 Moved (redirect to /" + "y" * 79 + "…; follow_redirects is off)"),
])
def test_status_table(status: int, phrase: str, expected: list[int] | None, location: str | None,
                      reason: str | None) -> None:
    got = httpclient.check_status(status, phrase, expected, location)
    assert got == (None if reason is None else Result(Outcome.BAD_RESPONSE, reason))


@pytest.mark.parametrize(("pattern", "body", "reason"), [
    ("ok", b"all ok", None),
    ("^ok$", b"ok", None),
    ("ok", b"degraded", "body does not match 'ok' (received 'degraded')"),
    ("ok", b"", "body does not match 'ok' (received '')"),
])
def test_body_table(pattern: str, body: bytes, reason: str | None) -> None:
    got = http.check_body(pattern, body)
    assert got == (None if reason is None else Result(Outcome.BAD_RESPONSE, reason))


DOC = json.dumps({"status": "degraded", "up": True, "count": 3, "checks": [{"state": "ok"}], "none": None}).encode()


@pytest.mark.parametrize(("cond", "reason"), [
    ({"path": "status", "equals": "degraded"}, None),
    ({"path": "status", "equals": "ok"}, "JSON status='degraded', expected 'ok'"),
    ({"path": "status", "in": ["ok", "warn"]}, "JSON status='degraded', expected one of 'ok', 'warn'"),
    ({"path": "status", "in": ["ok", "degraded"]}, None),
    ({"path": "checks.0.state", "equals": "ok"}, None),
    ({"path": "checks.-1.state", "equals": "ok"}, None),
    ({"path": "checks.1.state"}, "JSON has no 'checks.1.state' (no item '1' in 'checks')"),
    ({"path": "db.state"}, "JSON has no 'db.state' (no key 'db' at the top level)"),
    ({"path": "status.x"}, "JSON has no 'status.x' (status is a string, not an object or list)"),
    ({"path": "up", "equals": True}, None),
    ({"path": "count", "equals": True}, "JSON count=3, expected True"),
    ({"path": "up", "equals": 1}, "JSON up=True, expected 1"),
    ({"path": "count", "equals": 3.0}, None),
    ({"path": "none", "equals": None}, None),
    ({"path": "status", "equals": None}, "JSON status='degraded', expected None"),
    ({"path": "status"}, None),
])
def test_json_table(cond: dict[str, Any], reason: str | None) -> None:
    got = http.check_json(JsonCondition.model_validate(cond), DOC)
    assert got == (None if reason is None else Result(Outcome.BAD_RESPONSE, reason))


def test_json_not_json() -> None:
    got = http.check_json(JsonCondition(path="status"), b"<html>oops</html>")
    assert got is not None and got.outcome is Outcome.BAD_RESPONSE
    assert got.reason.startswith("body is not JSON (Expecting value: line 1 column 1 (char 0)): '<html>")


# ---------------------------------------------------------------- a real server


def app() -> web.Application:
    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="all ok")

    async def fail(request: web.Request) -> web.Response:
        return web.Response(status=500, text="boom")

    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(10)
        return web.Response(text="late")

    async def endless(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        block = b"z" * 65536
        while True:
            await resp.write(block)

    async def slow_body(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        await resp.prepare(request)
        while True:
            await resp.write(b"x")
            await asyncio.sleep(0.2)

    async def redirect(request: web.Request) -> web.Response:
        raise web.HTTPFound("/ok")

    async def loop(request: web.Request) -> web.Response:
        raise web.HTTPFound("/loop")

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"status": request.query.get("status", "ok"), "checks": [{"state": "ok"}]})

    async def private(request: web.Request) -> web.Response:
        expected = "Basic " + base64.b64encode(b"ops:s3cret").decode()
        if request.headers.get("Authorization") != expected:
            return web.Response(status=401, headers={"WWW-Authenticate": 'Basic realm="x"'})
        return web.Response(text="welcome")

    async def hops(request: web.Request) -> web.Response:
        left = int(request.query["n"])
        if left:
            raise web.HTTPFound(f"/hops?n={left - 1}")
        return web.Response(text="arrived")

    async def away(request: web.Request) -> web.Response:
        raise web.HTTPFound(request.query["to"])

    async def see_other(request: web.Request) -> web.Response:
        raise web.HTTPSeeOther("/echo")

    async def temporary(request: web.Request) -> web.Response:
        raise web.HTTPTemporaryRedirect("/echo")

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.method} {request.headers.get('X-Probe')} {await request.text()}")

    async def length(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    a = web.Application(client_max_size=16 * MB)
    a.router.add_post("/length", length)
    a.router.add_get("/ok", ok)
    a.router.add_get("/fail", fail)
    a.router.add_get("/slow", slow)
    a.router.add_get("/endless", endless)
    a.router.add_get("/slow-body", slow_body)
    a.router.add_get("/redirect", redirect)
    a.router.add_get("/loop", loop)
    a.router.add_get("/health", health)
    a.router.add_get("/private", private)
    a.router.add_route("*", "/echo", echo)
    a.router.add_get("/away", away)
    a.router.add_get("/hops", hops)
    a.router.add_post("/see-other", see_other)
    a.router.add_post("/temporary", temporary)
    return a


@pytest.fixture
async def base() -> AsyncIterator[str]:
    async with web_peer(app()) as port:
        yield f"http://127.0.0.1:{port}"


def settings(url: str, **kw: Any) -> HttpProbe:
    return HttpProbe(kind="http", target=url, timeout_s=kw.pop("timeout_s", 2.0), **kw)


async def test_200_is_up(base: str) -> None:
    r = await http.probe(settings(base + "/ok"))
    assert r.outcome is Outcome.UP and r.reason == ""
    assert r.latency_s is not None and r.latency_s < 1


async def test_plain_http_is_read_on_the_bare_socket(base: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plain HTTP takes the bare socket on the loop's Watch, no asyncio transport (a third of the probe's CPU)."""
    calls: list[int] = []
    plain = httpclient._plain

    async def counted(*args: Any) -> Any:
        calls.append(1)
        return await plain(*args)

    monkeypatch.setattr(httpclient, "_plain", counted)
    r = await http.probe(settings(base + "/ok", expect_body="^all ok$"))
    assert r.outcome is Outcome.UP, r.reason
    assert calls == [1]


async def test_a_request_body_larger_than_the_socket_buffer_is_sent_whole(base: str) -> None:
    body = b"x" * (8 * MB)  # a send on a fresh loopback socket takes a few MiB at most: the rest waits for room
    got = await httpclient.fetch(base + "/length", budget_s=10.0, method="POST", data=body, read_body=True)
    assert isinstance(got, httpclient.Reply) and got.status == 200, got
    assert got.body == str(len(body)).encode()


async def test_500_is_bad_response(base: str) -> None:
    assert await http.probe(settings(base + "/fail")) == Result(Outcome.BAD_RESPONSE, "HTTP 500 Internal Server Error")


async def test_expected_status_set(base: str) -> None:
    r = await http.probe(settings(base + "/fail", expect_status=[500]))
    assert r.outcome is Outcome.UP


async def test_refused(base: str) -> None:
    r = await http.probe(settings(f"http://127.0.0.1:{closed_port()}/"))
    assert r == Result(Outcome.REFUSED, "connection refused")


async def test_slow_server_times_out_naming_the_phase(base: str) -> None:
    t0 = time.perf_counter()
    r = await http.probe(settings(base + "/slow", timeout_s=0.5))
    assert r == Result(Outcome.TIMEOUT, "no response within 0.45s after connect")
    assert time.perf_counter() - t0 < 0.55


async def test_endless_body_fails_at_the_size_limit_without_a_body_condition(base: str) -> None:
    t0 = time.perf_counter()
    r = await http.probe(settings(base + "/endless", max_body_bytes=100_000))
    assert r == Result(Outcome.BAD_RESPONSE, "body larger than 100000 bytes")
    assert time.perf_counter() - t0 < 0.5


async def test_endless_body_bounded_when_a_condition_needs_it(base: str) -> None:
    r = await http.probe(settings(base + "/endless", expect_body="ok", max_body_bytes=100_000))
    assert r == Result(Outcome.BAD_RESPONSE, "body larger than 100000 bytes")


async def test_body_too_large_by_content_length(base: str) -> None:
    r = await http.probe(settings(base + "/health", expect_body="ok", max_body_bytes=10))
    assert r.outcome is Outcome.BAD_RESPONSE
    assert r.reason.startswith("body larger than 10 bytes (Content-Length ")


async def test_slow_body_times_out_with_bytes_read(base: str) -> None:
    r = await http.probe(settings(base + "/slow-body", expect_body="never", timeout_s=0.5))
    assert r.outcome is Outcome.TIMEOUT
    assert r.reason.startswith("body not complete within 0.45s (") and r.reason.endswith(" bytes read)")


async def test_body_too_large_by_content_length_without_a_body_condition(base: str) -> None:
    r = await http.probe(settings(base + "/health", max_body_bytes=10))
    assert r.outcome is Outcome.BAD_RESPONSE
    assert r.reason.startswith("body larger than 10 bytes (Content-Length ")


async def test_failing_status_is_the_reason_whatever_the_body(base: str) -> None:
    r = await http.probe(settings(base + "/fail", max_body_bytes=1))  # "boom" is over the limit: not read
    assert r == Result(Outcome.BAD_RESPONSE, "HTTP 500 Internal Server Error")


def _headers_then_stall(head: bytes, body: bytes) -> Handler:
    """A server that answers the request head with `head` and part of the body, then never finishes."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(head + body)
        await writer.drain()
        await asyncio.sleep(30)

    return handler


@pytest.mark.parametrize(("head", "body", "read"), [
    (b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", b"x" * 10, 10),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", b"5\r\nhello\r\n", 5),
], ids=["content-length", "chunked"])
@pytest.mark.parametrize("rule", [{}, {"expect_body": "."}], ids=["no-rule", "body-rule"])
async def test_headers_then_an_unfinished_body_is_a_timeout(head: bytes, body: bytes, read: int,
                                                           rule: dict[str, str]) -> None:
    async with serve(_headers_then_stall(head, body)) as port:
        t0 = time.perf_counter()
        run = await run_probe(settings(f"http://127.0.0.1:{port}/", timeout_s=1.0, **rule))
        elapsed = time.perf_counter() - t0
    assert run.result == Result(Outcome.TIMEOUT, f"body not complete within 0.9s ({read} bytes read)")
    assert elapsed < 1.0


async def test_body_regex(base: str) -> None:
    assert (await http.probe(settings(base + "/ok", expect_body="ok"))).outcome is Outcome.UP
    r = await http.probe(settings(base + "/ok", expect_body="^healthy"))
    assert r == Result(Outcome.BAD_RESPONSE, "body does not match '^healthy' (received 'all ok')")


async def test_redirect_followed_or_not(base: str) -> None:
    assert (await http.probe(settings(base + "/redirect", expect_body="all ok"))).outcome is Outcome.UP
    r = await http.probe(settings(base + "/redirect", follow_redirects=False))
    assert r == Result(Outcome.BAD_RESPONSE, "HTTP 302 Found (redirect to /ok; follow_redirects is off)")
    assert (await http.probe(settings(base + "/redirect", follow_redirects=False,
                                      expect_status=[302]))).outcome is Outcome.UP


async def test_redirect_loop(base: str) -> None:
    r = await http.probe(settings(base + "/loop"))
    assert r.outcome is Outcome.BAD_RESPONSE
    assert r.reason.startswith("more than 10 redirects (last http://127.0.0.1:")


async def test_json_condition(base: str) -> None:
    good = JsonCondition(path="status", equals="ok")
    assert (await http.probe(settings(base + "/health", expect_json=good))).outcome is Outcome.UP
    r = await http.probe(settings(base + "/health?status=degraded", expect_json=good))
    assert r == Result(Outcome.BAD_RESPONSE, "JSON status='degraded', expected 'ok'")
    either = JsonCondition.model_validate({"path": "checks.0.state", "in": ["ok", "warn"]})
    assert (await http.probe(settings(base + "/health", expect_json=either))).outcome is Outcome.UP


async def test_basic_auth(base: str) -> None:
    r = await http.probe(settings(base + "/private"))
    assert r == Result(Outcome.BAD_RESPONSE, "HTTP 401 Unauthorized")
    r = await http.probe(settings(base + "/private", username="ops", password="s3cret", expect_body="welcome"))
    assert r.outcome is Outcome.UP, r.reason


async def test_method_headers_and_body(base: str) -> None:
    r = await http.probe(settings(base + "/echo", method="POST", headers={"X-Probe": "slawatch"}, body="ping",
                                  expect_body="^POST slawatch ping$"))
    assert r.outcome is Outcome.UP, r.reason
    assert (await http.probe(settings(base + "/echo", method="HEAD"))).outcome is Outcome.UP


async def test_tls_verify_on_and_off(tmp_path: Path) -> None:
    cert = self_signed_cert(tmp_path, need_binary("openssl", "openssl"))
    a = web.Application()

    async def ok(request: web.Request) -> web.Response:
        return web.Response(text="secure ok")

    a.router.add_get("/", ok)
    runner = web.AppRunner(a, shutdown_timeout=0.1, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=server_context(*cert))
    await site.start()
    try:
        url = f"https://127.0.0.1:{site.port}/"
        r = await http.probe(settings(url, tls_verify=False, expect_body="secure"))
        assert r.outcome is Outcome.UP, r.reason
        r = await http.probe(settings(url))
        assert r == Result(Outcome.BAD_RESPONSE,
                           "TLS handshake failed: certificate verify failed: self-signed certificate")
    finally:
        await runner.cleanup()


# ---------------------------------------------------------------- the wire: URLs, request heads, redirects (pure)


@pytest.mark.parametrize(("url", "tls", "host", "port", "authority", "path"), [
    ("http://127.0.0.1:8080/health", False, "127.0.0.1", 8080, "127.0.0.1:8080", "/health"),
    ("https://Example.COM", True, "example.com", 443, "Example.COM", "/"),
    ("http://example.com:80/a?b=1&c=2#top", False, "example.com", 80, "example.com:80", "/a?b=1&c=2"),
    ("http://[::1]:8081/x", False, "::1", 8081, "[::1]:8081", "/x"),
    ("https://[2001:db8::1]/", True, "2001:db8::1", 443, "[2001:db8::1]", "/"),
    ("http://h/a b/ü?q=a b&r=%20", False, "h", 80, "h", "/a%20b/%C3%BC?q=a%20b&r=%20"),
    ("http://h/;x=1/@:!$'()*+,~", False, "h", 80, "h", "/;x=1/@:!$'()*+,~"),
])
def test_parse_target(url: str, tls: bool, host: str, port: int, authority: str, path: str) -> None:
    t = httpclient.parse_target(url)
    assert (t.tls, t.host, t.port, t.authority, t.path) == (tls, host, port, authority, path)
    assert (t.literal is not None) == (host[0].isdigit() or ":" in host)


@pytest.mark.parametrize("url", ["ftp://h/", "http:///path", "http://h:99999/", "http://h:x/", "mailto:ops@h"])
def test_parse_target_refuses(url: str) -> None:
    with pytest.raises(ValueError):
        httpclient.parse_target(url)


def test_a_refused_url_is_shown_without_its_password() -> None:
    with pytest.raises(ValueError, match=r"^ftp://\*\*\*@h/: not http:// or https://$"):
        httpclient.parse_target("ftp://ops:s3cret@h/")


@given(st.text(max_size=40))
def test_request_target_cannot_break_the_request_line(tail: str) -> None:
    try:
        target = httpclient.parse_target("http://h/" + tail)
    except ValueError:
        return
    assert target.path.startswith("/")
    assert target.path.isascii() and all(" " < c < "\x7f" for c in target.path), target.path


@pytest.mark.parametrize(("status", "method", "location", "after", "keeps_body"), [
    (302, "GET", "/ok", ("http://h:81/ok", "GET"), True),
    (301, "POST", "next", ("http://h:81/a/next", "GET"), False),
    (302, "POST", "https://other/x", ("https://other/x", "GET"), False),
    (303, "PUT", "//other:82/y", ("http://other:82/y", "GET"), False),
    (303, "HEAD", "../up", ("http://h:81/up", "HEAD"), True),
    (307, "POST", "/same", ("http://h:81/same", "POST"), True),
    (308, "PUT", " /spaced ", ("http://h:81/spaced", "PUT"), True),
])
def test_redirected(status: int, method: str, location: str, after: tuple[str, str], keeps_body: bool) -> None:
    assert httpclient.redirected("http://h:81/a/b?q=1", location, status, method) == (*after, keeps_body)


def test_request_head_defaults_and_overrides() -> None:
    target = httpclient.parse_target("http://[::1]:8081/p?q=1")
    head = httpclient.request_head("GET", target, {}, None).decode()
    assert head == ("GET /p?q=1 HTTP/1.1\r\nHost: [::1]:8081\r\nUser-Agent: " + httpclient.USER_AGENT +
                    "\r\nAccept: */*\r\nConnection: close\r\n\r\n")
    head = httpclient.request_head("POST", target, {"host": "virtual.example", "user-agent": "x/1"}, None).decode()
    assert head == ("POST /p?q=1 HTTP/1.1\r\nAccept: */*\r\nConnection: close\r\nhost: virtual.example\r\n"
                    "user-agent: x/1\r\nContent-Length: 0\r\n\r\n")
    assert httpclient.request_head("PUT", target, {}, 4).decode().endswith("\r\nContent-Length: 4\r\n\r\n")


@pytest.mark.parametrize(("content_type", "charset"), [
    ("text/plain; charset=latin-1", "iso8859-1"),
    ('text/html;Charset="UTF-8"', "utf-8"),
    ("application/json", None),
    ("text/plain; charset=no-such-codec", None),
    (None, None),
])
def test_charset(content_type: str | None, charset: str | None) -> None:
    assert httpclient.charset(content_type) == charset


# ---------------------------------------------------------------- the wire: what a peer sends back


def _answer(data: bytes, *, stall: bool = False, seen: list[bytes] | None = None) -> Handler:
    """A server that reads the request head, sends `data`, then closes (or, with `stall`, holds the connection)."""

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        if seen is not None:
            seen.append(head)
        writer.write(data)
        await writer.drain()
        if stall:
            await asyncio.sleep(30)

    return handler


OK6 = b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nall ok"
GZIP_OK = gzip.compress(b"all ok")


@pytest.mark.parametrize(("answer", "rule", "result"), [
    (b"", {}, Result(Outcome.BAD_RESPONSE, "server closed the connection without a response")),
    (b"garbage\r\n\r\n", {}, Result(Outcome.BAD_RESPONSE, "malformed HTTP response: Expected HTTP/, RTSP/ or ICE/; "
                                                          "received 'garbage\\r\\n\\r\\n'")),
    (b"HTTP/1.1 200 OK\r\nContent-Le", {},
     Result(Outcome.BAD_RESPONSE, "server closed the connection in the middle of the response head "
                                  "(27 bytes received)")),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 10, {},
     Result(Outcome.BAD_RESPONSE, "body broken off after 10 of 100 bytes (server closed the connection)")),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n", {},
     Result(Outcome.BAD_RESPONSE, "body broken off after 5 bytes (server closed the connection)")),
    (b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n", {},
     Result(Outcome.BAD_RESPONSE, "malformed HTTP response: Invalid character in chunk size; received "
                                  "'HTTP/1.1 200 OK\\r\\nTransfer-Encoding: chunked\\r\\n\\r\\nzz\\r\\n'")),
    (b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nall ok", {},
     Result(Outcome.BAD_RESPONSE, "malformed HTTP response: Duplicate Content-Length; received "
                                  "'HTTP/1.1 200 OK\\r\\nContent-Length: 5\\r\\nContent-Length: 6\\r\\n\\r\\nall ok'")),
    (b"HTTP/1.0 200 OK\r\n\r\nall ok", {"expect_body": "^all ok$"}, Result(Outcome.UP)),  # ends with the connection
    (b"HTTP/1.1 200 OK\nContent-Length: 6\n\nall ok", {"expect_body": "^all ok$"}, Result(Outcome.UP)),  # bare LF
    (b"HTTP/1.1 100 Continue\r\n\r\n" + OK6, {"expect_body": "^all ok$"}, Result(Outcome.UP)),
    (b"HTTP/1.1 204 No Content\r\n\r\n", {}, Result(Outcome.UP)),
    (b"HTTP/1.1 503 Go Away\r\nContent-Length: 0\r\n\r\n", {}, Result(Outcome.BAD_RESPONSE, "HTTP 503 Go Away")),
    (b"HTTP/1.1 503 " + b"z" * 200 + b"\r\nContent-Length: 0\r\n\r\n", {},
     Result(Outcome.BAD_RESPONSE, "HTTP 503 " + "z" * 80 + "…")),
    (b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n", {},
     Result(Outcome.BAD_RESPONSE, "HTTP 101 Switching Protocols")),
    (b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=latin-1\r\n\r\ncaf\xe9", {"expect_body": "^café$"},
     Result(Outcome.UP)),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s" % (len(GZIP_OK), GZIP_OK),
     {"expect_body": "^all ok$"}, Result(Outcome.UP)),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + gzip.compress(b"\0" * (10 * MB)),
     {"max_body_bytes": 100_000}, Result(Outcome.BAD_RESPONSE, "body larger than 100000 bytes")),
    (b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\n\r\n" + GZIP_OK[:-4], {},
     Result(Outcome.BAD_RESPONSE, "body cannot be decoded (gzip): compressed data ends early")),
], ids=["nothing", "garbage", "closed-mid-head", "closed-mid-body", "closed-mid-chunk", "bad-chunk", "two-lengths",
        "until-close", "bare-lf", "interim-100", "204", "phrase", "long-phrase", "101", "latin-1", "gzip", "gzip-bomb",
        "gzip-cut"])
async def test_what_the_peer_sends(answer: bytes, rule: dict[str, Any], result: Result) -> None:
    async with serve(_answer(answer)) as port:
        r = await http.probe(settings(f"http://127.0.0.1:{port}/", timeout_s=1.0, **rule))
    assert Result(r.outcome, r.reason) == result


async def test_head_does_not_wait_for_the_body_its_length_announces() -> None:
    async with serve(_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", stall=True)) as port:
        t0 = time.perf_counter()
        r = await http.probe(settings(f"http://127.0.0.1:{port}/", method="HEAD", timeout_s=1.0))
    assert r.outcome is Outcome.UP and time.perf_counter() - t0 < 0.5


async def test_response_head_too_large() -> None:
    async with flood_peer(10 * MB, prefix=b"HTTP/1.1 200 OK\r\nX-Junk: ") as port:
        r = await http.probe(settings(f"http://127.0.0.1:{port}/", timeout_s=1.0))
    assert r == Result(Outcome.BAD_RESPONSE, f"response head larger than {httpclient.MAX_HEAD_BYTES} bytes")


async def test_a_head_cut_short_in_time_says_how_much_came() -> None:
    async with trickle_peer(b"HTTP/1.1 200 OK\r\n", interval_s=0.2) as port:
        r = await http.probe(settings(f"http://127.0.0.1:{port}/", timeout_s=0.5))
    assert r.outcome is Outcome.TIMEOUT
    assert re.fullmatch(r"response head not complete within 0\.45s \([1-4] bytes received\)", r.reason), r.reason


async def test_request_as_the_server_sees_it() -> None:
    seen: list[bytes] = []
    async with serve(_answer(OK6, seen=seen)) as port:
        r = await http.probe(settings(f"http://127.0.0.1:{port}/a b?x=1", headers={"X-Probe": "slawatch"}))
    assert r.outcome is Outcome.UP
    assert seen == [f"GET /a%20b?x=1 HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUser-Agent: {httpclient.USER_AGENT}\r\n"
                    "Accept: */*\r\nConnection: close\r\nX-Probe: slawatch\r\n\r\n".encode()]


async def test_a_header_that_would_break_the_request_is_refused() -> None:
    r = await http.probe(settings("http://127.0.0.1:9/", headers={"X-A": "1\r\nInjected: yes"}))
    assert r == Result(Outcome.AGENT_ERROR, "header 'X-A' in the config is not a valid HTTP header")


async def test_ipv6_literal() -> None:
    seen: list[bytes] = []
    answer = _answer(OK6, seen=seen)

    async def answer_and_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await answer(reader, writer)
        writer.close()
        await writer.wait_closed()

    try:
        server = await asyncio.start_server(answer_and_close, "::1", 0)
    except OSError as exc:  # a skip by hand, a failure under CI=true (tests/conftest.py)
        raise PeerMissing(f"no IPv6 loopback here: {exc}") from None
    port = server.sockets[0].getsockname()[1]
    try:
        r = await http.probe(settings(f"http://[::1]:{port}/", expect_body="all ok"))
    finally:
        server.close()
        await server.wait_closed()
    assert r.outcome is Outcome.UP, r.reason
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in seen[0]


async def test_redirect_turns_post_into_get_or_keeps_it(base: str) -> None:
    r = await http.probe(settings(base + "/see-other", method="POST", headers={"X-Probe": "p"}, body="ping",
                                  expect_body="^GET p $"))
    assert r.outcome is Outcome.UP, r.reason
    r = await http.probe(settings(base + "/temporary", method="POST", headers={"X-Probe": "p"}, body="ping",
                                  expect_body="^POST p ping$"))
    assert r.outcome is Outcome.UP, r.reason


async def test_redirect_to_another_origin_drops_the_credentials(base: str) -> None:
    seen: list[bytes] = []
    async with serve(_answer(OK6, seen=seen)) as port:
        r = await http.probe(settings(f"{base}/away?to=http://127.0.0.1:{port}/", username="ops", password="s3cret"))
    assert r.outcome is Outcome.UP, r.reason
    assert b"authorization" not in seen[0].lower()
    r = await http.probe(settings(base + "/away?to=/private", username="ops", password="s3cret",
                                  expect_body="welcome"))
    assert r.outcome is Outcome.UP, r.reason  # the same origin keeps them


async def test_ten_redirects_are_followed_not_eleven(base: str) -> None:
    assert (await http.probe(settings(base + "/hops?n=10", expect_body="arrived"))).outcome is Outcome.UP
    r = await http.probe(settings(base + "/hops?n=11"))
    assert r == Result(Outcome.BAD_RESPONSE, f"more than 10 redirects (last {base}/hops?n=1)")


async def test_redirect_to_a_url_we_cannot_follow(base: str) -> None:
    r = await http.probe(settings(base + "/away?to=ftp://127.0.0.1/file"))
    assert r == Result(Outcome.BAD_RESPONSE,
                       "redirect to a URL we cannot follow: ftp://127.0.0.1/file: not http:// or https://")


# ---------------------------------------------------------------- the wire: TLS


@pytest.fixture(scope="module")
def cert(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_cert(tmp_path_factory.mktemp("tls"), need_binary("openssl", "openssl"))


async def test_tls_handshake_that_never_completes_is_named(cert: tuple[Path, Path]) -> None:
    async with silent_peer() as port:
        r = await http.probe(settings(f"https://127.0.0.1:{port}/", timeout_s=0.5))
    assert r == Result(Outcome.TIMEOUT, f"TLS handshake with 127.0.0.1:{port} timed out after 0.45s")


@pytest.mark.parametrize(("host", "sni"), [("localhost", "localhost"), ("127.0.0.1", None)])
async def test_tls_sends_the_host_name_only_for_names(cert: tuple[Path, Path], host: str, sni: str | None) -> None:
    names: list[str | None] = []
    ctx = server_context(*cert)
    ctx.sni_callback = lambda _sock, name, _ctx: names.append(name)
    async with serve(_answer(OK6), tls=ctx) as port:
        r = await http.probe(settings(f"https://{host}:{port}/", tls_verify=False, expect_body="all ok"))
    assert r.outcome is Outcome.UP, r.reason
    assert names == [sni]

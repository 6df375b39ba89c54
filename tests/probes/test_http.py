"""The http probe against a real aiohttp server on loopback, and its interpretation from tables."""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from agent.probes import http, httpclient, run_probe
from slawatch.config.probes import HttpProbe, JsonCondition
from slawatch.model import Outcome, Result
from slawatch.testing import need_binary
from slawatch.testing.servers import Handler, closed_port, self_signed_cert, serve, server_context, web_peer

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

    async def echo(request: web.Request) -> web.Response:
        return web.Response(text=f"{request.method} {request.headers.get('X-Probe')} {await request.text()}")

    a = web.Application()
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

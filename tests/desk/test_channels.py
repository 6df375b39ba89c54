"""Notification channels against real local peers: aiosmtpd for mail (SMTP and Apprise's mailto://), an aiohttp
receiver for webhooks (json://, form://); the reason of every failure, and no secret of a URL in it or in the log."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

import aiosmtplib
import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from apprise.apprise import any_abandoned_calls_still_running as apprise_calls_still_running
from hypothesis import assume, given
from hypothesis import strategies as st

from desk.channels import (
    MASK,
    MESSAGE_ID_HEADER,
    Channels,
    Delivery,
    Message,
    apprise_reason,
    build_email,
    redact,
    smtp_failure,
)
from reporter.mail import MailError
from slawatch.config.settings import SmtpSettings
from slawatch.testing import free_port
from slawatch.testing.webhook import Webhook, start_webhook
from tests.reporter.smtpd import Handler, Smtpd

MESSAGE = Message(
    subject="INC-2026-000123 opened: P1 sip-core-1 DOWN",
    text="sip-core-1 (acme, sip, gold) is DOWN since 10:02 UTC\nreason: SIP timeout\nrespond by 10:17 UTC",
    html="<p><b>sip-core-1</b> is DOWN</p>",
    message_id="<inc-2026-000123.open.3@slawatch>",
    data={"incident": "INC-2026-000123", "component": "sip-core-1", "priority": "P1",
          "raised_at": datetime(2026, 11, 26, 10, 2, tzinfo=UTC)},
)
TOKEN = "Zq8xT0kenW3bh00k"  # a webhook key in a URL's path
PASSWORD = "pw-Hunter2-secret"
HEADER_KEY = "hdrK3y9secret"


@pytest.fixture
def smtpd() -> Iterator[Smtpd]:
    handler, port = Handler(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield Smtpd(port, handler)
    finally:
        controller.stop()


@pytest.fixture
async def hook() -> AsyncIterator[Webhook]:
    receiver = await start_webhook()
    try:
        yield receiver
    finally:
        await receiver.stop()


@pytest.fixture
async def channels(smtpd: Smtpd) -> AsyncIterator[Channels]:
    ch = Channels(SmtpSettings(host="127.0.0.1", port=smtpd.port, **{"from": "desk@provider.example"}),
                  timeout_s=5.0)
    try:
        yield ch
    finally:
        await ch.close()


def closed_port() -> int:
    return free_port()  # handed out and released: nothing listens there


# --- SMTP, for a plain address ---

async def test_an_address_goes_by_smtp_with_subject_message_id_text_and_html(channels: Channels,
                                                                              smtpd: Smtpd) -> None:
    assert channels.check("noc@acme.example") is None
    assert await channels.deliver("noc@acme.example", MESSAGE) == Delivery(True)
    [got] = smtpd.handler.received
    assert got.rcpt_tos == ["noc@acme.example"] and got.mail_from == "desk@provider.example"
    msg = got.message
    assert msg["Subject"] == MESSAGE.subject and msg["Message-ID"] == MESSAGE.message_id
    assert msg["To"] == "noc@acme.example" and msg["Auto-Submitted"] == "auto-generated"
    text, html = msg.get_body(preferencelist=("plain",)), msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    assert text.get_content().splitlines() == MESSAGE.text.splitlines() and "<b>sip-core-1</b>" in html.get_content()


@pytest.mark.parametrize(("reply", "retryable"), [("550 5.1.1 no such mailbox", False),
                                                   ("450 4.2.0 mailbox busy, try later", True)])
async def test_a_refused_recipient_says_the_reply_and_only_a_5xx_is_final(channels: Channels, smtpd: Smtpd,
                                                                          reply: str, retryable: bool) -> None:
    smtpd.handler.refuse = reply
    got = await channels.deliver("ghost@acme.example", MESSAGE)
    assert not got.ok and got.retryable is retryable
    assert reply.split(" ", 1)[0] in got.error and "ghost@acme.example" in got.error
    assert smtpd.handler.received == []


async def test_a_mail_server_that_is_down_is_retryable_with_the_reason() -> None:
    port = closed_port()
    ch = Channels(SmtpSettings(host="127.0.0.1", port=port), timeout_s=5.0)
    try:
        got = await ch.deliver("noc@acme.example", MESSAGE)
    finally:
        await ch.close()
    assert not got.ok and got.retryable
    assert f"127.0.0.1:{port}" in got.error and "refused" in got.error.lower()


async def test_a_mail_server_that_never_answers_fails_within_the_timeout() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.read()  # no banner, ever; until the client gives up
        finally:
            writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    ch = Channels(SmtpSettings(host="127.0.0.1", port=port), timeout_s=1.0)
    try:
        started = time.monotonic()
        got = await ch.deliver("noc@acme.example", MESSAGE)
        elapsed = time.monotonic() - started
    finally:
        await ch.close()
        server.close()
        await server.wait_closed()
    assert not got.ok and got.retryable and elapsed < 1.3, (got, elapsed)
    assert "timed out" in got.error.lower() or "no answer" in got.error.lower()


class Logins:
    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.seen.append(data.login.decode())
        return AuthResult(success=True)


@pytest.fixture
def plain_auth_server() -> Iterator[tuple[int, Handler, Logins]]:
    """A server that offers AUTH without TLS, as a careless relay would."""
    handler, logins, port = Handler(), Logins(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, authenticator=logins, auth_require_tls=False)
    controller.start()
    try:
        yield port, handler, logins
    finally:
        controller.stop()


async def test_auth_without_tls_is_refused_as_for_the_report_and_the_server_sees_nothing(
        plain_auth_server: tuple[int, Handler, Logins]) -> None:
    port, handler, logins = plain_auth_server
    # settings made in code, past the config check that refuses them
    smtp = SmtpSettings.model_construct(host="127.0.0.1", port=port, username="desk", password=None, starttls=False,
                                        ssl=False, timeout_s=5.0, allow_plaintext_auth=False, from_="desk@p.example")
    ch = Channels(smtp, timeout_s=5.0)
    try:
        got = await ch.deliver("noc@acme.example", MESSAGE)
    finally:
        await ch.close()
    assert not got.ok and not got.retryable
    assert "refusing to send the password over an unencrypted connection" in got.error
    assert logins.seen == [] and handler.received == []


async def test_starttls_is_never_skipped_for_a_server_without_it(
        plain_auth_server: tuple[int, Handler, Logins]) -> None:
    port, handler, logins = plain_auth_server
    smtp = SmtpSettings.model_validate({"host": "127.0.0.1", "port": port, "username": "desk", "password": "pw",
                                        "starttls": True})
    ch = Channels(smtp, timeout_s=5.0)
    try:
        got = await ch.deliver("noc@acme.example", MESSAGE)
    finally:
        await ch.close()
    assert not got.ok and f"127.0.0.1:{port}" in got.error and "STARTTLS" in got.error
    assert logins.seen == [] and handler.received == []


async def test_an_address_needs_smtp_settings() -> None:
    ch = Channels(None)
    try:
        assert ch.check("noc@acme.example") == "no SMTP settings (report.smtp) to send mail to noc@acme.example"
    finally:
        await ch.close()


# --- Apprise, for a URL ---

async def test_a_json_webhook_gets_title_body_message_id_and_the_structured_data(channels: Channels,
                                                                                 hook: Webhook) -> None:
    url = f"json://127.0.0.1:{hook.port}/incidents"
    assert channels.check(url) is None
    assert await channels.deliver(url, MESSAGE) == Delivery(True)
    [got] = hook.received
    assert got.method == "POST" and got.path == "/incidents"
    assert got.headers[MESSAGE_ID_HEADER] == MESSAGE.message_id
    body = got.json()
    assert body["title"] == MESSAGE.subject and body["message"] == MESSAGE.text and body["type"] == "info"
    assert body["message_id"] == MESSAGE.message_id
    assert body["data"] == {"incident": "INC-2026-000123", "component": "sip-core-1", "priority": "P1",
                            "raised_at": "2026-11-26 10:02:00+00:00"}


async def test_payload_fields_the_url_sets_win_over_ours(channels: Channels, hook: Webhook) -> None:
    # Apprise's `:key=value` adds a field (or renames one of its own); the desk's `data` field gives way to it.
    assert await channels.deliver(f"json://127.0.0.1:{hook.port}/?:data=custom&:message=text", MESSAGE) == Delivery(
        True)
    body = hook.received[0].json()
    assert body["data"] == "custom" and body["text"] == MESSAGE.text and "message" not in body


async def test_a_form_webhook_gets_the_message_id_header(channels: Channels, hook: Webhook) -> None:
    assert await channels.deliver(f"form://127.0.0.1:{hook.port}/form", MESSAGE) == Delivery(True)
    [got] = hook.received
    assert got.headers[MESSAGE_ID_HEADER] == MESSAGE.message_id and b"title=INC-2026-000123" in got.body


@pytest.mark.parametrize(("status", "retryable"), [(500, True), (503, True), (429, True), (400, False),
                                                   (404, False), (401, False)])
async def test_an_http_error_says_the_status_and_what_the_server_answered(channels: Channels, hook: Webhook,
                                                                          status: int, retryable: bool) -> None:
    got = await channels.deliver(f"json://127.0.0.1:{hook.port}/status/{status}", MESSAGE)
    assert not got.ok and got.retryable is retryable
    assert got.error.startswith(f"JSON: HTTP {status}:"), got.error
    assert "refused by the test receiver" in got.error


async def test_a_receiver_that_never_answers_fails_within_the_timeout(hook: Webhook) -> None:
    ch = Channels(None, timeout_s=1.0)
    try:
        started = time.monotonic()
        got = await ch.deliver(f"json://127.0.0.1:{hook.port}/hang", MESSAGE)
        elapsed = time.monotonic() - started
    finally:
        await ch.close()
    assert not got.ok and got.retryable and elapsed < 1.3, (got, elapsed)
    assert "timed out" in got.error.lower() or "no answer" in got.error.lower()
    assert [r.path for r in hook.received] == ["/hang"]


async def test_a_longer_timeout_in_the_url_is_cut_to_ours(hook: Webhook) -> None:
    ch = Channels(None, timeout_s=1.0)
    try:
        started = time.monotonic()
        got = await ch.deliver(f"json://127.0.0.1:{hook.port}/hang?rto=30&cto=30", MESSAGE)
        elapsed = time.monotonic() - started
        await asyncio.sleep(0.3)
        # The blocking send in Apprise's worker thread gave up too: it holds no thread for the URL's 30 s.
        assert not apprise_calls_still_running()
    finally:
        await ch.close()
    assert not got.ok and got.retryable and elapsed < 1.3, (got, elapsed)
    assert "Read timed out" in got.error


async def test_connection_refused_is_the_reason(channels: Channels) -> None:
    got = await channels.deliver(f"json://127.0.0.1:{closed_port()}/incidents", MESSAGE)
    assert not got.ok and got.retryable
    assert got.error.startswith("JSON: ") and "Connection refused" in got.error, got.error


async def test_mailto_goes_through_apprise_with_the_message_id_header(channels: Channels, smtpd: Smtpd) -> None:
    url = f"mailto://127.0.0.1:{smtpd.port}/?from=desk@provider.example&to=ops@acme.example&mode=insecure"
    assert channels.check(url) is None
    assert await channels.deliver(url, MESSAGE) == Delivery(True)
    [got] = smtpd.handler.received
    assert got.rcpt_tos == ["ops@acme.example"] and got.message["Subject"] == MESSAGE.subject
    assert got.message[MESSAGE_ID_HEADER] == MESSAGE.message_id
    body = got.message.get_body(preferencelist=("plain", "html"))
    assert body is not None and "respond by 10:17 UTC" in body.get_content()


async def test_concurrent_deliveries_each_get_their_own_reason(channels: Channels, hook: Webhook) -> None:
    refused = closed_port()
    targets = {f"json://127.0.0.1:{hook.port}/ok/{i}": "" for i in range(5)}
    targets |= {f"json://127.0.0.1:{hook.port}/status/{code}": f"HTTP {code}" for code in (500, 502, 404, 410)}
    targets |= {f"json://127.0.0.1:{refused}/down/{i}": "Connection refused" for i in range(3)}
    urls = list(targets) * 2
    results = await asyncio.gather(*(channels.deliver(url, MESSAGE) for url in urls))
    for url, got in zip(urls, results, strict=True):
        expected = targets[url]
        assert got.ok is (expected == ""), (url, got)
        assert expected in got.error and got.error.count("HTTP ") <= 1, (url, got)
        if expected.startswith("HTTP"):
            assert "Connection refused" not in got.error
        else:
            assert "HTTP" not in got.error


# --- what is refused at config time ---

@pytest.mark.parametrize(("recipient", "reason"), [
    ("bogus://host/path", "unknown notification scheme bogus:// in bogus://host/path"),
    ("https://example.com/hook", "unknown notification scheme https:// (a JSON webhook is json:// or jsons://)"),
    ("json://", "malformed JSON URL json://"),
    ("noc at acme", "'noc at acme' is neither an email address (noc@example.com) nor a notification URL"),
    ("noc@", "is neither an email address"),
    ("", "is neither an email address"),
])
async def test_unknown_schemes_and_malformed_recipients_are_refused_with_the_reason(
        channels: Channels, recipient: str, reason: str) -> None:
    said = channels.check(recipient)
    assert said is not None and reason in said, said
    got = await channels.deliver(recipient, MESSAGE)
    assert got == Delivery(False, said, retryable=False)


async def test_a_plugin_refusing_its_arguments_is_a_config_error_without_the_secret() -> None:
    ch = Channels(None)
    try:
        said = ch.check(f"json://127.0.0.1/?method=FETCH&token={TOKEN}")
    finally:
        await ch.close()
    assert said is not None and "FETCH" in said and TOKEN not in said, said


def test_the_timeout_is_bounded() -> None:
    for bad in (0.0, -1.0, 601.0):
        with pytest.raises(ValueError, match="timeout_s must be in"):
            Channels(None, timeout_s=bad)


async def test_apprise_reads_no_config_nor_plugin_of_the_user(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                               hook: Webhook) -> None:
    """What the Apprise command line would load from HOME (a config file, a custom plugin) is not loaded here, and
    a delivery writes nothing there (no persistent store on disk)."""
    home = tmp_path / "home"
    plugins = home / ".apprise" / "plugins"
    plugins.mkdir(parents=True)
    (home / ".apprise" / "apprise.yml").write_text("urls:\n  - json://127.0.0.1:9/from-user-config\n")
    (plugins / "leak.py").write_text("from apprise.decorators import notify\n\n"
                                     "@notify(on='leak')\ndef leak(body, title, notify_type, *args, **kwargs):\n"
                                     "    return True\n")
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_DATA_HOME", "XDG_CACHE_HOME"):
        monkeypatch.setenv(name, str(home))
    before = sorted(p.relative_to(home) for p in home.rglob("*"))
    ch = Channels(None)
    try:
        assert ch.check("leak://anything") == "unknown notification scheme leak:// in leak://anything"
        assert await ch.deliver(f"json://127.0.0.1:{hook.port}/incidents", MESSAGE) == Delivery(True)
    finally:
        await ch.close()
    assert [r.path for r in hook.received] == ["/incidents"]
    assert sorted(p.relative_to(home) for p in home.rglob("*")) == before


# --- secrets ---

async def test_no_secret_of_a_url_reaches_an_error_or_the_log(caplog: pytest.LogCaptureFixture,
                                                              hook: Webhook) -> None:
    caplog.set_level(logging.DEBUG)  # the strictest: Apprise's and urllib3's debug records go to the log too
    auth = f"desk:{quote(PASSWORD)}@"
    header = f"+X-Api-Key={HEADER_KEY}"
    recipients = [f"json://{auth}127.0.0.1:{hook.port}/status/500/{TOKEN}?{header}",
                  f"json://{auth}127.0.0.1:{hook.port}/status/404/{TOKEN}?{header}",
                  f"jsons://{auth}127.0.0.1:{hook.port}/{TOKEN}?{header}",  # TLS to a plain server
                  f"json://{auth}127.0.0.1:{closed_port()}/{TOKEN}?{header}",
                  f"json://{auth}127.0.0.1:{hook.port}/hang/{TOKEN}?{header}",
                  f"bogus://{auth}127.0.0.1/{TOKEN}",
                  f"json://{auth}127.0.0.1:{hook.port}/{TOKEN}?method=FETCH"]
    ch = Channels(None, timeout_s=1.0)
    try:
        said = [ch.check(r) for r in recipients]
        got = await asyncio.gather(*(ch.deliver(r, MESSAGE) for r in recipients))
    finally:
        await ch.close()
    assert all(not d.ok and d.error for d in got)
    assert said[-2] is not None and said[-1] is not None and said[:-2] == [None] * 5
    shown = [redact(r) for r in recipients]
    text = "\n".join([*(d.error for d in got), *(s or "" for s in said), *shown, caplog.text])
    for secret in (TOKEN, PASSWORD, quote(PASSWORD), HEADER_KEY):
        assert secret not in text
    assert "apprise" in {r.name for r in caplog.records}  # the library did log, and was redacted
    assert [r.path for r in hook.received if r.path.endswith(TOKEN)]  # the token did travel where it belongs


async def test_apprise_debug_records_feed_the_reason_but_not_a_log_at_warning(
        caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    first, second = Channels(None, timeout_s=2.0), Channels(None, timeout_s=2.0)  # two open at once
    try:
        got = await asyncio.gather(*(ch.deliver(f"json://127.0.0.1:{closed_port()}/x", MESSAGE)
                                     for ch in (first, second)))
        assert logging.getLogger("apprise").level == logging.DEBUG
    finally:
        await first.close()
        assert logging.getLogger("apprise").level == logging.DEBUG
        await second.close()
    assert all("Connection refused" in d.error for d in got)  # only Apprise's DEBUG record says so
    assert caplog.records and all(r.levelno >= logging.WARNING for r in caplog.records)
    assert logging.getLogger("apprise").level == logging.NOTSET  # as it was before the channels were opened


async def test_closed_channels_deliver_nothing(hook: Webhook) -> None:
    ch = Channels(None)
    await ch.close()
    await ch.close()
    got = await ch.deliver(f"json://127.0.0.1:{hook.port}/x", MESSAGE)
    assert not got.ok and got.retryable and hook.received == []


@pytest.mark.parametrize(("recipient", "shown"), [
    ("noc@acme.example", "noc@acme.example"),
    ("json://desk:pw@hooks.example.net/incidents", f"json://desk:{MASK}@hooks.example.net/incidents"),
    (f"json://hooks.example.net/hook/{TOKEN}?+Authorization=Bearer%20abc&-apikey=xyz&method=POST",
     f"json://hooks.example.net/hook/{MASK}?+Authorization={MASK}&-apikey={MASK}&method=POST"),
    ("jsons://hooks.example.net/notify?token=short&format=text", f"jsons://hooks.example.net/notify?token={MASK}&"
                                                                 "format=text"),
    ("slack://T1234ABCD/B5678EFGH/abcdefghijklmnop1234/#noc", f"slack://{MASK}/{MASK}/{MASK}/#noc"),
    ("https://hooks.slack.com/services/T1234ABCD/B5678EFGH/abcdefghijklmnop1234",
     f"https://hooks.slack.com/services/{MASK}/{MASK}/{MASK}"),
    ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/-1001234567/", f"tgram://{MASK}:{MASK}/-1001234567/"),
    ("mailtos://desk:Pa55w0rd!@smtp.example.com?to=noc@acme.example",
     f"mailtos://desk:{MASK}@smtp.example.com?to=noc@acme.example"),
    ("bogus://user:secret@host/x", f"bogus://user:{MASK}@host/x"),
])
def test_redact_hides_passwords_tokens_and_header_values(recipient: str, shown: str) -> None:
    assert redact(recipient) == shown


SECRET_CHARS = st.text(st.sampled_from("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_.~!$*+"),
                       min_size=3, max_size=40)


@given(password=SECRET_CHARS, key=SECRET_CHARS)
def test_redact_never_shows_a_password_or_a_header_value(password: str, key: str) -> None:
    template = "json://desk:{}@hooks.example.net:8443/incidents?+X-Key={}&method=POST"
    assume(password not in template.format("", key) and key not in template.format(password, ""))
    shown = redact(template.format(quote(password, safe=""), quote(key, safe="")))
    assert password not in shown and key not in shown
    assert shown.startswith("json://desk:") and "hooks.example.net:8443" in shown


# --- pure parts, from tables ---

def test_build_email_keeps_a_subject_on_one_line() -> None:
    msg = build_email(Message("two\nlines\r\n here", "body", None, "<m.1@slawatch>", {}), "noc@acme.example",
                      "desk@p.example", date=datetime(2026, 11, 26, 10, 0, tzinfo=UTC))
    assert msg["Subject"] == "two lines here" and msg["Date"] == "Thu, 26 Nov 2026 10:00:00 +0000"
    assert msg.get_content_type() == "text/plain" and msg.get_content().strip() == "body"  # no HTML: one part


def refused(code: int) -> aiosmtplib.SMTPRecipientsRefused:
    return aiosmtplib.SMTPRecipientsRefused([aiosmtplib.SMTPRecipientRefused(code, "no", "ghost@acme.example")])


@pytest.mark.parametrize(("cause", "retryable"), [
    (None, False),  # the password would go in clear text: the settings must change
    (refused(550), False),
    (refused(452), True),
    (aiosmtplib.SMTPResponseException(554, "message refused"), False),
    (aiosmtplib.SMTPResponseException(421, "closing"), True),
    (aiosmtplib.SMTPAuthenticationError(535, "bad credentials"), True),  # may be put right while it waits
    (aiosmtplib.SMTPConnectError("refused"), True),
    (aiosmtplib.SMTPTimeoutError("timed out"), True),
    (ConnectionResetError("reset"), True),
])
def test_smtp_failures_are_final_only_when_retrying_cannot_help(cause: BaseException | None,
                                                                retryable: bool) -> None:
    exc = MailError("SMTP 127.0.0.1:25: something")
    exc.__cause__ = cause
    assert smtp_failure(exc) == Delivery(False, "SMTP 127.0.0.1:25: something", retryable)


W, D = logging.WARNING, logging.DEBUG


@pytest.mark.parametrize(("records", "timed_out", "error", "retryable"), [
    ([(W, "Failed to send JSON POST notification: Internal server error., error=500."),
      (D, "Response Details:\r\nb'upstream down'")],
     False, "JSON: HTTP 500: Failed to send JSON POST notification: Internal server error., error=500. — the server "
            "answered 'upstream down'", True),
    ([(W, "Failed to send JSON POST notification: Bad request., error=400."), (D, "Response Details:\r\nb''")],
     False, "JSON: HTTP 400: Failed to send JSON POST notification: Bad request., error=400.", False),
    ([(W, "A Connection error occurred sending JSON notification to 127.0.0.1."),
      (D, "Socket Exception: HTTPConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /x (Caused "
          "by NewConnectionError(\"HTTPConnection(host='127.0.0.1', port=9): Failed to establish a new connection: "
          "[Errno 111] Connection refused\"))")],
     False, "JSON: A Connection error occurred sending JSON notification to 127.0.0.1. (Connection refused)", True),
    ([(W, "A Connection error occurred sending JSON notification to 127.0.0.1."),
      (D, "Socket Exception: HTTPConnectionPool(host='127.0.0.1', port=9): Read timed out. (read timeout=0.9)")],
     False, "JSON: A Connection error occurred sending JSON notification to 127.0.0.1. (Read timed out)", True),
    ([(W, "A Connection error occurred sending JSON notification to 127.0.0.1."),
      (D, "Socket Exception: HTTPSConnectionPool(host='127.0.0.1', port=9): Max retries exceeded with url: /x (Caused "
          "by SSLError(SSLError(1, '[SSL: WRONG_VERSION_NUMBER] wrong version number (_ssl.c:1006)')))")],
     False, "JSON: A Connection error occurred sending JSON notification to 127.0.0.1. ([SSL: WRONG_VERSION_NUMBER] "
            "wrong version number)", True),
    ([(D, "JSON POST URL: http://127.0.0.1:9/x")], True, "JSON: no answer within 0.9 s", True),
    ([], False, "JSON: failed", True),
])
def test_apprise_records_become_a_reason(records: list[tuple[int, str]], timed_out: bool, error: str,
                                        retryable: bool) -> None:
    assert apprise_reason("JSON", records, timed_out, 0.9) == Delivery(False, error, retryable)

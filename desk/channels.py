"""Notification channels: one message to one recipient, by SMTP for an email address, through Apprise for a URL."""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import email.utils
import json
import logging
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote, unquote

import aiosmtplib
import apprise
from apprise.plugins import url_to_dict

from reporter.mail import MailError, send_message
from slawatch.config.settings import SmtpSettings

# What stands for a hidden part of a recipient in anything shown or logged.
MASK = "***"
# Sent to webhooks and Apprise email beside the body, so a receiver can recognise a resend after a crash.
MESSAGE_ID_HEADER = "X-Slawatch-Message-ID"
MAX_TIMEOUT_S = 600.0

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
_ADDRESS = re.compile(r"^[^@\s<>\"'(),;:\\\[\]]+@[^@\s<>\"'(),;:\\\[\]]+$")
_SEPARATORS = re.compile(r"[/:@?&=#,;\s]")
_SEPARATOR_CHARS = frozenset("/:@?&=#,;")
# Query keys whose values are credentials whatever they look like.
_SENSITIVE_KEY = re.compile(r"token|key|secret|pass|pwd|auth|sig|session|cookie|bearer|credential|code", re.I)
# Apprise schemes that take extra HTTP (or mail) headers, and the one whose JSON body takes extra fields.
_HEADER_SCHEMES = frozenset({"json", "jsons", "form", "forms", "xml", "xmls", "mailto", "mailtos"})
_JSON_SCHEMES = frozenset({"json", "jsons"})
# Apprise logs through this logger; urllib3 (under the HTTP plugins) logs request lines that carry a URL's path.
_LIBRARY_LOGGERS = ("apprise", "urllib3.connectionpool", "urllib3.util.retry")
_HTTP_STATUS = re.compile(r"error=(\d{3})\b")
_OS_ERROR = re.compile(r"\[Errno -?\d+\] ([^'\"()\]]+)")
_SSL_ERROR = re.compile(r"\[SSL: [A-Z_]+\] [^'\"()]+")
_TIMED_OUT = re.compile(r"(Read timed out|Connection to \S+ timed out|timed out)")
# An HTTP 4xx says the request itself is refused; these few say "not now" and are worth retrying.
_RETRYABLE_4XX = frozenset({408, 425, 429})


@dataclass(frozen=True, slots=True)
class Message:
    """One notification as the desk built it: the same for every recipient."""

    subject: str
    text: str  # plain text body: what an engineer needs
    html: str | None  # optional HTML alternative for email
    # Stable per notification ("<inc-2026-000123.open.3@slawatch>"): the mail's Message-ID, a webhook's header.
    message_id: str
    data: Mapping[str, Any]  # structured fields for JSON webhooks


@dataclass(frozen=True, slots=True)
class Delivery:
    """How one delivery went: `error` says why it failed, without any secret of the recipient."""

    ok: bool
    error: str = ""
    retryable: bool = True  # False: retrying cannot help (bad address, payload refused, unknown scheme)


@dataclass(frozen=True, slots=True)
class _Route:
    """How one recipient is reached, worked out once: by SMTP (no fields) or by the Apprise plugin for `scheme`."""

    scheme: str
    service: str
    fields: Mapping[str, Any] | None
    secrets: tuple[str, ...]


def _token_like(word: str) -> bool:
    """A URL part that looks like a key: 8+ characters mixing letters and digits, or 20+ of anything, and no dot
    (a host name or an address is not a key)."""
    if "." in word or len(word) < 8:
        return False
    return len(word) >= 20 or (any(c.isdigit() for c in word) and any(c.isalpha() for c in word))


def _variants(value: str) -> set[str]:
    """A secret as it may appear: as written, decoded, encoded, and its pieces (a `bot:token` pair, `Bearer X`)."""
    plain = unquote(value)
    found = {value, plain, quote(plain, safe="")}
    found.update(p for p in _SEPARATORS.split(plain) if len(p) >= 4)
    return {v for v in found if v}


def _url_secrets(url: str) -> set[str]:
    """The parts of a URL that are, or look like, credentials: the password, header and parameter values, values of
    keys named like a secret, and whatever looks like a key in the host, user or path."""
    rest = url.split("://", 1)[1] if "://" in url else url
    match = re.match(r"(?P<authority>[^/?]*)(?P<path>[^?]*)(?:\?(?P<query>.*))?\Z", rest, re.S)
    assert match is not None  # every group may be empty: the pattern matches any string
    secrets: set[str] = set()
    userinfo, at, host = match["authority"].rpartition("@")
    if not at:
        userinfo, host = "", match["authority"]
    user, colon, password = userinfo.partition(":")
    if colon and password:
        secrets |= _variants(password)
    for word in [user, *_SEPARATORS.split(host), *match["path"].split("/")]:
        if _token_like(unquote(word)):
            secrets |= _variants(word)
    for pair in (match["query"] or "").split("&"):
        key, _, value = pair.partition("=")
        key = unquote(key)
        if value and (key[:1] in "+-" or _SENSITIVE_KEY.search(key) or _token_like(unquote(value))):
            secrets |= _variants(value)
    return secrets


def _url_parts(url: str) -> set[str]:
    return {unquote(p) for p in _SEPARATORS.split(url) if p}


def _plugin_secrets(plugin: Any) -> set[str]:
    """What the Apprise plugin itself hides in its privacy form of the URL (Slack and Telegram tokens, API keys)."""
    hidden = _url_parts(str(plugin.url(privacy=False))) - _url_parts(str(plugin.url(privacy=True)))
    return {v for h in hidden for v in _variants(h)}


def _ordered(secrets: Iterable[str]) -> tuple[str, ...]:
    # Longest first, so a secret is hidden whole before a piece of it is.
    return tuple(sorted({s for s in secrets if len(s) >= 3}, key=lambda s: (-len(s), s)))


def mask(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret (3+ characters) replaced by MASK."""
    for secret in secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def _shown(url: str, secrets: set[str]) -> str:
    """The URL with every part that is a secret masked, scheme and separators kept."""
    scheme, sep, rest = url.partition("://")
    pieces = re.split(r"([/:@?&=#,;])", rest)
    kept = "".join(MASK if p and p not in _SEPARATOR_CHARS and unquote(p) in secrets else p for p in pieces)
    return scheme + sep + mask(kept, _ordered(secrets))


def _apprise_fields(url: str, scheme: str) -> dict[str, Any] | None:
    """Apprise's reading of a URL (its plugin's constructor arguments), or None when no plugin reads it."""
    plugins = _plugins()
    if scheme in plugins:
        # As Apprise's url_to_dict does: a Slack `/#channel` is part of the path, not a fragment.
        fields = plugins[scheme].parse_url(url.replace("/#", "/%23"))
    elif scheme in ("http", "https"):
        # A service's own webhook address (https://hooks.slack.com/services/…), read by the plugin that knows it.
        fields = url_to_dict(url, secure_logging=True)  # type: ignore[no-untyped-call]  # Apprise has no hints there
    else:
        fields = None
    return dict(fields) if isinstance(fields, dict) else None


def _plugin(fields: Mapping[str, Any], asset: apprise.AppriseAsset) -> Any:
    """The Apprise plugin object for a URL's fields; raises what its constructor raises on a bad argument."""
    return _plugins()[fields["schema"]](**{**fields, "asset": asset})


def _plugins() -> Any:
    """Apprise's registry of plugins by scheme (one per process, shared by every Apprise object)."""
    return apprise.NotificationManager()  # type: ignore[no-untyped-call]  # Apprise has no hints there


def redact(recipient: str) -> str:
    """What may be shown or logged of a recipient: an email address as it is; an Apprise URL with its password,
    tokens, header and parameter values and key-like parts hidden."""
    if _SCHEME.match(recipient) is None:
        return recipient
    return _shown(recipient, _secrets_of(recipient))


def redact_in(text: str, recipient: str) -> str:
    """`text` (a delivery error kept with a notification) with the recipient shown as `redact` shows it and its
    secrets hidden wherever else they appear."""
    if _SCHEME.match(recipient) is None or not text:
        return text
    secrets = _secrets_of(recipient)
    return mask(text.replace(recipient, _shown(recipient, secrets)), _ordered(secrets))


def _secrets_of(recipient: str) -> set[str]:
    secrets = _url_secrets(recipient)
    fields = _apprise_fields(recipient, recipient.split("://", 1)[0].lower())
    if fields is not None:
        with contextlib.suppress(Exception):  # a URL its plugin refuses is shown with the generic rules alone
            secrets |= _plugin_secrets(_plugin(fields, _asset(30.0)))
    return secrets


def _asset(timeout_s: float) -> apprise.AppriseAsset:
    """Apprise settings that read nothing of the machine's: no plugin directory, no persistent store on disk, no
    `${NAME}` templates from the environment, English text whatever the locale."""
    return apprise.AppriseAsset(plugin_paths=[], storage_mode="memory", language="en", allow_templates=False,
                                secure_logging=True, service_timeout=timeout_s)


# Apprise's log records for the delivery running in this context, as (level, text). Apprise runs each plugin's send
# in a worker thread with a copy of the caller's context, so its records find the delivery they belong to, whichever
# deliveries run at the same time.
_CAPTURE: contextvars.ContextVar[list[tuple[int, str]] | None] = contextvars.ContextVar("slawatch_desk_capture",
                                                                                        default=None)


class _Tap(logging.Filter):
    """On Apprise's and urllib3's loggers while the channels are open: hides the recipients' secrets in every record,
    and hands Apprise's records, down to DEBUG, to the delivery they belong to.

    The reason a webhook failed ("[Errno 111] Connection refused") is only in Apprise's DEBUG records, so its logger
    is lowered to DEBUG; records below the level the application logs at stop here, so its log is as before.
    """

    def __init__(self) -> None:
        super().__init__()
        self.secrets: tuple[str, ...] = ()  # replaced whole, never changed in place: worker threads read it
        self._level = logging.NOTSET

    def learn(self, secrets: Iterable[str]) -> None:
        self.secrets = _ordered({*self.secrets, *secrets})

    def install(self) -> None:
        ours = logging.getLogger("apprise")
        others = [f for f in ours.filters if isinstance(f, _Tap)]
        self._level = others[0]._level if others else ours.level
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).addFilter(self)
        ours.setLevel(logging.DEBUG)

    def uninstall(self) -> None:
        for name in _LIBRARY_LOGGERS:
            logging.getLogger(name).removeFilter(self)
        ours = logging.getLogger("apprise")
        if not any(isinstance(f, _Tap) for f in ours.filters):
            ours.setLevel(self._level)

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # a record that cannot be formatted is shown as its format string
            text = str(record.msg)
        clean = mask(text, self.secrets)
        if clean != text or record.args:
            record.msg, record.args = clean, ()
        if record.exc_info is not None and any(s in logging.Formatter().formatException(record.exc_info)
                                               for s in self.secrets):
            record.msg = f"{clean} (traceback withheld: it shows a secret)"
            record.exc_info = record.exc_text = None
        if record.name != "apprise":
            return True
        capture = _CAPTURE.get()
        # Whichever tap sees the record first keeps it (the first to refuse it stops the others); the delivery then
        # hides its own recipient's secrets in what it keeps.
        if capture is not None and not getattr(record, "slawatch_captured", False):
            record.slawatch_captured = True
            capture.append((record.levelno, clean))
        return record.levelno >= (self._level or logging.getLogger().getEffectiveLevel())


def _one_line(text: str) -> str:
    return " ".join(text.split())


def build_email(message: Message, recipient: str, sender: str, *, date: datetime) -> EmailMessage:
    """The mail for one address: text body, HTML alternative when there is one. Pure: no clock, no network."""
    msg = EmailMessage()
    msg["Subject"] = _one_line(message.subject)
    msg["From"] = sender
    msg["To"] = recipient
    msg["Date"] = email.utils.format_datetime(date)
    msg["Message-ID"] = message.message_id
    msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies to the monitoring system
    msg.set_content(message.text)
    if message.html is not None:
        msg.add_alternative(message.html, subtype="html")
    return msg


def _smtp_codes(exc: BaseException | None) -> list[int]:
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused):
        return [r.code for r in exc.recipients]
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError):
        return []  # credentials can be put right while the notification waits
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return [exc.code]
    return []


def smtp_failure(exc: MailError) -> Delivery:
    """A failed send as a Delivery: a permanent (5xx) refusal, or a password the settings forbid sending in clear
    text, cannot be helped by retrying; a 4xx, a refused or dropped connection and a timeout can."""
    cause = exc.__cause__
    codes = _smtp_codes(cause)
    permanent = (cause is None) or (bool(codes) and all(500 <= c < 600 for c in codes))
    error = str(exc)
    system = _os_error(cause)
    if system and system.lower() not in error.lower():
        error += f" ({system})"  # asyncio says "Connect call failed"; the errno says why
    return Delivery(False, error, retryable=not permanent)


def _os_error(exc: BaseException | None) -> str:
    """The system's words for the first OS error behind `exc` ("Connection refused"), or ""."""
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno:
            return os.strerror(exc.errno)
        exc = exc.__cause__ or exc.__context__
    return ""


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if 0 < seconds < float("inf") else None


def _jsonable(data: Mapping[str, Any]) -> Any:
    # Instants, enums and the like go as text: a value json cannot write must not fail the delivery.
    return json.loads(json.dumps(dict(data), default=str))


def apprise_reason(service: str, records: Iterable[tuple[int, str]], timed_out: bool, timeout_s: float) -> Delivery:
    """A failed Apprise delivery from its log records: what the service answered (HTTP status and body), or why the
    connection failed, and whether retrying can help (not after a 4xx refusal of the request)."""
    warnings: list[str] = []
    cause = answer = ""
    for level, text in records:
        if level >= logging.WARNING and text not in warnings:
            warnings.append(_one_line(text))
        elif text.startswith("Socket Exception:"):
            found = _OS_ERROR.findall(text) or _SSL_ERROR.findall(text) or _TIMED_OUT.findall(text)
            cause = found[-1].strip() if found else _one_line(text.partition(":")[2])[:200]
        elif text.startswith("Response Details:"):
            answer = _one_line(text.partition(":")[2])[:200]
    parts = ["; ".join(warnings) or "failed"]
    if timed_out:
        parts = [f"no answer within {timeout_s:g} s"]
    if cause:
        parts.append(f"({cause})")
    if answer.startswith(("b'", 'b"')):
        answer = answer[1:]  # the body as Apprise logs it, bytes: show it as text
    if answer and answer not in ("''", '""'):
        parts.append(f"— the server answered {answer}")
    statuses = [int(s) for w in warnings for s in _HTTP_STATUS.findall(w)]
    if statuses:
        parts.insert(0, f"HTTP {statuses[-1]}:")
    refused = bool(statuses) and all(400 <= s < 500 and s not in _RETRYABLE_4XX for s in statuses)
    return Delivery(False, f"{service}: {' '.join(parts)}", retryable=not refused)


class Channels:
    """Delivers one message to one recipient: an email address by SMTP with the configured settings, anything written
    `scheme://…` through Apprise (mailto://, json://, form://, slack://, tgram://, msteams://, SMS gateways…).

    Mail by SMTP carries the text, the HTML alternative and the message's own Message-ID. Through Apprise a service
    gets the subject and the plain text; a webhook (json://, form://, xml://) also the message id in a header
    (MESSAGE_ID_HEADER), a JSON webhook the structured `data` and `message_id` as extra fields of its body, and
    Apprise's email (mailto://) the id in that header too, since Apprise writes its own Message-ID.

    Each delivery is bounded by `timeout_s` and never raises. Apprise reads nothing of the machine's (see `_asset`),
    and its records reach the application's log with the recipients' secrets hidden.
    """

    def __init__(self, smtp: SmtpSettings | None, *, timeout_s: float = 30.0) -> None:
        if not 0 < timeout_s <= MAX_TIMEOUT_S:
            raise ValueError(f"timeout_s must be in (0, {MAX_TIMEOUT_S:g}] seconds, not {timeout_s!r}")
        self.smtp = smtp
        self.timeout_s = timeout_s
        # The libraries give up a little before the outer deadline, so they fail first with a precise reason.
        self.inner_timeout_s = max(timeout_s * 0.9, timeout_s - 0.25)
        self._asset = _asset(self.inner_timeout_s)
        self._routes: dict[str, _Route | str] = {}
        self._tap = _Tap()
        self._tap.install()
        self._closed = False
        # Loads Apprise's plugin modules (~0.2 s of imports) now, at start-up, rather than in the first delivery.
        _plugins().schemas()

    def check(self, recipient: str) -> str | None:
        """None if the recipient can be used, else why not (config time: unknown scheme, malformed URL, no SMTP)."""
        route = self._route(recipient)
        return route if isinstance(route, str) else None

    def _route(self, recipient: str) -> _Route | str:
        route = self._routes.get(recipient)
        if route is None:
            if len(self._routes) >= 4096:  # recipients come from the config: this only bounds a runaway caller
                self._routes.clear()
            route = self._routes[recipient] = self._resolve(recipient)
        return route

    def _resolve(self, recipient: str) -> _Route | str:
        scheme_match = _SCHEME.match(recipient)
        if scheme_match is None:
            if _ADDRESS.match(recipient) is None:
                return (f"{recipient!r} is neither an email address (noc@example.com) nor a notification URL "
                        "(mailto://, json://, slack://…)")
            if self.smtp is None:
                return f"no SMTP settings (report.smtp) to send mail to {recipient}"
            return _Route("smtp", "SMTP", None, ())
        scheme = scheme_match[1].lower()
        secrets = _url_secrets(recipient)
        self._tap.learn(secrets)  # before Apprise parses it: a parse error is logged with parts of the URL
        shown = _shown(recipient, secrets)
        fields = _apprise_fields(recipient, scheme)
        plugins = _plugins()
        if fields is None:
            if scheme in plugins:
                return f"malformed {plugins[scheme].service_name} URL {shown}"
            hint = " (a JSON webhook is json:// or jsons://)" if scheme in ("http", "https") else ""
            return f"unknown notification scheme {scheme}://{hint} in {shown}"
        # Apprise's connect and read timeouts (`?cto=&rto=`): ours when the URL gives none, and never longer, so a
        # send abandoned at the deadline does not hold one of Apprise's worker threads much beyond it.
        for key in ("cto", "rto"):
            fields[key] = min(_seconds(fields.get(key)) or self.inner_timeout_s, self.inner_timeout_s)
        try:
            plugin = _plugin(fields, self._asset)
        except Exception as exc:  # the plugin's own check of its arguments: its message says what is wrong
            return mask(f"{shown}: {exc}", self._tap.secrets)
        if not plugin.enabled:
            return f"{scheme}:// cannot be used on this machine (a package it needs is missing): {shown}"
        secrets |= _plugin_secrets(plugin)
        self._tap.learn(secrets)
        return _Route(str(fields["schema"]), str(plugin.service_name), fields, _ordered(secrets))

    async def deliver(self, recipient: str, message: Message) -> Delivery:
        """Send `message` to `recipient` within `timeout_s`; never raises (a cancellation still propagates)."""
        if self._closed:
            return Delivery(False, "the channels are closed", retryable=True)
        route = self._route(recipient)
        if isinstance(route, str):
            return Delivery(False, route, retryable=False)
        try:
            async with asyncio.timeout(self.timeout_s):
                if route.fields is None:
                    return await self._send_mail(recipient, message)
                return await self._send_apprise(route, message)
        except TimeoutError:
            return Delivery(False, f"{route.service}: no answer within {self.timeout_s:g} s")
        except Exception as exc:  # a channel never raises: the unforeseen is a failed delivery that may be retried
            return Delivery(False, mask(f"{route.service}: {type(exc).__name__}: {exc}", route.secrets))

    async def _send_mail(self, recipient: str, message: Message) -> Delivery:
        assert self.smtp is not None  # _resolve gives no SMTP route without settings
        try:
            msg = build_email(message, recipient, self.smtp.from_, date=datetime.now(UTC))
        except ValueError as exc:  # a header the email package refuses to write
            return Delivery(False, f"SMTP: cannot build the mail: {exc}", retryable=False)
        smtp = self.smtp.model_copy(update={"timeout_s": min(self.smtp.timeout_s, self.inner_timeout_s)})
        try:
            refused = await send_message(msg, smtp)
        except MailError as exc:
            return smtp_failure(exc)
        if refused:
            return Delivery(False, f"SMTP {smtp.host}:{smtp.port} refused {'; '.join(refused)}",
                            retryable=not all(r.split(": ", 1)[-1][:1] == "5" for r in refused))
        return Delivery(True)

    async def _send_apprise(self, route: _Route, message: Message) -> Delivery:
        assert route.fields is not None
        fields = dict(route.fields)
        if route.scheme in _HEADER_SCHEMES:
            fields["headers"] = {MESSAGE_ID_HEADER: message.message_id, **(fields.get("headers") or {})}
        if route.scheme in _JSON_SCHEMES:
            # Extra top-level fields of the JSON body, beside Apprise's {version, title, message, type}; fields the
            # URL itself sets (`:name=value`) win.
            fields["payload"] = {"message_id": message.message_id, "data": _jsonable(message.data),
                                 **(fields.get("payload") or {})}
        records: list[tuple[int, str]] = []
        token = _CAPTURE.set(records)
        try:
            plugin = _plugin(fields, self._asset)
            notifier = apprise.Apprise(asset=self._asset)
            notifier.add(plugin)
            result = await notifier.async_notify(body=message.text, title=_one_line(message.subject),
                                                 body_format=apprise.NotifyFormat.TEXT,
                                                 timeout=self.inner_timeout_s)
        finally:
            _CAPTURE.reset(token)
        if result:
            return Delivery(True)
        timed_out = result.status == apprise.AppriseResultStatus.TIMEOUT
        failed = apprise_reason(route.service, records, timed_out, self.inner_timeout_s)
        return Delivery(False, mask(failed.error, route.secrets), failed.retryable)

    async def close(self) -> None:
        """Stop hiding secrets in library logs and restore Apprise's log level; later deliveries fail."""
        if not self._closed:
            self._closed = True
            self._tap.uninstall()

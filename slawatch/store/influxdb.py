"""InfluxDB over its HTTP API with aiohttp: line protocol to /write (v1) or /api/v2/write (v2, token)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import logging
from collections.abc import Sequence
from typing import Any

import aiohttp

from slawatch.config.settings import InfluxSettings
from slawatch.model import Point
from slawatch.store import DEFAULT_RETENTION_S, SinkError
from slawatch.store.lineprotocol import encode, rejected_points

log = logging.getLogger(__name__)

RETENTION_POLICY = "slawatch"
"""The retention policy slawatch creates and writes to when `retention_policy` is not configured (v1)."""

GZIP_LEVEL = 1  # line protocol shrinks ~8x even at level 1; higher levels cost CPU for a few % more


def write_endpoint(s: InfluxSettings, retention_policy: str) -> tuple[str, dict[str, str]]:
    """URL and query parameters of a line-protocol write: /write (v1, with the RP) or /api/v2/write."""
    base = s.url.rstrip("/")
    if s.api == "v1":
        assert s.database is not None
        return f"{base}/write", {"db": s.database, "rp": retention_policy, "precision": "ms"}
    assert s.org is not None and s.bucket is not None
    return f"{base}/api/v2/write", {"org": s.org, "bucket": s.bucket, "precision": "ms"}


def auth_headers(s: InfluxSettings) -> dict[str, str]:
    """The Authorization header for the API in use: Token (v2) or Basic (v1, when a user is set)."""
    if s.api == "v2" and s.token is not None:
        return {"Authorization": f"Token {s.token.get_secret_value()}"}
    if s.api == "v1" and s.username:
        password = s.password.get_secret_value() if s.password else ""
        token = base64.b64encode(f"{s.username}:{password}".encode()).decode("ascii")
        return {"Authorization": f"Basic {token}"}
    return {}


def quote_ident(name: str) -> str:
    """An InfluxQL identifier in double quotes."""
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def influxql_duration(seconds: float) -> str:
    seconds = max(round(seconds), 3600)  # InfluxDB's shortest retention policy is one hour
    return f"{seconds // 86400}d" if seconds % 86400 == 0 else f"{seconds}s"


class InfluxSink:
    """Writes batches as line protocol, ms precision, gzip-compressed when `settings.gzip`."""

    def __init__(self, settings: InfluxSettings, *, retention_s: float = DEFAULT_RETENTION_S,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self.retention_s = retention_s
        self.base_url = settings.url.rstrip("/")
        self.write_errors = 0
        self.bad_points = 0
        self._session = session
        self._own_session = session is None
        self._set_up = settings.api == "v2"  # v2 buckets are made by their owner, not by us
        if settings.api == "v1":
            assert settings.database is not None  # InfluxSettings validates this
            self.database = settings.database
            self.retention_policy = settings.retention_policy or RETENTION_POLICY
            self.name = f"influxdb:{self.base_url}/{self.database}.{self.retention_policy}"
        else:
            assert settings.org is not None and settings.bucket is not None
            self.database = settings.bucket
            self.retention_policy = ""
            self.name = f"influxdb:{self.base_url}/{settings.org}/{settings.bucket}"

    # ------------------------------------------------------------ the Sink protocol

    async def write(self, batch: Sequence[Point]) -> None:
        if not batch:
            return
        try:
            if not self._set_up:
                await self.set_up()
            await self._send(batch, setup_retried=False)
        except SinkError:
            self.write_errors += 1
            raise

    async def prune(self, older_than_ms: int) -> int:
        """Nothing to do: the retention policy (v1) or the bucket's retention (v2) drops old shards."""
        return 0

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._own_session:
            await session.close()

    # ------------------------------------------------------------ writes

    async def _send(self, batch: Sequence[Point], *, setup_retried: bool) -> None:
        # Encoding and gzip of a 5 000-point batch take milliseconds: keep them off the event loop.
        body = await asyncio.to_thread(self._body, batch)
        status, text = await self._post_write(body)
        if 200 <= status < 300:
            return
        if status == 400:
            bad = rejected_points(text) or len(batch)
            self.bad_points += bad
            log.warning("%s refused %d of %d points (dropped, not retried): %s",
                        self.name, bad, len(batch), _short(text))
            return
        if status in (401, 403):
            raise SinkError(f"{self.name}: {status} — {self._who()} may not write: {_short(text)}", retryable=False)
        missing = (status == 404 and "database not found" in text) or "retention policy not found" in text
        if missing and self.settings.api == "v1":
            if not setup_retried:
                await self.set_up()
                await self._send(batch, setup_retried=True)
                return
            raise SinkError(f"{self.name}: {_short(text)} — create it, or let {self._who()} create it "
                            f"(needs admin rights), or set storage.influxdb.retention_policy", retryable=False)
        if status == 413 and len(batch) > 1:
            half = len(batch) // 2
            await self._send(batch[:half], setup_retried=setup_retried)
            await self._send(batch[half:], setup_retried=setup_retried)
            return
        retryable = status >= 500 or status in (408, 429)
        raise SinkError(f"{self.name}: write answered {status}: {_short(text)}", retryable=retryable)

    def _body(self, batch: Sequence[Point]) -> bytes:
        body = encode(batch)
        return gzip.compress(body, compresslevel=GZIP_LEVEL) if self.settings.gzip else body

    async def _post_write(self, body: bytes) -> tuple[int, str]:
        s = self.settings
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if s.gzip:
            headers["Content-Encoding"] = "gzip"
        url, params = write_endpoint(s, self.retention_policy)
        return await self._request("POST", url, params=params, data=body, headers=headers)

    async def _request(self, method: str, url: str, **kwargs: Any) -> tuple[int, str]:
        session = self._session_()
        headers: dict[str, str] = kwargs.pop("headers", {})
        headers.update(self._auth_headers())
        try:
            async with session.request(method, url, headers=headers, **kwargs) as resp:
                return resp.status, await resp.text(errors="replace")
        except TimeoutError:
            raise SinkError(f"{self.name}: no answer within {self.settings.timeout_s:g}s", retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SinkError(f"{self.name}: cannot reach the server: {type(exc).__name__}: {exc}",
                            retryable=True) from exc

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._own_session = True
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.settings.timeout_s))
        return self._session

    def _auth_headers(self) -> dict[str, str]:
        return auth_headers(self.settings)

    def _who(self) -> str:
        s = self.settings
        if s.api == "v2":
            return f"the token for org {s.org!r} bucket {s.bucket!r}"
        user = f"user {s.username!r}" if s.username else "an anonymous client (no username set)"
        return f"{user} on database {self.database!r}"

    # ------------------------------------------------------------ v1 set-up

    async def set_up(self) -> None:
        """Create the database and the retention policy (v1) if allowed; a refusal is logged, not fatal.

        Runs before the first write and again when a write finds the database or policy gone.
        """
        db = quote_ident(self.database)
        statements = [f"CREATE DATABASE {db}"]
        conflict_fix = ""
        if self.settings.retention_policy is None:
            duration = influxql_duration(self.retention_s)
            rp = quote_ident(self.retention_policy)
            # Not DEFAULT: unqualified queries keep reading autogen; every slawatch query names the RP.
            statements.append(f"CREATE RETENTION POLICY {rp} ON {db} DURATION {duration} REPLICATION 1")
            conflict_fix = f"ALTER RETENTION POLICY {rp} ON {db} DURATION {duration}"
        for q in statements:
            error = await self._query(q)
            if error and conflict_fix and ("already exists" in error or "conflicts with" in error):
                error = await self._query(conflict_fix)
            if error:
                log.warning("%s: cannot run %r (%s); writing anyway", self.name, q, error)
                break
        self._set_up = True

    async def _query(self, q: str) -> str | None:
        """POST one InfluxQL statement; the error text, or None when it worked."""
        status, text = await self._request("POST", f"{self.base_url}/query", data={"q": q})
        if status in (401, 403):
            return f"{status} {self._who()} may not: {_short(text)}"
        if status != 200:
            return f"{status} {_short(text)}"
        # Query errors come back as 200 with `error` set in the body.
        if '"error"' in text:
            return _short(text)
        return None


def _short(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"

"""InfluxDB over its HTTP API with aiohttp, both directions over one client: line protocol to /write (v1) or
/api/v2/write (v2, token) for the agent (InfluxSink), InfluxQL over /query for the reporter (InfluxSource)."""

from __future__ import annotations

import asyncio
import base64
import gzip
import json
import logging
import string
from collections.abc import AsyncIterator, Sequence
from operator import itemgetter
from typing import Any

import aiohttp

from slawatch import schema
from slawatch.config.settings import InfluxSettings
from slawatch.model import SCOPES, Heartbeats, MaintenanceWindow, Point, Sample, StateChange
from slawatch.schema import HEARTBEAT, MAINTENANCE, PROBE, REPORT_SENT, STATE
from slawatch.store import (
    DEFAULT_RETENTION_S,
    SinkError,
    SourceError,
    StoreUnavailable,
    check_window,
    group_heartbeats,
    heartbeat_margin_ms,
)
from slawatch.store.lineprotocol import (
    ENCODING,
    Record,
    as_record,
    encode,
    encode_lines,
    lines,
    rejected_points,
    series_tags,
)

log = logging.getLogger(__name__)

RETENTION_POLICY = schema.RETENTION_POLICY

GZIP_LEVEL = 1  # line protocol shrinks ~8x even at level 1; higher levels cost CPU for a few % more

CHUNK_SIZE = 10_000
"""Rows per chunk of a streamed InfluxQL answer."""


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


class InfluxClient:
    """One InfluxDB database (v1) or bucket (v2): auth, endpoints, set-up, writes with their retries, and
    streamed queries. Both InfluxSink and InfluxSource speak through it."""

    def __init__(self, settings: InfluxSettings, *, retention_s: float = DEFAULT_RETENTION_S,
                 session: aiohttp.ClientSession | None = None) -> None:
        self.settings = settings
        self.retention_s = retention_s
        self.base_url = settings.url.rstrip("/")
        self._session = session
        self._own_session = session is None
        # v2 buckets are made by their owner, not by us: nothing to set up.
        self._set_up = settings.api == "v2"
        self._set_up_lock = asyncio.Lock()
        self.reachable = True  # False after a request found no server to connect to, until one is answered
        if settings.api == "v1":
            assert settings.database is not None  # InfluxSettings validates this
            self.database = settings.database
            self.retention_policy = settings.retention_policy or RETENTION_POLICY
            self.name = f"influxdb:{self.base_url}/{self.database}.{self.retention_policy}"
        else:
            assert settings.org is not None and settings.bucket is not None
            # v2 maps a bucket to the virtual database of that name, retention policy "autogen", for InfluxQL.
            self.database = settings.bucket
            self.retention_policy = settings.retention_policy or "autogen"
            self.name = f"influxdb:{self.base_url}/{settings.org}/{settings.bucket}"

    def source(self, measurement: str) -> str:
        """`"db"."rp"."measurement"`: every query names the retention policy (ours is not the DEFAULT)."""
        return f"{quote_ident(self.database)}.{quote_ident(self.retention_policy)}.{quote_ident(measurement)}"

    async def close(self) -> None:
        session, self._session = self._session, None
        if session is not None and self._own_session:
            await session.close()

    # ------------------------------------------------------------ writes

    async def write(self, batch: Sequence[Point] | Sequence[Record] | Sequence[bytes]) -> int:
        """Write points (or records, or lines made by `encode_lines`); the number of points the server refused
        (dropped, not retried: a field type conflict, a point outside the retention policy). Raises SinkError
        when nothing was written.

        Creates the database and retention policy first (v1), and again once when the server says they are
        gone; halves a batch the server finds too large.
        """
        if not batch:
            return 0
        if not self._set_up:
            await self.set_up()
        return await self._send(batch, setup_retried=False)

    async def _send(self, batch: Sequence[Point] | Sequence[Record] | Sequence[bytes], *,
                    setup_retried: bool) -> int:
        # Encoding and gzip of a 5 000-point batch take milliseconds: keep them off the event loop.
        body = await asyncio.to_thread(self._body, batch)
        status, text = await self._post_write(body)
        if 200 <= status < 300:
            return 0
        if status == 400:
            bad = rejected_points(text) or len(batch)
            log.warning("%s refused %d of %d points (dropped, not retried): %s",
                        self.name, bad, len(batch), _short(text))
            return bad
        if status in (401, 403):
            raise SinkError(f"{self.name}: {status} — {self._who()} may not write: {_short(text)}", retryable=False)
        missing = (status == 404 and "database not found" in text) or "retention policy not found" in text
        if missing and self.settings.api == "v1":
            if not setup_retried:
                await self.set_up()
                return await self._send(batch, setup_retried=True)
            raise SinkError(f"{self.name}: {_short(text)} — create it, or let {self._who()} create it "
                            f"(needs admin rights), or set storage.influxdb.retention_policy", retryable=False)
        if status == 413 and len(batch) > 1:
            half = len(batch) // 2
            return (await self._send(batch[:half], setup_retried=setup_retried)
                    + await self._send(batch[half:], setup_retried=setup_retried))
        retryable = status >= 500 or status in (408, 429)
        raise SinkError(f"{self.name}: write answered {status}: {_short(text)}", retryable=retryable)

    async def write_gzip(self, members: Sequence[bytes], count: int) -> int:
        """Write lines kept compressed (gzip members whose data is whole lines), posted as they are when the
        settings ask for gzip; as `write` otherwise, and for any answer but success or a server error."""
        if not members:
            return 0
        if not self._set_up:
            await self.set_up()
        if self.settings.gzip:
            status, text = await self._post_write(b"".join(members), gzipped=True)
            if 200 <= status < 300:
                return 0
            if status >= 500 or status in (408, 429):
                raise SinkError(f"{self.name}: write answered {status}: {_short(text)}", retryable=True)
        # Refused in part, too large, set-up gone, or plain text wanted: the lines, as `write` handles them.
        data = await asyncio.to_thread(gzip.decompress, b"".join(members))
        lines = [line + b"\n" for line in data.split(b"\n")[:-1]]
        return await self._send(lines, setup_retried=False) if lines else 0

    def _body(self, batch: Sequence[Point] | Sequence[Record] | Sequence[bytes]) -> bytes:
        # A batch is all records (the reporter's windows, sent reports), all points or all encoded lines (the
        # agent's: the lines are a replay's, made when the points were spooled).
        first = batch[0]
        if isinstance(first, bytes):
            body = b"".join(batch)  # type: ignore[arg-type]
        elif isinstance(first, Record):
            body = lines(batch).encode("utf-8")  # type: ignore[arg-type]
        else:
            body = encode(batch)  # type: ignore[arg-type]
        return gzip.compress(body, compresslevel=GZIP_LEVEL) if self.settings.gzip else body

    async def _post_write(self, body: bytes, gzipped: bool | None = None) -> tuple[int, str]:
        s = self.settings
        headers = {"Content-Type": "text/plain; charset=utf-8"}
        if s.gzip if gzipped is None else gzipped:
            headers["Content-Encoding"] = "gzip"
        url, params = write_endpoint(s, self.retention_policy)
        return await self._request("POST", url, params=params, data=body, headers=headers)

    async def _request(self, method: str, url: str, **kwargs: Any) -> tuple[int, str]:
        headers: dict[str, str] = kwargs.pop("headers", {})
        headers.update(auth_headers(self.settings))
        timeout = kwargs.pop("timeout", None) or aiohttp.ClientTimeout(total=self.settings.timeout_s)
        try:
            async with self._session_().request(method, url, headers=headers, timeout=timeout, **kwargs) as resp:
                self.reachable = True
                return resp.status, await resp.text(errors="replace")
        except aiohttp.ClientConnectorError as exc:  # nothing listens, or no route: not an overloaded store
            self.reachable = False
            raise SinkError(f"{self.name}: cannot reach the server: {type(exc).__name__}: {exc}",
                            retryable=True) from exc
        except TimeoutError:
            raise SinkError(f"{self.name}: no answer within {self.settings.timeout_s:g}s", retryable=True) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise SinkError(f"{self.name}: cannot reach the server: {type(exc).__name__}: {exc}",
                            retryable=True) from exc

    async def ping(self, timeout_s: float = 1.0) -> bool:
        """Whether the server answers GET /ping now (no data, no auth needed)."""
        try:
            status, _ = await self._request("GET", f"{self.base_url}/ping",
                                            timeout=aiohttp.ClientTimeout(total=min(timeout_s,
                                                                                    self.settings.timeout_s)))
        except SinkError:
            return False
        return status < 500

    def _session_(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._own_session = True
            # No total limit: a month's answer streams for a while. A write sets its own total per request.
            timeout = aiohttp.ClientTimeout(total=None, sock_connect=self.settings.timeout_s,
                                            sock_read=max(60.0, self.settings.timeout_s))
            self._session = aiohttp.ClientSession(timeout=timeout)
        return self._session

    def _who(self) -> str:
        s = self.settings
        if s.api == "v2":
            return f"the token for org {s.org!r} bucket {s.bucket!r}"
        user = f"user {s.username!r}" if s.username else "an anonymous client (no username set)"
        return f"{user} on database {self.database!r}"

    # ------------------------------------------------------------ v1 set-up

    async def set_up(self) -> None:
        """Create the database and the retention policy (v1) if allowed; a refusal is logged, not fatal.

        Runs before the first write and again when a write finds the database or policy gone; nothing on v2.
        """
        if self.settings.api != "v1":
            return
        async with self._set_up_lock:
            await self._create()
            self._set_up = True

    async def _create(self) -> None:
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
            error = await self._statement(q)
            if error and conflict_fix and ("already exists" in error or "conflicts with" in error):
                error = await self._statement(conflict_fix)
            if error:
                log.warning("%s: cannot run %r (%s); writing anyway", self.name, q, error)
                break

    async def _statement(self, q: str) -> str | None:
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

    # ------------------------------------------------------------ queries

    async def rows(self, q: str, *, missing_ok: bool = False) -> AsyncIterator[tuple[dict[str, str], dict[str, Any]]]:
        """Run one SELECT, streamed in chunks; yield (series tags, row as column -> value).

        With `missing_ok`, a database or retention policy not created yet reads as empty: the agent creates
        them on its first write, so until then nothing was recorded (as with SQLite's tables).
        """
        async for tags, columns, values in self.series(q, missing_ok=missing_ok):
            for row in values:
                yield tags, dict(zip(columns, row, strict=True))

    async def series(self, q: str, *, missing_ok: bool = False) -> AsyncIterator[
            tuple[dict[str, str], list[str], list[list[Any]]]]:
        """Run one SELECT, streamed in chunks; yield (series tags, columns, rows) per series of each chunk (a long
        series comes in several). `missing_ok` as for `rows`."""
        async for doc in self._query(q):
            for result in [doc, *doc.get("results", ())]:
                if "error" in result:  # query errors come back with status 200
                    error = str(result["error"])
                    if missing_ok and ("database not found" in error or "retention policy not found" in error):
                        return
                    raise SourceError(f"{self.name}: {error} (query: {q})")
            for result in doc.get("results", ()):
                for series in result.get("series", ()):
                    yield series.get("tags") or {}, series["columns"], series.get("values", [])

    async def _query(self, q: str) -> AsyncIterator[dict[str, Any]]:
        params = {"db": self.database, "q": q, "epoch": "ms", "chunked": "true", "chunk_size": str(CHUNK_SIZE)}
        log.debug("%s: %s", self.name, q)
        try:
            async with self._session_().post(f"{self.base_url}/query", data=params,
                                             headers=auth_headers(self.settings)) as resp:
                if resp.status != 200:
                    text = (await resp.text(errors="replace")).strip()[:500]
                    # A 400 is this query's own fault; refused credentials or a server error fail every query.
                    error = SourceError if resp.status == 400 else StoreUnavailable
                    raise error(f"{self.name}: query answered {resp.status}: {text}")
                docs = Lines()  # one JSON document per line
                async for chunk in resp.content.iter_any():
                    for doc in docs.feed(chunk):
                        yield await _parse(doc)
                for doc in docs.end():
                    yield await _parse(doc)
        except TimeoutError:
            raise StoreUnavailable(f"{self.name}: no answer in time") from None
        except (aiohttp.ClientError, OSError) as exc:
            raise StoreUnavailable(f"{self.name}: cannot reach the server: {type(exc).__name__}: {exc}") from exc


class InfluxSink:
    """Writes batches as line protocol, ms precision, gzip-compressed when `settings.gzip`."""

    def __init__(self, settings: InfluxSettings, *, retention_s: float = DEFAULT_RETENTION_S,
                 session: aiohttp.ClientSession | None = None, takes_samples: bool = True) -> None:
        self.client = InfluxClient(settings, retention_s=retention_s, session=session)
        self.settings = settings
        self.takes_samples = takes_samples
        self.name = self.client.name
        self.write_errors = 0
        self.bad_points = 0

    spool_encoding = ENCODING
    concurrent_writes = True  # the drain may send the next batch while influxd stores one (it takes both at once)

    async def write(self, batch: Sequence[Point]) -> None:
        if not self.takes_samples:  # storage.samples sends them elsewhere: only the events are kept here
            batch = [p for p in batch if not isinstance(p, Sample)]
            if not batch:
                return
        try:
            bad = await self.client.write(batch)
        except SinkError:
            self.write_errors += 1
            raise
        self.bad_points += bad  # not `+= await`: with two writes in flight that would lose one's count

    def encode(self, batch: Sequence[Point]) -> list[bytes]:
        """Each point's line (the spool keeps them: a replay is then a copy); an empty item for a sample that
        `storage.samples` sends elsewhere (one item per point)."""
        if self.takes_samples:
            return encode_lines(batch)
        return [b"" if isinstance(p, Sample) else line for p, line in zip(batch, encode_lines(batch), strict=True)]

    async def write_encoded(self, items: Sequence[bytes]) -> None:
        """Lines from `encode`, as `write` sends points."""
        items = [i for i in items if i]
        if not items:
            return
        try:
            bad = await self.client.write(items)
        except SinkError:
            self.write_errors += 1
            raise
        self.bad_points += bad  # not `+= await`: with two writes in flight that would lose one's count

    async def write_gzip(self, members: Sequence[bytes], count: int) -> None:
        """Lines from `encode` as the spool keeps them (gzip members of whole lines), posted as they are."""
        try:
            bad = await self.client.write_gzip(members, count)
        except SinkError:
            self.write_errors += 1
            raise
        self.bad_points += bad

    async def back(self) -> bool:
        """After a write that found no server: whether influxd answers /ping now."""
        return not self.client.reachable and await self.client.ping()

    async def set_up(self) -> None:
        await self.client.set_up()

    async def prune(self, older_than_ms: int) -> int:
        """Nothing to do: the retention policy (v1) or the bucket's retention (v2) drops old shards."""
        return 0

    async def close(self) -> None:
        await self.client.close()


# ---------------------------------------------------------------- reading (the reporter)


def component_filters(components: Sequence[str] | None) -> list[str]:
    """The WHERE clauses (each to AND to a query's) selecting `components`, one per query: [""] for every component,
    [] for none. Each is one regex of at most FILTER_NAMES names, which influxd matches against its index of tag
    values: it serves only their series (an OR of equalities costs it the square of the names)."""
    if components is None:
        return [""]
    wanted = sorted(set(components))
    return [' AND "component" =~ /^(?:' + "|".join(map(regex_literal, wanted[at:at + FILTER_NAMES])) + ")$/"
            for at in range(0, len(wanted), FILTER_NAMES)]


def regex_literal(text: str) -> str:
    """`text` matched literally inside an InfluxQL /regex/ (Go's RE2): ASCII punctuation escaped (an escaped
    punctuation character is itself), "/" as InfluxQL escapes it, a newline as \\n."""
    return "".join(_REGEX_ESCAPES.get(ch, ch) for ch in text)


_REGEX_ESCAPES = {**{ch: "\\" + ch for ch in string.punctuation + " "}, "/": "\\/", "\n": "\\n"}


def quote_string(text: str) -> str:
    """An InfluxQL string literal: single quotes, with backslash, quote and newline escaped."""
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'").replace("\n", "\\n") + "'"


def time_ms(ts_ms: int) -> str:
    """An epoch-milliseconds InfluxQL time literal."""
    return f"{int(ts_ms)}ms"


def _fields(names: Sequence[str]) -> str:
    return ", ".join(quote_ident(n) for n in names)


FILTER_NAMES = 2000
"""Components per query of a filtered read: a report's slice (reporter.report.SLICE) in one (~40 KB of query)."""
_STATE_TAGS = ", ".join(quote_ident(t) for t in STATE.tags)
_STATE_FIRST_FIELD, *_STATE_MORE_FIELDS = STATE.fields
# LAST is a selector: the other fields come from the same point.
_LAST_FIELDS = (f"LAST({quote_ident(_STATE_FIRST_FIELD)}) AS {quote_ident(_STATE_FIRST_FIELD)}"
                + "".join(", " + quote_ident(f) for f in _STATE_MORE_FIELDS))
LOOKBACK_MS = (24 * 3_600_000, 7 * 24 * 3_600_000, 35 * 24 * 3_600_000)
"""How far before a period its last changes are looked for, in turn, before all of history (`_last_before`)."""
_STATE_READ = [("time" if c.role == "time" else c.name, c.role == "tag") for c in STATE.columns]
"""Where each STATE column is in an answer: ("time", False) for the point's time, (tag, True), (field, False)."""

_PROBE_TAGS = ", ".join(quote_ident(t) for t in PROBE.tags)
_PROBE_READ = [("time" if c.role == "time" else c.name, c.role == "tag") for c in PROBE.columns]
_PROBE_ORDER = itemgetter(*(PROBE.index(n) for n in PROBE.key))


class InfluxSource:
    """InfluxQL over /query (v1, or v2's v1-compatible API with db=bucket), answers streamed in chunks; windows
    and sent reports written as points through the same client as the agent's sink."""

    def __init__(self, settings: InfluxSettings, *, retention_s: float = DEFAULT_RETENTION_S,
                 session: aiohttp.ClientSession | None = None, takes_samples: bool = True) -> None:
        self.client = InfluxClient(settings, retention_s=retention_s, session=session)
        self.settings = settings
        self.takes_samples = takes_samples
        self.name = self.client.name
        self.database = self.client.database
        self.retention_policy = self.client.retention_policy

    async def changes(self, start_ms: int, end_ms: int,
                      components: Sequence[str] | None = None) -> list[StateChange]:
        # The two reads are independent and each mostly waits on the server: side by side.
        last, inside = await asyncio.gather(self._last_before(start_ms, components),
                                            self._in_period(start_ms, end_ms, components))
        rows = [*last, *inside]
        schema.sort_state_rows(rows)
        return schema.state_changes(rows)

    async def _in_period(self, start_ms: int, end_ms: int, components: Sequence[str] | None) -> list[tuple[Any, ...]]:
        src = self.client.source(STATE.name)
        rows: list[tuple[Any, ...]] = []
        for where in component_filters(components):
            # Not grouped: influxd answers one series in time order with the tags as columns, in about half the time
            # it takes to answer a series per tag set.
            rows += await self._read(f"SELECT {_fields(STATE.fields)}, {_STATE_TAGS} FROM {src} WHERE time >= "
                                     f"{time_ms(start_ms)} AND time < {time_ms(end_ms)}{where}", _STATE_READ)
        return rows

    async def _last_before(self, start_ms: int, components: Sequence[str] | None) -> list[tuple[Any, ...]]:
        """The last change of each (component, agent) before `start_ms`.

        LAST reads every point of the range it is given, so it is asked of a day before the start first, then of the
        week, five weeks and all of history before that, each time only for the components with a series (listed by
        SHOW SERIES: the index, not the points) whose last change is still to be found: a month's report reads back
        only as far as each component's last change, not the months of history the store keeps. Grouped by every
        tag: each change comes with the class, tier and customer stored with it; a component whose tier (say) changed
        has a last change per tag set.
        """
        src = self.client.source(STATE.name)
        c, a = STATE.index("component"), STATE.index("agent")
        pending = await self._series_pairs(components)
        lowers = [start_ms - back_ms for back_ms in LOOKBACK_MS] if pending is not None else []
        found: dict[tuple[Any, Any], tuple[Any, ...]] = {}
        wanted, upper = components, start_ms
        for lower in [*lowers, None]:  # None: all of history before `upper`
            since = "" if lower is None else f" AND time >= {time_ms(lower)}"
            rows: list[tuple[Any, ...]] = []
            for where in component_filters(wanted):
                rows += await self._read(f"SELECT {_LAST_FIELDS} FROM {src} WHERE time < {time_ms(upper)}{since}"
                                         f"{where} GROUP BY {_STATE_TAGS}", _STATE_READ)
            schema.sort_state_rows(rows)
            for row in rows:  # a later change of the same pair comes after
                if pending is None or (row[c], row[a]) in pending:
                    found[(row[c], row[a])] = row
            if pending is not None:
                pending.difference_update(found)
                if not pending:
                    break
                wanted = sorted({component for component, _ in pending})
            if lower is not None:
                upper = lower
        return list(found.values())

    async def _series_pairs(self, components: Sequence[str] | None) -> set[tuple[str, str]] | None:
        """The (component, agent) of each STATE series, from the index (of any time); None when the server cannot list
        series (the v1 API of InfluxDB 2 has no SHOW SERIES): then all of history is read at once."""
        pairs: set[tuple[str, str]] = set()
        try:
            for where in component_filters(components):
                # Without a time condition: with one, influxd reads the points (seven times slower).
                condition = where.removeprefix(" AND ")
                q = f"SHOW SERIES FROM {self.client.source(STATE.name)}" + (f" WHERE {condition}" if condition else "")
                async for _, columns, values in self.client.series(q, missing_ok=True):
                    at = columns.index("key")
                    for row in values:
                        tags = series_tags(str(row[at]))
                        pairs.add((tags.get("component", ""), tags.get("agent", "")))
        except StoreUnavailable:
            raise
        except SourceError as exc:  # the query refused
            log.info("%s: series not listed (%s): the last changes before a period are read from all of history",
                     self.name, exc)
            return None
        return pairs

    async def _read(self, q: str, read: Sequence[tuple[str, bool]]) -> list[tuple[Any, ...]]:
        """The rows of a STATE or PROBE query as the measurement's rows (`read`: _STATE_READ, _PROBE_READ), each tag
        from its column or from the series' tags (grouped by it). A tag not stored and a reason never written read
        as ""; a row without "up" (none of the fields asked for) is left out."""
        found: list[tuple[Any, ...]] = []
        up = next(i for i, (name, _) in enumerate(read) if name == "up")
        blank = itemgetter(*(i for i, (name, is_tag) in enumerate(read) if is_tag or name == "reason"))
        async for tags, columns, values in self.client.series(q, missing_ok=True):
            # The series' tags, then None for a column in neither, come after the answer's own columns.
            at = {name: i for i, name in enumerate([*columns, *tags])}
            pick = itemgetter(*(at.get(name, len(at)) for name, _ in read))
            tail = [*tags.values(), None]
            for answer in values:
                row = pick(answer + tail)
                if row[up] is None:
                    continue
                if None in blank(row):
                    row = tuple("" if v is None and (is_tag or name == "reason") else v
                                for v, (name, is_tag) in zip(row, read, strict=True))
                found.append(row)
        return found

    async def heartbeats(self, start_ms: int, end_ms: int) -> Heartbeats:
        src = self.client.source(HEARTBEAT.name)
        lookback: dict[str, int] = {}
        async for tags, row in self.client.rows(f'SELECT LAST("period_s") AS "period_s" FROM {src} '
                                                f'WHERE time < {time_ms(start_ms)} GROUP BY "agent"',
                                                missing_ok=True):
            if row.get("period_s") is not None:
                lookback[tags.get("agent", "")] = heartbeat_margin_ms(float(row["period_s"]))
        low = start_ms - max(lookback.values(), default=0)
        rows = [(tags.get("agent", ""), int(row["time"]), float(row["period_s"]))
                async for tags, row in self.client.rows(f'SELECT "period_s" FROM {src} WHERE time >= {time_ms(low)} '
                                                        f'AND time < {time_ms(end_ms)} GROUP BY "agent"',
                                                        missing_ok=True)
                if row.get("period_s") is not None]
        return group_heartbeats(rows, start_ms, lookback)

    async def samples(self, start_ms: int, end_ms: int, components: Sequence[str] | None = None) -> list[Sample]:
        rows: list[tuple[Any, ...]] = []
        src = self.client.source(PROBE.name)
        for where in component_filters(components):
            # Not grouped, as in `changes`.
            rows += await self._read(f"SELECT {_fields(PROBE.fields)}, {_PROBE_TAGS} FROM {src} WHERE time >= "
                                     f"{time_ms(start_ms)} AND time < {time_ms(end_ms)}{where}", _PROBE_READ)
        rows.sort(key=_PROBE_ORDER)
        return schema.samples(rows)

    async def latency(self, start_ms: int, end_ms: int, step_ms: int) -> dict[str, list[tuple[int, float]]]:
        if step_ms <= 0:
            raise ValueError(f"step_ms must be positive, got {step_ms}")
        # GROUP BY time() buckets start at multiples of the step since the epoch, as SQLite's do.
        q = (f'SELECT MEAN("latency_ms") AS "mean" FROM {self.client.source(PROBE.name)} '
             f"WHERE time >= {time_ms(start_ms)} AND time < {time_ms(end_ms)} "
             f'GROUP BY time({int(step_ms)}ms), "component"')
        out: dict[str, list[tuple[int, float]]] = {}
        async for tags, row in self.client.rows(q, missing_ok=True):
            if row.get("mean") is not None:
                out.setdefault(tags.get("component", ""), []).append((int(row["time"]), float(row["mean"])))
        for steps in out.values():
            steps.sort()
        return out

    async def _window_rows(self, where: str) -> list[tuple[MaintenanceWindow, bool]]:
        """(window, removed) for every stored window matching `where`."""
        q = f"SELECT {_fields(MAINTENANCE.fields)} FROM {self.client.source(MAINTENANCE.name)}{where} GROUP BY \"id\""
        out: list[tuple[MaintenanceWindow, bool]] = []
        async for tags, row in self.client.rows(q, missing_ok=True):
            if row.get("scope") not in SCOPES or row.get("end_ms") is None:
                continue
            values = {**row, "id": tags.get("id", ""), MAINTENANCE.time: row["time"]}
            window = schema.maintenance_window([values.get(n) for n in schema.WINDOW_COLUMNS])
            out.append((window, bool(row.get("removed"))))
        return out

    async def windows(self, start_ms: int | None = None, end_ms: int | None = None) -> list[MaintenanceWindow]:
        conditions = []
        if end_ms is not None:
            conditions.append(f"time < {time_ms(end_ms)}")
        if start_ms is not None:
            conditions.append(f'"end_ms" > {int(start_ms)}')
        where = " WHERE " + " AND ".join(conditions) if conditions else ""
        found = [w for w, removed in await self._window_rows(where) if not removed]
        return sorted(found, key=lambda w: (w.start_ms, w.id))

    async def add_window(self, window: MaintenanceWindow) -> None:
        check_window(window)
        existing = await self._window_rows(f' WHERE "id" = {quote_string(window.id)}')
        if existing:
            raise SourceError(f"{self.name}: a maintenance window with id {window.id!r} exists already")
        await self._write([as_record(MAINTENANCE, schema.window_row(window))])

    async def remove_window(self, id: str) -> bool:
        found = [w for w, removed in await self._window_rows(f' WHERE "id" = {quote_string(id)}') if not removed]
        if not found:
            return False
        # Same series and time: the point is overwritten with removed=1, and stays as evidence.
        await self._write([as_record(MAINTENANCE, schema.window_row(w, removed=True)) for w in found])
        return True

    async def report_sent(self, period_key: str, customer: str) -> bool:
        q = (f'SELECT "sha256" FROM {self.client.source(REPORT_SENT.name)} '
             f'WHERE "period" = {quote_string(period_key)} AND "customer" = {quote_string(customer)} LIMIT 1')
        return any([row async for _, row in self.client.rows(q, missing_ok=True)])

    async def record_report_sent(self, period_key: str, customer: str, sent_ms: int, sha256: str) -> None:
        await self._write([as_record(REPORT_SENT, schema.report_sent_row(period_key, customer, sent_ms, sha256))])

    async def close(self) -> None:
        await self.client.close()

    async def _write(self, records: Sequence[Record]) -> None:
        try:
            refused = await self.client.write(records)
        except SinkError as exc:
            raise (StoreUnavailable if exc.retryable else SourceError)(str(exc)) from exc
        if refused:
            raise SourceError(f"{self.name}: the server refused the record (see the log)")


class Lines:
    """The non-blank lines of a stream read in pieces: a line of 10 000 rows comes in many reads, and each read is
    looked at once (not the whole line again at each)."""

    def __init__(self) -> None:
        self._pending = bytearray()

    def feed(self, chunk: bytes) -> list[bytes]:
        """The lines that `chunk` ends."""
        end = chunk.rfind(b"\n")
        if end < 0:
            self._pending += chunk
            return []
        self._pending += chunk[:end]
        done = [line for line in bytes(self._pending).split(b"\n") if line.strip()]
        self._pending = bytearray(chunk[end + 1:])
        return done

    def end(self) -> list[bytes]:
        """The last line, when the stream did not end with a newline."""
        last, self._pending = bytes(self._pending), bytearray()
        return [last] if last.strip() else []


async def _parse(doc: bytes) -> dict[str, Any]:
    # A chunk of 10 000 rows takes milliseconds to decode: off the event loop.
    parsed = await asyncio.to_thread(json.loads, doc) if len(doc) > 65536 else json.loads(doc)
    if not isinstance(parsed, dict):
        raise SourceError(f"unexpected answer from InfluxDB: {doc[:200]!r}")
    return parsed


def _short(text: str, limit: int = 500) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"

"""HAProxy pool probe: a backend's members from the stats CSV, judged against `min_up`.

Which member statuses count as serving (HAProxy 2.x stats `status` column):
- "UP", "UP 2/3" (still in rotation, failing checks but not yet `fall` times) and "no check"
  (in rotation without health checks): serving.
- "DOWN", "DOWN 1/2" (passing checks but not yet `rise` times: not back in rotation), "NOLB"
  (`http-check disable-on-404`: no new load-balanced traffic), "DRAIN" (weight 0 or drain state: no new
  traffic), "MAINT", "MAINT (via b/s)", "MAINT (resolution)" and anything unknown: not serving.

Outcomes: all members serving → UP; at least `min_up` → DEGRADED "2 of 3 members UP (web3 DOWN)";
fewer → BAD_RESPONSE "1 of 3 members UP, need 2 (web2 DOWN, web3 MAINT)". The stats endpoint answered,
and its answer says the pool cannot carry the service: that is the same shape as an HTTP 503 or a SIP 503,
so it is BAD_RESPONSE (the model has no DOWN outcome; TIMEOUT/REFUSED/UNREACHABLE would blame the network
path to the load balancer, which is exactly what a network engineer must not be sent chasing). Failures to
reach the stats page itself keep the HTTP client's outcomes (REFUSED, TIMEOUT, ...).
"""

from __future__ import annotations

import argparse
import csv
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from agent.probes.base import inner_timeout, quote
from agent.probes.httpclient import check_status, fetch, status_line
from agent.probes.options import Env, credential_settings, credentials
from slawatch.config.probes import HaproxyProbe
from slawatch.model import Outcome, Result

MAX_STATS_BYTES = 32 << 20
"""A stats CSV is ~1 KB per server; this allows tens of thousands and still bounds memory."""

MAX_NAMED = 8
"""At most this many not-serving members are named in a reason; the rest are counted."""


@dataclass(frozen=True, slots=True)
class Member:
    name: str
    status: str

    @property
    def serving(self) -> bool:
        return self.status == "UP" or self.status.startswith("UP ") or self.status == "no check"


Pools = Mapping[str, Sequence[Member]]


# ---------------------------------------------------------------- interpretation (pure)


def parse_stats(text: str) -> dict[str, list[Member]]:
    """Backends (proxies with a BACKEND row, in CSV order) and their member servers.

    ValueError when `text` is not HAProxy's stats CSV (e.g. the HTML page, when the URL lacks `;csv`).
    """
    lines = text.splitlines()
    if not lines or not lines[0].startswith("# pxname,svname,"):
        first = lines[0] if lines else ""
        raise ValueError(f"not HAProxy stats CSV (first line {quote(first.encode())})")
    header = lines[0][2:].split(",")
    if "status" not in header:
        raise ValueError("HAProxy stats CSV without a status column")
    pools: dict[str, list[Member]] = {}
    members: dict[str, list[Member]] = {}
    for row in csv.DictReader(lines[1:], fieldnames=header):
        pxname, svname = row.get("pxname") or "", row.get("svname") or ""
        if not pxname or pxname.startswith("#"):
            continue
        if svname == "BACKEND":
            pools[pxname] = members.setdefault(pxname, [])
        elif svname != "FRONTEND":
            members.setdefault(pxname, []).append(Member(svname, (row.get("status") or "").strip()))
    return pools


def pool_result(pools: Pools, backend: str, min_up: int) -> Result:
    """Judge one backend's members: UP, DEGRADED or (below `min_up`) BAD_RESPONSE, naming who is out."""
    if backend not in pools:
        names = ", ".join(pools) or "none"
        return Result(Outcome.BAD_RESPONSE, f"backend {backend!r} not in stats (backends: {names})")
    members = pools[backend]
    out = [m for m in members if not m.serving]
    up = len(members) - len(out)
    named = ", ".join(f"{m.name} {m.status or '(no status)'}" for m in out[:MAX_NAMED])
    if len(out) > MAX_NAMED:
        named += f" and {len(out) - MAX_NAMED} more"
    if not members:
        return Result(Outcome.BAD_RESPONSE, f"0 of 0 members UP, need {min_up} (backend has no servers)")
    if up < min_up:
        return Result(Outcome.BAD_RESPONSE, f"{up} of {len(members)} members UP, need {min_up}"
                                            + (f" ({named})" if named else ""))
    if out:
        return Result(Outcome.DEGRADED, f"{up} of {len(members)} members UP ({named})")
    return Result(Outcome.UP)


def csv_url(url: str) -> str:
    """The stats URL asking for CSV: `;csv` appended unless present. HAProxy looks for its `;csv`/`;up`/`scope=`
    options anywhere after the `stats uri` prefix, so it goes at the very end (`/haproxy?stats;csv` for
    the default `stats uri /haproxy?stats`)."""
    parts = urlsplit(url)
    if ";csv" in parts.path or ";csv" in parts.query:
        return url
    if parts.query:
        return urlunsplit(parts._replace(query=parts.query + ";csv"))
    return urlunsplit(parts._replace(path=(parts.path or "/") + ";csv"))


# ---------------------------------------------------------------- transport


async def probe(target: HaproxyProbe) -> Result:
    """Fetch the stats CSV and judge the backend; never raises."""
    t0 = time.perf_counter()
    auth = None
    if target.username is not None:
        auth = (target.username, target.password.get_secret_value() if target.password else "")
    reply = await fetch(csv_url(target.target), budget_s=inner_timeout(target), auth=auth, read_body=True,
                        max_body_bytes=MAX_STATS_BYTES)
    if isinstance(reply, Result):
        return reply
    failure = check_status(reply.status, reply.phrase, None)
    if failure is not None:
        if reply.status in (401, 403):
            hint = "check username/password" if target.username else "the stats page needs username/password"
            return Result(Outcome.BAD_RESPONSE, f"{status_line(reply.status, reply.phrase)} ({hint})")
        return Result(Outcome.BAD_RESPONSE, f"stats page: {failure.reason}")
    try:
        pools = parse_stats((reply.body or b"").decode("utf-8", "replace"))
    except ValueError as exc:
        return Result(Outcome.BAD_RESPONSE, str(exc))
    result = pool_result(pools, target.backend, target.min_up)
    return Result(result.outcome, result.reason, time.perf_counter() - t0) if result.up else result


# ---------------------------------------------------------------- the one-shot command line

TARGET = "URL"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--backend", required=True, metavar="NAME")
    p.add_argument("--min-up", type=int, metavar="N", help="servers that must be UP (default 1)")
    credentials(p)


def settings_from_args(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"backend": args.backend, "min_up": args.min_up, **credential_settings(args, env)}

"""HTTP(S) probe: status set, body regex or JSON field condition (the request itself is agent.probes.httpclient)."""

from __future__ import annotations

import argparse
import json
import re
import time
from typing import Any

from agent.probes.base import QUOTE_LIMIT, inner_timeout, quote
from agent.probes.httpclient import check_status, fetch
from agent.probes.options import Env, credential_settings, credentials, tls_options, tls_verify
from slawatch.config.probes import HttpProbe, JsonCondition
from slawatch.model import Outcome, Result

# ---------------------------------------------------------------- interpretation (pure)


def check_body(pattern: str, body: bytes, charset: str | None = None) -> Result | None:
    text = body.decode(charset or "utf-8", "replace")
    if re.search(pattern, text):
        return None
    return Result(Outcome.BAD_RESPONSE, f"body does not match {pattern!r} (received {quote(body)})")


def lookup(doc: Any, path: str) -> Any:
    """The value at a dotted path ("checks.0.state"); KeyError with the segment that is missing."""
    here: Any = doc
    walked: list[str] = []
    for part in path.split("."):
        if isinstance(here, dict) and part in here:
            here = here[part]
        elif isinstance(here, list) and part.lstrip("-").isdigit() and -len(here) <= int(part) < len(here):
            here = here[int(part)]
        else:
            where = f"in {'.'.join(walked)!r}" if walked else "at the top level"
            kind = "key" if isinstance(here, dict) else "item" if isinstance(here, list) else None
            raise KeyError(f"no {kind} {part!r} {where}" if kind else
                           f"{'.'.join(walked) or 'the document'} is {_json_type(here)}, not an object or list")
        walked.append(part)
    return here


def _json_type(value: Any) -> str:
    return {str: "a string", bool: "a boolean", int: "a number", float: "a number",
            type(None): "null"}.get(type(value), type(value).__name__)


def same(a: Any, b: Any) -> bool:
    """JSON equality that keeps true apart from 1 (Python's True == 1)."""
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return bool(a == b)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= QUOTE_LIMIT else text[:QUOTE_LIMIT] + "…"


def check_json(cond: JsonCondition, body: bytes) -> Result | None:
    """None when the JSON document meets `cond`: equals, in, or (neither given) the path exists."""
    try:
        doc = json.loads(body)
    except ValueError as exc:
        return Result(Outcome.BAD_RESPONSE, f"body is not JSON ({exc}): {quote(body)}")
    try:
        value = lookup(doc, cond.path)
    except KeyError as exc:
        return Result(Outcome.BAD_RESPONSE, f"JSON has no {cond.path!r} ({exc.args[0]})")
    if "equals" in cond.model_fields_set and not same(value, cond.equals):
        return Result(Outcome.BAD_RESPONSE, f"JSON {cond.path}={_short(value)}, expected {cond.equals!r}")
    if cond.in_ is not None and not any(same(value, v) for v in cond.in_):
        wanted = ", ".join(repr(v) for v in cond.in_)
        return Result(Outcome.BAD_RESPONSE, f"JSON {cond.path}={_short(value)}, expected one of {wanted}")
    return None


# ---------------------------------------------------------------- the probe


async def probe(target: HttpProbe) -> Result:
    """Request, check the status, then read the whole body (up to `max_body_bytes`) within the deadline and hold
    it to any body condition; never raises. The body is read even without a condition, as blackbox_exporter
    does: a server that sends its headers and then never finishes the response is not healthy. A failing status
    is the reason by itself: that body is not read."""
    t0 = time.perf_counter()
    auth = None
    if target.username is not None:
        auth = (target.username, target.password.get_secret_value() if target.password else "")
    reply = await fetch(target.target, budget_s=inner_timeout(target), method=target.method,
                        headers=target.headers, data=None if target.body is None else target.body.encode(),
                        auth=auth, verify=target.tls_verify, follow_redirects=target.follow_redirects,
                        read_body=lambda status: check_status(status, None, target.expect_status) is None,
                        max_body_bytes=target.max_body_bytes)
    if isinstance(reply, Result):
        return reply
    failure = check_status(reply.status, reply.phrase, target.expect_status,
                           None if target.follow_redirects else reply.headers.get("location"))
    if failure is None and reply.body is not None:
        if target.expect_body is not None:
            failure = check_body(target.expect_body, reply.body, reply.charset)
        if failure is None and target.expect_json is not None:
            failure = check_json(target.expect_json, reply.body)
    return failure or Result(Outcome.UP, latency_s=time.perf_counter() - t0)


# ---------------------------------------------------------------- the one-shot command line

TARGET = "URL"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", choices=("GET", "HEAD", "POST", "PUT", "OPTIONS"))
    p.add_argument("--expect-status", metavar="CODES", help="comma-separated, e.g. 200,204 (default any 2xx)")
    p.add_argument("--expect-body", metavar="REGEX")
    credentials(p)
    tls_options(p)


def settings_from_args(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    codes = None if args.expect_status is None else [c.strip() for c in args.expect_status.split(",") if c.strip()]
    return {"method": args.method, "expect_status": codes, "expect_body": args.expect_body,
            **credential_settings(args, env), "tls_verify": tls_verify(args)}

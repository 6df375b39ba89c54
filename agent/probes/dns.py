"""DNS probe: one query to one server; up when it answers NOERROR with records of the asked type (and the expected
one among them, when set).

The server is asked directly (dnspython's asyncio query, over UDP, again over TCP when the answer is truncated),
not through a stub resolver: a resolver would try again and fold SERVFAIL and REFUSED into "no nameserver
answered", where the probe must report the server's own RCODE.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import socket
import time
from collections.abc import Sequence
from typing import Any

import dns.asyncquery
import dns.exception
import dns.message
import dns.name
import dns.rcode
import dns.rdata
import dns.rdatatype

from agent.probes.address import resolve
from agent.probes.base import connect_failure, inner_timeout
from agent.probes.options import Env
from slawatch.config.probes import DnsProbe
from slawatch.config.units import split_host_port
from slawatch.model import Outcome, Result

MAX_SHOWN = 3
"""At most this many records of a wrong answer are quoted in a reason."""


# ---------------------------------------------------------------- interpretation (pure)


def _words(text: str) -> list[str]:
    # Names compare without case and with or without the final dot, as a person writes them.
    return [w.lower().rstrip(".") or "." for w in text.split()]


def record_matches(expect: str, record: dns.rdata.Rdata) -> bool:
    """Whether `record` is the `expect`ed one, written as dig shows it: "127.0.0.7", "::1",
    "10 0 5060 sip.example.net", "v=spf1 -all" (a TXT record with or without its quotes)."""
    if record.rdtype in (dns.rdatatype.A, dns.rdatatype.AAAA):
        try:
            return ipaddress.ip_address(expect.strip()) == ipaddress.ip_address(record.to_text())
        except ValueError:
            return False
    if record.rdtype == dns.rdatatype.TXT:
        strings: Sequence[bytes] = getattr(record, "strings", ())
        if expect.strip() == b"".join(strings).decode("utf-8", "replace"):
            return True
    return _words(expect) == _words(record.to_text())


def judge(response: dns.message.Message, settings: DnsProbe) -> Result:
    """Map the server's answer to an outcome: the RCODE first, then the records of the asked type. Pure."""
    asked = f"{settings.type} {settings.query}"
    rcode = response.rcode()
    if rcode == dns.rcode.NXDOMAIN:
        return Result(Outcome.BAD_RESPONSE, f"NXDOMAIN: {settings.query} does not exist")
    if rcode != dns.rcode.NOERROR:
        return Result(Outcome.BAD_RESPONSE, f"server answered {dns.rcode.to_text(rcode)} to {asked}")
    rdtype = dns.rdatatype.from_text(settings.type)
    records = [rd for rrset in response.answer if rrset.rdtype == rdtype for rd in rrset]
    if not records:
        return Result(Outcome.BAD_RESPONSE, f"no {settings.type} record for {settings.query} (NOERROR, empty answer)")
    if settings.expect is not None and not any(record_matches(settings.expect, rd) for rd in records):
        shown = ", ".join(rd.to_text() for rd in records[:MAX_SHOWN])
        more = f" and {len(records) - MAX_SHOWN} more" if len(records) > MAX_SHOWN else ""
        return Result(Outcome.BAD_RESPONSE, f"{asked} is {shown}{more}, expected {settings.expect}")
    return Result(Outcome.UP)


# ---------------------------------------------------------------- transport


async def probe(settings: DnsProbe) -> Result:
    """Ask the server within the inner deadline; never raises."""
    t0 = time.perf_counter()
    budget = inner_timeout(settings)
    deadline = asyncio.get_running_loop().time() + budget
    host, port = split_host_port(settings.target, 53)
    where = f"{host}:{port}" if ":" not in host else f"[{host}]:{port}"
    try:
        query = dns.message.make_query(settings.query, settings.type)
    except dns.exception.DNSException as exc:
        return Result(Outcome.AGENT_ERROR, f"cannot ask for {settings.query}: {exc}")
    try:
        async with asyncio.timeout_at(deadline):
            address = str((await resolve(host, port, socket.SOCK_DGRAM))[0][4][0])
            left = deadline - asyncio.get_running_loop().time()
            # A datagram from another address is not the server's answer: wait on for the server's.
            response, _tcp = await dns.asyncquery.udp_with_fallback(query, address, timeout=left, port=port,
                                                                    ignore_unexpected=True)
    except (TimeoutError, dns.exception.Timeout):
        return Result(Outcome.TIMEOUT, f"no DNS answer from {where} within {budget:.3g}s")
    except OSError as exc:
        return connect_failure(exc)
    except dns.exception.DNSException as exc:
        return Result(Outcome.BAD_RESPONSE, f"malformed DNS response from {where}: {exc}")
    result = judge(response, settings)
    return Result(result.outcome, result.reason, time.perf_counter() - t0) if result.up else result


# ---------------------------------------------------------------- the one-shot command line

TARGET = "SERVER[:PORT]"
OPTIONS = {"query": "--name"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--name", required=True, metavar="NAME", help="the name to resolve")
    p.add_argument("--type", choices=("A", "AAAA", "SRV", "NAPTR", "TXT"), help="record type (default A)")
    p.add_argument("--expect", metavar="VALUE", help="a record the answer must hold, as dig shows it")


def settings_from_args(args: argparse.Namespace, env: Env) -> dict[str, Any]:
    return {"query": args.name, "type": args.type, "expect": args.expect}

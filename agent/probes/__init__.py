"""The probe registry and the one wrapper that owns every probe's deadline, timing and start stamp."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from agent.clock import Clock
from agent.probes import haproxy, http, icmp, sip, snmp, tcp, ups
from slawatch.config.settings import ProbeBase
from slawatch.model import Outcome, Result

log = logging.getLogger(__name__)

ProbeFn = Callable[[Any], Awaitable[Result]]

PROBES: dict[str, ProbeFn] = {
    "sip": sip.probe,
    "icmp": icmp.probe,
    "tcp": tcp.probe,
    "http": http.probe,
    "haproxy": haproxy.probe,
    "snmp": snmp.probe,
    "ups": ups.probe,
}


@dataclass(frozen=True, slots=True)
class Run:
    """One probe run: when it started (UTC epoch ms) and what it saw.

    `mono_ms` and `epoch` place the start on the agent's clock (see `agent.clock.Stamp`) when one was given.
    """

    started_ms: int
    result: Result
    mono_ms: int | None = None
    epoch: int = 0


def inner_timeout(settings: ProbeBase) -> float:
    """A deadline for the library inside a probe, a little shorter than the outer one, so it fails first
    with a precise reason."""
    return max(settings.timeout_s * 0.9, settings.timeout_s - 0.25)


async def run_probe(settings: ProbeBase, clock: Clock | None = None) -> Run:
    """Run one probe under its deadline. Never raises (except cancellation of the caller).

    The start is stamped from `clock` (the agent's, steady through wall-clock steps), else the wall clock.
    """
    if clock is not None:
        stamp = clock.stamp()
        started_ms, mono_ms, epoch = stamp.ms, stamp.mono_ms, stamp.epoch
    else:
        started_ms, mono_ms, epoch = time.time_ns() // 1_000_000, None, 0
    t0 = time.perf_counter()
    try:
        async with asyncio.timeout(settings.timeout_s):
            result = await PROBES[settings.kind](settings)
    except TimeoutError:
        result = Result(Outcome.TIMEOUT, f"no answer within {settings.timeout_s:g}s")
    except Exception as exc:  # a probe bug must not take the daemon down
        log.exception("probe %s %s failed unexpectedly", settings.kind, getattr(settings, "target", "?"))
        result = Result(Outcome.AGENT_ERROR, f"{type(exc).__name__}: {exc}")
    if result.latency_s is None and result.outcome.is_up:
        result = Result(result.outcome, result.reason, time.perf_counter() - t0)
    return Run(started_ms, result, mono_ms, epoch)

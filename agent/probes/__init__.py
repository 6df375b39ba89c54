"""The probe registry (kind name -> its module agent/probes/<kind>.py) and the one wrapper that owns every probe's
deadline, timing and start stamp.

The kinds are those of the settings union (slawatch.config.probes); each module exports
- `async def probe(settings) -> Result`, which never raises;
- for `slawatch probe KIND TARGET`: `TARGET` (how the target is written), `add_arguments(parser)` and
  `settings_from_args(args, environ) -> dict` (settings fields, None for "not given"), and optionally `OPTIONS`
  (settings field -> its command-line option, for error messages);
- optionally `async def warm()` (build now what the first run would otherwise pay for inside its deadline) and
  `async def close()` (release it at shutdown), both for the running event loop.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import importlib
import logging
import math
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from agent.cadence import TICK_S
from agent.clock import Clock
from slawatch.config.probes import PROBE_KINDS, PROBE_SETTINGS, ProbeBase
from slawatch.model import Outcome, Result

log = logging.getLogger(__name__)

ProbeFn = Callable[[Any], Awaitable[Result]]
Lifecycle = Callable[[], Awaitable[None]]
Env = Mapping[str, str]

SETTINGS: dict[str, type[ProbeBase]] = dict(zip(PROBE_KINDS, PROBE_SETTINGS, strict=True))


@dataclass(frozen=True, slots=True)
class Kind:
    """One probe kind, as its module exports it."""

    name: str
    settings: type[ProbeBase]
    probe: ProbeFn
    target: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    settings_from_args: Callable[[argparse.Namespace, Env], dict[str, Any]]
    options: Mapping[str, str] = field(default_factory=dict)
    warm: Lifecycle | None = None
    close: Lifecycle | None = None


# Kinds whose module is imported, by name: a cache like sys.modules, which holds the modules anyway.
_LOADED: dict[str, Kind] = {}


def kind(name: str) -> Kind:
    """The kind `name`, its module imported on first use; KeyError for a name that is no kind."""
    found = _LOADED.get(name)
    if found is None:
        settings = SETTINGS[name]
        # Imported here, not at the top, for start-up time: a process loads only the kinds it runs (pysnmp alone
        # takes ~0.1 s to import), and `slawatch probe tcp` none of the others.
        module = importlib.import_module(f"{__name__}.{name}")
        found = _LOADED[name] = Kind(name, settings, module.probe, module.TARGET, module.add_arguments,
                                     module.settings_from_args, getattr(module, "OPTIONS", {}),
                                     getattr(module, "warm", None), getattr(module, "close", None))
    return found


async def load_kind(name: str) -> Kind:
    """`kind(name)`, with a first import done in a thread: it must not stall the event loop."""
    found = _LOADED.get(name)
    return found if found is not None else await asyncio.to_thread(kind, name)


def loaded_kinds() -> list[Kind]:
    """The kinds this process has loaded so far."""
    return list(_LOADED.values())


@dataclass(frozen=True, slots=True)
class Run:
    """One probe run: when it started (UTC epoch ms) and what it saw.

    `mono_ms` and `epoch` place the start on the agent's clock (see `agent.clock.Stamp`) when one was given.
    """

    started_ms: int
    result: Result
    mono_ms: int | None = None
    epoch: int = 0


DEADLINE_TICK_S = TICK_S
"""The outer deadlines are checked this often: each fires at most this much after its time. The dispatcher's grid
(agent.cadence.TICK_S), on the same clock: the deadlines' timer fires in a wake-up the loop makes anyway."""


class _Expiry:
    """One run's outer deadline: its task is cancelled once it passes, as `asyncio.timeout` would."""

    __slots__ = ("cancelling", "expired", "task")

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task: asyncio.Task[Any] | None = task
        self.cancelling = task.cancelling()
        self.expired = False

    def end(self) -> bool:
        """Detach the run; True when the deadline cancelled it (as `asyncio.timeout`'s exit: the cancellation it
        requested is taken back, and it was the only one)."""
        task, self.task = self.task, None
        return task is not None and self.expired and task.uncancel() <= self.cancelling


class _Deadlines:
    """The outer deadlines of one event loop's runs, in buckets of DEADLINE_TICK_S under one timer.

    This deadline is a backstop: each kind stops at its own, earlier one (`inner_timeout`) with a precise reason.
    An `asyncio.timeout` per run (an object, a timer handle pushed on the loop's heap and cancelled) was a few
    per cent of a probe's CPU at 1 000 runs a second; a bucket entry is a list append."""

    def __init__(self) -> None:
        self._buckets: dict[int, list[_Expiry]] = {}
        self._ticks: list[int] = []  # heap of the buckets' ticks
        self._armed: int | None = None  # the tick the timer is set for

    def add(self, loop: asyncio.AbstractEventLoop, task: asyncio.Task[Any], timeout_s: float) -> _Expiry:
        expiry = _Expiry(task)
        tick = math.ceil((loop.time() + timeout_s) / DEADLINE_TICK_S)  # never before the deadline
        bucket = self._buckets.get(tick)
        if bucket is None:
            bucket = self._buckets[tick] = []
            heapq.heappush(self._ticks, tick)
            if self._armed is None or tick < self._armed:
                self._arm(loop, tick)
        bucket.append(expiry)
        return expiry

    def _arm(self, loop: asyncio.AbstractEventLoop, tick: int) -> None:
        self._armed = tick
        loop.call_at(tick * DEADLINE_TICK_S, self._fire, loop, tick)

    def _fire(self, loop: asyncio.AbstractEventLoop, tick: int) -> None:
        if tick != self._armed:
            return  # superseded by an earlier tick, whose firing armed the next
        ticks = self._ticks
        while ticks and ticks[0] <= tick:
            for expiry in self._buckets.pop(heapq.heappop(ticks)):
                if expiry.task is not None and not expiry.expired:
                    expiry.expired = True
                    expiry.task.cancel()
        self._armed = None
        if ticks:
            self._arm(loop, ticks[0])


_DEADLINES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Deadlines] = weakref.WeakKeyDictionary()


async def run_probe(settings: ProbeBase, clock: Clock | None = None) -> Run:
    """Run one probe under its deadline. Never raises (except cancellation of the caller).

    The start is stamped from `clock` (the agent's, steady through wall-clock steps), else the wall clock.
    """
    found = _LOADED.get(settings.kind)  # loaded at start: no coroutine for the lookup on every run
    probe: ProbeFn | None = None if found is None else found.probe
    try:
        if probe is None:
            probe = (await load_kind(settings.kind)).probe
    except Exception as exc:  # e.g. the kind's library is missing: its runs fail, the agent goes on
        failure = Result(Outcome.AGENT_ERROR, f"cannot load the {settings.kind} probe: {type(exc).__name__}: {exc}")
    if clock is not None:
        stamp = clock.stamp()
        started_ms, mono_ms, epoch = stamp.ms, stamp.mono_ms, stamp.epoch
    else:
        started_ms, mono_ms, epoch = time.time_ns() // 1_000_000, None, 0
    if probe is None:
        return Run(started_ms, failure, mono_ms, epoch)
    t0 = time.perf_counter()
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    assert task is not None
    deadlines = _DEADLINES.get(loop)
    if deadlines is None:
        deadlines = _DEADLINES[loop] = _Deadlines()
    expiry = deadlines.add(loop, task, settings.timeout_s)
    try:
        try:
            result = await probe(settings)
        finally:
            timed_out = expiry.end()
    except asyncio.CancelledError:
        if not timed_out:
            raise
        result = Result(Outcome.TIMEOUT, f"no answer within {settings.timeout_s:g}s")
    except Exception as exc:  # a probe bug must not take the daemon down
        log.exception("probe %s %s failed unexpectedly", settings.kind, getattr(settings, "target", "?"))
        result = Result(Outcome.AGENT_ERROR, f"{type(exc).__name__}: {exc}")
    if result.latency_s is None and result.outcome.is_up:
        result = Result(result.outcome, result.reason, time.perf_counter() - t0)
    return Run(started_ms, result, mono_ms, epoch)

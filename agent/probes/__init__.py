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
import importlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

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
    try:
        async with asyncio.timeout(settings.timeout_s):
            result = await probe(settings)
    except TimeoutError:
        result = Result(Outcome.TIMEOUT, f"no answer within {settings.timeout_s:g}s")
    except Exception as exc:  # a probe bug must not take the daemon down
        log.exception("probe %s %s failed unexpectedly", settings.kind, getattr(settings, "target", "?"))
        result = Result(Outcome.AGENT_ERROR, f"{type(exc).__name__}: {exc}")
    if result.latency_s is None and result.outcome.is_up:
        result = Result(result.outcome, result.reason, time.perf_counter() - t0)
    return Run(started_ms, result, mono_ms, epoch)

"""Exit codes, the usage error, and the guard, config loading and store handling every `slawatch` command shares."""

from __future__ import annotations

import argparse
import asyncio
import importlib
import sys
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, Protocol, TypeVar

from slawatch.config.loader import ConfigError, Loaded, load

EXIT_OK = 0
EXIT_FAILURE = 1  # the work failed: a store or mail server error
EXIT_USAGE = 2  # a bad argument or config: running it again as it is fails again
EXIT_UNKNOWN = 3  # `slawatch probe`, a Nagios plugin: the state could not be determined

T = TypeVar("T")
Command = Callable[[argparse.Namespace], int]


class UsageError(Exception):
    """A bad argument or a name the config does not know: the command prints it and exits EXIT_USAGE."""


class Closing(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closing)


def guarded(prog: str, command: Command, failures: Mapping[type[Exception], str] | None = None) -> Command:
    """`command` as `slawatch PROG` runs it: a UsageError is said and exits EXIT_USAGE; an exception of a type in
    `failures` is said after its prefix ("store error: ") and exits EXIT_FAILURE."""
    caught = tuple(failures or ())

    def run(args: argparse.Namespace) -> int:
        try:
            return command(args)
        except UsageError as exc:
            print(f"slawatch {prog}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        except caught as exc:
            prefix = next(p for kind, p in (failures or {}).items() if isinstance(exc, kind))
            print(f"slawatch {prog}: {prefix}{exc}", file=sys.stderr)
            return EXIT_FAILURE

    return run


def load_config(path: str) -> Loaded:
    """The config and its contract; every located problem as one UsageError."""
    try:
        return load(path)
    except ConfigError as exc:
        raise UsageError("\n".join(str(p) for p in exc.problems)) from None


UVLOOP_MISSING = ("agent.loop is uvloop, which is not installed: pip install 'slawatch[uvloop]', "
                  "or set agent.loop: asyncio")


def loop_factory(loop: str) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The event loop factory for `agent.loop` (None: asyncio's own); UsageError when uvloop is chosen but missing."""
    if loop == "asyncio":
        return None
    if loop != "uvloop":
        raise UsageError(f"unknown event loop {loop!r} (asyncio or uvloop)")
    try:
        module = importlib.import_module("uvloop")  # an optional extra: imported only when chosen
    except ImportError:
        raise UsageError(UVLOOP_MISSING) from None
    factory: Callable[[], asyncio.AbstractEventLoop] = module.new_event_loop
    return factory


def loop_problem(loop: str) -> str | None:
    """Why the event loop `loop` cannot be used here, or None (for check-config)."""
    try:
        loop_factory(loop)
    except UsageError as exc:
        return str(exc)
    return None


def run_on(loop: str, main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    """Run `main()` to completion on a fresh event loop of the kind `loop` names (`agent.loop`), like asyncio.run."""
    with asyncio.Runner(loop_factory=loop_factory(loop)) as runner:
        return runner.run(main())


def run_with(opener: Callable[[], C], work: Callable[[C], Awaitable[T]]) -> T:
    """Open a store, run `work` with it in a fresh event loop, and close it whatever happens."""
    async def run() -> T:
        opened = opener()
        try:
            return await work(opened)
        finally:
            await opened.close()

    return asyncio.run(run())

"""Long-lived tasks that are restarted with back-off after an error, logged once per distinct error and counted."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

log = logging.getLogger(__name__)

BACKOFF_MIN_S = 1.0
BACKOFF_MAX_S = 30.0
STABLE_S = 10.0  # a restarted task that runs this long without an error is well again
SEEN_ERRORS = 64  # distinct errors remembered per task (a traceback is logged once for each)

TaskFactory = Callable[[], Coroutine[Any, Any, None]]


@dataclass(slots=True)
class TaskHealth:
    """How one supervised task fares: its restarts, its last error, whether it has ended."""

    name: str
    restarts: int = 0
    last_error: str = ""
    failed_at: float | None = None  # monotonic time of the last error
    restarted_at: float | None = None  # monotonic time of the last restart, None while waiting for it
    done: bool = False  # returned or cancelled: never restarted
    _seen: set[tuple[str, str]] = field(default_factory=set, repr=False)

    def failing(self, now: float, stable_s: float) -> bool:
        """Waiting to restart after an error, or restarted less than `stable_s` ago."""
        if self.failed_at is None or self.done:
            return False
        return self.restarted_at is None or now - self.restarted_at < stable_s


def describe(exc: BaseException) -> str:
    """An error as one line: its type and message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Supervisor:
    """Runs coroutine factories forever: an error is logged (with its traceback the first time), counted through
    `on_error`, and the task started again after an exponential back-off. A task that returns or is cancelled has
    ended and is not started again."""

    def __init__(self, *, on_error: Callable[[str], None] | None = None, backoff_min_s: float = BACKOFF_MIN_S,
                 backoff_max_s: float = BACKOFF_MAX_S, stable_s: float = STABLE_S) -> None:
        self.on_error = on_error
        self.backoff_min_s = backoff_min_s
        self.backoff_max_s = backoff_max_s
        self.stable_s = stable_s
        self.tasks: dict[str, TaskHealth] = {}

    def start(self, name: str, factory: TaskFactory) -> asyncio.Task[None]:
        """Start `factory()` as the task `name` (unique) under supervision."""
        if name in self.tasks and not self.tasks[name].done:
            raise ValueError(f"task {name!r} is already supervised")
        health = self.tasks[name] = TaskHealth(name)
        return asyncio.get_running_loop().create_task(self._run(health, factory), name=name)

    def failing(self, now: float | None = None) -> list[TaskHealth]:
        """The tasks that failed and have not run `stable_s` since."""
        now = time.monotonic() if now is None else now
        return [h for h in self.tasks.values() if h.failing(now, self.stable_s)]

    async def _run(self, health: TaskHealth, factory: TaskFactory) -> None:
        backoff = self.backoff_min_s
        loop = asyncio.get_running_loop()
        try:
            while True:
                started = time.monotonic()
                try:
                    await factory()
                except Exception as exc:
                    now = time.monotonic()
                    if now - started >= self.stable_s:
                        backoff = self.backoff_min_s  # it ran well for a while: this is a new failure
                    health.restarts += 1
                    health.failed_at, health.restarted_at, health.last_error = now, None, describe(exc)
                    if self.on_error is not None:
                        self.on_error(health.name)
                    self._log(health, exc, backoff)
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, self.backoff_max_s)
                    health.restarted_at = time.monotonic()
                    loop.call_later(self.stable_s, self._settled, health, health.restarts)
                    continue
                return
        finally:
            health.done = True

    def _log(self, health: TaskHealth, exc: Exception, backoff: float) -> None:
        key = (type(exc).__name__, str(exc))
        if key in health._seen:
            log.error("task %s failed again (%d restarts), restarting in %.3gs: %s", health.name, health.restarts,
                      backoff, health.last_error)
            return
        if len(health._seen) >= SEEN_ERRORS:
            health._seen.clear()
        health._seen.add(key)
        log.error("task %s failed, restarting in %.3gs: %s", health.name, backoff, health.last_error, exc_info=exc)

    def _settled(self, health: TaskHealth, restarts: int) -> None:
        if health.restarts == restarts and not health.done:
            log.info("task %s running again after %d restart%s", health.name, restarts, "" if restarts == 1 else "s")

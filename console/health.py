"""What the process serving the console knows of its own agent (what /healthz judges by): handed to the console by
the composition root as a callable, so that the console never imports the agent."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class SinkHealth:
    """One store the agent writes to: points waiting for it in the spool, and its writes' failure streak."""

    name: str
    pending: int
    failing_s: float
    error: str


@dataclass(frozen=True, slots=True)
class TaskHealth:
    """One supervised task of the agent: restarts, the last error, and whether it is failing now."""

    name: str
    restarts: int
    last_error: str
    failing: bool


@dataclass(frozen=True, slots=True)
class LocalHealth:
    """The agent in this process: /healthz's verdict and reasons, and the detail behind them."""

    agent: str
    reasons: tuple[str, ...]
    uptime_s: float
    components: int
    probe_runs: int
    spool_bytes: int
    held: int
    sinks: tuple[SinkHealth, ...]
    tasks: tuple[TaskHealth, ...]

    @property
    def healthy(self) -> bool:
        return not self.reasons


HealthFn = Callable[[], LocalHealth]

"""The values that flow through slawatch: probe results, samples, state changes, heartbeats (no I/O)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """How one probe run ended; UP and DEGRADED count as available."""

    UP = "up"
    DEGRADED = "degraded"
    TIMEOUT = "timeout"
    REFUSED = "refused"
    UNREACHABLE = "unreachable"
    BAD_RESPONSE = "bad_response"
    AGENT_ERROR = "agent_error"

    @property
    def is_up(self) -> bool:
        return self in (Outcome.UP, Outcome.DEGRADED)


@dataclass(frozen=True, slots=True)
class Result:
    """What a probe saw. `reason` is empty only for a plain UP."""

    outcome: Outcome
    reason: str = ""
    latency_s: float | None = None

    @property
    def up(self) -> bool:
        return self.outcome.is_up


@dataclass(frozen=True, slots=True)
class ComponentRef:
    """The identity tags every stored point of a component carries."""

    component: str
    klass: str
    tier: str
    customer: str


@dataclass(frozen=True, slots=True)
class Sample:
    """One probe run as stored (`slawatch_probe`). `ts_ms` is the UTC start, epoch milliseconds."""

    ref: ComponentRef
    probe: str
    kind: str
    agent: str
    ts_ms: int
    outcome: Outcome
    reason: str
    latency_ms: float | None

    @property
    def up(self) -> bool:
        return self.outcome.is_up


@dataclass(frozen=True, slots=True)
class StateChange:
    """A confirmed change of a component's state as one agent sees it (`slawatch_state`).

    `ts_ms` is the effective instant: the start of the first probe run of the confirming streak.
    """

    ref: ComponentRef
    agent: str
    ts_ms: int
    up: bool
    reason: str


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An agent saying it is watching (`slawatch_heartbeat`), every `period_s`."""

    agent: str
    ts_ms: int
    period_s: float


Point = Sample | StateChange | Heartbeat

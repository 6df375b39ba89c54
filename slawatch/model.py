"""The values that flow through slawatch, one type per concept, used by the agent, the stores and the reporter alike:
outcome, probe result, sample, state change, heartbeats, interval, maintenance window (no I/O)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Literal, NamedTuple


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


class StateChange(NamedTuple):
    """A confirmed change of a component's state as one agent sees it (`slawatch_state`): written by the agent, read
    back by the stores in this same form, and taken as it is by the availability engine.

    `ts_ms` is the effective instant: the start of the first probe run of the confirming streak. `ref` holds the
    class, tier and customer the component had when the change was stored. `degraded` marks a confirmed DEGRADED
    state (a UPS on battery, a pool short of members): up for availability, a fault for the incident desk; a change
    from up to degraded or back is a change with up=True. A NamedTuple, not a dataclass: a month of 10 000
    components holds ~400 000 of them, and a tuple builds five times faster.
    """

    ref: ComponentRef
    agent: str
    ts_ms: int
    up: bool
    reason: str
    degraded: bool = False


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An agent saying it is watching (`slawatch_heartbeat`), every `period_s`."""

    agent: str
    ts_ms: int
    period_s: float


Point = Sample | StateChange | Heartbeat


@dataclass(frozen=True, slots=True)
class AgentHeartbeats:
    """One agent's heartbeats read back over a period: sorted instants (epoch ms) and the period it announced."""

    agent: str
    instants_ms: Sequence[int]
    period_s: float


Heartbeats = dict[str, AgentHeartbeats]  # by agent id


@dataclass(frozen=True, slots=True)
class Interval:
    """The half-open interval [start_ms, end_ms) in epoch milliseconds UTC."""

    start_ms: int
    end_ms: int

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError(f"interval ends before it starts: [{self.start_ms}, {self.end_ms})")

    @property
    def duration_ms(self) -> int:
        return self.end_ms - self.start_ms


Scope = Literal["component", "class", "customer"]
SCOPES: tuple[Scope, ...] = ("component", "class", "customer")


@dataclass(frozen=True, slots=True)
class MaintenanceWindow:
    """Planned maintenance [start_ms, end_ms) over one component, a class or a customer, as stored and as the
    availability engine takes it.

    `announced_ms` is when the customer was told (the evidence for the notice rule); `created_ms` when it was
    entered.
    """

    id: str
    scope: Scope
    value: str
    start_ms: int
    end_ms: int
    announced_ms: int
    reason: str = ""
    created_ms: int = field(default=0, compare=False)

    def __post_init__(self) -> None:
        if self.end_ms < self.start_ms:
            raise ValueError(f"maintenance window {self.id!r} ends before it starts")

    def applies_to(self, ref: ComponentRef) -> bool:
        if self.scope == "component":
            return self.value == ref.component
        if self.scope == "class":
            return self.value == ref.klass
        return self.value == ref.customer

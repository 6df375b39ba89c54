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
    released: bool = False
    """The agent stopped watching the component at `ts_ms` (handed over to another agent, or removed from its
    config): its view is unknown from then on, until a later change of the same agent. `up` repeats its last
    state, so a reader that ignores `released` sees no change."""


@dataclass(frozen=True, slots=True)
class Heartbeat:
    """An agent saying it is watching (`slawatch_heartbeat`), every `period_s`."""

    agent: str
    ts_ms: int
    period_s: float


Point = Sample | StateChange | Heartbeat


AssignMode = Literal["static", "auto"]


@dataclass(frozen=True, slots=True)
class AgentLease:
    """A running agent as it announces itself in the shared store (`slawatch_agent`), renewed several times per
    heartbeat period: the live agents are those whose lease is fresh, and `assign: auto` shares the components
    among them."""

    agent: str
    seen_ms: int
    """The last renewal (the agent's clock)."""
    started_ms: int
    heartbeat_s: float
    zone: str
    """Empty when the agent has no zone."""
    assign: AssignMode
    replicas: int
    watching: int
    """How many components it watches now."""
    host: str
    version: str

    def live_at(self, now_ms: int) -> bool:
        """Whether the lease is fresh at the store's instant `now_ms`: renewed within LEASE_LIVE_FRACTION of its
        agent's heartbeat period (at least LEASE_MIN_LIVE_MS). The one rule for the agents' shares, `slawatch
        agents` and the console."""
        return now_ms - self.seen_ms <= lease_live_ms(self.heartbeat_s)


LEASE_LIVE_FRACTION = 2 / 3
LEASE_MIN_LIVE_MS = 500
"""Agents renew every heartbeat_s / 4 but at most every 0.25 s: two renewals' worth at least."""


def lease_live_ms(heartbeat_s: float) -> int:
    """How long a lease stays live after its renewal: a stopped agent's share moves within `heartbeat_s` (its lease
    goes stale after 2/3 of it, and every agent reads the leases every 1/4 of it)."""
    return max(round(heartbeat_s * LEASE_LIVE_FRACTION * 1000), LEASE_MIN_LIVE_MS)


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


# ---------------------------------------------------------------- incidents (the incident desk)

Fault = Literal["down", "degraded"]


class IncidentState(StrEnum):
    """open → acknowledged → resolved; paused while the provider waits on the customer (the clock stops)."""

    OPEN = "open"
    ACKNOWLEDGED = "acknowledged"
    PAUSED = "paused"
    RESOLVED = "resolved"


@dataclass(frozen=True, slots=True)
class Pause:
    """Time waiting on the customer, [start_ms, end_ms); end_ms None while it lasts."""

    start_ms: int
    end_ms: int | None
    reason: str


@dataclass(frozen=True, slots=True)
class Incident:
    """A fault raised to the people who answer it, as stored (`slawatch_incident`).

    `start_ms` is the effective start of the fault (the availability ledger's outage start); `raised_ms` when it
    was confirmed and raised, where the response clock starts. `version` counts the incident's events: every
    write appends events after it and is refused when someone else wrote first.
    """

    id: str
    ref: ComponentRef
    fault: Fault
    start_ms: int
    raised_ms: int
    priority: str
    state: IncidentState
    reason: str
    agents: tuple[str, ...] = ()
    acknowledged_ms: int | None = None
    acknowledged_by: str = ""
    ack_comment: str = ""
    pauses: tuple[Pause, ...] = ()
    resolved_ms: int | None = None
    resolved_by: str = ""
    """Who resolved it by hand; empty when the component recovered."""
    escalations: int = 0
    """Escalation instants already handled (sent)."""
    updated_ms: int = 0
    version: int = 0

    @property
    def active(self) -> bool:
        return self.state is not IncidentState.RESOLVED

    @property
    def pause_spans(self) -> tuple[tuple[int, int | None], ...]:
        return tuple((p.start_ms, p.end_ms) for p in self.pauses)


@dataclass(frozen=True, slots=True)
class IncidentEvent:
    """One line of an incident's append-only log (`slawatch_incident_event`): who did what, when."""

    incident_id: str
    seq: int
    ts_ms: int
    action: str
    """opened, reopened, acknowledged, paused, resumed, priority, escalated, fault, resolved, commented."""
    actor: str
    """The operator's name, or `slawatch` for what the desk did by itself."""
    comment: str = ""
    detail: str = ""
    """Machine-readable particulars as JSON text (old and new priority, the fault's reason ...)."""


class NotificationState(StrEnum):
    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"
    """Given up: retrying could not help, or it kept failing for `give_up_after`."""


@dataclass(frozen=True, slots=True)
class Notification:
    """One message to one recipient, kept in the store's outbox (`slawatch_notification`) until delivered.

    `id` is `<incident>.<event seq>.<n>`: a replay of the same write cannot duplicate it.
    """

    id: str
    incident_id: str
    kind: str
    """open, reopen, ack, priority, pause, resume, escalation, resolve."""
    recipient: str
    subject: str
    text: str
    html: str
    data: str
    """The structured fields as JSON text (for webhooks)."""
    created_ms: int
    due_ms: int
    attempts: int = 0
    state: NotificationState = NotificationState.PENDING
    last_error: str = ""
    sent_ms: int | None = None


# ---------------------------------------------------------------- console accounts

Role = Literal["admin", "operator", "customer"]
ROLES: tuple[Role, ...] = ("admin", "operator", "customer")


@dataclass(frozen=True, slots=True)
class User:
    """A console account (`slawatch_user`). An admin or an operator sees everything; a customer account sees only
    the customers in `customers`. `password_hash` is an Argon2 hash, never the password."""

    name: str
    role: Role
    password_hash: str
    customers: tuple[str, ...] = ()
    created_ms: int = 0
    updated_ms: int = 0

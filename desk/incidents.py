"""An incident's life as pure steps: raise, re-open, worsen, recover, and what operators do (acknowledge, pause,
resume, priority, resolve); each step gives the incident after it, the events it appends and who is told."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass

from slawatch.model import ComponentRef, Fault, Incident, IncidentEvent, IncidentState, Pause

DESK = "slawatch"
"""The actor of what the desk does by itself."""

MAX_COMMENT_CHARS = 2000


class ActionError(Exception):
    """An operator's action that does not apply to the incident as it stands (the message says why)."""


@dataclass(frozen=True, slots=True)
class FaultSeen:
    """A component's fault as the desk sees it (with several agents: when the quorum says so)."""

    ref: ComponentRef
    fault: Fault
    start_ms: int
    reason: str
    agents: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Step:
    """One change of an incident: the incident after it, the events it appends, the notifications it asks for
    (kinds: open, reopen, ack, priority, pause, resume, escalation, resolve) and the fault it records, if any."""

    before_version: int
    incident: Incident
    events: tuple[IncidentEvent, ...]
    notify: tuple[str, ...] = ()
    fault_start_ms: int | None = None


def _detail(**fields: object) -> str:
    return json.dumps(fields, sort_keys=True, separators=(",", ":"))


def _comment(text: str) -> str:
    text = text.strip()
    if len(text) > MAX_COMMENT_CHARS:
        raise ActionError(f"comment too long ({len(text)} characters, at most {MAX_COMMENT_CHARS})")
    return text


def _step(before: Incident | None, after: Incident, now_ms: int, actions: Sequence[tuple[str, str, str, str]],
          notify: Sequence[str] = (), fault_start_ms: int | None = None) -> Step:
    """Number the events after the incident's version and move the version past them."""
    version = before.version if before is not None else 0
    events = tuple(IncidentEvent(after.id, version + k + 1, now_ms, action, actor, comment, detail)
                   for k, (action, actor, comment, detail) in enumerate(actions))
    after = dataclasses.replace(after, version=version + len(events), updated_ms=now_ms)
    return Step(version, after, events, tuple(notify), fault_start_ms)


# ---------------------------------------------------------------- what the desk does by itself


def raise_incident(id: str, seen: FaultSeen, priority: str, now_ms: int) -> Step:
    """A new incident for a confirmed fault, raised now (the response clock starts here)."""
    incident = Incident(id, seen.ref, seen.fault, seen.start_ms, now_ms, priority, IncidentState.OPEN, seen.reason,
                        seen.agents)
    detail = _detail(fault=seen.fault, priority=priority, start_ms=seen.start_ms, reason=seen.reason,
                     agents=list(seen.agents))
    return _step(None, incident, now_ms, [("opened", DESK, "", detail)], ["open"], seen.start_ms)


def reopen(incident: Incident, seen: FaultSeen, priority: str, now_ms: int) -> Step:
    """The component failed again soon after it recovered: the same incident is active again (not a new one).

    Its response clock is not started again: an acknowledgement given stands, and a never acknowledged incident
    keeps counting from its first raise."""
    state = IncidentState.ACKNOWLEDGED if incident.acknowledged_ms is not None else IncidentState.OPEN
    worse = _worse(incident.fault, seen.fault)
    after = dataclasses.replace(incident, state=state, resolved_ms=None, resolved_by="", fault=worse,
                                reason=seen.reason, agents=seen.agents,
                                priority=_higher(incident.priority, priority))
    detail = _detail(fault=seen.fault, start_ms=seen.start_ms, reason=seen.reason,
                     down_for_ms=None if incident.resolved_ms is None else seen.start_ms - incident.resolved_ms)
    return _step(incident, after, now_ms, [("reopened", DESK, "", detail)], ["reopen"], seen.start_ms)


def worsen(incident: Incident, seen: FaultSeen, priority: str, now_ms: int) -> Step | None:
    """A DEGRADED incident's component went DOWN: the incident says so, and its priority rises if the rules
    give DOWN a higher one (an operator's choice of priority is kept if it is higher still)."""
    if _worse(incident.fault, seen.fault) == incident.fault:
        return None
    new_priority = _higher(incident.priority, priority)
    after = dataclasses.replace(incident, fault=seen.fault, reason=seen.reason, agents=seen.agents,
                                priority=new_priority)
    actions = [("fault", DESK, "", _detail(fault=seen.fault, reason=seen.reason))]
    notify = []
    if new_priority != incident.priority:
        actions.append(("priority", DESK, f"the component is {seen.fault}",
                        _detail(old=incident.priority, new=new_priority)))
        notify.append("priority")
    return _step(incident, after, now_ms, actions, notify)


def recover(incident: Incident, at_ms: int, now_ms: int) -> Step | None:
    """The component is up again (at its effective instant `at_ms`): the incident is resolved."""
    if not incident.active:
        return None
    after = dataclasses.replace(incident, state=IncidentState.RESOLVED, resolved_ms=at_ms, resolved_by="",
                                pauses=_end_pause(incident.pauses, at_ms))
    detail = _detail(resolved_ms=at_ms, down_for_ms=at_ms - incident.start_ms)
    return _step(incident, after, now_ms, [("resolved", DESK, "the component recovered", detail)], ["resolve"])


def escalate(incident: Incident, handled: int, why: str, now_ms: int) -> Step:
    """`handled` escalation instants have passed unacknowledged: tell the escalation list once for them."""
    after = dataclasses.replace(incident, escalations=handled)
    return _step(incident, after, now_ms, [("escalated", DESK, why, _detail(escalations=handled))], ["escalation"])


# ---------------------------------------------------------------- what operators do


def _need_active(incident: Incident) -> None:
    if not incident.active:
        raise ActionError(f"{incident.id} is resolved")


def acknowledge(incident: Incident, by: str, comment: str, now_ms: int) -> Step:
    """The first acknowledgement stops the response clock; a paused incident stays paused."""
    _need_active(incident)
    if incident.acknowledged_ms is not None:
        raise ActionError(f"{incident.id} was already acknowledged by {incident.acknowledged_by}")
    comment = _comment(comment)
    state = IncidentState.PAUSED if incident.state is IncidentState.PAUSED else IncidentState.ACKNOWLEDGED
    after = dataclasses.replace(incident, state=state, acknowledged_ms=now_ms, acknowledged_by=by,
                                ack_comment=comment)
    return _step(incident, after, now_ms, [("acknowledged", by, comment, "")], ["ack"])


def pause(incident: Incident, by: str, reason: str, now_ms: int) -> Step:
    """Waiting on the customer (no remote access granted, customer unreachable): the clock stops."""
    _need_active(incident)
    if incident.state is IncidentState.PAUSED:
        raise ActionError(f"{incident.id} is already paused")
    reason = _comment(reason)
    if not reason:
        raise ActionError("a pause needs a reason (what the customer is to do)")
    after = dataclasses.replace(incident, state=IncidentState.PAUSED,
                                pauses=(*incident.pauses, Pause(now_ms, None, reason)))
    return _step(incident, after, now_ms, [("paused", by, reason, "")], ["pause"])


def resume(incident: Incident, by: str, comment: str, now_ms: int) -> Step:
    _need_active(incident)
    if incident.state is not IncidentState.PAUSED:
        raise ActionError(f"{incident.id} is not paused")
    comment = _comment(comment)
    state = IncidentState.ACKNOWLEDGED if incident.acknowledged_ms is not None else IncidentState.OPEN
    after = dataclasses.replace(incident, state=state, pauses=_end_pause(incident.pauses, now_ms))
    return _step(incident, after, now_ms, [("resumed", by, comment, "")], ["resume"])


def set_priority(incident: Incident, priority: str, by: str, why: str, now_ms: int) -> Step:
    _need_active(incident)
    why = _comment(why)
    if not why:
        raise ActionError("say why the priority changes (--comment)")
    if priority == incident.priority:
        raise ActionError(f"{incident.id} is already {priority}")
    after = dataclasses.replace(incident, priority=priority)
    return _step(incident, after, now_ms, [("priority", by, why, _detail(old=incident.priority, new=priority))],
                 ["priority"])


def resolve(incident: Incident, by: str, comment: str, now_ms: int) -> Step:
    """Resolved by hand (the component may still be down: the next fault of it raises a new incident)."""
    _need_active(incident)
    comment = _comment(comment)
    after = dataclasses.replace(incident, state=IncidentState.RESOLVED, resolved_ms=now_ms, resolved_by=by,
                                pauses=_end_pause(incident.pauses, now_ms))
    return _step(incident, after, now_ms, [("resolved", by, comment, _detail(resolved_ms=now_ms))], ["resolve"])


# ---------------------------------------------------------------- helpers


def _end_pause(pauses: tuple[Pause, ...], at_ms: int) -> tuple[Pause, ...]:
    if pauses and pauses[-1].end_ms is None:
        last = pauses[-1]
        return (*pauses[:-1], Pause(last.start_ms, max(at_ms, last.start_ms), last.reason))
    return pauses


def _worse(a: Fault, b: Fault) -> Fault:
    return "down" if "down" in (a, b) else "degraded"


def priority_rank(priority: str) -> tuple[int, str]:
    """P1 before P2 ...; names without a number after those, by name."""
    digits = "".join(ch for ch in priority if ch.isdigit())
    return (int(digits), priority) if digits else (1 << 30, priority)


def _higher(a: str, b: str) -> str:
    return min(a, b, key=priority_rank)

"""reporter.source: what a store read becomes for the availability engine."""

from __future__ import annotations

from reporter.availability import Change, Interval
from reporter.source import AgentViews, agent_views
from slawatch.model import AgentHeartbeats, ComponentRef, StateChange


def change(component: str, agent: str, ts_ms: int, up: bool, reason: str) -> StateChange:
    return StateChange(ComponentRef(component, "sip", "gold", "acme"), agent, ts_ms, up, reason)


def test_agent_views_groups_changes_and_derives_coverage() -> None:
    changes = [change("sip-1", "mon-a", 1000, False, "x"), change("sip-1", "mon-b", 500, True, ""),
               change("sip-1", "mon-a", 0, True, ""), change("sip-2", "mon-a", 0, True, "")]
    heartbeats = {"mon-a": AgentHeartbeats("mon-a", [0, 60_000, 120_000, 600_000], 60.0),
                  "mon-c": AgentHeartbeats("mon-c", [0], 60.0)}
    views = agent_views(changes, heartbeats, "sip-1")
    assert [v.agent for v in views] == ["mon-a", "mon-b"]
    assert views[0].changes == (Change(0, True, ""), Change(1000, False, "x"))
    assert views[0].coverage == (Interval(0, 180_000), Interval(600_000, 660_000))
    assert views[1].changes == (Change(500, True, ""),)
    assert views[1].coverage == ()  # no heartbeats: never counted as watching
    assert agent_views(changes, heartbeats, "nope") == []
    assert [v.agent for v in agent_views(changes, heartbeats, "sip-2")] == ["mon-a"]
    assert AgentViews(changes, heartbeats).components() == ["sip-1", "sip-2"]
    # A different list (even equal) is indexed afresh.
    assert agent_views(changes[:1], heartbeats, "sip-1")[0].changes == (Change(1000, False, "x"),)

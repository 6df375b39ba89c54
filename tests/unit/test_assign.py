"""Rendezvous assignment, lease liveness and the zone rule (agent/assign.py): tables and properties."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.assign import (
    Assigner,
    Member,
    auto_members,
    is_live,
    live_ms,
    owners,
    renew_every_s,
    watches_zone,
    weight,
)
from slawatch.model import AgentLease

NAMES = st.text(alphabet="abcdefghij0123456789-", min_size=1, max_size=8)
AGENTS = st.lists(NAMES, min_size=1, max_size=6, unique=True)
COMPONENTS = st.lists(NAMES, min_size=1, max_size=40, unique=True)
REPLICAS = st.integers(min_value=1, max_value=4)


def lease(agent: str, seen_ms: int, *, heartbeat_s: float = 6.0, zone: str = "", assign: str = "auto") -> AgentLease:
    return AgentLease(agent, seen_ms, 0, heartbeat_s, zone, "auto" if assign == "auto" else "static", 1, 0, "h", "v")


def test_weight_is_blake2b_of_agent_and_component() -> None:
    # Fixed values: the same on every host, Python build and run (never the salted hash()).
    assert weight("a1", "sip-1") == weight("a1", "sip-1")
    assert weight("a1", "sip-1") != weight("a2", "sip-1")
    assert weight("a1", "sip-1") == 0x197cbacf005f487e  # blake2b(b"a1\\0sip-1", digest_size=8), big-endian
    assert 0 <= weight("x", "y") < 2**64


@pytest.mark.parametrize(("agents", "replicas", "count"), [
    (["a"], 1, 1), (["a"], 3, 1), (["a", "b"], 2, 2), (["a", "b", "c"], 2, 2), (["a", "b", "c"], 5, 3),
])
def test_owners_count(agents: list[str], replicas: int, count: int) -> None:
    assert len(owners("comp", agents, replicas)) == count


@pytest.mark.parametrize(("agent_zone", "component_zone", "mode", "watched"), [
    (None, None, "static", True), (None, None, "auto", True),
    ("eu", "eu", "static", True), ("eu", "eu", "auto", True),
    ("eu", None, "static", True),  # static: a zoned agent also watches the components without a zone
    ("eu", None, "auto", False),
    (None, "eu", "static", False), (None, "eu", "auto", False),
    ("us", "eu", "static", False), ("us", "eu", "auto", False),
])
def test_zone_rule(agent_zone: str | None, component_zone: str | None, mode: str, watched: bool) -> None:
    assert watches_zone(agent_zone, component_zone, "auto" if mode == "auto" else "static") is watched


@pytest.mark.parametrize(("heartbeat_s", "renew_s", "live"), [
    (60.0, 15.0, 40_000), (2.0, 0.5, 1333), (0.5, 0.25, 500), (0.1, 0.25, 500),
])
def test_liveness_figures(heartbeat_s: float, renew_s: float, live: int) -> None:
    assert renew_every_s(heartbeat_s) == renew_s
    assert live_ms(heartbeat_s) == live
    # A stopped agent is seen stale and its share read by the others within one heartbeat period.
    if heartbeat_s >= 1:
        assert live / 1000 + renew_s < heartbeat_s


def test_live_leases_of_auto_agents_only() -> None:
    now = 100_000
    leases = [lease("b", now - 3000), lease("a", now - 5000), lease("c", now - 3000, assign="static"),
              lease("d", now - 4001, zone="eu"), lease("e", now, heartbeat_s=60.0)]
    assert is_live(leases[0], now) and not is_live(leases[1], now)
    assert auto_members(leases, now) == [Member("b", None), Member("e", None)]


def test_shares_table() -> None:
    comps = {f"c{i}": None for i in range(6)} | {"z1": "eu", "z2": "eu"}
    a = Assigner(comps)
    members = [Member("a", None), Member("b", None), Member("e", "eu")]
    shares = a.shares(members, 1)
    assert shares["e"] == {"z1", "z2"}  # the only agent of its zone
    assert shares["a"] | shares["b"] == {f"c{i}" for i in range(6)}
    assert not shares["a"] & shares["b"]
    for name in shares["a"]:
        assert owners(name, ["a", "b"], 1) == ("a",)
    # fewer agents than replicas: every one watches everything of its zone
    assert a.shares(members, 2)["a"] == a.shares(members, 2)["b"] == {f"c{i}" for i in range(6)}
    assert a.share("nobody", members, 1) == frozenset()


@settings(max_examples=60, deadline=None)
@given(COMPONENTS, AGENTS, REPLICAS)
def test_shares_agree_with_owners(components: list[str], agents: list[str], replicas: int) -> None:
    shares = Assigner(dict.fromkeys(components)).shares([Member(x, None) for x in agents], replicas)
    for c in components:
        holders = {a for a, names in shares.items() if c in names}
        assert holders == set(owners(c, agents, replicas))  # deterministic: the same from both paths
        assert len(holders) == min(replicas, len(agents))  # distinct replicas, never fewer than possible


@settings(max_examples=60, deadline=None)
@given(COMPONENTS, AGENTS, REPLICAS, st.data())
def test_leaving_agent_moves_only_its_components(components: list[str], agents: list[str], replicas: int,
                                                 data: st.DataObject) -> None:
    gone = data.draw(st.sampled_from(agents))
    rest = [a for a in agents if a != gone]
    assigner = Assigner(dict.fromkeys(components))
    before = assigner.shares([Member(a, None) for a in agents], replicas)
    after = assigner.shares([Member(a, None) for a in rest], replicas)
    for a in rest:
        assert before[a] <= after[a]  # nobody loses a component
        assert after[a] - before[a] <= before[gone]  # and what it gains came from the agent that left


@settings(max_examples=60, deadline=None)
@given(COMPONENTS, AGENTS, REPLICAS, NAMES)
def test_joining_agent_takes_only_what_goes_to_it(components: list[str], agents: list[str], replicas: int,
                                                  new: str) -> None:
    if new in agents:
        return
    assigner = Assigner(dict.fromkeys(components))
    before = assigner.shares([Member(a, None) for a in agents], replicas)
    after = assigner.shares([Member(a, None) for a in [*agents, new]], replicas)
    for a in agents:
        assert after[a] <= before[a]  # nobody gains a component
        assert before[a] - after[a] <= after[new]  # what it lost went to the new agent


def test_balance_within_a_bound() -> None:
    components = {f"sip-{i:05d}": None for i in range(20_000)}
    agents = [Member(f"agent-{i}", None) for i in range(10)]
    for replicas in (1, 2, 3):
        shares = Assigner(components).shares(agents, replicas)
        expected = len(components) * replicas / len(agents)
        sizes = [len(s) for s in shares.values()]
        # binomial spread: sd = sqrt(n p (1-p)) ~ 42..65 here; 6 % is more than 5 sd
        assert max(abs(n - expected) for n in sizes) < 0.06 * expected, sizes
        assert sum(sizes) == len(components) * replicas


def test_columns_of_agents_that_left_are_forgotten() -> None:
    a = Assigner({"c1": None, "c2": None})
    a.shares([Member("x", None), Member("y", None)], 1)
    a.shares([Member("x", None), Member("z", None)], 1)
    assert {agent for _, agent in a._columns} == {"x", "z"}

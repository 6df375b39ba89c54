"""The console's pure rules from tables and properties: who may see what, the login lock, a component's state and
since from its agents' latest changes, the overview filter, the sparkline."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from console.board import SPARK_POINTS, Spark, Status, _state_of, fresh_agents, spark, spark_steps
from console.context import mask_token, may_redirect_to, token_matches
from console.limits import LoginLimiter
from console.pages.overview import matches, spark_svg
from console.scope import may_see
from slawatch.model import AgentHeartbeats, ComponentRef, StateChange, User

REF = ComponentRef("pbx-1", "sip", "gold", "acme")


def user(role: str, *customers: str) -> User:
    return User("u", role, "hash", customers)  # type: ignore[arg-type]


@pytest.mark.parametrize(("who", "customer", "sees"), [
    (user("admin"), "acme", True),
    (user("admin"), "", True),
    (user("operator"), "globex", True),
    (user("operator"), None, True),
    (user("customer", "acme"), "acme", True),
    (user("customer", "acme"), "globex", False),
    (user("customer", "acme", "globex"), "globex", True),
    (user("customer", "acme"), "", False),  # what belongs to no customer is the provider's
    (user("customer", "acme"), None, False),
    (user("customer"), "acme", False),
    (user("customer", "acme"), "ACME", False),
    (user("customer", "acme"), "acme ", False),
])
def test_may_see(who: User, customer: str | None, sees: bool) -> None:
    assert may_see(who, customer) is sees


names = st.text(min_size=0, max_size=8)


@given(st.lists(names, max_size=4), names)
def test_a_customer_account_sees_exactly_its_own_customers(customers: list[str], customer: str) -> None:
    assert may_see(user("customer", *customers), customer) is (customer != "" and customer in customers)
    assert may_see(user("operator", *customers), customer) is True


def test_five_wrong_passwords_lock_until_the_lock_time_after_the_last() -> None:
    limiter = LoginLimiter(5, 60.0)
    keys = ["user:ops", "addr:127.0.0.1"]
    for t in range(4):
        limiter.failed(keys, float(t))
        assert limiter.locked_for(keys, float(t)) == 0
    limiter.failed(keys, 10.0)
    assert limiter.locked_for(keys, 10.0) == 60.0
    assert limiter.locked_for(["addr:127.0.0.1", "user:other"], 30.0) == 40.0  # the address is locked too
    assert limiter.locked_for(keys, 69.9) == pytest.approx(0.1)  # however old the first failures are
    assert limiter.locked_for(keys, 70.0) == 0
    assert limiter.locked_for(["user:other"], 30.0) == 0


def test_old_failures_expire_and_a_success_clears_the_user_only() -> None:
    limiter = LoginLimiter(3, 10.0)
    limiter.failed(["user:a", "addr:x"], 0.0)
    limiter.failed(["user:a", "addr:x"], 1.0)
    limiter.failed(["user:a", "addr:x"], 1000.0)  # the first two are older than the window (900 s): forgotten
    assert limiter.locked_for(["user:a"], 1000.0) == 0
    limiter.failed(["user:a", "addr:x"], 1001.0)
    limiter.succeeded(["user:a"])
    limiter.failed(["user:b", "addr:x"], 1002.0)
    assert limiter.locked_for(["user:a"], 1002.0) == 0
    assert limiter.locked_for(["addr:x"], 1002.0) == 10.0


def test_the_limiter_remembers_a_bounded_number_of_keys() -> None:
    limiter = LoginLimiter(5, 60.0)
    for i in range(20_000):
        limiter.failed([f"addr:{i}"], 0.0)
    assert len(limiter) == 10_000


def change(agent: str, ts: int, up: bool, reason: str = "", degraded: bool = False) -> StateChange:
    return StateChange(REF, agent, ts, up, reason, degraded)


@pytest.mark.parametrize(("views", "quorum", "expected"), [
    ([], None, ("unmonitored", None, "")),
    ([change("a", 100, True)], None, ("up", 100, "")),
    ([change("a", 100, False, "SIP 503")], None, ("down", 100, "SIP 503")),
    ([change("a", 100, True, "on battery", degraded=True)], None, ("degraded", 100, "on battery")),
    # Two agents, majority 2: one down is not enough; the component is up since the other's last recovery.
    ([change("a", 100, False, "x"), change("b", 50, True)], None, ("up", 50, "")),
    # Quorum 1: down from the first agent that saw it.
    ([change("a", 100, False, "x"), change("b", 80, False, "y")], 1, ("down", 80, "x; y")),
    # Majority of 3 is 2: down from the second agent's change.
    ([change("a", 100, False, "x"), change("b", 300, False, "x"), change("c", 200, False, "x")], None,
     ("down", 200, "x")),
])
def test_state_and_since_from_the_agents_latest_changes(views: list[StateChange], quorum: int | None,
                                                         expected: tuple[str, int | None, str]) -> None:
    assert _state_of(views, quorum)[:3] == expected


def test_an_agent_that_stopped_beating_no_longer_counts() -> None:
    beats = {"a": AgentHeartbeats("a", [1000, 2000], 1.0), "b": AgentHeartbeats("b", [1000, 4500], 1.0),
             "c": AgentHeartbeats("c", [], 1.0)}
    assert fresh_agents(beats, 5000) == {"b"}
    assert fresh_agents(beats, 4999) == {"a", "b"}


@pytest.mark.parametrize(("query", "state", "shown"), [
    ("", "", True), ("pbx", "", True), ("PBX acme", "", True), ("battery", "", True), ("globex", "", False),
    ("", "down", True), ("", "up", False), ("pbx", "up", False), ("pbx nothing", "", False),
])
def test_the_overview_filter(query: str, state: str, shown: bool) -> None:
    st_ = Status("pbx-1", "sip", "gold", "acme", "down", 1, "UPS on battery")
    assert matches(st_, query, state) is shown


def test_sparkline_averages_steps_and_is_none_without_latency() -> None:
    assert spark([], 0, 1000) is None
    assert spark([(10, None)], 0, 1000) is None
    line = spark([(0, 1.0), (10, 3.0), (500, 3.0), (999, 2.0), (1000, 99.0), (-1, 99.0)], 0, 1000)
    assert line is not None and line.top_ms == 3.0
    # Three buckets with data (the first averages 1 and 3); the points outside the span are left out.
    assert [p.split(",")[1] for p in line.points.split()] == ["8", "1", "8"]
    dot = spark([(5, 4.0)], 0, 1000)
    assert dot is not None and len(dot.points.split()) == 2  # one point: drawn as a dot


@given(st.lists(st.tuples(st.integers(0, 9999), st.one_of(st.none(), st.floats(0, 1e6))), max_size=50))
def test_sparkline_stays_in_its_box(points: list[tuple[int, float | None]]) -> None:
    line = spark(points, 0, 10_000, width=120, height=24)
    if line is None:
        assert all(ms is None for _, ms in points)
        return
    for pair in line.points.split():
        x, y = map(float, pair.split(","))
        assert 0 <= x <= 120 and 0 <= y <= 24


@given(st.integers(0, 2**42), st.integers(60_000, 7 * 86_400_000))
def test_spark_steps_end_after_now_on_multiples_of_the_step(now: int, span: int) -> None:
    start, end, step = spark_steps(now, span)
    assert start % step == 0 and end % step == 0 and end - start == SPARK_POINTS * step
    assert start <= now < end and end - now <= step


@pytest.mark.parametrize(("target", "to"), [
    ("/", "/"), ("/components/pbx-1?x=1", "/components/pbx-1?x=1"), ("/%2F%2Fevil.example", "/%2F%2Fevil.example"),
    ("//evil.example", "/"), ("/\\evil.example", "/"), ("/\t/evil.example", "/"), ("/\n/x", "/"),
    ("https://evil.example/", "/"), ("", "/"), ("javascript:alert(1)", "/"), ("/a b", "/"),
])
def test_sign_in_only_sends_back_to_this_console(target: str, to: str) -> None:
    assert may_redirect_to(target) == to


@given(st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=16, max_size=64))
def test_a_masked_token_matches_only_its_token(token: str) -> None:
    a, b = mask_token(token), mask_token(token)
    assert a != b  # a fresh pad each time: a compressed page never repeats the token's bytes
    assert token_matches(a, token) and token_matches(b, token)
    assert not token_matches(a, token[:-1] + ("x" if token[-1] != "x" else "y"))
    assert not token_matches(token, token) and not token_matches("", token) and not token_matches("%%%", token)


def test_a_sparkline_is_written_from_numbers_only() -> None:
    line = spark_svg(Spark(120, 24, "0,1 3,2", 4.25))
    assert line == ('<svg class="spark" width="120" height="24" role="img" aria-label="latency up to 4.2 ms">'
                    '<polyline points="0,1 3,2"/></svg>')
    assert spark_svg(None) == ""
    with pytest.raises(ValueError):
        spark_svg(Spark(120, 24, '0,1"/><script>alert(1)</script>', 1.0))

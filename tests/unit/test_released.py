"""Released state changes in the readers: an agent's view ends at its release (reporter.availability)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from reporter.availability import AgentView, Policy, availability, current_state
from reporter.periods import month_period
from slawatch.model import ComponentRef, Interval, StateChange

S = 1000
H = 3600 * S
D = 24 * H
APRIL = month_period(2026, 4, "UTC")
REF = ComponentRef("sip-core", "sip", "gold", "acme")
T0 = APRIL.start_ms


def change(agent: str, ts_ms: int, up: bool, *, released: bool = False, degraded: bool = False) -> StateChange:
    return StateChange(REF, agent, ts_ms, up, "" if up else "refused", degraded, released)


def watched(agent: str, changes: list[StateChange]) -> AgentView:
    return AgentView(agent, changes, [Interval(APRIL.start_ms - 40 * D, APRIL.end_ms + 40 * D)])


def report(*views: AgentView) -> tuple[int, int, int]:
    a = availability(APRIL, list(views), [], Policy(), 99.9)
    return a.up_ms, a.down_ms, a.unmonitored_ms


def test_release_ends_the_view() -> None:
    # A watches from the start and releases at day 10; nobody else: unmonitored from then on.
    a = watched("a", [change("a", T0 - D, True), change("a", T0 + 10 * D, True, released=True)])
    up, down, unmon = report(a)
    assert (up, down, unmon) == (10 * D, 0, APRIL.duration_ms - 10 * D)


def test_release_then_own_later_change_resumes() -> None:
    a = watched("a", [change("a", T0 - D, True), change("a", T0 + 10 * D, True, released=True),
                      change("a", T0 + 12 * D, False)])
    up, down, unmon = report(a)
    assert (up, down, unmon) == (10 * D, APRIL.duration_ms - 12 * D, 2 * D)


def test_handover_with_overlap_leaves_no_unmonitored_time() -> None:
    # A hands over to B at day 10: B's first change comes before A's release.
    a = watched("a", [change("a", T0 - D, True), change("a", T0 + 10 * D + 5 * S, True, released=True)])
    b = watched("b", [change("b", T0 + 10 * D, True)])
    up, down, unmon = report(a, b)
    assert (up, down, unmon) == (APRIL.duration_ms, 0, 0)


def test_after_release_the_new_owner_alone_decides() -> None:
    # A saw it up and released it at day 10; B, the new owner, sees it down from day 11. Without the release A's stale
    # "up" would keep the majority of two from being reached (1 of 2 down): no downtime.
    a_changes = [change("a", T0 - D, True), change("a", T0 + 10 * D, True, released=True)]
    b_changes = [change("b", T0 + 10 * D - S, True), change("b", T0 + 11 * D, False)]
    _, down, _ = report(watched("a", a_changes), watched("b", b_changes))
    assert down == APRIL.duration_ms - 11 * D
    # the same store read by an old reader that ignores `released`: A's "up" hides B's "down"
    stale = [c._replace(released=False) for c in a_changes]
    assert report(watched("a", stale), watched("b", b_changes))[1] == 0
    # the state now, for the desk and the console
    now = current_state([a_changes[-1], b_changes[-1]], None)
    assert now is not None and now.state == "down" and now.agents == ("b",)
    assert current_state([a_changes[-1]], None) is None


def test_release_sorts_before_a_change_at_the_same_instant() -> None:
    t = T0 + 5 * D
    a = watched("a", [change("a", T0 - D, True), change("a", t, False), change("a", t, False, released=True)])
    assert report(a)[1] == APRIL.duration_ms - 5 * D  # the down at t is the later view


@settings(max_examples=80, deadline=None)
@given(st.integers(1, 29 * 24), st.integers(0, 3600), st.booleans(), st.booleans())
def test_handover_overlap_property(handover_h: int, overlap_s: int, up_before: bool, b_up: bool) -> None:
    """A hand-over from A to B where B's first change is at or before A's release: no unmonitored time, and from
    the release on the component's state is B's alone."""
    t = T0 + handover_h * H
    a = watched("a", [change("a", T0 - D, up_before), change("a", t + overlap_s * S, up_before, released=True)])
    b = watched("b", [change("b", t, b_up)])
    result = availability(APRIL, [a, b], [], Policy(), 99.9)
    assert result.unmonitored_ms == 0
    assert result.up_ms + result.down_ms == APRIL.duration_ms
    after_release = APRIL.end_ms - (t + overlap_s * S)
    if b_up:
        assert result.down_ms <= t + overlap_s * S - T0  # none after the release
    else:
        assert result.down_ms >= after_release  # B alone: down from the release on
    now = current_state([a.changes[-1], b.changes[-1]], None)
    assert now is not None and now.agents == ("b",)

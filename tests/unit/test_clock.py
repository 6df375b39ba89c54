"""The agent's clock: monotonic stamps anchored to the wall clock, steps detected, logged and re-anchored."""

from __future__ import annotations

import logging
import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.clock import Clock, Step

S = 1_000_000_000  # ns


class Times:
    """A wall clock and a monotonic clock the test moves by hand."""

    def __init__(self) -> None:
        self.wall = 1_700_000_000 * S
        self.mono = 5 * S

    def advance(self, seconds: float) -> None:
        self.wall += int(seconds * S)
        self.mono += int(seconds * S)

    def clock(self) -> Clock:
        return Clock(wall_ns=lambda: self.wall, elapsed_ns=lambda: self.mono)


def test_stamps_follow_monotonic_time_through_small_wall_clock_wobbles() -> None:
    t = Times()
    clock = t.clock()
    first = clock.stamp()
    assert first.ms == 1_700_000_000_000 and first.epoch == 0
    t.advance(10)
    t.wall -= int(0.4 * S)  # below the threshold: not a step, stamps stay on the monotonic clock
    assert clock.now_ms() == 1_700_000_010_000
    t.advance(1)
    stamp = clock.stamp()
    assert (stamp.ms, stamp.mono_ms - first.mono_ms, stamp.epoch) == (1_700_000_011_000, 11_000, 0)


@pytest.mark.parametrize("offset_s", [-60.0, 300.0])
def test_a_step_is_logged_and_the_clock_re_anchors(offset_s: float, caplog: pytest.LogCaptureFixture) -> None:
    t = Times()
    clock = t.clock()
    steps: list[Step] = []
    clock.on_step.append(steps.append)
    t.advance(5)
    before = clock.now_ms()
    t.advance(2)
    t.wall += int(offset_s * S)
    with caplog.at_level(logging.WARNING, "agent.clock"):
        stamp = clock.stamp()
    # the wall clock, which NTP just set (odd after a step back: those instants were handed out before)
    assert stamp.ms == before + 2000 + int(offset_s * 1000) + (offset_s < 0)
    assert stamp.epoch == 1
    assert steps == [Step(before + 2000, before + 2000 + int(offset_s * 1000))]
    assert steps[0].offset_ms == int(offset_s * 1000)
    assert [r.getMessage() for r in caplog.records] == [
        f"wall clock stepped by {offset_s:+.1f} s; time stamps follow it from now on"]
    t.advance(1)
    assert clock.stamp().ms == stamp.ms + 1000  # re-anchored: steady again, no second step
    assert clock.epoch == 1


def test_a_failing_hook_does_not_break_stamping(caplog: pytest.LogCaptureFixture) -> None:
    t = Times()
    clock = t.clock()

    def broken(step: Step) -> None:
        raise RuntimeError("boom")

    clock.on_step.append(broken)
    t.wall += 5 * S
    with caplog.at_level(logging.WARNING, "agent.clock"):
        assert clock.now_ms() == t.wall // 1_000_000
    assert "clock step hook failed" in caplog.text


def test_the_real_clock_agrees_with_the_wall_clock() -> None:
    clock = Clock()
    assert abs(clock.now_ms() - time.time_ns() // 1_000_000) < 50
    assert clock.epoch == 0


def test_after_a_step_back_stamps_never_meet_those_handed_out_before() -> None:
    t = Times()
    clock = t.clock()
    before = []
    for _ in range(100):
        t.advance(0.25)
        before.append(clock.now_ms())
    assert all(ms % 2 == 0 for ms in before)
    t.wall -= 20 * S  # back 20 s: the next 20 s of stamps run over instants already handed out
    after = []
    for _ in range(100):
        after.append(clock.now_ms())
        t.advance(0.25)
    overlap = [ms for ms in after if ms <= before[-1] + 1]
    assert len(overlap) == 81 and all(ms % 2 == 1 for ms in overlap)
    assert all(ms % 2 == 0 for ms in after[81:])
    assert not set(before) & set(after)
    assert after == sorted(after)


@given(st.lists(st.tuples(st.integers(2, 5_000), st.integers(0, 400_000)), min_size=1, max_size=200),
       st.integers(0, 199), st.integers(1_001, 300_000))
def test_no_stamp_is_handed_out_twice_across_a_step_back(moves: list[tuple[int, int]], back_at: int,
                                                         back_ms: int) -> None:
    # runs at least 2 ms apart (one probe), forward steps anywhere, one step back
    t = Times()
    clock = t.clock()
    stamps = []
    for i, (advance_ms, forward_ms) in enumerate(moves):
        t.advance(advance_ms / 1000)
        t.wall += forward_ms * 1_000_000
        if i == back_at:
            t.wall -= back_ms * 1_000_000
        stamps.append(clock.now_ms())
    assert len(set(stamps)) == len(stamps)

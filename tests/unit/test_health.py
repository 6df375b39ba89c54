"""The figures behind /healthz: how long a backlog has kept growing, how long writes have kept failing."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.health import Growth, Streak


@pytest.mark.parametrize(("observations", "now", "growing_s"), [
    ([], 10.0, 0.0),
    ([(0.0, 0), (1.0, 0), (2.0, 0)], 5.0, 0.0),  # empty
    ([(0.0, 500), (1.0, 500), (2.0, 500)], 5.0, 0.0),  # steady: not growing
    ([(0.0, 10), (1.0, 20), (2.0, 30), (3.0, 40)], 5.0, 5.0),  # growing since the first look
    ([(0.0, 10), (1.0, 900), (2.0, 10), (3.0, 20)], 5.0, 3.0),  # came back down at 2 s
    ([(0.0, 10), (1.0, 900), (2.0, 300), (3.0, 800)], 5.0, 5.0),  # never back to 10: growing since 0 s
    ([(0.0, 5000), (1.0, 4000), (2.0, 3000), (3.0, 3500)], 5.0, 3.0),  # catching up, then growing again
    ([(0.0, 10), (1.0, 20), (2.0, 0)], 5.0, 0.0),  # drained
])
def test_growth(observations: list[tuple[float, int]], now: float, growing_s: float) -> None:
    g = Growth()
    for t, n in observations:
        g.observe(t, n)
    assert g.growing_for(now) == growing_s


def test_streak() -> None:
    s = Streak()
    assert s.failing_for(5.0) == 0.0 and s.ok(5.0) is None
    s.fail(10.0, "refused")
    s.fail(12.0, "timeout")
    assert s.failing_for(15.0) == 5.0 and s.error == "timeout"
    assert s.ok(16.0) == 6.0
    assert s.failing_for(20.0) == 0.0


@settings(max_examples=60, deadline=None)
@given(rate=st.integers(50, 5000), write_every=st.floats(0.2, 1.2), write_s=st.floats(0.001, 0.1),
       look_every=st.floats(0.9, 1.1), seed=st.integers(0, 2**32 - 1))
def test_a_store_that_keeps_up_never_seems_to_grow_and_one_that_stops_does(
        rate: int, write_every: float, write_s: float, look_every: float, seed: int) -> None:
    """A busy backlog sampled once a second rises and falls with each write. Its lowest look is soon a record no
    later look goes under: without the drain's reports of an empty backlog, a store that keeps up would seem to grow
    for ever."""
    rnd = random.Random(seed)
    g = Growth()
    spooled = stored = 0.0  # points, as functions of time: spooled = rate × t; stored at each write's end
    t_write, t_look, t = 0.0, rnd.uniform(0, look_every), 0.0
    worst = 0.0
    stop_at = 1200.0  # the store stops answering here
    while t < 1800.0:
        t = min(t_write, t_look)
        if t == t_write:
            if t < stop_at:
                stored = rate * t  # it read all there was and stored it within write_s
                g.observe(t + write_s, 0)  # the drain: all there was is read
            t_write = t + write_s + write_every * rnd.uniform(0.97, 1.03)
        else:
            spooled = rate * t
            g.observe(t, int(spooled - stored))
            if t < stop_at:
                worst = max(worst, g.growing_for(t))
            t_look = t + look_every * rnd.uniform(0.99, 1.01)
    assert worst <= write_every * 1.03 + write_s + look_every * 1.01
    assert g.growing_for(t) >= t - stop_at - write_every * 1.03 - write_s - look_every  # stopped: growing since

"""The figures behind /healthz: how long a backlog has kept growing, how long writes have kept failing."""

from __future__ import annotations

import pytest

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

"""Component state machine: confirmation streaks, effective timestamps, require all/any."""

from __future__ import annotations

import itertools

from hypothesis import given
from hypothesis import strategies as st

from agent.model import ComponentRef, Outcome, Result
from agent.state import ComponentState, format_duration

REF = ComponentRef("c1", "sip", "gold", "acme")
UP = Result(Outcome.UP)
DEG = Result(Outcome.DEGRADED, "on battery")
DOWN = Result(Outcome.TIMEOUT, "no answer within 2s")


def machine(probes: tuple[str, ...] = ("p",), require: str = "all", down: int = 2, up: int = 1) -> ComponentState:
    return ComponentState(REF, "a1", probes, require, down, up)


def feed(state: ComponentState, runs: list[tuple[str, int, Result]]) -> list[tuple[int, bool, str]]:
    out = []
    for probe, ts, result in runs:
        change = state.observe(probe, ts, result)
        if change is not None:
            out.append((change.ts_ms, change.up, change.reason))
    return out


def test_first_state_is_written_and_down_dates_from_first_failure() -> None:
    s = machine()
    changes = feed(s, [("p", 0, UP), ("p", 10, DOWN), ("p", 20, DOWN), ("p", 30, DOWN), ("p", 40, UP)])
    assert changes == [(0, True, ""), (10, False, "no answer within 2s"), (40, True, "")]


def test_a_single_failure_below_confirmation_changes_nothing() -> None:
    s = machine(down=3)
    assert feed(s, [("p", 0, UP), ("p", 10, DOWN), ("p", 20, DOWN), ("p", 30, UP), ("p", 40, DOWN)]) == [
        (0, True, "")]
    assert s.pending("p")


def test_recovery_needs_confirm_up_good_runs_dated_at_the_first() -> None:
    s = machine(down=1, up=3)
    changes = feed(s, [("p", 0, DOWN), ("p", 10, UP), ("p", 20, UP), ("p", 25, DOWN), ("p", 30, UP),
                       ("p", 40, UP), ("p", 50, UP)])
    assert changes == [(0, False, "no answer within 2s"), (30, True, "")]


def test_degraded_counts_as_up_with_its_reason() -> None:
    s = machine(down=1)
    assert feed(s, [("p", 0, DEG)]) == [(0, True, "p: on battery")]


def test_require_all_any_probe_down_takes_it_down() -> None:
    s = machine(("a", "b"), "all", down=1)
    changes = feed(s, [("a", 0, UP), ("b", 1, UP), ("a", 10, UP), ("b", 11, DOWN), ("a", 20, UP),
                       ("b", 21, UP)])
    assert changes == [(1, True, ""), (11, False, "b: no answer within 2s"), (21, True, "")]


def test_require_any_needs_every_probe_down() -> None:
    s = machine(("a", "b"), "any", down=1)
    changes = feed(s, [("a", 0, UP), ("a", 10, DOWN), ("b", 12, DOWN), ("a", 20, DOWN), ("b", 22, UP)])
    # up from the first good probe; down only when the last probe failed; up again at the first good one
    assert changes == [(0, True, ""), (12, False, "a: no answer within 2s; b: no answer within 2s"),
                       (22, True, "")]


def test_unknown_probe_is_ignored() -> None:
    s = machine()
    assert s.observe("zzz", 0, DOWN) is None


def test_format_duration() -> None:
    assert [format_duration(ms) for ms in (0, 59_999, 252_000, 7_380_000, 273_600_000)] == [
        "0s", "59s", "4m12s", "2h03m", "3d04h"]


@given(st.lists(st.booleans(), min_size=1, max_size=60), st.integers(1, 4), st.integers(1, 4))
def test_changes_alternate_and_date_at_a_streak_start(runs: list[bool], down: int, up: int) -> None:
    s = machine(down=down, up=up)
    results = [("p", i * 10, UP if ok else DOWN) for i, ok in enumerate(runs)]
    changes = feed(s, results)
    for (_, a, _), (_, b, _) in itertools.pairwise(changes):
        assert a != b
    for ts, is_up, _ in changes:
        i = ts // 10
        assert runs[i] == is_up
        assert i == 0 or runs[i - 1] != is_up  # the first run of its streak
        need = up if is_up else down
        assert all(r == is_up for r in runs[i:i + need]) and len(runs[i:i + need]) == need


@given(st.lists(st.booleans(), min_size=1, max_size=60))
def test_with_confirmation_one_the_state_follows_every_run(runs: list[bool]) -> None:
    s = machine(down=1, up=1)
    feed(s, [("p", i, UP if ok else DOWN) for i, ok in enumerate(runs)])
    assert s.up == runs[-1]


def test_degraded_is_up_and_remembered_until_a_plain_up() -> None:
    s = machine(down=1)
    feed(s, [("p", 0, DEG)])
    assert s.up is True and s.degraded == {"p": "on battery"}
    feed(s, [("p", 10, UP)])
    assert s.degraded == {}

"""Component state machine: confirmation streaks, effective timestamps, require all/any."""

from __future__ import annotations

import itertools
import logging

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.state import ComponentState, format_duration, log_change, log_degraded
from slawatch.model import ComponentRef, Outcome, Result

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


def changes_of(state: ComponentState, runs: list[tuple[str, int, Result]]) -> list[tuple[int, bool, bool, str]]:
    out = []
    for probe, ts, result in runs:
        change = state.observe(probe, ts, result)
        if change is not None:
            out.append((change.ts_ms, change.up, change.degraded, change.reason))
    return out


def test_degraded_is_confirmed_like_down_and_dated_at_its_first_run() -> None:
    s = machine(down=2)
    assert changes_of(s, [("p", 0, UP), ("p", 10, DEG), ("p", 20, UP), ("p", 30, DEG), ("p", 40, DEG),
                          ("p", 50, DEG), ("p", 60, UP), ("p", 70, UP)]) == [
        (0, True, False, ""), (30, True, True, "on battery"), (60, True, False, "")]
    assert s.in_degraded is False and s.since_ms == 60


def test_a_component_first_seen_degraded_comes_up_degraded() -> None:
    s = machine(down=1)
    assert changes_of(s, [("p", 0, DEG), ("p", 10, DEG)]) == [(0, True, True, "p: on battery")]
    assert s.in_degraded


def test_down_ends_degraded_and_a_recovery_to_degraded_says_so() -> None:
    s = machine(probes=("a", "b"), down=1)
    got = changes_of(s, [("a", 0, UP), ("b", 0, UP), ("a", 10, DEG), ("b", 20, DOWN), ("b", 30, UP),
                         ("a", 40, UP)])
    assert got == [(0, True, False, ""), (10, True, True, "a: on battery"),
                   (20, False, False, "b: no answer within 2s"), (30, True, True, "a: on battery"),
                   (40, True, False, "")]


def test_a_restored_degraded_component_writes_no_second_degraded_change() -> None:
    s = machine(down=1)
    changes_of(s, [("p", 0, DEG)])
    restarted = machine(down=1)
    restarted.restore(s.save(), 100, {"p": 1000})
    assert changes_of(restarted, [("p", 200, DEG), ("p", 300, DEG)]) == []
    assert changes_of(restarted, [("p", 400, UP)]) == [(400, True, False, "")]


def test_degraded_is_up_and_remembered_until_a_plain_up() -> None:
    s = machine(down=1)
    feed(s, [("p", 0, DEG)])
    assert s.up is True and s.degraded == {"p": "on battery"}
    feed(s, [("p", 10, UP)])
    assert s.degraded == {}


# ---------------------------------------------------------------- clock steps


def test_a_change_is_never_dated_before_the_previous_one() -> None:
    # the wall clock stepped back 60 s between the outage's start and its end (no monotonic time known)
    s = machine(down=1)
    changes = feed(s, [("p", 100_000, UP), ("p", 110_000, DOWN), ("p", 55_000, UP)])
    assert [(ts, up) for ts, up, _ in changes] == [(100_000, True), (110_000, False), (110_001, True)]


@pytest.mark.parametrize("step_ms", [-60_000, 300_000])
def test_a_recovery_across_a_clock_step_lasts_what_the_monotonic_clock_measured(step_ms: int) -> None:
    s = machine(down=2)
    assert s.observe("p", 100_000, UP, mono_ms=1_000, epoch=0) is not None
    assert s.observe("p", 110_000, DOWN, mono_ms=11_000, epoch=0) is None
    down = s.observe("p", 120_000, DOWN, mono_ms=21_000, epoch=0)
    assert down is not None and down.ts_ms == 110_000
    # the wall clock steps; 4 s of real time later the target answers again
    up = s.observe("p", 114_000 + step_ms, UP, mono_ms=15_000, epoch=1)
    assert up is not None and up.up and up.ts_ms == 114_000
    # the next outage, all after the step, is dated on the stepped clock
    feed(s, [("p", 200_000 + step_ms, DOWN)])
    down2 = s.observe("p", 210_000 + step_ms, DOWN, mono_ms=111_000, epoch=1)
    assert down2 is not None and down2.ts_ms == max(200_000 + step_ms, 114_001)


def test_an_outage_moved_to_stay_in_order_keeps_its_measured_length() -> None:
    s = machine(down=1)
    s.observe("p", 100_000, UP, mono_ms=1_000, epoch=0)
    s.observe("p", 110_000, DOWN, mono_ms=11_000, epoch=0)
    s.observe("p", 54_000, UP, mono_ms=15_000, epoch=1)  # back 60 s: the recovery at 114 000 (4 s measured)
    down = s.observe("p", 60_000, DOWN, mono_ms=21_000, epoch=1)  # still before 114 000: moved after it
    assert down is not None and down.ts_ms == 114_001
    up = s.observe("p", 67_000, UP, mono_ms=28_000, epoch=1)  # 7 s later by the monotonic clock
    assert up is not None and up.ts_ms == 114_001 + 7_000
    down = s.observe("p", 200_000, DOWN, mono_ms=161_000, epoch=1)  # past the old instants: its own time again
    assert down is not None and down.ts_ms == 200_000


def test_a_down_after_a_forward_step_is_dated_on_the_new_clock() -> None:
    s = machine(down=1)
    s.observe("p", 100_000, UP, mono_ms=1_000, epoch=0)
    down = s.observe("p", 500_000, DOWN, mono_ms=101_000, epoch=1)  # a step of +300 s in between
    assert down is not None and down.ts_ms == 500_000


@given(st.lists(st.tuples(st.booleans(), st.integers(0, 10_000)), min_size=1, max_size=60))
def test_changes_are_in_order_whatever_the_clock_does(runs: list[tuple[bool, int]]) -> None:
    s = machine(down=1, up=1)
    changes = feed(s, [("p", ts, UP if ok else DOWN) for ok, ts in runs])
    assert all(a[0] < b[0] for a, b in itertools.pairwise(changes))


# ---------------------------------------------------------------- restarts


def test_a_restored_up_component_seen_up_again_writes_no_change() -> None:
    s = machine()
    feed(s, [("p", 0, UP)])
    again = machine()
    again.restore(s.save(), now_ms=3_600_000, max_gap_ms={"p": 3_000})
    assert (again.up, again.since_ms) == (True, 0)
    assert feed(again, [("p", 3_600_000, UP)]) == []
    # and a failure after the restart is dated on its own run
    assert feed(again, [("p", 3_601_000, DOWN), ("p", 3_602_000, DOWN)]) == [
        (3_601_000, False, "no answer within 2s")]


def test_a_streak_open_at_a_restart_goes_on_inside_the_window() -> None:
    s = machine(down=3)
    feed(s, [("p", 0, UP), ("p", 1_000, DOWN), ("p", 2_000, DOWN)])
    again = machine(down=3)
    again.restore(s.save(), now_ms=4_500, max_gap_ms={"p": 3_000})
    assert again.pending("p")
    assert feed(again, [("p", 4_500, DOWN)]) == [(1_000, False, "no answer within 2s")]


def test_a_streak_older_than_the_window_starts_again() -> None:
    s = machine(down=3)
    feed(s, [("p", 0, UP), ("p", 1_000, DOWN), ("p", 2_000, DOWN)])
    again = machine(down=3)
    again.restore(s.save(), now_ms=60_000, max_gap_ms={"p": 3_000})
    assert not again.pending("p")
    assert feed(again, [("p", 60_000, DOWN), ("p", 61_000, DOWN), ("p", 62_000, DOWN)]) == [
        (60_000, False, "no answer within 2s")]


def test_a_streak_that_ended_before_the_restart_does_not_come_back() -> None:
    s = machine(down=2)
    feed(s, [("p", 0, UP), ("p", 1_000, DOWN), ("p", 2_000, UP)])
    again = machine(down=2)
    again.restore(s.save(), now_ms=2_500, max_gap_ms={"p": 3_000})
    assert feed(again, [("p", 3_000, DOWN)]) == []


def test_a_component_with_other_tags_starts_unconfirmed() -> None:
    s = machine()
    feed(s, [("p", 0, UP)])
    other = ComponentState(ComponentRef("c1", "sip", "silver", "acme"), "a1", ("p",), "all", 2, 1)
    other.restore(s.save(), now_ms=1_000, max_gap_ms={"p": 3_000})
    assert other.up is None
    assert feed(other, [("p", 1_000, UP)]) == [(1_000, True, "")]


# ---------------------------------------------------------------- logs


def test_change_logs_carry_component_state_and_reason(caplog: pytest.LogCaptureFixture) -> None:
    s = machine(down=1)
    with caplog.at_level(logging.INFO, "agent.state"):
        for ts, result in ((0, UP), (10_000, DOWN), (262_000, UP)):
            before = (s.up, s.since_ms)
            change = s.observe("p", ts, result)
            assert change is not None
            log_change(change, *before)
    got = [(r.levelname, r.getMessage(), r.component, r.state, r.reason)  # type: ignore[attr-defined]
           for r in caplog.records]
    assert got == [("INFO", "c1 is up", "c1", "up", ""),
                   ("WARNING", "c1 is DOWN: no answer within 2s", "c1", "down", "no answer within 2s"),
                   ("INFO", "c1 recovered after 4m12s", "c1", "up", "")]


def test_degraded_is_logged_when_it_starts_and_ends(caplog: pytest.LogCaptureFixture) -> None:
    s = machine(down=1)
    with caplog.at_level(logging.INFO, "agent.state"):
        for ts, result in ((0, UP), (10, DEG), (20, DEG), (30, UP), (40, DEG), (50, DOWN)):
            was = s.is_degraded
            s.observe("p", ts, result)
            log_degraded(s, was)
    got = [(r.levelname, r.getMessage(), r.state, r.reason) for r in caplog.records]  # type: ignore[attr-defined]
    assert got == [("WARNING", "c1 is DEGRADED: on battery", "degraded", "on battery"),
                   ("INFO", "c1 is no longer degraded", "up", ""),
                   ("WARNING", "c1 is DEGRADED: on battery", "degraded", "on battery")]


def test_only_streaks_in_confirmation_are_saved() -> None:
    s = machine(("a", "b"), down=2)
    feed(s, [("a", 0, UP), ("b", 0, UP), ("a", 1_000, DOWN)])
    saved = s.save()
    assert (saved.up, saved.since_ms, set(saved.streaks)) == (True, 0, {"a"})


def test_a_change_the_spool_did_not_take_is_saved_as_before_it_and_confirmed_again_with_its_date() -> None:
    s = machine(down=2)
    feed(s, [("p", 0, UP), ("p", 1_000, DOWN)])
    assert feed(s, [("p", 2_000, DOWN)]) == [(1_000, False, "no answer within 2s")]
    saved = s.save((True, 0, False))  # what the daemon keeps while the change waits in memory
    assert (saved.up, saved.since_ms, saved.streaks["p"].start_ms) == (True, 0, 1_000)
    again = machine(down=2)
    again.restore(saved, now_ms=2_500, max_gap_ms={"p": 3_000})
    assert feed(again, [("p", 3_000, DOWN)]) == [(1_000, False, "no answer within 2s")]


@given(st.lists(st.sampled_from([UP, DEG, DOWN, Result(Outcome.UP, "slow")]), min_size=1, max_size=60),
       st.integers(1, 3), st.integers(1, 3))
def test_the_steady_run_shortcut_changes_nothing_the_full_evaluation_would_not(
        results: list[Result], down: int, up: int) -> None:
    """A run that continues a one-probe component's up streak skips the evaluation: the changes, the degraded
    state and what is pending must be those of the full evaluation after every run."""
    fast, full = machine(down=down, up=up), machine(down=down, up=up)
    full._steady = lambda: False  # type: ignore[method-assign]
    for i, result in enumerate(results):
        assert fast.observe("p", i * 10, result) == full.observe("p", i * 10, result)
        assert (fast.up, fast.since_ms, fast.in_degraded, fast.degraded, fast.pending("p")) == \
            (full.up, full.since_ms, full.in_degraded, full.degraded, full.pending("p"))

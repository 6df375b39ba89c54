"""The response clock: priorities and targets from the contract, response time, pauses, deadline and verdict."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from reporter.calendars import Calendar, calendars_of
from reporter.periods import parse_iso
from reporter.response import Pause, ResponseTarget, Verdict, evaluate, priority_of, target_of
from slawatch.config.loader import bundled_contract, load_contract
from slawatch.config.settings import Contract
from slawatch.config.terms import Measure

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "config" / "contracts"
M = 60_000
H = 60 * M


def at(text: str) -> int:
    return parse_iso(text)


def contract(name: str) -> Contract:
    return load_contract(CONTRACTS / f"{name}.yaml")


PRIORITIES = contract("priorities")
WORKING = contract("working-hours")
PLANS = contract("support-plans")
TIERED = contract("tiered")


# ---------------------------------------------------------------- priorities and targets


@pytest.mark.parametrize(("klass", "fault", "priority"), [
    ("sip", "down", "P1"), ("network", "down", "P1"), ("power", "down", "P1"),
    ("san", "down", "P2"), ("vlan", "down", "P2"),
    ("power", "degraded", "P3"), ("load_balancer", "degraded", "P3"),
])
def test_priority_rules_first_match_wins(klass: str, fault: str, priority: str) -> None:
    assert priority_of(PRIORITIES, klass, fault) == priority


def test_without_priority_rules_every_fault_gets_the_first_priority() -> None:
    assert priority_of(TIERED, "sip", "down") == "urgent"
    assert priority_of(TIERED, "power", "degraded") == "urgent"
    assert priority_of(load_contract(bundled_contract()), "san", "down") == "urgent"
    assert priority_of(PLANS, "san", "down") == "P1"  # no priority named anywhere


def test_the_short_form_is_per_tier_within_on_24_7() -> None:
    target = target_of(TIERED, "urgent", "gold")
    assert target == ResponseTarget("urgent", "gold", "24/7", Measure(within_s=7200), Measure(within_s=7200))
    platinum = target_of(TIERED, "urgent", "platinum")
    assert platinum is not None and platinum.in_hours.within_s == 3600
    assert target_of(TIERED, "routine", "gold") is None


def test_targets_by_priority_and_by_tier() -> None:
    p2 = target_of(PRIORITIES, "P2", "base")
    assert p2 is not None and p2.calendar == "office"
    assert p2.in_hours == Measure(within_s=3600) and p2.out_of_hours == Measure(by="next_business_day")
    p1 = target_of(PRIORITIES, "P1", "gold")
    assert p1 is not None and p1.out_of_hours == Measure(within_s=1800, on="24/7")
    premium = target_of(PLANS, "P1", "premium")
    assert premium is not None and premium.calendar == "premium_hours" and premium.out_of_hours.within_s == 4 * 3600


# ---------------------------------------------------------------- the clock on the example contracts


def clock(c: Contract, priority: str, tier: str, raised: str, ack: str | None,
          pauses: tuple[tuple[str, str | None], ...] = (), now: str | None = None) -> Verdict:
    target = target_of(c, priority, tier)
    return evaluate(c, target, at(raised), None if ack is None else at(ack),
                    [(at(s), None if e is None else at(e)) for s, e in pauses], None if now is None else at(now))


def test_eight_working_hours_from_friday_afternoon() -> None:
    # Friday 16:30 before the Spring bank holiday: 30 min on Friday, Monday closed, 7 h 30 on Tuesday.
    v = clock(WORKING, "P1", "cat1", "2026-05-22T16:30:00+01:00", "2026-05-26T16:00:00+01:00")
    assert v.calendar == "working_hours" and v.in_hours is True
    assert v.target_s == 8 * 3600 and v.deadline_ms == at("2026-05-26T16:30:00+01:00")
    assert v.response_s == 7.5 * 3600 and v.met is True
    late = clock(WORKING, "P1", "cat1", "2026-05-22T16:30:00+01:00", "2026-05-27T09:01:00+01:00")
    assert late.response_s == 8.5 * 3600 + 60 and late.met is False  # all of Tuesday, a minute of Wednesday


def test_cover_hours_four_hours() -> None:
    # Raised 22:00 Saturday, out of cover: 1 h that night, 3 h from 07:00 Sunday.
    v = clock(WORKING, "P1", "cat2", "2026-06-06T22:00:00+01:00", "2026-06-07T09:00:00+01:00")
    assert v.in_hours is True and v.response_s == 3 * 3600
    assert v.deadline_ms == at("2026-06-07T10:00:00+01:00")
    night = clock(WORKING, "P1", "cat2", "2026-06-06T23:30:00+01:00", "2026-06-07T07:10:00+01:00")
    assert night.in_hours is False and night.response_s == 600 and night.deadline_ms == at("2026-06-07T11:00:00+01:00")


@pytest.mark.parametrize(("priority", "raised", "ack", "target_s", "deadline", "response_s", "in_hours"), [
    # P1 in office hours: 15 min of office time; 17:55 leaves 5 min today, 10 min from 08:00 Monday.
    ("P1", "2026-06-05T17:55:00+01:00", "2026-06-08T08:05:00+01:00", 900, "2026-06-08T08:10:00+01:00", 600, True),
    # P1 out of hours: 30 min of wall time.
    ("P1", "2026-06-05T18:00:00+01:00", "2026-06-05T18:20:00+01:00", 1800, "2026-06-05T18:30:00+01:00", 1200,
     False),
    # P2 out of hours: by the close of the next business day (Monday 18:00): 10 office hours.
    ("P2", "2026-06-05T18:00:00+01:00", "2026-06-08T17:00:00+01:00", 36000, "2026-06-08T18:00:00+01:00", 32400,
     False),
    # P3 raised 06:00 Monday: Monday's close, 10 office hours away.
    ("P3", "2026-06-01T06:00:00+01:00", "2026-06-01T08:30:00+01:00", 36000, "2026-06-01T18:00:00+01:00", 1800,
     False),
    # P2 in hours: 1 office hour.
    ("P2", "2026-06-01T10:00:00+01:00", "2026-06-01T11:30:00+01:00", 3600, "2026-06-01T11:00:00+01:00", 5400,
     True),
])
def test_priorities_in_and_out_of_hours(priority: str, raised: str, ack: str, target_s: float, deadline: str,
                                        response_s: float, in_hours: bool) -> None:
    v = clock(PRIORITIES, priority, "gold", raised, ack)
    assert (v.target_s, v.deadline_ms, v.response_s, v.in_hours) == (target_s, at(deadline), response_s, in_hours)
    assert v.met is (response_s <= target_s)


def test_ack_before_raise_is_zero() -> None:
    v = clock(TIERED, "urgent", "gold", "2026-06-01T10:00:00Z", "2026-06-01T09:59:58Z")
    assert v.response_s == 0 and v.met is True and v.paused_s == 0


def test_pauses_do_not_count_and_push_the_deadline() -> None:
    pauses = (("2026-06-01T10:15:00Z", "2026-06-01T10:45:00Z"), ("2026-06-01T10:30:00Z", "2026-06-01T11:00:00Z"),
              ("2026-06-01T09:00:00Z", "2026-06-01T09:30:00Z"))  # overlapping, and one before the raise
    v = clock(TIERED, "urgent", "gold", "2026-06-01T10:00:00Z", "2026-06-01T12:30:00Z", pauses)
    assert v.paused_s == 45 * 60 and v.response_s == 105 * 60 and v.met is True
    assert v.deadline_ms == at("2026-06-01T12:45:00Z")


def test_an_open_pause_counts_up_to_now() -> None:
    v = clock(TIERED, "urgent", "platinum", "2026-06-01T10:00:00Z", None, (("2026-06-01T10:20:00Z", None),),
              now="2026-06-01T11:00:00Z")
    assert v.response_s == 20 * 60 and v.paused_s == 40 * 60 and v.met is None
    assert v.remaining_s == 40 * 60
    assert v.deadline_ms == at("2026-06-01T11:40:00Z")  # if the pause ended now


def test_unacknowledged_incident_at_now() -> None:
    v = clock(PRIORITIES, "P1", "gold", "2026-06-01T10:00:00+01:00", None, now="2026-06-01T10:20:00+01:00")
    assert v.met is None and v.response_s == 1200 and v.remaining_s == -300
    assert v.deadline_ms == at("2026-06-01T10:15:00+01:00")
    nothing = clock(PRIORITIES, "P1", "gold", "2026-06-01T10:00:00+01:00", None)
    assert nothing.response_s is None and nothing.remaining_s is None and nothing.target_s == 900


def test_without_a_target_response_is_still_measured_on_24_7() -> None:
    v = clock(TIERED, "routine", "gold", "2026-06-06T10:00:00Z", "2026-06-06T13:00:00Z")
    assert (v.target_s, v.deadline_ms, v.met, v.in_hours) == (None, None, None, None)
    assert v.response_s == 3 * 3600 and v.calendar == "24/7"


def test_terms_or_calendars_give_the_same_verdict() -> None:
    target = target_of(WORKING, "P1", "cat1")
    args = (target, at("2026-05-22T16:30:00+01:00"), at("2026-05-26T16:00:00+01:00"), [], None)
    assert evaluate(WORKING, *args) == evaluate(calendars_of(WORKING.response_terms()), *args)
    assert evaluate(WORKING.response_terms(), *args) == evaluate(WORKING, *args)


# ---------------------------------------------------------------- properties

CALENDARS = calendars_of(WORKING.response_terms())
T0 = at("2026-01-01T00:00:00Z")
instants = st.integers(min_value=T0, max_value=T0 + 366 * 86_400_000)
lengths = st.integers(min_value=0, max_value=20 * 86_400_000)
pause_lists = st.lists(st.tuples(st.integers(-2 * 86_400_000, 20 * 86_400_000),
                                 st.one_of(st.none(), st.integers(0, 5 * 86_400_000))), max_size=5)
targets = st.sampled_from([target_of(WORKING, "P1", "cat1"), target_of(WORKING, "P1", "cat2"),
                           target_of(TIERED, "urgent", "gold"), target_of(PRIORITIES, "P2", "gold"),
                           target_of(PRIORITIES, "P1", "gold"), None])
ALL = {**CALENDARS, **calendars_of(PRIORITIES.response_terms())}


def pauses_from(raised: int, spec: list[tuple[int, int | None]]) -> list[Pause]:
    return [(raised + start, None if length is None else raised + start + length) for start, length in spec]


@given(targets, instants, lengths, pause_lists)
def test_response_is_at_most_wall_time(target: ResponseTarget | None, raised: int, length: int,
                                       spec: list[tuple[int, int | None]]) -> None:
    v = evaluate(ALL, target, raised, raised + length, pauses_from(raised, spec))
    assert v.response_s is not None and 0 <= round(v.response_s * 1000) <= length  # seconds are ms / 1000: a float


@given(targets, instants, lengths, lengths, pause_lists)
def test_splitting_the_span_adds_up(target: ResponseTarget | None, raised: int, a: int, b: int,
                                    spec: list[tuple[int, int | None]]) -> None:
    pauses = pauses_from(raised, spec)
    whole = evaluate(ALL, target, raised, raised + a + b, pauses)
    first = evaluate(ALL, target, raised, raised + a, pauses)
    # The second part, [raised + a, raised + a + b), counted on the calendar the raise chose, less its pauses.
    counted = ALL[whole.calendar]
    second_ms = counted.open_ms(raised + a, raised + a + b) - sum(
        counted.open_ms(max(s, raised + a), min(raised + a + b if e is None else e, raised + a + b))
        for s, e in _merged(pauses, raised, raised + a + b))
    assert whole.response_s is not None and first.response_s is not None
    assert round(whole.response_s * 1000) == round(first.response_s * 1000) + second_ms


def _merged(pauses: list[Pause], low: int, high: int) -> list[tuple[int, int]]:
    spans = sorted((max(s, low), min(high if e is None else e, high)) for s, e in pauses)
    out: list[tuple[int, int]] = []
    for s, e in spans:
        if e <= s:
            continue
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(e, out[-1][1]))
        else:
            out.append((s, e))
    return out


@given(targets, instants, lengths, pause_lists)
def test_pauses_never_increase_the_response(target: ResponseTarget | None, raised: int, length: int,
                                            spec: list[tuple[int, int | None]]) -> None:
    pauses = pauses_from(raised, spec)
    with_pauses = evaluate(ALL, target, raised, raised + length, pauses)
    without = evaluate(ALL, target, raised, raised + length, [])
    fewer = evaluate(ALL, target, raised, raised + length, pauses[1:])
    assert with_pauses.response_s is not None and without.response_s is not None and fewer.response_s is not None
    assert with_pauses.response_s <= fewer.response_s <= without.response_s
    assert with_pauses.response_s + with_pauses.paused_s == pytest.approx(without.response_s)


@given(instants, lengths, pause_lists)
def test_on_24_7_response_is_wall_time_less_pauses(raised: int, length: int,
                                                   spec: list[tuple[int, int | None]]) -> None:
    pauses = pauses_from(raised, spec)
    v = evaluate(ALL, target_of(TIERED, "urgent", "gold"), raised, raised + length, pauses)
    paused = sum(e - s for s, e in _merged(pauses, raised, raised + length))
    assert v.response_s is not None and round(v.response_s * 1000) == length - paused
    assert round(v.paused_s * 1000) == paused


@given(instants, st.integers(1, 31 * 86400), st.integers(1, 31 * 86400), pause_lists,
       st.sampled_from(sorted(ALL)))
def test_deadline_is_monotone_in_the_target(raised: int, a: int, b: int, spec: list[tuple[int, int | None]],
                                            name: str) -> None:
    pauses = [(s, raised + 30 * 86_400_000 if e is None else e) for s, e in pauses_from(raised, spec)]
    deadlines = []
    for seconds in sorted((a, b)):
        target = ResponseTarget("P", "t", name, Measure(within_s=seconds), Measure(within_s=seconds))
        v = evaluate(ALL, target, raised, None, pauses)
        assert v.deadline_ms is not None and v.deadline_ms >= raised
        deadlines.append(v.deadline_ms)
        # Acknowledged at the deadline the target is met, a millisecond of open time later it is not.
        assert evaluate(ALL, target, raised, v.deadline_ms, pauses).met is True
    assert deadlines[0] <= deadlines[1]


def test_every_example_calendar_is_a_calendar() -> None:
    assert all(isinstance(c, Calendar) for c in ALL.values())
    assert set(ALL) == {"24/7", "working_hours", "cover", "office"}

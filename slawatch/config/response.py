"""The contract's response terms (pydantic): calendars, priority rules and response-time targets, and their checks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from slawatch.config.terms import (
    ALWAYS,
    ALWAYS_SPEC,
    FAULTS,
    CalendarSpec,
    Fault,
    Measure,
    PriorityRule,
    ResponseTerms,
    TargetRule,
    parse_closure,
    parse_hours,
)
from slawatch.config.units import Located, Strict, check_name, check_timezone, parse_duration_s, shown, within

Loc = tuple[str | int, ...]
MAX_RESPONSE_S = 31 * 86400
# A response target longer than a month is a typing mistake, and the engine walks the calendar day by day.
ResponseDuration = Annotated[float, within(0, MAX_RESPONSE_S, low_open=True)]


class HolidaySettings(Strict):
    """Public holidays from the `holidays` library: whole days closed."""

    country: str
    subdivision: str | None = None

    @model_validator(mode="after")
    def _known(self) -> HolidaySettings:
        import holidays  # lazy: the library loads (~60 ms) only when a contract names public holidays

        supported = holidays.list_supported_countries()
        if self.country not in supported:
            raise ValueError(f"unknown holiday country {shown(self.country)} (write an ISO 3166 code the "
                             "`holidays` library knows, e.g. GB, FR, US)")
        subdivisions = supported[self.country]
        if self.subdivision is not None and self.subdivision not in subdivisions:
            raise ValueError(f"unknown subdivision {shown(self.subdivision)} of {self.country} "
                             f"(known: {', '.join(subdivisions) or 'none'})")
        return self


def _each(entries: list[str], parse: Callable[[str], object]) -> None:
    """Parse every entry; Located with each bad one at its index."""
    problems: list[tuple[Loc, str]] = []
    for i, entry in enumerate(entries):
        try:
            parse(entry)
        except ValueError as exc:
            problems.append(((i,), str(exc)))
    if problems:
        raise Located(problems)


class CalendarSettings(Strict):
    """A calendar: time zone, open hours per weekday, public holidays and announced closure days."""

    timezone: str = "UTC"
    hours: list[str] = Field(min_length=1, max_length=100)
    holidays: HolidaySettings | None = None
    closures: list[str] = Field(default_factory=list, max_length=1000)

    @field_validator("timezone")
    @classmethod
    def _tz(cls, v: str) -> str:
        return check_timezone(v, "Europe/London")

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: list[str]) -> list[str]:
        _each(v, parse_hours)
        return v

    @field_validator("closures")
    @classmethod
    def _closures(cls, v: list[str]) -> list[str]:
        _each(v, parse_closure)
        return v

    def spec(self, name: str) -> CalendarSpec:
        return CalendarSpec(
            name=name,
            timezone=self.timezone,
            hours=tuple(h for entry in self.hours for h in parse_hours(entry)),
            holiday_country=self.holidays.country if self.holidays else None,
            holiday_subdivision=self.holidays.subdivision if self.holidays else None,
            closures=tuple(parse_closure(entry) for entry in self.closures),
        )


class PrioritySettings(Strict):
    """A priority rule: the first whose `fault` and `classes` match a fault gives its priority."""

    priority: str
    fault: Fault | None = None
    classes: list[str] | None = Field(default=None, min_length=1)

    @field_validator("priority")
    @classmethod
    def _name(cls, v: str) -> str:
        return check_name("priority", v)


class MeasureSettings(Strict):
    """`within: 4h` of open time, or `by: next_business_day`; `on: NAME` measures on another calendar."""

    within_s: ResponseDuration | None = Field(default=None, alias="within")
    by: Literal["next_business_day"] | None = None
    on: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, v: object) -> object:
        # YAML 1.1 reads a bare `on:` key as the boolean true.
        if isinstance(v, dict) and True in v:
            return {("on" if k is True else k): value for k, value in v.items()}
        return v

    @field_validator("within_s", mode="before")
    @classmethod
    def _duration(cls, v: object) -> float | None:
        return None if v is None else parse_duration_s(v)

    @model_validator(mode="after")
    def _one_of(self) -> MeasureSettings:
        if (self.within_s is None) == (self.by is None):
            raise ValueError("give either `within: DURATION` or `by: next_business_day`")
        return self

    def measure(self) -> Measure:
        return Measure(self.within_s, self.by, self.on)


class TargetSettings(Strict):
    """A response target; the first whose `priority` and `tiers` match an incident applies."""

    priority: str | None = None
    tiers: list[str] | None = Field(default=None, min_length=1)
    calendar: str = ALWAYS
    in_hours: MeasureSettings
    out_of_hours: MeasureSettings | None = None

    def rule(self) -> TargetRule:
        in_hours = self.in_hours.measure()
        return TargetRule(
            priority=self.priority,
            tiers=None if self.tiers is None else frozenset(self.tiers),
            calendar=self.calendar,
            in_hours=in_hours,
            out_of_hours=in_hours if self.out_of_hours is None else self.out_of_hours.measure(),
        )


class ResponseSettings(Strict):
    targets: list[TargetSettings] = Field(min_length=1, max_length=1000)


def short_form_rules(by_priority: Mapping[str, Mapping[str, float]]) -> list[TargetRule]:
    """`response: {urgent: {base: 2h, platinum: 1h}}`: per priority and tier, `within` on the 24/7 calendar."""
    rules = []
    for priority, tiers in by_priority.items():
        for tier, seconds in tiers.items():
            measure = Measure(within_s=seconds)
            rules.append(TargetRule(priority, frozenset((tier,)), ALWAYS, measure, measure))
    return rules


def response_terms(
    tiers: Sequence[str],
    classes: Sequence[str],
    calendars: Mapping[str, CalendarSettings],
    priorities: Sequence[PrioritySettings] | None,
    short: Mapping[str, Mapping[str, float]],
    rules: ResponseSettings | None,
) -> ResponseTerms:
    """The terms, or Located with every problem found (locations under the contract)."""
    problems: list[tuple[Loc, str]] = []
    specs: dict[str, CalendarSpec] = {ALWAYS: ALWAYS_SPEC}
    for name, settings in calendars.items():
        if name == ALWAYS:
            problems.append((("calendars", name), f"{ALWAYS!r} is the built-in always-open calendar: "
                                                  "give yours another name"))
            continue
        specs[name] = settings.spec(name)
    known_calendars = ", ".join(specs)

    targets = short_form_rules(short) if rules is None else [t.rule() for t in rules.targets]
    if rules is not None:
        for i, target in enumerate(rules.targets):
            loc: Loc = ("response", "targets", i)
            if target.calendar not in specs:
                problems.append(((*loc, "calendar"), f"unknown calendar {shown(target.calendar)} "
                                                     f"(calendars: {known_calendars})"))
            for side in ("in_hours", "out_of_hours"):
                measure = getattr(target, side)
                if measure is not None and measure.on is not None and measure.on not in specs:
                    problems.append(((*loc, side, "on"), f"unknown calendar {shown(measure.on)} "
                                                        f"(calendars: {known_calendars})"))
            unknown = [t for t in target.tiers or () if t not in tiers]
            if unknown:
                problems.append(((*loc, "tiers"), f"unknown tier(s) {', '.join(map(shown, unknown))} "
                                                  f"(the contract has {', '.join(tiers)})"))

    named = [t.priority for t in targets if t.priority is not None]
    default_priority = priorities[0].priority if priorities else (named[0] if named else "P1")
    priority_rules: list[PriorityRule] = []
    if priorities is not None:
        for i, p in enumerate(priorities):
            unknown = [c for c in p.classes or () if c not in classes]
            if unknown:
                problems.append((("priorities", i, "classes"), f"unknown class(es) {', '.join(map(shown, unknown))} "
                                                               f"(the contract has {', '.join(classes)})"))
            priority_rules.append(PriorityRule(p.priority, p.fault,
                                               None if p.classes is None else frozenset(p.classes)))
        uncovered = [f"{fault} on {klass}" for fault in FAULTS for klass in classes
                     if not any(r.matches(klass, fault) for r in priority_rules)]
        if uncovered:
            problems.append((("priorities",), f"no rule gives a priority to {', '.join(uncovered)}: add rules for "
                                              "them or a catch-all (a rule without `classes`, or without `fault`)"))
        given = {r.priority for r in priority_rules}
        named_at: list[tuple[Loc, str | None]] = (
            [(("response", name), name) for name in short] if rules is None
            else [(("response", "targets", i, "priority"), t.priority) for i, t in enumerate(rules.targets)])
        for loc, priority in named_at:
            if priority is not None and priority not in given:
                problems.append((loc, f"priority {shown(priority)} is never given by `priorities` "
                                      f"(they give {', '.join(sorted(given))})"))
    else:
        priority_rules.append(PriorityRule(default_priority))
    if problems:
        raise Located(problems)
    return ResponseTerms(specs, tuple(priority_rules), default_priority, tuple(targets))

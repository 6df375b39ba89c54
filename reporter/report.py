"""Builds a Report: every configured component's availability over one period, read from a Source."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import operator
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from reporter import responses
from reporter.availability import (
    AgentViews,
    Availability,
    Outage,
    Policy,
    availability,
    by_component,
    downtime_in,
    timely,
)
from reporter.calendars import calendars_of
from reporter.periods import iso_ms, month_period
from reporter.responses import IncidentEntry
from slawatch.config.loader import Loaded, collector_paused
from slawatch.config.settings import Component, Config, Contract, Customer
from slawatch.model import ComponentRef, Heartbeats, Incident, Interval, MaintenanceWindow, StateChange
from slawatch.store import Source, open_desk_store

if TYPE_CHECKING:
    from reporter.workers import SliceWorkers

Progress = Callable[[int, int], None]


class ReportError(Exception):
    """The report cannot be built as asked (unknown customer or component); the message says why."""


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    name: str
    tier: str
    report_to: tuple[str, ...]
    policy: Policy


@dataclass(frozen=True, slots=True)
class ComponentReport:
    """One component over the period: who it belongs to, what it must reach, what it reached.

    `klass` and `tier` are those stored with the component's latest state change (see `component_ref`).
    """

    name: str
    klass: str
    tier: str
    customer: str | None
    target_pct: float
    policy: Policy
    result: Availability


@dataclass(frozen=True, slots=True)
class MaintenanceEntry:
    """A maintenance window that touches the period and some of one customer's components (None: components
    without a customer), with the verdict of the notice rule for them (the rule of reporter.maintenance.notice_of).

    `notice_ms` is the notice the customer's policy requires; when `timely`, down time inside the window is
    excused, else it counts. `excused_ms` and `counted_ms` are the down time of `components` inside it within the
    period, each component's counted on its own (a window can be late and still overlap a timely one).
    """

    window: MaintenanceWindow
    customer: str | None
    components: tuple[str, ...]
    notice_ms: int
    timely: bool
    excused_ms: int
    counted_ms: int

    @property
    def lead_ms(self) -> int:
        """How long before its start it was announced."""
        return self.window.start_ms - self.window.announced_ms


@dataclass(frozen=True, slots=True)
class Report:
    """Everything the renderers need, and nothing they must look up: rendering is pure given a Report.

    `label` names the period ("2026-03" for a month, "FROM/TO" in ISO otherwise); `month` is
    (year, month) for a calendar-month report, None for a custom range. `policy` is the contract's
    own policy for this kind of period; each customer's effective policy is in `customers`. A section is a
    tuple of entries that each name their customer (`components`, `maintenance`), read per customer with
    `components_of` and `maintenance_of`.
    """

    period: Interval
    label: str
    month: tuple[int, int] | None
    timezone: str
    contract_name: str
    contract_version: str
    contract: Mapping[str, Any]
    policy: Policy
    customers: tuple[CustomerInfo, ...]
    components: tuple[ComponentReport, ...]
    inputs_sha256: str
    maintenance: tuple[MaintenanceEntry, ...] = ()
    incidents: tuple[IncidentEntry, ...] = ()

    @property
    def period_key(self) -> str:
        return self.label

    def customer(self, name: str) -> CustomerInfo | None:
        return next((c for c in self.customers if c.name == name), None)

    def components_of(self, customer: str | None) -> tuple[ComponentReport, ...]:
        return tuple(c for c in self.components if c.customer == customer)

    def maintenance_of(self, customer: str | None) -> tuple[MaintenanceEntry, ...]:
        return tuple(m for m in self.maintenance if m.customer == customer)

    def incidents_of(self, customer: str | None) -> tuple[IncidentEntry, ...]:
        return tuple(i for i in self.incidents if i.customer == customer)


def policy_for(contract: Contract, customer: Customer | None, *, custom_range: bool = False) -> Policy:
    """The policy a customer's components are measured with: the contract's, overridden key by key by the
    customer's. The one place the policy is resolved: the report and `slawatch maintenance` both ask here.
    A custom range always counts on its real length."""
    over = customer.policy if customer is not None else None
    basis: Literal["720h", "period"] = contract.basis
    if over is not None and over.basis is not None:
        basis = over.basis
    if custom_range:
        # A 720 h basis only makes sense for a month: a week measured against 720 h would flatter it.
        basis = "period"
    notice_s = (over.maintenance_notice_s if over is not None and over.maintenance_notice_s is not None
                else contract.maintenance_notice_s)
    quorum = over.quorum if over is not None and over.quorum is not None else contract.quorum
    return Policy(
        basis=basis,
        unmonitored=over.unmonitored if over is not None and over.unmonitored is not None else contract.unmonitored,
        maintenance_notice_ms=round(notice_s * 1000),
        quorum=None if quorum == "majority" else int(quorum),
        decimals=over.decimals if over is not None and over.decimals is not None else contract.decimals,
    )


def policy_doc(policy: Policy) -> dict[str, Any]:
    """A policy as the report's JSON writes it (and its inputs hash reads it): durations in seconds."""
    return {"basis": policy.basis, "unmonitored": policy.unmonitored,
            "maintenance_notice_s": policy.maintenance_notice_ms / 1000,
            "quorum": "majority" if policy.quorum is None else policy.quorum, "decimals": policy.decimals}


def configured_ref(config: Config, comp: Component) -> ComponentRef:
    """The component's class, tier and customer as the configuration gives them now."""
    tier = config.tier_of(comp)
    if tier is None:  # cross_check rejects such a config; a report cannot guess the tier
        raise ReportError(f"component {comp.name!r} has no tier")
    return ComponentRef(comp.name, comp.klass, tier, comp.customer or "")


def component_ref(contract: Contract, configured: ComponentRef, stored: ComponentRef | None) -> ComponentRef:
    """The class and tier a component is reported under: those stored with its latest state change up to the end
    of the period (what Grafana shows for it at that time), else the configured ones. The customer is always
    the configured one: the report is that customer's, sent to its addresses under its policy.

    A stored class and tier the contract no longer has a target for fall back to the configured ones.
    """
    if stored is None or (stored.klass, stored.tier) == (configured.klass, configured.tier):
        return configured
    if stored.tier not in contract.classes.get(stored.klass, {}):
        return configured
    return ComponentRef(configured.component, stored.klass, stored.tier, configured.customer)


def customers_policies(loaded: Loaded, *, custom_range: bool = False) -> dict[str | None, Policy]:
    """The resolved policy of every configured customer, and the contract's own under None."""
    contract = loaded.contract
    out: dict[str | None, Policy] = {None: policy_for(contract, None, custom_range=custom_range)}
    out.update((c.name, policy_for(contract, c, custom_range=custom_range)) for c in loaded.config.customers)
    return out


def month_key(year: int, month: int) -> str:
    """A calendar month's name, "2026-03": its report's label, and the key its sending is recorded under."""
    return f"{year:04d}-{month:02d}"


def period_label(period: Interval, month: tuple[int, int] | None) -> str:
    """The name of a report's period: month_key for a calendar month, "FROM/TO" in ISO for a custom range."""
    if month is not None:
        return month_key(*month)
    return f"{iso_ms(period.start_ms)}/{iso_ms(period.end_ms)}"


def select_components(loaded: Loaded, customer: str | None = None,
                      names: Sequence[str] | None = None) -> list[Component]:
    """The configured components a report covers, in config order; ReportError for unknown names."""
    config = loaded.config
    if customer is not None and config.customer(customer) is None:
        known = ", ".join(c.name for c in config.customers) or "none defined"
        raise ReportError(f"unknown customer {customer!r} (customers: {known})")
    if names:
        known_names = {c.name for c in config.components}
        unknown = [n for n in names if n not in known_names]
        if unknown:
            raise ReportError(f"unknown component(s): {', '.join(unknown)}")
    wanted = set(names) if names else None
    return [c for c in config.components
            if (customer is None or c.customer == customer) and (wanted is None or c.name in wanted)]


SLICE = 2000
"""Components read and computed at a time: a slice's changes and results are all a report holds of its month at
once (a month of 100 000 components is millions of changes and a million outages)."""


SLICES_PER_WORKER = 4
MIN_WORKER_SLICE = 250


def slice_count(components: int) -> int:
    """How many slices a report of that many components is read and computed in."""
    return -(-components // SLICE)


class ReportRun:
    """A report computed a slice of components at a time, in the configured order: each slice's changes are read
    (one `Source.changes` of its components), its components' availability computed and handed out by `slices()`,
    then let go. What needs every component (the maintenance entries, inputs_sha256) is gathered as they pass, and
    `summary()` gives it once the slices are out: the Report without its components. build_report is this kept
    whole; the JSON and CSV are written a slice at a time (reporter.render).

    `month` marks a calendar-month report (basis from the policy); without it the period is a custom
    range, measured on its real length. `incidents` are the incidents raised in the period (read from the desk's
    store when None); their response clocks are read at `as_of_ms` (default: now) while unacknowledged.
    """

    def __init__(self, loaded: Loaded, source: Source, period: Interval, *, month: tuple[int, int] | None = None,
                 customer: str | None = None, components: Sequence[str] | None = None,
                 progress: Progress | None = None, incidents: Sequence[Incident] | None = None,
                 as_of_ms: int | None = None, slice_size: int | None = None) -> None:
        config = loaded.config
        self._loaded, self._source, self.period, self.month = loaded, source, period, month
        self._selected = select_components(loaded, customer, components)
        self._progress, self._incidents, self._as_of_ms = progress, incidents, as_of_ms
        self._slice = max(1, slice_size if slice_size is not None else SLICE)
        self.label = period_label(period, month)
        self._policies = customers_policies(loaded, custom_range=month is None)
        used = {comp.customer for comp in self._selected}
        self.customers = {c.name: CustomerInfo(c.name, c.tier, tuple(c.report_to), self._policies[c.name])
                          for c in config.customers if c.name in used}
        self.policy = self._policies[None]
        self.contract_doc = loaded.contract.model_dump(mode="json", by_alias=True)
        names = [c.name for c in self._selected]
        self._hash = InputsHash(ordered=all(map(operator.lt, names, itertools.islice(names, 1, None))))
        self._figures: list[tuple[str, str, str, str | None, float]] = []
        self._windows: dict[str, MaintenanceWindow] = {}
        self._touched: dict[tuple[str, str | None], _Touched] = {}
        self._heartbeats: Heartbeats = {}
        self._done = False

    def head(self) -> Report:
        """The report's frame, known before any component: period, contract, customers (no figures yet)."""
        return self._report((), "", (), ())

    def _report(self, components: tuple[ComponentReport, ...], digest: str, maintenance: tuple[MaintenanceEntry, ...],
                incidents: tuple[IncidentEntry, ...]) -> Report:
        contract = self._loaded.contract
        return Report(
            period=self.period, label=self.label, month=self.month, timezone=self._loaded.config.report.timezone,
            contract_name=contract.name, contract_version=contract.version, contract=self.contract_doc,
            policy=self.policy, customers=tuple(self.customers.values()), components=components,
            inputs_sha256=digest, maintenance=maintenance, incidents=incidents)

    async def slices(self) -> AsyncIterator[tuple[ComponentReport, ...]]:
        """Each slice's ComponentReports, in the configured order of the components, computed in this process."""
        async for part in self.rendered(_as_they_are):
            yield part

    async def rendered(self, render: Render[T], workers: SliceWorkers | None = None) -> AsyncIterator[T]:
        """`render(head, part)` of each slice, in the configured order of the components. With `workers`, the slices
        are read, computed and rendered in their processes, side by side (`render` goes there: a module-level
        function), and only the rendered text and what the summary needs come back."""
        period, source = self.period, self._source
        if not self._selected:
            self._done = True
            return
        names = [c.name for c in self._selected]
        size = self._slice
        if workers is not None:  # a few slices each, so that none waits long for the last one to end
            size = min(size, max(MIN_WORKER_SLICE, -(-len(names) // (SLICES_PER_WORKER * len(workers)))))
        bounds = [(begin, min(begin + size, len(names))) for begin in range(0, len(names), size)]
        if workers is not None and len(bounds) > 1:
            workers.start(period, names, bounds)  # they read their first slices' changes while the frame is read
        self._heartbeats = await source.heartbeats(period.start_ms, period.end_ms)
        frame = SliceFrame(period, tuple(await source.windows(period.start_ms, period.end_ms)), self._heartbeats,
                           {**{name: c.policy for name, c in self.customers.items()}, None: self.policy},
                           self._hash.ordered)
        head = self.head()
        try:
            if workers is None or len(bounds) == 1:
                coverage = AgentViews((), frame.heartbeats)
                for begin, end in bounds:
                    part = self._selected[begin:end]
                    changes = await source.changes(period.start_ms, period.end_ms, names[begin:end])
                    with collector_paused():  # see reporter.workers: no cycles among a slice's objects
                        results, done = compute_slice(self._loaded, frame, coverage, part, changes,
                                                      self._told_from(begin))
                    del changes
                    self._take(done, None)
                    yield render(head, results)
            else:
                async for text, done, end in workers.run(frame, head, render):
                    self._take(done, end)
                    yield text
        except BaseException:
            self._hash.close()
            raise
        self._done = True

    def _told_from(self, begin: int) -> Callable[[int], None] | None:
        """Progress a component at a time, from a slice starting at `begin`."""
        progress, total = self._progress, len(self._selected)
        if progress is None:
            return None
        return lambda n: progress(begin + n, total)

    def _take(self, done: SliceDone, end: int | None) -> None:
        """What a computed slice adds to the summary, in slice order (`end`: progress to tell, up to there)."""
        self._hash.add_texts(done.hashed)
        self._figures += done.figures
        self._windows.update(done.windows)
        for key, touched in done.touched.items():
            mine = self._touched.get(key)
            if mine is None:
                self._touched[key] = touched
            else:
                mine.merge(touched)
        if self._progress is not None and end is not None:
            self._progress(end, len(self._selected))

    async def summary(self) -> Report:
        """The Report without its components (`components` empty): once every slice is out."""
        if not self._done:
            raise RuntimeError("the report's slices are not all out yet")
        incidents = self._incidents
        if incidents is None:
            incidents = await read_incidents(self._loaded, self.period) if self._selected else []
        wanted = {c.name for c in self._selected}
        start, end = self.period.start_ms, self.period.end_ms
        raised = [i for i in incidents if i.ref.component in wanted and start <= i.raised_ms < end]
        digest = self._hash.hexdigest(
            period=self.period, label=self.label, timezone=self._loaded.config.report.timezone,
            contract=self.contract_doc,
            policies={"": self.policy, **{name: c.policy for name, c in self.customers.items()}},
            components=self._figures, heartbeats=self._heartbeats, windows=self._windows.values(), incidents=raised)
        maintenance = [t.entry(self._windows[wid], customer) for (wid, customer), t in self._touched.items()]
        maintenance.sort(key=lambda m: (m.window.start_ms, m.window.id, m.customer is None, m.customer or ""))
        contract = self._loaded.contract
        return self._report((), digest, tuple(maintenance), tuple(responses.entries(
            contract, calendars_of(contract.response_terms()), raised,
            self._as_of_ms if self._as_of_ms is not None else time.time_ns() // 1_000_000)))


@dataclass(slots=True)
class _Touched:
    """A window's entry for one customer's components, gathered as they pass: their names and their down time inside
    it (what maintenance_entry computes from them all at once)."""

    notice_ms: int
    components: list[str] = field(default_factory=list)
    excused_ms: int = 0
    counted_ms: int = 0

    def add(self, window: MaintenanceWindow, component: ComponentReport) -> None:
        self.components.append(component.name)
        inside = downtime_in(Interval(window.start_ms, window.end_ms), component.result.outages)
        self.excused_ms += inside["excused"]
        self.counted_ms += inside["counted"] + inside["late_notice"]

    def merge(self, other: _Touched) -> None:
        """The same window's entry over the components of a later slice."""
        self.components += other.components
        self.excused_ms += other.excused_ms
        self.counted_ms += other.counted_ms

    def entry(self, window: MaintenanceWindow, customer: str | None) -> MaintenanceEntry:
        return MaintenanceEntry(window, customer, tuple(self.components), self.notice_ms,
                                timely(window, self.notice_ms), excused_ms=self.excused_ms, counted_ms=self.counted_ms)


T = TypeVar("T")
Render = Callable[[Report, tuple[ComponentReport, ...]], T]
"""Renders a computed slice (given the report's head): the text of the JSON's or CSV's part, say."""


def _as_they_are(head: Report, part: tuple[ComponentReport, ...]) -> tuple[ComponentReport, ...]:
    return part


@dataclass(frozen=True, slots=True)
class SliceFrame:
    """What every slice of one report is computed with, read once: in the report's process and in its workers."""

    period: Interval
    windows: tuple[MaintenanceWindow, ...]
    heartbeats: Heartbeats
    policies: Mapping[str | None, Policy]
    """Each customer's of the report, and the contract's own under None."""
    ordered: bool
    """The components' configured order is their sorted order (InputsHash)."""


@dataclass(slots=True)
class SliceDone:
    """What a computed slice adds to its report's summary, besides its ComponentReports: small next to them."""

    figures: list[tuple[str, str, str, str | None, float]]
    windows: dict[str, MaintenanceWindow]
    touched: dict[tuple[str, str | None], _Touched]
    hashed: list[tuple[str, bytes]]
    """Its changes' canonical text for inputs_sha256 (change_texts)."""


def compute_slice(loaded: Loaded, frame: SliceFrame, coverage: AgentViews, part: Sequence[Component],
                  changes: Sequence[StateChange], progress: Callable[[int], None] | None = None,
                  ) -> tuple[tuple[ComponentReport, ...], SliceDone]:
    """The availability of some components from every change of each (`coverage`: AgentViews of the heartbeats);
    `progress` is told how many are done after each."""
    config, contract, period = loaded.config, loaded.contract, frame.period
    index = coverage.with_changes(changes)
    done = SliceDone([], {}, {}, grouped_change_texts(index.changes(), ordered=frame.ordered))
    results: list[ComponentReport] = []
    for comp in part:
        ref = component_ref(contract, configured_ref(config, comp), index.latest_ref(comp.name))
        policy = frame.policies.get(comp.customer, frame.policies[None])
        target = contract.target_pct(ref.klass, ref.tier)
        applying = [w for w in frame.windows
                    if w.applies_to(ref) and w.start_ms < period.end_ms and w.end_ms > period.start_ms]
        result = availability(period, index.views(comp.name), applying, policy, target)
        report = ComponentReport(comp.name, ref.klass, ref.tier, comp.customer, target, policy, result)
        results.append(report)
        done.figures.append((report.name, report.klass, report.tier, report.customer, report.target_pct))
        for w in applying:
            done.windows[w.id] = w
            touched = done.touched.get((w.id, comp.customer))
            if touched is None:
                touched = done.touched[(w.id, comp.customer)] = _Touched(policy.maintenance_notice_ms)
            touched.add(w, report)
        if progress is not None:
            progress(len(results))
    return tuple(results), done


async def build_report(
    loaded: Loaded,
    source: Source,
    period: Interval,
    *,
    month: tuple[int, int] | None = None,
    customer: str | None = None,
    components: Sequence[str] | None = None,
    progress: Progress | None = None,
    incidents: Sequence[Incident] | None = None,
    as_of_ms: int | None = None,
) -> Report:
    """Read what `period` needs from `source` and compute every selected component's availability: a ReportRun kept
    whole (see there for the arguments)."""
    run = ReportRun(loaded, source, period, month=month, customer=customer, components=components,
                    progress=progress, incidents=incidents, as_of_ms=as_of_ms)
    results: list[ComponentReport] = []
    async for part in run.slices():
        results += part
    summary = await run.summary()
    return dataclasses.replace(summary, components=tuple(results))


async def read_incidents(loaded: Loaded, period: Interval) -> list[Incident]:
    """The incidents raised in `period`, from the desk's store; none when it has never been made (no desk ran)."""
    storage = loaded.config.storage
    if not storage.records_path.exists():
        return []
    store = open_desk_store(storage)
    try:
        return await store.incidents(period.start_ms, period.end_ms)
    finally:
        await store.close()


def maintenance_entry(window: MaintenanceWindow, customer: str | None,
                      components: Sequence[ComponentReport]) -> MaintenanceEntry:
    """A window's entry for one customer's components, all measured with the same policy (the customer's)."""
    notice = components[0].policy.maintenance_notice_ms
    span = Interval(window.start_ms, window.end_ms)
    outages: list[Outage] = [o for c in components for o in c.result.outages]
    inside = downtime_in(span, outages)
    return MaintenanceEntry(window, customer, tuple(c.name for c in components), notice, timely(window, notice),
                            excused_ms=inside["excused"], counted_ms=inside["counted"] + inside["late_notice"])


async def build_month_report(loaded: Loaded, source: Source, year: int, month: int, **kwargs: Any) -> Report:
    """The calendar month year-month in report.timezone."""
    period = month_period(year, month, loaded.config.report.timezone)
    return await build_report(loaded, source, period, month=(year, month), **kwargs)


def why_not_sent(report: Report) -> str | None:
    """Why a customer's report is not emailed (None: send it); the monthly job and `report --email` both ask.

    A report in which no component has any data (the agent was not running, or not installed yet, or the store
    is new) tells the customer nothing: it is neither sent nor recorded as sent.
    """
    if all(c.result.ratio is None for c in report.components):
        return f"no monitoring data for the {'month' if report.month is not None else 'period'}"
    return None


def why_not_final(loaded: Loaded, report: Report, customer: str) -> str | None:
    """Why sending `report` to `customer` does not stand for its monthly report (None: it does).

    Only a report of a whole past calendar month over all the customer's components is recorded as sent, so
    that the monthly job does not send that month again; a month in progress or a few components sent by hand
    leave the month to the job.
    """
    if report.month is None:
        return "not a calendar month"
    if report.period != month_period(*report.month, report.timezone):
        return "the month is still in progress"
    expected = {c.name for c in loaded.config.components if c.customer == customer}
    if {c.name for c in report.components_of(customer)} != expected:
        return f"only some of {customer}'s components"
    return None


def inputs_sha256(
    *,
    period: Interval,
    label: str,
    timezone: str,
    contract: Mapping[str, Any],
    policies: Mapping[str, Policy],
    components: Iterable[tuple[str, str, str, str | None, float]],
    changes: Iterable[StateChange],
    heartbeats: Heartbeats,
    windows: Iterable[MaintenanceWindow],
    incidents: Iterable[Incident] = (),
) -> str:
    """sha256 of a canonical JSON of every input the figures depend on, independent of read order.

    The JSON is hashed as it is written, a slice of the changes at a time: a month of 100 000 components holds
    millions of changes, and the whole text at once would be hundreds of megabytes."""
    listed = changes if isinstance(changes, list) else list(changes)
    names = [c.ref.component for c in listed]
    if not all(map(operator.le, names, itertools.islice(names, 1, None))):
        listed = sorted(listed, key=lambda c: (c.ref.component, c.agent, c.ts_ms, c.up, c.reason, c.degraded))
    digest = InputsHash()
    digest.add_changes(listed)
    return digest.hexdigest(period=period, label=label, timezone=timezone, contract=contract, policies=policies,
                            components=components, heartbeats=heartbeats, windows=windows, incidents=incidents)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


HASH_SLICE = 20_000


class _Texts(dict[str, str]):
    """Each string's JSON text, made once (a slice of changes names the same components, agents and reasons over and
    over)."""

    def __missing__(self, value: str) -> str:
        text = self[value] = _json_text(value)
        return text


_json_text: Callable[[str], str] = json.encoder.encode_basestring


_BOOL_TEXT = ("false", "true")
_DEGRADED_END = ("]", ',"degraded"]')  # a degraded change adds a mark: a store without any hashes as before
_TS = operator.attrgetter("ts_ms")


def _hash_order(c: StateChange) -> tuple[int, bool, str, bool]:
    return (c.ts_ms, c.up, c.reason, c.degraded)


def change_texts(changes: Sequence[StateChange], *, ordered: bool) -> list[tuple[str, bytes]]:
    """The canonical text of the changes of some components (every change of each) as InputsHash takes it: with
    `ordered`, a run of components at a time; else a component at a time (its name first), to be put in order at
    the end."""
    return grouped_change_texts(by_component(changes), ordered=ordered)


def grouped_change_texts(grouped: Mapping[str, Mapping[str, Sequence[StateChange]]], *,
                         ordered: bool) -> list[tuple[str, bytes]]:
    """change_texts of changes already grouped by component and agent (by_component, AgentViews.changes).

    The hash lists the changes as sorted [component, agent, ts_ms, up, reason] rows. A store keeps one change per
    (component, ts_ms, agent) and reads them in that order, so an agent's changes come in the rows' order already:
    each row is written as it comes, its component's and agent's text made once, not sorted as tuples (half the
    time). Changes of one agent out of order, or at one instant, are sorted as the rows sort. Each string's JSON
    text is made once; the text is what _canonical writes without ASCII escapes (tests hold the two together)."""
    texts = _Texts()
    out: list[tuple[str, bytes]] = []
    rows: list[str] = []
    first: str | None = None
    for name in sorted(grouped):
        if first is None:
            first = name
        quoted = texts[name]
        per_agent = grouped[name]
        for agent in sorted(per_agent):
            changes = per_agent[agent]
            instants = list(map(_TS, changes))
            if not all(map(operator.lt, instants, itertools.islice(instants, 1, None))):
                changes = sorted(changes, key=_hash_order)
            head = f"[{quoted},{texts[agent]},"
            rows += [f"{head}{c.ts_ms},{_BOOL_TEXT[c.up]},{texts[c.reason]}{_DEGRADED_END[c.degraded]}"
                     for c in changes]
        if not ordered or len(rows) >= HASH_SLICE:
            out.append((first, ",".join(rows).encode("utf-8")))
            rows, first = [], None
    if rows:
        out.append((first or "", ",".join(rows).encode("utf-8")))
    return out


class InputsHash:
    """inputs_sha256 taken as the report reads: the changes a slice of components at a time (`add_changes`), the rest
    at the end (`hexdigest`). The canonical document's keys go in sorted order and "changes" is the first, so the
    changes are hashed as they come when the slices come in component order; with `ordered` False (the components'
    configured order is not their sorted order) each component's part waits in a temporary file until the end."""

    def __init__(self, *, ordered: bool = True) -> None:
        self._digest = hashlib.sha256()
        self._digest.update(b"{" + _canonical("changes").encode("utf-8") + b":[")
        self._written = False
        self._ordered = ordered
        self._spill: Any = None  # the temporary file, made on first use; closed by hexdigest or close
        self._parts: dict[str, list[tuple[int, int]]] = {}

    @property
    def ordered(self) -> bool:
        return self._ordered

    def add_changes(self, changes: Sequence[StateChange]) -> None:
        """The changes of some components, every change of each (in component order when `ordered`)."""
        self.add_texts(change_texts(changes, ordered=self._ordered))

    def add_texts(self, texts: Iterable[tuple[str, bytes]]) -> None:
        """change_texts of some components' changes (made where they were read: a report's worker process)."""
        for name, text in texts:
            if self._ordered:
                self._feed(text)
            else:
                self._keep(name, text)

    def _feed(self, text: bytes) -> None:
        if text:
            if self._written:
                self._digest.update(b",")
            self._digest.update(text)
            self._written = True

    def _keep(self, name: str, text: bytes) -> None:
        """A component's rows as their canonical text, at the end of the spill file."""
        if self._spill is None:
            self._spill = tempfile.TemporaryFile()  # noqa: SIM115 (closed by hexdigest or close)
        self._parts.setdefault(name, []).append((self._spill.tell(), len(text)))
        self._spill.write(text)

    def hexdigest(self, *, period: Interval, label: str, timezone: str, contract: Mapping[str, Any],
                  policies: Mapping[str, Policy], components: Iterable[tuple[str, str, str, str | None, float]],
                  heartbeats: Heartbeats, windows: Iterable[MaintenanceWindow],
                  incidents: Iterable[Incident] = ()) -> str:
        if self._spill is not None:
            with self._spill as spill:
                for name in sorted(self._parts):
                    for offset, size in self._parts[name]:
                        spill.seek(offset)
                        self._feed(spill.read(size))
            self._spill = None
        self._parts.clear()
        doc: dict[str, Any] = {
            "period": [period.start_ms, period.end_ms, label, timezone],
            "contract": contract,
            "policies": {name: policy_doc(p) for name, p in policies.items()},
            "components": sorted([list(c) for c in components], key=lambda c: str(c[0])),
            "heartbeats": {agent: [hb.period_s, sorted(hb.instants_ms)] for agent, hb in heartbeats.items()},
            "windows": sorted([w.id, w.scope, w.value, w.start_ms, w.end_ms, w.announced_ms, w.reason, w.created_ms]
                              for w in windows),
        }
        # Incidents only when there are some: a report without any hashes as it did before incidents existed.
        raised = sorted([i.id, i.ref.component, i.priority, i.raised_ms, i.acknowledged_ms, i.resolved_ms,
                         [[p.start_ms, p.end_ms] for p in i.pauses]] for i in incidents)
        if raised:
            doc["incidents"] = raised
        # What json.dumps(doc, sort_keys=True, ...) writes after the changes: ',"key":value' in key order, then "}".
        assert min(doc) > "changes"
        self._digest.update(b"]")
        for key in sorted(doc):
            self._digest.update(b"," + _canonical(key).encode("utf-8") + b":" + _canonical(doc[key]).encode("utf-8"))
        self._digest.update(b"}")
        return self._digest.hexdigest()

    def close(self) -> None:
        """Let the temporary file go (a report given up half-way)."""
        if self._spill is not None:
            self._spill.close()
            self._spill = None

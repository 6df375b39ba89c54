"""Builds a Report: every configured component's availability over one period, read from a Source."""

from __future__ import annotations

import hashlib
import itertools
import json
import operator
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from reporter import responses
from reporter.availability import AgentViews, Availability, Outage, Policy, availability, downtime_in, timely
from reporter.calendars import calendars_of
from reporter.periods import iso_ms, month_period
from reporter.responses import IncidentEntry
from slawatch.config.loader import Loaded
from slawatch.config.settings import Component, Config, Contract, Customer
from slawatch.model import ComponentRef, Heartbeats, Incident, Interval, MaintenanceWindow, StateChange
from slawatch.store import Source, open_desk_store

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
    """Read what `period` needs from `source` and compute every selected component's availability.

    `month` marks a calendar-month report (basis from the policy); without it the period is a custom
    range, measured on its real length. `incidents` are the incidents raised in the period (read from the desk's
    store when None); their response clocks are read at `as_of_ms` (default: now) while unacknowledged.
    """
    config, contract = loaded.config, loaded.contract
    selected = select_components(loaded, customer, components)
    custom = month is None
    tz = config.report.timezone
    label = period_label(period, month)

    names = [c.name for c in selected]
    changes = await source.changes(period.start_ms, period.end_ms, names) if selected else []
    heartbeats = await source.heartbeats(period.start_ms, period.end_ms) if selected else {}
    windows = await source.windows(period.start_ms, period.end_ms) if selected else []
    if incidents is None:
        incidents = await read_incidents(loaded, period) if selected else []
    wanted = set(names)
    raised = [i for i in incidents if i.ref.component in wanted and period.start_ms <= i.raised_ms < period.end_ms]

    policies = customers_policies(loaded, custom_range=custom)
    used = {comp.customer for comp in selected}
    customers = {c.name: CustomerInfo(c.name, c.tier, tuple(c.report_to), policies[c.name])
                 for c in config.customers if c.name in used}
    default_policy = policies[None]

    index = AgentViews(changes, heartbeats)
    results: list[ComponentReport] = []
    used_windows: dict[str, MaintenanceWindow] = {}
    touched: dict[tuple[str, str | None], list[ComponentReport]] = {}
    for i, comp in enumerate(selected):
        ref = component_ref(contract, configured_ref(config, comp), index.latest_ref(comp.name))
        policy = policies[comp.customer] if comp.customer in customers else default_policy
        target = contract.target_pct(ref.klass, ref.tier)
        applying = [w for w in windows
                    if w.applies_to(ref) and w.start_ms < period.end_ms and w.end_ms > period.start_ms]
        result = availability(period, index.views(comp.name), applying, policy, target)
        results.append(ComponentReport(comp.name, ref.klass, ref.tier, comp.customer, target, policy, result))
        for w in applying:
            used_windows[w.id] = w
            touched.setdefault((w.id, comp.customer), []).append(results[-1])
        if progress is not None:
            progress(i + 1, len(selected))

    contract_doc = contract.model_dump(mode="json", by_alias=True)
    digest = inputs_sha256(
        period=period, label=label, timezone=tz, contract=contract_doc,
        policies={"": default_policy, **{name: c.policy for name, c in customers.items()}},
        components=[(r.name, r.klass, r.tier, r.customer, r.target_pct) for r in results],
        changes=changes, heartbeats=heartbeats, windows=used_windows.values(), incidents=raised)
    maintenance = [maintenance_entry(used_windows[wid], customer, comps)
                   for (wid, customer), comps in touched.items()]
    maintenance.sort(key=lambda m: (m.window.start_ms, m.window.id, m.customer is None, m.customer or ""))
    return Report(
        period=period, label=label, month=month, timezone=tz,
        contract_name=contract.name, contract_version=contract.version, contract=contract_doc,
        policy=default_policy, customers=tuple(customers.values()), components=tuple(results),
        inputs_sha256=digest, maintenance=tuple(maintenance),
        incidents=responses.entries(contract, calendars_of(contract.response_terms()), raised,
                                    as_of_ms if as_of_ms is not None else time.time_ns() // 1_000_000))


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
    doc: dict[str, Any] = {
        "period": [period.start_ms, period.end_ms, label, timezone],
        "contract": contract,
        "policies": {name: policy_doc(p) for name, p in policies.items()},
        "components": sorted([list(c) for c in components], key=lambda c: str(c[0])),
        "changes": None,  # written below, in slices
        "heartbeats": {agent: [hb.period_s, sorted(hb.instants_ms)] for agent, hb in heartbeats.items()},
        "windows": sorted([w.id, w.scope, w.value, w.start_ms, w.end_ms, w.announced_ms, w.reason, w.created_ms]
                          for w in windows),
    }
    # Incidents only when there are some: a report without any hashes as it did before incidents existed.
    raised = sorted([i.id, i.ref.component, i.priority, i.raised_ms, i.acknowledged_ms, i.resolved_ms,
                     [[p.start_ms, p.end_ms] for p in i.pauses]] for i in incidents)
    if raised:
        doc["incidents"] = raised
    digest = hashlib.sha256()
    # What json.dumps(doc, sort_keys=True, ...) writes, piece by piece: "{", "key":value joined by ",", "}".
    digest.update(b"{")
    for n, key in enumerate(sorted(doc)):
        if n:
            digest.update(b",")
        digest.update(_canonical(key).encode("utf-8") + b":")
        if key == "changes":
            _hash_changes(digest, changes)
        else:
            digest.update(_canonical(doc[key]).encode("utf-8"))
    digest.update(b"}")
    return digest.hexdigest()


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


HASH_SLICE = 20_000


def _hash_changes(digest: Any, changes: Iterable[StateChange]) -> None:
    """The changes as a JSON list in sorted order, a slice at a time. Stores read them by component (Source's
    order): then slices that end where a component does, each sorted on its own, come out in the order of sorting
    them all; else they are sorted all at once."""
    listed = changes if isinstance(changes, list) else list(changes)
    names = [c.ref.component for c in listed]
    by_component = all(map(operator.le, names, itertools.islice(names, 1, None)))
    if not by_component:
        listed = sorted(listed, key=lambda c: (c.ref.component, c.agent, c.ts_ms, c.up, c.reason, c.degraded))
        names = [c.ref.component for c in listed]
    digest.update(b"[")
    start, n = 0, len(listed)
    while start < n:
        end = min(start + HASH_SLICE, n)
        while end < n and names[end] == names[end - 1]:
            end += 1
        # A degraded change adds a mark, so that a store without any hashes as it did before degraded existed.
        rows = [[c.ref.component, c.agent, c.ts_ms, c.up, c.reason, "degraded"] if c.degraded
                else [c.ref.component, c.agent, c.ts_ms, c.up, c.reason] for c in listed[start:end]]
        rows.sort()
        digest.update((b"," if start else b"") + _canonical(rows)[1:-1].encode("utf-8"))
        start = end
    digest.update(b"]")

"""Builds a Report: every configured component's availability over one period, read from a Source."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Literal

from reporter.availability import Availability, MaintenanceWindow, Policy, availability
from reporter.periods import Period, month_period
from reporter.source import AgentViews
from slawatch.config.loader import Loaded
from slawatch.config.settings import Component, Contract, Customer
from slawatch.model import ComponentRef, Heartbeats, StateChange
from slawatch.model import MaintenanceWindow as StoredWindow
from slawatch.store import Source

Progress = Callable[[int, int], None]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ReportError(Exception):
    """The report cannot be built as asked (unknown customer or component); the message says why."""


@dataclass(frozen=True, slots=True)
class ReportPolicy:
    """The accounting policy one customer's components are measured with: the contract's, overridden."""

    basis: Literal["720h", "period"]
    unmonitored: Literal["up", "down", "exclude"]
    maintenance_notice_s: float
    quorum: Literal["majority"] | int
    decimals: int

    def engine(self) -> Policy:
        return Policy(
            basis=self.basis,
            unmonitored=self.unmonitored,
            maintenance_notice_ms=round(self.maintenance_notice_s * 1000),
            quorum=None if self.quorum == "majority" else int(self.quorum),
            decimals=self.decimals,
        )

    def as_dict(self) -> dict[str, Any]:
        return {"basis": self.basis, "unmonitored": self.unmonitored,
                "maintenance_notice_s": self.maintenance_notice_s, "quorum": self.quorum,
                "decimals": self.decimals}


@dataclass(frozen=True, slots=True)
class CustomerInfo:
    name: str
    tier: str
    report_to: tuple[str, ...]
    policy: ReportPolicy


@dataclass(frozen=True, slots=True)
class ComponentReport:
    """One component over the period: who it belongs to, what it must reach, what it reached."""

    name: str
    klass: str
    tier: str
    customer: str | None
    target_pct: float
    policy: ReportPolicy
    result: Availability


@dataclass(frozen=True, slots=True)
class Report:
    """Everything the renderers need, and nothing they must look up: rendering is pure given a Report.

    `label` names the period ("2026-03" for a month, "FROM/TO" in ISO otherwise); `month` is
    (year, month) for a calendar-month report, None for a custom range. `policy` is the contract's
    own policy for this kind of period; each customer's effective policy is in `customers`.
    """

    period: Period
    label: str
    month: tuple[int, int] | None
    timezone: str
    contract_name: str
    contract_version: str
    contract: Mapping[str, Any]
    policy: ReportPolicy
    customers: tuple[CustomerInfo, ...]
    components: tuple[ComponentReport, ...]
    inputs_sha256: str

    @property
    def period_key(self) -> str:
        return self.label

    def customer(self, name: str) -> CustomerInfo | None:
        return next((c for c in self.customers if c.name == name), None)

    def components_of(self, customer: str | None) -> tuple[ComponentReport, ...]:
        return tuple(c for c in self.components if c.customer == customer)


def iso_ms(ts_ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC with milliseconds: 2026-03-01T00:00:00.000Z."""
    seconds, ms = divmod(ts_ms, 1000)
    t = time.gmtime(seconds) if seconds >= 0 else (_EPOCH + timedelta(seconds=seconds)).timetuple()
    # A report formats hundreds of thousands of instants: plain formatting is ~5x faster than strftime.
    return f"{t.tm_year:04d}-{t.tm_mon:02d}-{t.tm_mday:02d}T{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d}.{ms:03d}Z"


def policy_for(contract: Contract, customer: Customer | None, *, custom_range: bool = False) -> ReportPolicy:
    """The contract's policy overridden by the customer's; a custom range always counts on its real length."""
    over = customer.policy if customer is not None else None
    basis: Literal["720h", "period"] = contract.basis
    if over is not None and over.basis is not None:
        basis = over.basis
    if custom_range:
        # A 720 h basis only makes sense for a month: a week measured against 720 h would flatter it.
        basis = "period"
    return ReportPolicy(
        basis=basis,
        unmonitored=over.unmonitored if over is not None and over.unmonitored is not None else contract.unmonitored,
        maintenance_notice_s=(over.maintenance_notice_s if over is not None and over.maintenance_notice_s is not None
                              else contract.maintenance_notice_s),
        quorum=over.quorum if over is not None and over.quorum is not None else contract.quorum,
        decimals=over.decimals if over is not None and over.decimals is not None else contract.decimals,
    )


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
    period: Period,
    *,
    month: tuple[int, int] | None = None,
    customer: str | None = None,
    components: Sequence[str] | None = None,
    progress: Progress | None = None,
) -> Report:
    """Read what `period` needs from `source` and compute every selected component's availability.

    `month` marks a calendar-month report (basis from the policy); without it the period is a custom
    range, measured on its real length.
    """
    config, contract = loaded.config, loaded.contract
    selected = select_components(loaded, customer, components)
    custom = month is None
    tz = config.report.timezone
    label = f"{month[0]:04d}-{month[1]:02d}" if month is not None else \
        f"{iso_ms(period.start_ms)}/{iso_ms(period.end_ms)}"

    names = [c.name for c in selected]
    changes = await source.changes(period.start_ms, period.end_ms, names) if selected else []
    heartbeats = await source.heartbeats(period.start_ms, period.end_ms) if selected else {}
    windows = await source.windows(period.start_ms, period.end_ms) if selected else []

    customers = {c.name: CustomerInfo(c.name, c.tier, tuple(c.report_to), policy_for(contract, c, custom_range=custom))
                 for c in config.customers if any(comp.customer == c.name for comp in selected)}
    default_policy = policy_for(contract, None, custom_range=custom)

    index = AgentViews(changes, heartbeats)
    results: list[ComponentReport] = []
    used_windows: dict[str, StoredWindow] = {}
    for i, comp in enumerate(selected):
        tier = config.tier_of(comp)
        if tier is None:  # cross_check rejects such a config; a report cannot guess the tier
            raise ReportError(f"component {comp.name!r} has no tier")
        info = customers.get(comp.customer) if comp.customer is not None else None
        policy = info.policy if info is not None else default_policy
        target = contract.target_pct(comp.klass, tier)
        applying = [w for w in windows
                    if w.applies_to(ComponentRef(comp.name, comp.klass, tier, comp.customer or ""))
                    and w.start_ms < period.end_ms and w.end_ms > period.start_ms]
        for w in applying:
            used_windows[w.id] = w
        views = index.views(comp.name)
        result = availability(
            period, views,
            [MaintenanceWindow(w.start_ms, w.end_ms, w.announced_ms, w.reason, w.id) for w in applying],
            policy.engine(), target)
        results.append(ComponentReport(comp.name, comp.klass, tier, comp.customer, target, policy, result))
        if progress is not None:
            progress(i + 1, len(selected))

    contract_doc = contract.model_dump(mode="json", by_alias=True)
    digest = inputs_sha256(
        period=period, label=label, timezone=tz, contract=contract_doc,
        policies={"": default_policy, **{name: c.policy for name, c in customers.items()}},
        components=[(r.name, r.klass, r.tier, r.customer, r.target_pct) for r in results],
        changes=changes, heartbeats=heartbeats, windows=used_windows.values())
    return Report(
        period=period, label=label, month=month, timezone=tz,
        contract_name=contract.name, contract_version=contract.version, contract=contract_doc,
        policy=default_policy, customers=tuple(customers.values()), components=tuple(results),
        inputs_sha256=digest)


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
    if {c.name for c in report.components} != expected:
        return f"only some of {customer}'s components"
    return None


def inputs_sha256(
    *,
    period: Period,
    label: str,
    timezone: str,
    contract: Mapping[str, Any],
    policies: Mapping[str, ReportPolicy],
    components: Iterable[tuple[str, str, str, str | None, float]],
    changes: Iterable[StateChange],
    heartbeats: Heartbeats,
    windows: Iterable[StoredWindow],
) -> str:
    """sha256 of a canonical JSON of every input the figures depend on, independent of read order."""
    doc = {
        "period": [period.start_ms, period.end_ms, label, timezone],
        "contract": contract,
        "policies": {name: p.as_dict() for name, p in policies.items()},
        "components": sorted([list(c) for c in components], key=lambda c: str(c[0])),
        "changes": sorted([c.ref.component, c.agent, c.ts_ms, c.up, c.reason] for c in changes),
        "heartbeats": {agent: [h.period_s, sorted(h.instants_ms)] for agent, h in heartbeats.items()},
        "windows": sorted([w.id, w.scope, w.value, w.start_ms, w.end_ms, w.announced_ms, w.reason, w.created_ms]
                          for w in windows),
    }
    text = json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()

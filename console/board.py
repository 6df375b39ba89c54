"""What the overview shows, read from the store and kept fresh in the background: each component's state and since,
its month-to-date availability (the reporter's engine) and its latency sparkline."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from console.formats import duration, pct
from reporter.availability import AgentViews, Availability, availability, current_state
from reporter.periods import month_of, month_period
from reporter.report import component_ref, configured_ref, customers_policies
from slawatch.config.loader import Loaded
from slawatch.model import ComponentRef, Heartbeats, Interval, MaintenanceWindow, StateChange
from slawatch.store import HEARTBEAT_GAP_FACTOR, Source, SourceError

log = logging.getLogger(__name__)

STATES = ("down", "degraded", "up", "unmonitored")
"""A component's state on the console, worst first."""


@dataclass(frozen=True, slots=True)
class Status:
    """One component as the store says it is now: state, the start of THIS state, and why."""

    name: str
    klass: str
    tier: str
    customer: str
    state: str
    since_ms: int | None
    reason: str
    agents: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Figure:
    """Month-to-date availability of one component against its target."""

    pct: float | None
    target_pct: float
    met: bool | None
    budget_ms: int
    basis_ms: int
    result: Availability


@dataclass(slots=True)
class Snapshot:
    """One read of the store: statuses by component (config order), each with a sequence number that moves when it
    changes, so that a page polling with the last number it saw gets only what changed."""

    statuses: dict[str, Status] = field(default_factory=dict)
    seqs: dict[str, int] = field(default_factory=dict)
    seq: int = 0
    read_ms: int = 0
    error: str = ""


def _state_of(views: Sequence[StateChange], quorum: int | None) -> tuple[str, int | None, str, tuple[str, ...]]:
    """(state, since_ms, reason, agents) from each watching agent's latest change (the report's rule)."""
    now = current_state(views, quorum)
    if now is None:
        return "unmonitored", None, "", ()
    return now.state, now.since_ms, now.reason, now.agents


def fresh_agents(heartbeats: Heartbeats, now_ms: int) -> set[str]:
    """Agents whose last heartbeat vouches for now (no gap of more than 3 periods since)."""
    out = set()
    for agent, hb in heartbeats.items():
        if hb.instants_ms and now_ms - hb.instants_ms[-1] < HEARTBEAT_GAP_FACTOR * hb.period_s * 1000:
            out.add(agent)
    return out


def statuses(loaded: Loaded, changes: Iterable[StateChange], heartbeats: Heartbeats,
             now_ms: int) -> dict[str, Status]:
    """Every configured component's Status from the latest change of each agent (in `changes`, sorted by time) and
    the agents' heartbeats: an agent that stopped beating no longer counts; none left is "unmonitored"."""
    config = loaded.config
    latest: dict[str, dict[str, StateChange]] = defaultdict(dict)
    for c in changes:
        latest[c.ref.component][c.agent] = c
    live = fresh_agents(heartbeats, now_ms)
    policies = customers_policies(loaded)
    tiers = {c.name: c.tier for c in config.customers}
    out: dict[str, Status] = {}
    for comp in config.components:
        tier = comp.tier or tiers.get(comp.customer or "", "")
        seen = latest.get(comp.name)
        views = [] if seen is None else [c for agent, c in sorted(seen.items()) if agent in live]
        policy = policies.get(comp.customer, policies[None])
        state, since, reason, agents = _state_of(views, policy.quorum)
        out[comp.name] = Status(comp.name, comp.klass, tier, comp.customer or "", state, since, reason, agents)
    return out


def figures(loaded: Loaded, period: Interval, changes: Sequence[StateChange], heartbeats: Heartbeats,
            windows: Sequence[MaintenanceWindow]) -> dict[str, Figure]:
    """Month-to-date availability of every configured component: the report's own computation (pure, CPU-bound)."""
    config, contract = loaded.config, loaded.contract
    policies = customers_policies(loaded)
    index = AgentViews(changes, heartbeats)
    out: dict[str, Figure] = {}
    for comp in config.components:
        try:
            ref = component_ref(contract, configured_ref(config, comp), index.latest_ref(comp.name))
            target = contract.target_pct(ref.klass, ref.tier)
        except (KeyError, ValueError, LookupError) as exc:
            log.debug("no figures for %s: %s", comp.name, exc)
            continue
        policy = policies.get(comp.customer, policies[None])
        applying = [w for w in windows if w.applies_to(ref)]
        result = availability(period, index.views(comp.name), applying, policy, target)
        out[comp.name] = Figure(result.availability_pct, target, result.met, result.error_budget_ms,
                                result.basis_ms, result)
    return out


SPARK_POINTS = 40


@dataclass(frozen=True, slots=True)
class Spark:
    """A latency polyline: `points` is "x,y x,y ..." in a width × height box, numbers only; `top_ms` its scale."""

    width: int
    height: int
    points: str
    top_ms: float


def spark(latencies: Sequence[tuple[int, float | None]], start_ms: int, end_ms: int,
          width: int = 120, height: int = 24) -> Spark | None:
    """Latencies (ts_ms, ms) over [start_ms, end_ms), averaged in SPARK_POINTS buckets; None without any."""
    if end_ms <= start_ms:
        return None
    sums = [0.0] * SPARK_POINTS
    counts = [0] * SPARK_POINTS
    span = end_ms - start_ms
    for ts, ms in latencies:
        if ms is None or not start_ms <= ts < end_ms or not math.isfinite(ms):
            continue
        b = (ts - start_ms) * SPARK_POINTS // span
        sums[b] += ms
        counts[b] += 1
    points = [(i, sums[i] / counts[i]) for i in range(SPARK_POINTS) if counts[i]]
    if not points:
        return None
    top = max(v for _, v in points) or 1.0
    step = width / (SPARK_POINTS - 1)
    coords = [f"{i * step:.0f},{height - 1 - (v / top) * (height - 2):.0f}" for i, v in points]
    if len(coords) == 1:  # one bucket (a component watched for a moment): a dot, drawn by the round line cap
        coords.append(coords[0])
    return Spark(width, height, " ".join(coords), top)


def figure_doc(fig: Figure | None, line: Spark | None) -> dict[str, object]:
    """A component's figures as the overview's script shows them (texts as the page writes them)."""
    doc: dict[str, object] = {"pct": "—", "target": "", "budget": "—", "missed": False, "over": False}
    if fig is not None:
        doc.update(pct=pct(fig.pct), target=f" / {pct(fig.target_pct)}", budget=duration(fig.budget_ms),
                   missed=fig.met is False, over=fig.budget_ms < 0)
    if line is not None:
        doc["spark"] = {"points": line.points, "top": round(line.top_ms, 1), "width": line.width,
                        "height": line.height}
    return doc


def spark_steps(now_ms: int, span_ms: int) -> tuple[int, int, int]:
    """(start, end, step) of the sparklines: SPARK_POINTS steps on multiples of the step, the last one holding
    `now_ms`, so that every point is one step of the store's averages."""
    step = max(1000, span_ms // SPARK_POINTS)
    end = (now_ms // step + 1) * step
    return end - SPARK_POINTS * step, end, step


Clock = Callable[[], int]


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class Board:
    """Keeps the overview's data fresh: the states every `refresh_s`, the month-to-date figures and sparklines every
    `figures_s` (computed off the event loop). Pages read the latest results; they never wait on the store."""

    def __init__(self, loaded: Loaded, source: Source, *, clock: Clock = wall_ms) -> None:
        self.loaded = loaded
        self.source = source
        self.clock = clock
        self.snapshot = Snapshot()
        self.figures: dict[str, Figure] = {}
        self.figures_ms = 0
        self.figures_error = ""
        self.sparks: dict[str, Spark] = {}
        self.figures_json: dict[str, str] = {}
        """Each component's figures as the poll sends them (a JSON member), made with the figures."""
        self.changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    def apply(self, loaded: Loaded) -> None:
        self.loaded = loaded

    async def refresh(self) -> None:
        """Read the current states from the store."""
        now = self.clock()
        snap = self.snapshot
        try:
            changes = await self.source.changes(now, now + 1)
            beats = await self.source.heartbeats(now - 1, now + 1)
        except SourceError as exc:
            if snap.error != str(exc):
                log.warning("console: cannot read the states from the store: %s", exc)
            snap.error = str(exc)
            return
        snap.error = ""
        new = statuses(self.loaded, changes, beats, now)
        seq = snap.seq
        for name, st in new.items():
            if snap.statuses.get(name) != st:
                seq += 1
                snap.seqs[name] = seq
        for gone in set(snap.statuses) - set(new):
            snap.seqs.pop(gone, None)
        snap.statuses, snap.seq, snap.read_ms = new, seq, now

    async def refresh_figures(self) -> None:
        """Recompute month-to-date availability and the sparklines (reads on the loop, maths in a thread)."""
        now = self.clock()
        settings = self.loaded.config.console
        tz = self.loaded.config.report.timezone
        month = month_period(*month_of(now, tz), tz)
        period = Interval(month.start_ms, max(month.start_ms, now))
        start, end, step = spark_steps(now, round(settings.latency_span_s * 1000))
        try:
            changes = await self.source.changes(period.start_ms, period.end_ms)
            beats = await self.source.heartbeats(period.start_ms, period.end_ms)
            windows = await self.source.windows(period.start_ms, period.end_ms)
            latency = await self.source.latency(start, end, step)
        except SourceError as exc:
            if self.figures_error != str(exc):  # said once, not every figures_s
                log.warning("console: cannot read the month's figures from the store: %s", exc)
            self.figures_error = str(exc)
            return
        self.figures_error = ""
        loaded = self.loaded

        def compute() -> tuple[dict[str, Figure], dict[str, Spark], dict[str, str]]:
            figs = figures(loaded, period, changes, beats, windows)
            lines = {name: spark(points, start, end) for name, points in latency.items()}
            sparks = {name: line for name, line in lines.items() if line is not None}
            docs = {c.name: json.dumps(c.name) + ":" + json.dumps(figure_doc(figs.get(c.name), sparks.get(c.name)))
                    for c in loaded.config.components}
            return figs, sparks, docs

        self.figures, self.sparks, self.figures_json = await asyncio.to_thread(compute)
        self.figures_ms = now

    async def run(self) -> None:
        settings = self.loaded.config.console
        next_figures = 0.0
        loop = asyncio.get_running_loop()
        while not self._stop.is_set():
            await self.refresh()
            if loop.time() >= next_figures:
                try:
                    await self.refresh_figures()
                except Exception:  # a bug in one pass must not end the console's updates
                    log.exception("console: month-to-date figures failed")
                next_figures = loop.time() + self.loaded.config.console.figures_s
            self.changed.set()
            self.changed = asyncio.Event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), settings.refresh_s)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.create_task(self.run(), name="console-board")

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None


def by_customer(items: Iterable[Status]) -> list[tuple[str, list[Status]]]:
    """Statuses grouped by customer (sorted; no customer last), config order within a group."""
    groups: dict[str, list[Status]] = defaultdict(list)
    for st in items:
        groups[st.customer].append(st)
    return sorted(groups.items(), key=lambda kv: (kv[0] == "", kv[0]))


def counts(items: Iterable[Status]) -> Mapping[str, int]:
    out = dict.fromkeys(STATES, 0)
    for st in items:
        out[st.state] += 1
    return out


__all__ = ["STATES", "Board", "ComponentRef", "Figure", "Snapshot", "Spark", "Status", "by_customer", "counts",
           "figures", "spark", "spark_steps", "statuses"]

"""The agent daemon: schedules probes, keeps component state, spools everything, drains the spool to the stores.

Data path of one probe run: result -> Sample (+ StateChange) -> outbox -> spool (fsync per batch of at most
2 000, every ~200 ms) -> one drain task per sink (agent.drain: batches of 5 000, the next read and sent while one is
written, exponential backoff with jitter while the store is down) -> ack, in order. Nothing is written to a store
that was not first in the spool, so a store outage or an agent crash costs no sample. While the spool cannot be
written (disk full) the outbox holds the points, bounded: samples beyond the bound are dropped and counted, state
changes and heartbeats kept. Every long-lived task runs under a supervisor that restarts it after an error;
`health()` says what is wrong.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import gc
import logging
import re
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agent.assign import renew_every_s, watches_zone
from agent.cadence import Job, JobPlan, Scheduler, stable_phase
from agent.checkpoint import Checkpoint, encode_row
from agent.clock import Clock, Step
from agent.drain import BACKOFF_MIN_S, Drain, back_off, next_backoff
from agent.health import Growth, Streak
from agent.members import Membership, Shares
from agent.metrics import Metrics
from agent.probes import load_kind, loaded_kinds, run_probe
from agent.spool import Encoding, Spool, SpoolError
from agent.state import ComponentState, Saved, format_duration, log_change, log_degraded
from agent.supervisor import Supervisor
from slawatch.config.loader import ConfigError, Loaded, collector_paused, load
from slawatch.config.probes import ProbeBase
from slawatch.config.settings import Component, Config, SpoolSettings
from slawatch.model import ComponentRef, Heartbeat, Point, Sample, StateChange
from slawatch.store import EncodingSink, GzipSink, MemberStore, RowSink, Sink, SinkError, Source, SourceError

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.2
# A drain that has caught up writes its store at most this often, unless a state change waits: one transaction (one
# fsync, one HTTP write) for a second of samples instead of one for each flush. The spool holds them meanwhile.
DRAIN_GATHER_S = 1.0
FLUSH_POINTS = 2000
SPOOL_BATCH = 2000  # points per spool append: a batch that does not fit on the disk fails alone
SPOOL_BATCH_MIN = 50  # after failed appends the batch halves down to this, so a nearly full disk still takes some
SPOOL_RETRY_S = 1.0  # while the spool cannot be written, try again this often
OUTBOX_LIMIT = 1_000_000  # points held in memory while the spool cannot be written (disk full)
PRUNE_EVERY_S = 3600.0
WATCH_EVERY_S = 1.0
ERROR_LOG_EVERY_S = 60.0
# A streak open at a restart goes on when its probe last ran at most this many intervals (or heartbeat periods,
# if longer) ago: a gap the reporter counts as watched (heartbeats < 3 periods apart) must not split an outage.
RESUME_GAP_INTERVALS = 3
CHECKPOINT_DELAY_S = 0.1  # streak updates within this long share one checkpoint write
MAX_BRIDGE_S = 86400.0  # a forward step of the wall clock up to this long is covered by heartbeats
# A component handed over is probed here until its new owner has stored a change of it, but at most this long.
LINGER_MAX_S = 900.0
HANDOVER_READ_BATCH = 500  # components per read of the new owners' changes
APPLY_SLICE = 1000  # components built between two yields to the event loop while a config is applied
RELOAD_SWITCH_S = 0.0005  # the GIL switch interval while a reload parses in its thread
LARGE_CONFIG = 20_000  # components from which the cyclic collector is paused while a config is loaded and planned
SETTLE_MAX_S = 3600.0  # the longest wait for a first round of probes before what it made is frozen (gc)


@dataclass(frozen=True, slots=True)
class ProbeJob:
    component: str
    probe: str
    settings: ProbeBase


def consumer_name(sink: Sink) -> str:
    """A spool consumer name for a sink: its kind (`sqlite`, `influxdb`), stable across restarts."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", sink.name.split(":", 1)[0])


def open_spool(settings: SpoolSettings, sinks: Sequence[Sink]) -> Spool:
    """The spool in front of `sinks`, one consumer each, keeping each point as the sinks that can encode it want
    it (a replay is then a copy); a sink that takes rows gets them made from the points' records, nothing more
    kept for it. SpoolError when another agent holds it."""
    encodings = {consumer_name(s): Encoding(s.spool_encoding, s.encode, gzip=isinstance(s, GzipSink))
                 for s in sinks if isinstance(s, EncodingSink) and not isinstance(s, RowSink)}
    return Spool(settings.path, int(settings.max_bytes), consumers=tuple(consumer_name(s) for s in sinks),
                 encodings=encodings)


@dataclass(frozen=True, slots=True)
class _Linger:
    """A component handed over to another agent, probed here until its new owner has stored a change of it."""

    since_ms: int
    deadline: float  # monotonic
    owners_before: frozenset[str]


@dataclass(eq=False, slots=True)
class _ApplyPlan:
    """A config's states and jobs built beside the running ones, and what making them the running ones changes."""

    loaded: Loaded
    jobs: JobPlan[ProbeJob]
    states: dict[str, ComponentState] = field(default_factory=dict)
    restore: list[tuple[Component, ComponentState, ComponentState]] = field(default_factory=list)
    from_saved: list[str] = field(default_factory=list)  # components restored from the checkpoint read at start
    restored_up: dict[str, tuple[bool, bool]] = field(default_factory=dict)
    component_up: list[tuple[ComponentRef, bool]] = field(default_factory=list)
    acquired: list[Job[ProbeJob]] = field(default_factory=list)
    removed: list[ComponentState] = field(default_factory=list)
    configured: set[str] = field(default_factory=set)
    dirty: list[str] = field(default_factory=list)  # checkpoint entries to write again or drop
    stale_refs: list[ComponentRef] = field(default_factory=list)
    stale_probes: list[tuple[str, str, str]] = field(default_factory=list)


class _Confirmed(NamedTuple):
    """A confirmed change waiting for its commit: what to log, and the state to keep if the spool refuses it."""

    change: StateChange
    previous_up: bool | None
    previous_since: int | None
    before: Saved


class Agent:
    """One monitoring agent. `run()` until `stop` is set; `reload()` on SIGHUP.

    Built from outside (`slawatch.cli.agent.build_agent`): the spool (from `open_spool(…, sinks)`) and the sinks
    are opened by the caller and handed over; the agent closes them when `run()` ends.
    """

    def __init__(self, loaded: Loaded, spool: Spool, sinks: Sequence[Sink], metrics: Metrics, clock: Clock, *,
                 on_change: Callable[[StateChange], None] | None = None,
                 on_sample: Callable[[Sample], None] | None = None, members: MemberStore | None = None,
                 source: Source | None = None) -> None:
        self.loaded = loaded
        self.metrics = metrics
        self.clock = clock
        self.clock.on_step.append(self._on_clock_step)
        self.on_change = on_change
        self.on_sample = on_sample
        cfg = loaded.config
        self.agent_id = cfg.agent.id
        self.sinks: list[Sink] = list(sinks)
        self._consumers = {consumer_name(s): s for s in self.sinks}
        spool_cfg = cfg.storage.spool
        self.spool = spool
        self.states: dict[str, ComponentState] = {}
        self.checkpoint = Checkpoint(spool_cfg.path, self.agent_id)
        self._saved: dict[str, Saved] = self.checkpoint.load()  # taken over by the first _apply
        self._checkpoint_dirty = False
        self._checkpoint_lock = asyncio.Lock()
        self._checkpoint_later: asyncio.Task[None] | None = None
        self._checkpoint_error_logged = -3600.0
        self._held: dict[str, tuple[StateChange, Saved]] = {}  # changes the spool could not take yet
        self._ckpt_dirty: set[str] = set()  # components whose entry must be encoded again
        self._to_act: list[_Confirmed] = []  # confirmed changes waiting to be on disk before they are acted on
        self._commit_lock = asyncio.Lock()
        self._beat_period_s = cfg.agent.heartbeat_s
        self._last_beat_ms: int | None = None
        self.scheduler: Scheduler[ProbeJob] = Scheduler(self._run_job, cfg.agent.concurrency,
                                                        on_lateness=self.metrics.lateness.observe)
        self._outbox: list[Point] = []
        self._outbox_full = asyncio.Event()
        self._spooled = asyncio.Event()
        self._hurry = {c: asyncio.Event() for c in self._consumers}  # a drain's gathering ends: changes are spooled
        self._flush_lock = asyncio.Lock()
        self._spool_batch = SPOOL_BATCH
        self._draining = True
        self._stopping = False
        self._spool_error_logged = -ERROR_LOG_EVERY_S
        self.outbox_limit = OUTBOX_LIMIT
        self._dropped = {"outbox_full": 0, "stopped": 0}  # samples dropped from memory, by reason
        self._shed_unlogged = 0
        self._shed_logged = -ERROR_LOG_EVERY_S
        self._spool_failing = Streak()
        self._store_failing = {c: Streak() for c in self._consumers}
        self._backlog = {c: Growth() for c in self._consumers}
        self.caught_up_at: dict[str, float] = {}  # per sink: when its drain last stored all there was (monotonic)
        self.unhealthy_backlog_s = spool_cfg.unhealthy_backlog_s
        self.unhealthy_failing_s = spool_cfg.unhealthy_failing_s
        self.supervisor = Supervisor(on_error=lambda task: self.metrics.task_restarts.labels(task).inc())
        self.probe_runs = 0
        self._reloads: set[asyncio.Task[bool]] = set()
        self._apply_lock = asyncio.Lock()  # one config applied at a time (a reload, a new share)
        self.on_reload: list[Callable[[Loaded], None]] = []
        self.started = time.time()
        self.metrics.watch(self._live_metrics)
        # Which components this agent watches (agent/assign.py): static, by zone; auto, its share of the live
        # agents' (the leases in `members`), handed over through `source` (the new owner's changes).
        self.settings = cfg.agent  # as started: a reload changes the agent settings at the next restart
        self.source = source
        self.membership = Membership(members, cfg.agent) if members is not None else None
        self.adjust: Callable[[Loaded], None] | None = None  # applied to a reloaded config (command-line overrides)
        self._share: frozenset[str] | None = None
        self._share_known = cfg.agent.assign != "auto" or members is None
        if cfg.agent.assign == "auto":
            # Until the leases are read: what it watched before (none of it is dropped while the store is away).
            self._share = frozenset(self._saved) if members is not None else frozenset(
                c.name for c in cfg.components if watches_zone(cfg.agent.zone, c.zone, "auto"))
        self._last_shares: Shares | None = None
        self._lingering: dict[str, _Linger] = {}
        self._restored_up: dict[str, tuple[bool, bool]] = {}  # auto: the stored state of a re-acquired component
        self._releases: list[StateChange] = []  # released changes in the outbox, not yet acted on
        self._handovers = {"acquired": 0, "released": 0}
        self._share_wake = asyncio.Event()
        self._applied = asyncio.Event()  # a config was applied: its first round's objects are frozen after it
        self._handover_error_logged = -ERROR_LOG_EVERY_S
        self.metrics.watch(self._share_metrics)
        self._apply(loaded)

    # ------------------------------------------------------------ config

    def _apply(self, loaded: Loaded) -> None:
        """Apply a config at once: at start, before anything is probed (a reload goes through `_apply_gradually`)."""
        plan = _ApplyPlan(loaded, JobPlan(self.scheduler.jobs))
        with _paused_if_large(loaded):
            for _ in self._plan(plan):
                pass
            self._apply_planned(plan)

    async def _apply_gradually(self, loaded: Loaded | None = None) -> None:
        """Apply a config (None: the running one again, as it is once earlier applies are done) a slice of
        components at a time, letting probes start in between: 100 000 components take seconds of CPU to build
        and compare. What runs stays as it is until the last slice; then the new states and jobs replace it at once
        (a component is under the old config or the new one, never between)."""
        async with self._apply_lock:
            plan = _ApplyPlan(loaded or self.loaded, JobPlan(self.scheduler.jobs))
            with _paused_if_large(plan.loaded):
                for _ in self._plan(plan):
                    await asyncio.sleep(0)
                self._apply_planned(plan)

    def _plan(self, plan: _ApplyPlan) -> Iterator[None]:
        """Build the new states and jobs into `plan`, yielding after each APPLY_SLICE components. Reads the running
        states; changes nothing but new objects (the membership's component list aside), so `_apply_planned` can
        make them the running ones at once."""
        cfg = plan.loaded.config
        auto = self.settings.assign == "auto"
        if self.membership is not None and self.membership.set_components({c.name: c.zone for c in cfg.components}):
            self._share_wake.set()  # share the new component list at once
        watched = self._watched(cfg)
        running = self.states
        states = plan.states
        jobs: list[Job[ProbeJob]] = []
        now_ms = self.clock.now_ms()
        for n, comp in enumerate(cfg.components, 1):
            if n % APPLY_SLICE == 0:
                yield
            if comp.name not in watched:
                continue
            ref = ComponentRef(comp.name, comp.klass, cfg.tier_of(comp) or "", comp.customer or "")
            confirm = cfg.confirm_of(comp)
            labels = tuple(p.label for p in comp.probes)
            old = running.get(comp.name)
            if (old is not None and old.ref == ref and old.probes == labels and old.require == comp.require
                    and (old.confirm_down, old.confirm_up) == (confirm.down, confirm.up)):
                states[comp.name] = old
            else:
                state = ComponentState(ref, self.agent_id, labels, comp.require, confirm.down, confirm.up)
                if old is not None:
                    plan.restore.append((comp, state, old))  # from its state as it is when the plan is applied
                else:
                    saved = self._saved.get(comp.name)
                    if saved is not None:
                        plan.from_saved.append(comp.name)
                        self._restore(plan, comp, state, saved, now_ms, auto, taken=True)
                states[comp.name] = state
            comp_jobs = self._jobs_of(comp)
            jobs.extend(comp_jobs)
            if auto and comp.name not in running:
                plan.acquired.extend(comp_jobs)
        yield
        plan.configured = {c.name for c in cfg.components}
        # Metric series of replaced or removed components go; they come back on their next run.
        old_components = {c.name: c for c in self.loaded.config.components}
        for n, (name, st) in enumerate(running.items(), 1):
            if n % APPLY_SLICE == 0:
                yield
            new = states.get(name)
            if new is st:
                continue
            plan.dirty.append(name)  # removed components leave the checkpoint, replaced ones are written again
            if new is None:
                plan.removed.append(st)
            if new is None or new.ref != st.ref:
                plan.stale_refs.append(st.ref)
            if name in old_components:
                plan.stale_probes.extend((name, p.label, p.kind) for p in old_components[name].probes)
        plan.dirty.extend(name for name, st in states.items() if running.get(name) is not st)
        yield
        yield from self.scheduler.diff(jobs, plan.jobs)

    def _restore(self, plan: _ApplyPlan, comp: Component, state: ComponentState, saved: Saved, now_ms: int,
                 auto: bool, *, taken: bool) -> None:
        """A restart (or a reload that changed the probes) goes on from the confirmed state: seeing it again writes
        no change, and an outage in confirmation keeps its first failed run."""
        beat_s = plan.loaded.config.agent.heartbeat_s
        gaps = {p.label: round(RESUME_GAP_INTERVALS * max(p.interval_s, beat_s) * 1000) for p in comp.probes}
        state.restore(saved, now_ms, gaps)
        if auto and taken and state.up is not None:
            # Taken (back) into the share: its first confirmed state is written again, as its stored view may have
            # been released or be stale; the stored state is what a release repeats.
            plan.restored_up[comp.name] = (state.up, state.in_degraded)
            state.up = None
        if state.up is not None:
            plan.component_up.append((state.ref, state.up))

    def _apply_planned(self, plan: _ApplyPlan) -> None:
        """Make a plan's states and jobs the running ones; costs what changed, not the number of components."""
        auto = self.settings.assign == "auto"
        now_ms = self.clock.now_ms()
        for comp, state, old in plan.restore:  # the replaced state as it is now: runs may have changed it
            self._restore(plan, comp, state, old.save(), now_ms, auto, taken=False)
        for name in plan.from_saved:
            self._saved.pop(name, None)
        self._restored_up.update(plan.restored_up)
        for ref, up in plan.component_up:
            self.metrics.set_component(ref, up)
        if self._share_known:
            # Components of the checkpoint this agent does not watch any more: their stored view ends now.
            for name, saved in self._saved.items():
                if saved.up is not None:
                    self._release_change(saved.ref, saved.up, saved.degraded, saved.since_ms,
                                         _release_reason(auto, name in plan.configured))
            self._saved = {}
        for st in plan.removed:
            self._release(st, _release_reason(auto, st.ref.component in plan.configured))
        self.metrics.forget(plan.stale_refs, plan.stale_probes)
        self._ckpt_dirty.update(plan.dirty)
        self.states = plan.states
        self.loaded = plan.loaded
        self.scheduler.commit(plan.jobs)
        if plan.acquired:
            self._handovers["acquired"] += len({j.payload.component for j in plan.acquired})
            self.scheduler.run_now(j.key for j in plan.acquired)  # watched at once, not after a phase delay
        _keep_out_of_collections()
        self._applied.set()

    def _watched(self, cfg: Config) -> set[str]:
        """The components this agent probes: static, those of its zone (and those without one); auto, its share and
        the components it hands over until their new owner has them."""
        if self._share is None:
            return {c.name for c in cfg.components if watches_zone(self.settings.zone, c.zone, "static")}
        return {c.name for c in cfg.components if c.name in self._share or c.name in self._lingering}

    @staticmethod
    def _jobs_of(comp: Component) -> list[Job[ProbeJob]]:
        jobs = []
        for probe in comp.probes:
            key = f"{comp.name}/{probe.label}"
            jobs.append(Job(key, probe.interval_s, ProbeJob(comp.name, probe.label, probe),
                            retry_interval_s=probe.retry_interval_s, phase_s=stable_phase(key, probe.interval_s)))
        return jobs

    def request_reload(self) -> None:
        """SIGHUP: reload in the background (parsing a large file must not stall the probes)."""
        task = asyncio.get_running_loop().create_task(self.reload())
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def reload(self) -> bool:
        """Re-read the config file; a bad one keeps the running config."""
        path = self.loaded.path
        try:
            loaded = await asyncio.to_thread(_load_long_lived, path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload rejected, keeping the running config: %s", problem)
            self.metrics.reload_ok.set(0)
            return False
        except Exception as exc:  # a failed reload never ends the agent, and always shows in the metric
            log.error("reload of %s failed, keeping the running config: %s: %s", path, type(exc).__name__,
                      str(exc)[:200], exc_info=not isinstance(exc, RecursionError))
            self.metrics.reload_ok.set(0)
            return False
        if self.adjust is not None:
            self.adjust(loaded)
        old = self.loaded.config
        if loaded.config.storage != old.storage or loaded.config.agent != old.agent:
            log.warning("storage and agent settings change at the next restart; components are reloaded now")
        await self._apply_gradually(loaded)
        self.metrics.reload_ok.set(1)
        for hook in self.on_reload:
            hook(loaded)
        log.info("config reloaded from %s: %d components", path, len(self.states))
        return True

    # ------------------------------------------------------------ share of the components

    def _release(self, state: ComponentState, reason: str) -> None:
        """Stop watching a component: its stored view ends with a released change (its last state repeated)."""
        name = state.ref.component
        self._lingering.pop(name, None)
        restored = self._restored_up.pop(name, None)
        if state.up is not None:
            self._release_change(state.ref, state.up, state.in_degraded, state.since_ms, reason)
        elif restored is not None:  # taken back, then handed over before it was confirmed again
            self._release_change(state.ref, restored[0], restored[1], state.since_ms, reason)

    def _release_change(self, ref: ComponentRef, up: bool, degraded: bool, since_ms: int | None, reason: str) -> None:
        ts = self.clock.now_ms()
        if since_ms is not None:
            ts = max(ts, since_ms + 1)  # after the change it ends
        change = StateChange(ref, self.agent_id, ts, up, reason, degraded, released=True)
        self._outbox.append(change)  # spooled as any point: the flush loop takes it within FLUSH_INTERVAL_S
        self._releases.append(change)
        self._ckpt_dirty.add(ref.component)
        self._handovers["released"] += 1
        self._share_wake.set()

    async def _share_loop(self) -> None:
        """Renew the lease, follow the share (auto), end the hand-overs; act on released changes."""
        every = renew_every_s(self.settings.heartbeat_s)
        while True:
            if self.membership is not None:
                await self._share_round(self.membership)
            await self._publish_releases()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(every):
                    await self._share_wake.wait()
            self._share_wake.clear()

    async def _share_round(self, membership: Membership) -> None:
        shares = await membership.round(len(self.states))
        if shares is None or self.settings.assign != "auto":
            return  # the store cannot be read: the share stays as it is
        share = shares.shares.get(self.agent_id, frozenset())
        if not self._share_known or share != self._share:
            previous = self._share or frozenset()
            if self._share_known:  # at start, what is not this agent's any more is released at once
                now_ms, now = self.clock.now_ms(), time.monotonic()
                leaving = [n for n in previous - share if n in self.states and n not in self._lingering]
                by_name = {c.name: c for c in self.loaded.config.components} if leaving else {}
                for name in leaving:
                    before = self._last_shares.owners(name) if self._last_shares is not None else frozenset()
                    self._lingering[name] = _Linger(now_ms, now + self._linger_s(by_name.get(name)), before)
            for name in share:
                self._lingering.pop(name, None)  # back before it was handed over: watched on, nothing released
            gained, lost = len(share - previous), len(previous - share)
            self._share, self._share_known = share, True
            await self._apply_gradually()
            log.info("share: %d components (+%d, -%d) among %d live agents, %d handed over and still probed",
                     len(share), gained, lost, len(shares.members), len(self._lingering))
        self._last_shares = shares
        await self._end_handovers(shares)

    def _linger_s(self, comp: Component | None) -> float:
        """How long a handed-over component is probed at most: the new owner's first confirmation, and a read."""
        cfg = self.loaded.config
        if comp is None:
            return 0.0
        interval = max((p.interval_s for p in comp.probes), default=0.0)
        return min(LINGER_MAX_S, (cfg.confirm_of(comp).up + 2) * interval + self.settings.heartbeat_s)

    async def _end_handovers(self, shares: Shares) -> None:
        """Release the handed-over components whose new owner has stored a change of them (or that waited too long)."""
        if not self._lingering:
            return
        now = time.monotonic()
        done = [n for n, linger in self._lingering.items() if now >= linger.deadline]
        expired = set(done)
        waiting = [n for n in self._lingering if n not in expired]
        if waiting and self.source is not None:
            now_ms = self.clock.now_ms()
            for i in range(0, len(waiting), HANDOVER_READ_BATCH):
                names = waiting[i:i + HANDOVER_READ_BATCH]
                try:
                    changes = await self.source.changes(now_ms, now_ms + 1, names)
                except SourceError as exc:
                    if time.monotonic() - self._handover_error_logged >= ERROR_LOG_EVERY_S:
                        self._handover_error_logged = time.monotonic()
                        log.warning("cannot read the new owners' changes (hand-overs wait, at most until their "
                                    "deadline): %s", exc)
                    break
                latest: dict[tuple[str, str], StateChange] = {}
                for c in changes:
                    key = (c.ref.component, c.agent)
                    if key not in latest or latest[key].ts_ms <= c.ts_ms:
                        latest[key] = c
                done.extend(n for n in names if self._taken_over(n, latest, shares))
        if done:
            for name in done:
                self._lingering.pop(name, None)
            await self._apply_gradually()  # releases them

    def _taken_over(self, name: str, latest: dict[tuple[str, str], StateChange], shares: Shares) -> bool:
        """Whether the component's owners watch it now: each new owner has stored a change of it since the
        hand-over began (a read period earlier, for the other agent's clock), each remaining one has not released it."""
        linger = self._lingering[name]
        owners = shares.owners(name) - {self.agent_id}
        if not owners:
            return False  # nobody else may watch it: probed until the deadline
        fresh_ms = linger.since_ms - round(self.settings.heartbeat_s * 1000)

        def watching(agent: str, since_ms: int | None) -> bool:
            c = latest.get((name, agent))
            return c is not None and not c.released and (since_ms is None or c.ts_ms >= since_ms)

        new = owners - linger.owners_before
        return all(watching(a, fresh_ms if a in new else None) for a in owners)

    async def _publish_releases(self) -> None:
        """Released changes: on disk (spool, then the checkpoint without them), then to `on_change`."""
        if not self._releases:
            return
        released, self._releases = self._releases, []
        await self._flush()
        self._hurry_drains()
        await self._save_checkpoint()
        log.info("released %d components (%s)", len(released), released[0].reason)
        if self.on_change is not None:
            for change in released:
                self.on_change(change)

    def _share_metrics(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        watched = GaugeMetricFamily("slawatch_agent_components", "Components this agent watches now")
        watched.add_metric([], len(self.states))
        yield watched
        live = GaugeMetricFamily("slawatch_agents_live", "Agents whose lease is fresh in the member store (last read)")
        live.add_metric([], self.membership.live if self.membership is not None else 1)
        yield live
        handovers = CounterMetricFamily("slawatch_handovers", "Components taken over from another agent (acquired) "
                                        "or given up (released)", labels=["direction"])
        for direction, n in self._handovers.items():
            handovers.add_metric([direction], n)
        yield handovers
        errors = CounterMetricFamily("slawatch_member_store_errors", "Lease renewals or reads that failed")
        errors.add_metric([], self.membership.errors if self.membership is not None else 0)
        yield errors

    async def _leave(self) -> None:
        """A clean stop: the lease goes (the others take the share at their next read); the stores close."""
        if self.membership is not None:
            await self.membership.leave()
            with contextlib.suppress(Exception):
                await self.membership.store.close()
        if self.source is not None:
            with contextlib.suppress(Exception):
                await self.source.close()

    # ------------------------------------------------------------ probing

    async def _run_job(self, job: Job[ProbeJob]) -> bool:
        pj = job.payload
        t0 = time.perf_counter()
        run = await run_probe(pj.settings, self.clock)
        duration = time.perf_counter() - t0
        state = self.states.get(pj.component)
        if state is None:  # removed by a reload while the probe ran
            return False
        result = run.result
        ref = state.ref
        latency_ms = None if result.latency_s is None else result.latency_s * 1000.0
        sample = Sample(ref, pj.probe, pj.settings.kind, self.agent_id, run.started_ms, result.outcome,
                        result.reason, latency_ms)
        self._outbox.append(sample)
        if self.on_sample is not None:
            self.on_sample(sample)
        self.probe_runs += 1
        was_pending, was_degraded = state.pending(pj.probe), state.is_degraded
        previous_up, previous_since, previous_degraded = state.up, state.since_ms, state.in_degraded
        change = state.observe(pj.probe, run.started_ms, result, run.mono_ms, run.epoch)
        self.metrics.observe_probe(ref, pj.probe, pj.settings.kind, result, duration)
        if change is not None:
            self._outbox.append(change)
            self._to_act.append(_Confirmed(change, previous_up, previous_since,
                                           state.save((previous_up, previous_since, previous_degraded))))
            await self._commit()
        elif was_pending or state.pending(pj.probe):
            self._ckpt_dirty.add(pj.component)
            self._checkpoint_soon()  # a streak in confirmation began, grew or ended
        log_degraded(state, was_degraded)
        if len(self._outbox) >= FLUSH_POINTS:
            self._outbox_full.set()
        return state.pending(pj.probe)

    async def _commit(self) -> None:
        """Put confirmed changes on disk, then act on them (log line, metric, hooks).

        On disk means in the spool with the runs that confirmed them, and in the checkpoint: a SIGKILL after the
        log line or a notification can no longer lose a change. Changes confirmed while a commit is writing wait
        for the next one, which takes them all: when a core switch takes 1 000 components down at once (or 10 000
        components are seen for the first time at start), that is a few spool and checkpoint writes, not one each.
        """
        async with self._commit_lock:
            if not self._to_act:
                return  # a commit that began after this change was queued has acted on it
            batch, self._to_act = self._to_act, []
            spooled = await self._flush()
            self._hurry_drains()
            self._ckpt_dirty.update(c.change.ref.component for c in batch)
            if not spooled:  # the spool refused some (disk full): those changes are held in memory
                refused = {id(p) for p in self._outbox if isinstance(p, StateChange)}
                for confirmed in batch:
                    if id(confirmed.change) in refused:
                        self._held[confirmed.change.ref.component] = (confirmed.change, confirmed.before)
            await self._save_checkpoint()
            for confirmed in batch:
                change = confirmed.change
                log_change(change, confirmed.previous_up, confirmed.previous_since)
                self.metrics.set_component(change.ref, change.up)
                if self.on_change is not None:
                    self.on_change(change)

    # ------------------------------------------------------------ checkpoint of component state

    def _snapshot(self) -> dict[str, bytes | None]:
        """What changed in the checkpoint since the last one: the entries of the components touched since, encoded
        again (None for one that leaves it); a mass outage, or 10 000 components confirmed for the first time at
        start, commits many times a second, and the checkpoint writes only these."""
        dirty, self._ckpt_dirty = self._ckpt_dirty, set()
        changes: dict[str, bytes | None] = {}
        if self._held:
            waiting = {id(p) for p in self._outbox if isinstance(p, StateChange)}
            for name, (change, before) in list(self._held.items()):
                if id(change) in waiting:
                    changes[name] = encode_row(before)  # not spooled yet: a restart must confirm it again
                    self._ckpt_dirty.add(name)  # looked at again by the next checkpoint
                    dirty.discard(name)
                else:
                    del self._held[name]
                    dirty.add(name)
        for name in dirty:
            st = self.states.get(name)
            if st is None or (st.up is None and not st.pending_any()):
                changes[name] = None
            else:
                changes[name] = encode_row(st.save())
        return changes

    async def _save_checkpoint(self) -> None:
        """Write the checkpoint now, or wait for a write that started after this call (coalesced)."""
        self._checkpoint_dirty = True
        async with self._checkpoint_lock:
            if not self._checkpoint_dirty:
                return  # a write that began after our update has it
            self._checkpoint_dirty = False
            changes = self._snapshot()
            try:
                await asyncio.to_thread(self.checkpoint.update, changes)
            except OSError as exc:
                if time.monotonic() - self._checkpoint_error_logged > 60:
                    self._checkpoint_error_logged = time.monotonic()
                    log.error("cannot write the state checkpoint %s (a restart then confirms states anew): %s",
                              self.checkpoint.path, exc)

    def _checkpoint_soon(self) -> None:
        """A write shortly (a mass outage opens thousands of streaks at once: one write for many)."""
        if self._checkpoint_later is None:
            self._checkpoint_later = asyncio.get_running_loop().create_task(self._checkpoint_after_delay())

    async def _checkpoint_after_delay(self) -> None:
        try:
            await asyncio.sleep(CHECKPOINT_DELAY_S)
        finally:
            self._checkpoint_later = None  # from here on an update needs another write
        await self._save_checkpoint()

    async def _checkpoint_final(self) -> None:
        """At shutdown, after the last probe: the checkpoint holds every streak."""
        if self._checkpoint_later is not None:
            await self._checkpoint_later
        await self._save_checkpoint()

    # ------------------------------------------------------------ clock

    def _beat(self, ts_ms: int) -> None:
        self._outbox.append(Heartbeat(self.agent_id, ts_ms, self._beat_period_s))
        self._last_beat_ms = ts_ms

    def _on_clock_step(self, step: Step) -> None:
        """A forward step skips wall-clock time that took no real time, watched throughout: heartbeats cover it
        so the store shows no gap in monitoring. (After a step back, heartbeats overlap: no gap either.)"""
        if step.offset_ms <= 0 or self._last_beat_ms is None:
            return
        if step.offset_ms > MAX_BRIDGE_S * 1000:
            log.warning("the wall clock jumped more than %s: that span shows as unmonitored",
                        format_duration(round(MAX_BRIDGE_S * 1000)))
            return
        period_ms = max(1, round(self._beat_period_s * 1000))
        for ts in range(self._last_beat_ms + period_ms, step.after_ms, period_ms):
            self._beat(ts)

    # ------------------------------------------------------------ spool and sinks

    async def _flush(self) -> bool:
        """Move the outbox to the spool in bounded batches; False when the spool could not take all of it."""
        async with self._flush_lock:
            self._outbox_full.clear()
            while self._outbox:
                batch = self._outbox[:self._spool_batch]
                try:
                    await asyncio.to_thread(self.spool.append, batch)
                except SpoolError as exc:
                    # A spooled point takes ~300 bytes with its encoded parts: a big batch may never fit where
                    # the drain frees less; a smaller one next time may.
                    self._spool_batch = max(SPOOL_BATCH_MIN, self._spool_batch // 2)
                    self.metrics.spool_errors.inc()
                    self._spool_failing.fail(time.monotonic(), str(exc))
                    if len(self._outbox) > self.outbox_limit:
                        self._shed_outbox()
                    if time.monotonic() - self._spool_error_logged >= ERROR_LOG_EVERY_S:
                        self._spool_error_logged = time.monotonic()
                        log.error("spool append failed, %d points held in memory: %s", len(self._outbox), exc)
                    return False
                del self._outbox[:len(batch)]  # points added meanwhile are behind it
                self._spool_batch = min(SPOOL_BATCH, self._spool_batch * 2)
                self._spooled.set()
                lasted = self._spool_failing.ok(time.monotonic())
                if lasted is not None:
                    log.info("spool writable again after %s", format_duration(int(lasted * 1000)))
            return True

    def _shed_outbox(self) -> None:
        """Disk full for long: keep state changes and heartbeats, drop the oldest samples, count them."""
        excess = len(self._outbox) - self.outbox_limit
        kept: list[Point] = []
        for point in self._outbox:
            if excess > 0 and isinstance(point, Sample):
                excess -= 1
                continue
            kept.append(point)
        dropped = len(self._outbox) - len(kept)
        self._outbox = kept
        self._dropped["outbox_full"] += dropped
        self._shed_unlogged += dropped
        if self._shed_unlogged and time.monotonic() - self._shed_logged >= ERROR_LOG_EVERY_S:
            self._shed_logged = time.monotonic()
            log.error("dropped %d samples held in memory (%d since start): the spool cannot be written; "
                      "state changes and heartbeats kept", self._shed_unlogged, self._dropped["outbox_full"])
            self._shed_unlogged = 0

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL_S):
                    await self._outbox_full.wait()
            if not await self._flush():
                await asyncio.sleep(SPOOL_RETRY_S)

    def _hurry_drains(self) -> None:
        """State changes are in the spool: the drains write them now instead of gathering more samples first."""
        for hurry in self._hurry.values():
            hurry.set()

    async def _drain(self, consumer: str, sink: Sink) -> None:
        drain = Drain(self.spool, consumer, sink)
        hurry = self._hurry[consumer]
        backoff = BACKOFF_MIN_S
        last_log = 0.0
        try:
            while self._draining:
                hurry.clear()  # what is spooled from here on is read by this pump
                try:
                    moved = await drain.pump()
                    if drain.caught_up:  # no write is left in flight, unacknowledged, while samples gather
                        moved += await drain.finish()
                except SinkError as exc:
                    self._store_failing[consumer].fail(time.monotonic(), str(exc))
                    if time.monotonic() - last_log > 60:
                        last_log = time.monotonic()
                        level = logging.WARNING if exc.retryable else logging.ERROR
                        # the sink's message names the store already
                        log.log(level, "%s; %d points wait in the spool, retrying", exc, self.spool.pending(consumer))
                    back = await back_off(sink, backoff)
                    backoff = BACKOFF_MIN_S if back else next_backoff(backoff, exc)
                    continue
                if drain.caught_up:
                    self.caught_up_at[consumer] = now = time.monotonic()
                    if self._spool_failing.since is None:
                        self._backlog[consumer].observe(now, 0)  # it read all there was
                if not moved:
                    self._spooled.clear()
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(1.0):
                            await self._spooled.wait()
                    continue
                self._store_failing[consumer].ok(time.monotonic())
                if backoff > BACKOFF_MIN_S:
                    log.info("%s: writing again", sink.name)
                backoff = BACKOFF_MIN_S
                if drain.caught_up:  # samples gather, a state change goes at once
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(DRAIN_GATHER_S):
                            await hurry.wait()
            with contextlib.suppress(SinkError):
                await drain.finish()  # at stop: the writes in flight end and are acknowledged
        finally:
            await drain.abandon()

    async def _heartbeat_loop(self) -> None:
        while True:
            self._beat(self.clock.now_ms())
            await asyncio.sleep(self._beat_period_s)

    async def _prune_loop(self) -> None:
        while True:
            cutoff = int((time.time() - self.loaded.contract.retention_s) * 1000)
            for sink in self.sinks:
                try:
                    await sink.prune(cutoff)
                except SinkError as exc:
                    log.warning("%s: retention prune failed: %s", sink.name, exc)
            await asyncio.sleep(PRUNE_EVERY_S)

    async def _watch_loop(self) -> None:
        """Follow each store's backlog (spool and memory) so that health() can tell a growing one."""
        while True:
            for consumer, growth in self._backlog.items():
                pending = await asyncio.to_thread(self.spool.pending, consumer)
                growth.observe(time.monotonic(), pending + len(self._outbox))
            await asyncio.sleep(WATCH_EVERY_S)

    def dropped_samples(self) -> dict[str, int]:
        """Samples dropped since start, by reason (`slawatch_samples_dropped_total`)."""
        return {"spool_full": self.spool.dropped_samples, **self._dropped}

    def health(self) -> list[str]:
        """What is wrong, one reason a line; empty when healthy (served by /healthz)."""
        now = time.monotonic()
        reasons = []
        for task in self.supervisor.tasks.values():
            if task.failing(now, self.supervisor.stable_s):
                assert task.failed_at is not None
                state = "restarted" if task.restarted_at is not None else "waiting to restart"
                reasons.append(f"task {task.name} failed {format_duration(int((now - task.failed_at) * 1000))} ago "
                               f"({state}, {task.restarts} restarts): {task.last_error}")
            elif task.done and not self._stopping:
                reasons.append(f"task {task.name} has ended")
        failing = self._spool_failing.failing_for(now)
        if failing >= self.unhealthy_failing_s:
            reasons.append(f"spool appends failing for {format_duration(int(failing * 1000))}, "
                           f"{len(self._outbox)} points held in memory: {self._spool_failing.error}")
        for consumer, streak in self._store_failing.items():
            failing = streak.failing_for(now)
            if failing >= self.unhealthy_failing_s:
                reasons.append(f"store {consumer}: writes failing for {format_duration(int(failing * 1000))}: "
                               f"{streak.error}")
        for consumer, growth in self._backlog.items():
            growing = growth.growing_for(now)
            if growing >= self.unhealthy_backlog_s:
                reasons.append(f"store {consumer}: backlog growing for {format_duration(int(growing * 1000))}, "
                               f"{growth.last} points waiting")
        return reasons

    def sink_health(self) -> tuple[int, list[tuple[str, int, float, str]]]:
        """Points held in memory, and per sink: points in the spool not yet stored there, seconds its writes have been
        failing (0: they are not) and the last write error. What /healthz judges by, for the operator console."""
        now = time.monotonic()
        return len(self._outbox), [(c, self.spool.pending(c), streak.failing_for(now),
                                    streak.error if streak.since is not None else "")
                                   for c, streak in self._store_failing.items()]

    def _live_metrics(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        spool_bytes = GaugeMetricFamily("slawatch_spool_bytes", "Bytes in the on-disk spool")
        spool_bytes.add_metric([], self.spool.bytes)
        yield spool_bytes
        pending = GaugeMetricFamily("slawatch_spool_samples", "Points in the spool not yet stored, per sink",
                                    labels=["sink"])
        for consumer in self._consumers:
            pending.add_metric([consumer], self.spool.pending(consumer))
        yield pending
        outbox = GaugeMetricFamily("slawatch_outbox_samples", "Points held in memory, not yet in the spool")
        outbox.add_metric([], len(self._outbox))
        yield outbox
        dropped = CounterMetricFamily("slawatch_samples_dropped", "Samples dropped and never stored, by reason: "
                                      "spool_full (over max_bytes), outbox_full (the spool could not be written "
                                      "and memory was full), stopped (in memory at stop, unspoolable)",
                                      labels=["reason"])
        for reason, n in self.dropped_samples().items():
            dropped.add_metric([reason], n)
        yield dropped
        errors = CounterMetricFamily("slawatch_sink_write_errors", "Failed store writes", labels=["sink"])
        bad = CounterMetricFamily("slawatch_sink_bad_points", "Points a store refused", labels=["sink"])
        for consumer, sink in self._consumers.items():
            errors.add_metric([consumer], sink.write_errors)
            bad.add_metric([consumer], sink.bad_points)
        yield errors
        yield bad

    # ------------------------------------------------------------ life cycle

    async def run(self, stop: asyncio.Event, *, drain_grace_s: float = 5.0) -> None:
        """Probe until `stop` is set, then stop cleanly: in-flight probes end, the spool gets every point,
        the stores get what they can within `drain_grace_s`."""
        log.info("agent %s watching %d components (%d probes), storing to %s", self.agent_id, len(self.states),
                 len(self.scheduler.jobs), ", ".join(s.name for s in self.sinks))
        await self._warm_probes()
        start = self.supervisor.start
        background = [start("flush", self._flush_loop), start("heartbeat", self._heartbeat_loop),
                      start("prune", self._prune_loop), start("watch", self._watch_loop),
                      start("share", self._share_loop), start("settle", self._settle_loop)]
        drains = [start(f"drain-{c}", functools.partial(self._drain, c, s)) for c, s in self._consumers.items()]
        sched = start("scheduler", self.scheduler.run_forever)
        try:
            await stop.wait()
        finally:
            self._stopping = True
            log.info("stopping: waiting for probes in flight")
            grace = max((j.payload.settings.timeout_s for j in self.scheduler.jobs.values()), default=1.0)
            await self.scheduler.stop(grace + 0.5)
            await _cancel([sched, *background])
            await self._leave()
            await self._checkpoint_final()
            await self._flush()
            await self._drain_until_empty(drains, drain_grace_s)
            await self._close()
            log.info("stopped after %d probe runs", self.probe_runs)

    async def _settle_loop(self) -> None:
        """One round of probes after each apply, freeze what it made out of the collector's passes too.

        The first round makes objects that live until the next reload: each component's confirmed-state gauge, the
        probes' per-target entries. Left in the collector's oldest generation, with the states that short-lived
        objects promoted there keep adding to, a full pass over them every ~20 s held the loop ~0.15 s at 10 000
        components and was ~5 % of the agent's CPU. An apply during the round starts it again."""
        while True:
            await self._applied.wait()
            try:
                while True:
                    self._applied.clear()
                    longest = max((j.interval_s for j in self.scheduler.jobs.values()), default=0.0)
                    async with asyncio.timeout(min(longest, SETTLE_MAX_S) + 1.0):  # a round, and a second
                        await self._applied.wait()
            except TimeoutError:
                _keep_out_of_collections()

    async def _drain_until_empty(self, drains: Sequence[asyncio.Task[None]], grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if self._outbox:  # the drains may have made room on a full disk
                await self._flush()
            if not self._outbox and all(self.spool.pending(c) == 0 for c in self._consumers):
                break
            self._spooled.set()
            self._hurry_drains()  # no more gathering: everything goes
            await asyncio.sleep(0.05)
        self._draining = False
        self._spooled.set()
        self._hurry_drains()
        _, running = await asyncio.wait(drains, timeout=1.5)  # let a write in progress finish and be acked
        await _cancel(list(running))
        self._log_losses()

    def _log_losses(self) -> None:
        """One line at stop: what could not be spooled (lost), what waits in the spool, what was dropped."""
        parts = []
        if self._outbox:
            samples = sum(1 for p in self._outbox if isinstance(p, Sample))
            changes = sum(1 for p in self._outbox if isinstance(p, StateChange))
            self._dropped["stopped"] += samples
            parts.append(f"LOST {samples} samples, {changes} state changes and {len(self._outbox) - samples - changes} "
                         f"heartbeats held in memory: the spool could not take them ({self._spool_failing.error})")
            self._outbox = []
        left = {c: self.spool.pending(c) for c in self._consumers}
        if any(left.values()):
            parts.append(f"points kept in the spool, written at next start: {left}")
        dropped = self.dropped_samples()
        if any(dropped.values()):
            parts.append(f"samples dropped since start: {sum(dropped.values())} "
                         f"({', '.join(f'{n} {r}' for r, n in dropped.items() if n)})")
        if parts:
            log.log(logging.ERROR if self._dropped["stopped"] else logging.WARNING, "stopping: %s", "; ".join(parts))

    async def _warm_probes(self) -> None:
        """Load the configured kinds, and let each build what its first run would otherwise pay for inside its
        deadline (the SNMP engine takes 0.1-0.3 s once), before the first deadline starts."""
        for name in sorted({j.payload.settings.kind for j in self.scheduler.jobs.values()}):
            try:
                kind = await load_kind(name)
                if kind.warm is not None:
                    async with asyncio.timeout(10):
                        await kind.warm()
            except Exception as exc:  # the probes then load or warm lazily and say what fails
                log.warning("%s probe warm-up failed: %s", name, exc)

    async def _close(self) -> None:
        for kind in loaded_kinds():
            if kind.close is not None:
                with contextlib.suppress(Exception):
                    await kind.close()
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                log.exception("closing %s", sink.name)
        await asyncio.to_thread(self.spool.close)


def _paused_if_large(loaded: Loaded) -> contextlib.AbstractContextManager[None]:
    """The cyclic collector paused while a large config's states and jobs are built: its millions of new objects
    would otherwise set off full collections mid-plan."""
    return collector_paused() if len(loaded.config.components) >= LARGE_CONFIG else contextlib.nullcontext()


def _keep_out_of_collections() -> None:
    """Move every object alive now out of the cyclic collector's passes (gc.freeze): a config of 100 000
    components and its states and jobs are a few million objects that live until the next reload, and each full
    pass over them held the event loop for 1-3 s (0.15 s at 10 000). They hold no reference cycles, so the ones a
    reload replaces are still freed by their reference counts; only cyclic garbage that exists at this moment stays
    (once per apply, and once a round after it)."""
    gc.freeze()


def _load_long_lived(path: Path) -> Loaded:
    """load() for the agent's reload thread: a large config's objects are frozen out of the collector before it
    runs again, or its first pass (over the million objects just made) would hold the GIL, and the loop, ~1 s."""
    # While this thread parses, the loop thread gets the GIL back only when this one is made to let go of it: at
    # the default 5 ms switch interval each of the loop's system calls (a connect, a send, epoll) waited up to
    # 5 ms, so probes started seconds late during a large reload without the loop itself ever being busy.
    switch_s = sys.getswitchinterval()
    sys.setswitchinterval(min(switch_s, RELOAD_SWITCH_S))
    try:
        with collector_paused():
            loaded = load(path)
            if len(loaded.config.components) >= LARGE_CONFIG:
                _keep_out_of_collections()
    finally:
        sys.setswitchinterval(switch_s)
    return loaded


def _release_reason(auto: bool, configured: bool) -> str:
    if not configured:
        return "removed from the config"
    return "handed over to another agent" if auto else "not in this agent's zone"


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task

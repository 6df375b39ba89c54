"""The agent daemon: schedules probes, keeps component state, spools everything, drains the spool to the stores.

Data path of one probe run: result -> Sample (+ StateChange) -> outbox -> spool (fsync per batch, every
~200 ms) -> one drain task per sink (batches of 5 000, exponential backoff with jitter while the store is
down) -> ack. Nothing is written to a store that was not first in the spool, so a store outage or an agent
crash costs no sample.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import re
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from agent.checkpoint import Checkpoint
from agent.clock import Clock, Step
from agent.configfile import ConfigError, Loaded, load
from agent.metrics import Metrics
from agent.model import ComponentRef, Heartbeat, Point, Sample, StateChange
from agent.probes import run_probe, snmpclient
from agent.schedule import Job, Scheduler, stable_phase
from agent.settings import Component, ProbeBase
from agent.sinks import Sink, SinkError, open_sinks
from agent.spool import Spool, SpoolError
from agent.state import ComponentState, Saved, format_duration, log_change, log_degraded

log = logging.getLogger(__name__)

FLUSH_INTERVAL_S = 0.2
FLUSH_POINTS = 2000
DRAIN_BATCH = 5000
BACKOFF_MIN_S = 0.5
BACKOFF_MAX_S = 10.0  # a store back from an outage waits at most this long for the next try
OUTBOX_LIMIT = 1_000_000  # points held in memory while the spool cannot be written (disk full)
PRUNE_EVERY_S = 3600.0
# A streak open at a restart goes on when its probe last ran at most this many intervals (or heartbeat periods,
# if longer) ago: a gap the reporter counts as watched (heartbeats < 3 periods apart) must not split an outage.
RESUME_GAP_INTERVALS = 3
CHECKPOINT_DELAY_S = 0.1  # streak updates within this long share one checkpoint write
MAX_BRIDGE_S = 86400.0  # a forward step of the wall clock up to this long is covered by heartbeats


@dataclass(frozen=True, slots=True)
class ProbeJob:
    component: str
    probe: str
    settings: ProbeBase


def consumer_name(sink: Sink) -> str:
    """A spool consumer name for a sink: its kind (`sqlite`, `influxdb`), stable across restarts."""
    return re.sub(r"[^A-Za-z0-9_.-]", "_", sink.name.split(":", 1)[0])


class Agent:
    """One monitoring agent. `run()` until `stop` is set; `reload()` on SIGHUP."""

    def __init__(self, loaded: Loaded, *, on_change: Callable[[StateChange], None] | None = None,
                 on_sample: Callable[[Sample], None] | None = None, metrics: Metrics | None = None,
                 clock: Clock | None = None) -> None:
        self.loaded = loaded
        self.metrics = metrics or Metrics()
        self.clock = clock or Clock()
        self.clock.on_step.append(self._on_clock_step)
        self.on_change = on_change
        self.on_sample = on_sample
        cfg = loaded.config
        self.agent_id = cfg.agent.id
        self.sinks: list[Sink] = open_sinks(cfg.storage, retention_s=loaded.contract.retention_s)
        self._consumers = {consumer_name(s): s for s in self.sinks}
        spool_cfg = cfg.storage.spool
        self.spool = Spool(spool_cfg.path, int(spool_cfg.max_bytes), consumers=tuple(self._consumers))
        self.states: dict[str, ComponentState] = {}
        self.checkpoint = Checkpoint(spool_cfg.path, self.agent_id)
        self._saved: dict[str, Saved] = self.checkpoint.load()  # taken over by the first _apply
        self._checkpoint_dirty = False
        self._checkpoint_lock = asyncio.Lock()
        self._checkpoint_later: asyncio.Task[None] | None = None
        self._checkpoint_error_logged = -3600.0
        self._held: dict[str, tuple[StateChange, Saved]] = {}  # changes the spool could not take yet
        self._beat_period_s = cfg.agent.heartbeat_s
        self._last_beat_ms: int | None = None
        self.scheduler = Scheduler(self._run_job, cfg.agent.concurrency, on_lateness=self.metrics.lateness.observe)
        self._outbox: list[Point] = []
        self._outbox_full = asyncio.Event()
        self._spooled = asyncio.Event()
        self._flush_lock = asyncio.Lock()
        self._draining = True
        self._spool_error_logged = 0.0
        self.probe_runs = 0
        self._reloads: set[asyncio.Task[bool]] = set()
        self.on_reload: list[Callable[[Loaded], None]] = []
        self.started = time.time()
        self.metrics.watch(self._live_metrics)
        self._apply(loaded)

    # ------------------------------------------------------------ config

    def _apply(self, loaded: Loaded) -> None:
        cfg = loaded.config
        states: dict[str, ComponentState] = {}
        jobs: list[Job] = []
        for comp in cfg.components:
            ref = ComponentRef(comp.name, comp.klass, cfg.tier_of(comp) or "", comp.customer or "")
            confirm = cfg.confirm_of(comp)
            labels = tuple(p.label for p in comp.probes)
            old = self.states.get(comp.name)
            if (old is not None and old.ref == ref and old.probes == labels and old.require == comp.require
                    and (old.confirm_down, old.confirm_up) == (confirm.down, confirm.up)):
                states[comp.name] = old
            else:
                state = ComponentState(ref, self.agent_id, labels, comp.require, confirm.down, confirm.up)
                saved = old.save() if old is not None else self._saved.get(comp.name)
                if saved is not None:
                    # A restart (or a reload that changed the probes) goes on from the confirmed state: seeing
                    # it again writes no change, and an outage in confirmation keeps its first failed run.
                    beat_s = cfg.agent.heartbeat_s
                    gaps = {p.label: round(RESUME_GAP_INTERVALS * max(p.interval_s, beat_s) * 1000)
                            for p in comp.probes}
                    state.restore(saved, self.clock.now_ms(), gaps)
                    if state.up is not None:
                        self.metrics.set_component(ref, state.up)
                states[comp.name] = state
            jobs.extend(self._jobs_of(comp))
        self._saved = {}
        # Metric series of replaced or removed components go; they come back on their next run.
        old_components = {c.name: c for c in self.loaded.config.components}
        stale_refs: list[ComponentRef] = []
        stale_probes: list[tuple[str, str, str]] = []
        for name, st in self.states.items():
            if states.get(name) is st:
                continue
            if name not in states or states[name].ref != st.ref:
                stale_refs.append(st.ref)
            if name in old_components:
                stale_probes.extend((name, p.label, p.kind) for p in old_components[name].probes)
        self.metrics.forget(stale_refs, stale_probes)
        self.states = states
        self.loaded = loaded
        self.scheduler.set_jobs(jobs)

    @staticmethod
    def _jobs_of(comp: Component) -> list[Job]:
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
            loaded = await asyncio.to_thread(load, path)
        except ConfigError as exc:
            for problem in exc.problems:
                log.error("reload rejected, keeping the running config: %s", problem)
            self.metrics.reload_ok.set(0)
            return False
        old = self.loaded.config
        if loaded.config.storage != old.storage or loaded.config.agent != old.agent:
            log.warning("storage and agent settings change at the next restart; components are reloaded now")
        self._apply(loaded)
        self.metrics.reload_ok.set(1)
        for hook in self.on_reload:
            hook(loaded)
        log.info("config reloaded from %s: %d components", path, len(self.states))
        return True

    # ------------------------------------------------------------ probing

    async def _run_job(self, job: Job) -> bool:
        pj: ProbeJob = job.payload
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
        previous_up, previous_since = state.up, state.since_ms
        change = state.observe(pj.probe, run.started_ms, result, run.mono_ms, run.epoch)
        self.metrics.observe_probe(ref, pj.probe, pj.settings.kind, result, duration)
        if change is not None:
            self._outbox.append(change)
            # On disk (with the runs that confirmed it) before anything acts on it: a SIGKILL after the
            # log line or a notification can no longer lose the change.
            await self._flush()
            if any(p is change for p in self._outbox):  # the spool refused it (disk full): held in memory
                self._held[state.ref.component] = (change, state.save((previous_up, previous_since)))
            await self._save_checkpoint()
            log_change(change, previous_up, previous_since)
            self.metrics.set_component(ref, change.up)
            if self.on_change is not None:
                self.on_change(change)
        elif was_pending or state.pending(pj.probe):
            self._checkpoint_soon()  # a streak in confirmation began, grew or ended
        log_degraded(state, was_degraded)
        if len(self._outbox) >= FLUSH_POINTS:
            self._outbox_full.set()
        return state.pending(pj.probe)

    # ------------------------------------------------------------ checkpoint of component state

    def _snapshot(self) -> list[Saved]:
        held: dict[str, Saved] = {}
        if self._held:
            waiting = {id(p) for p in self._outbox if isinstance(p, StateChange)}
            for name, (change, before) in list(self._held.items()):
                if id(change) in waiting:
                    held[name] = before  # not spooled yet: a restart must confirm it again
                else:
                    del self._held[name]
        return [held.get(name) or st.save() for name, st in self.states.items()
                if st.up is not None or st.pending_any()]

    async def _save_checkpoint(self) -> None:
        """Write the checkpoint now, or wait for a write that started after this call (coalesced)."""
        self._checkpoint_dirty = True
        async with self._checkpoint_lock:
            if not self._checkpoint_dirty:
                return  # a write that began after our update has it
            self._checkpoint_dirty = False
            saved = self._snapshot()
            try:
                await asyncio.to_thread(self.checkpoint.save, saved)
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

    async def _flush(self) -> None:
        async with self._flush_lock:
            if not self._outbox:
                return
            batch, self._outbox = self._outbox, []
            self._outbox_full.clear()
            try:
                await asyncio.to_thread(self.spool.append, batch)
            except SpoolError as exc:
                self._outbox[:0] = batch
                self.metrics.spool_errors.inc()
                if len(self._outbox) > OUTBOX_LIMIT:
                    self._shed_outbox()
                if time.monotonic() - self._spool_error_logged > 60:
                    self._spool_error_logged = time.monotonic()
                    log.error("spool append failed, %d points held in memory: %s", len(self._outbox), exc)
                return
            self._spooled.set()

    def _shed_outbox(self) -> None:
        """Disk full for long: keep state changes and heartbeats, drop the oldest samples."""
        excess = len(self._outbox) - OUTBOX_LIMIT
        kept: list[Point] = []
        for point in self._outbox:
            if excess > 0 and isinstance(point, Sample):
                excess -= 1
                continue
            kept.append(point)
        log.error("dropped %d samples held in memory: the spool cannot be written",
                  len(self._outbox) - len(kept))
        self._outbox = kept

    async def _flush_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(FLUSH_INTERVAL_S):
                    await self._outbox_full.wait()
            await self._flush()

    async def _drain(self, consumer: str, sink: Sink) -> None:
        backoff = BACKOFF_MIN_S
        last_log = 0.0
        while self._draining:
            batch = await asyncio.to_thread(self.spool.read, consumer, DRAIN_BATCH)
            if not batch.points:
                self._spooled.clear()
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(1.0):
                        await self._spooled.wait()
                continue
            try:
                await sink.write(batch.points)
            except SinkError as exc:
                if time.monotonic() - last_log > 60:
                    last_log = time.monotonic()
                    level = logging.WARNING if exc.retryable else logging.ERROR
                    # the sink's message names the store already
                    log.log(level, "%s; %d points wait in the spool, retrying", exc, self.spool.pending(consumer))
                await asyncio.sleep(backoff * random.uniform(0.5, 1.0))
                backoff = min(backoff * 2, BACKOFF_MAX_S if exc.retryable else BACKOFF_MAX_S * 10)
                continue
            await asyncio.to_thread(self.spool.ack, consumer, batch)
            if backoff > BACKOFF_MIN_S:
                log.info("%s: writing again", sink.name)
            backoff = BACKOFF_MIN_S

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

    def _live_metrics(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        spool_bytes = GaugeMetricFamily("slawatch_spool_bytes", "Bytes in the on-disk spool")
        spool_bytes.add_metric([], self.spool.bytes)
        yield spool_bytes
        pending = GaugeMetricFamily("slawatch_spool_samples", "Points in the spool not yet stored, per sink",
                                    labels=["sink"])
        for consumer in self._consumers:
            pending.add_metric([consumer], self.spool.pending(consumer))
        yield pending
        dropped = CounterMetricFamily("slawatch_samples_dropped", "Samples dropped because the spool was full")
        dropped.add_metric([], self.spool.dropped_samples)
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
        background = [asyncio.create_task(self._flush_loop(), name="flush"),
                      asyncio.create_task(self._heartbeat_loop(), name="heartbeat"),
                      asyncio.create_task(self._prune_loop(), name="prune")]
        drains = [asyncio.create_task(self._drain(c, s), name=f"drain-{c}") for c, s in self._consumers.items()]
        sched = asyncio.create_task(self.scheduler.run_forever(), name="scheduler")
        try:
            await stop.wait()
        finally:
            log.info("stopping: waiting for probes in flight")
            grace = max((j.payload.settings.timeout_s for j in self.scheduler.jobs.values()), default=1.0)
            await self.scheduler.stop(grace + 0.5)
            await _cancel([sched, *background])
            await self._checkpoint_final()
            await self._flush()
            await self._drain_until_empty(drains, drain_grace_s)
            await self._close()
            log.info("stopped after %d probe runs", self.probe_runs)

    async def _drain_until_empty(self, drains: Sequence[asyncio.Task[None]], grace_s: float) -> None:
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline:
            if all(self.spool.pending(c) == 0 for c in self._consumers):
                break
            self._spooled.set()
            await asyncio.sleep(0.05)
        self._draining = False
        self._spooled.set()
        _, running = await asyncio.wait(drains, timeout=1.5)  # let a write in progress finish and be acked
        await _cancel(list(running))
        left = {c: self.spool.pending(c) for c in self._consumers}
        if any(left.values()):
            log.warning("stopped with points still in the spool (written at next start): %s", left)

    async def _warm_probes(self) -> None:
        """Build the SNMP engine before the first deadline starts (it takes 0.1-0.3 s once)."""
        kinds = {j.payload.settings.kind for j in self.scheduler.jobs.values()}
        if kinds & {"snmp", "ups"}:
            try:
                async with asyncio.timeout(10):
                    await snmpclient.warm()
            except Exception as exc:  # the probes then warm lazily and say what fails
                log.warning("SNMP engine warm-up failed: %s", exc)

    async def _close(self) -> None:
        with contextlib.suppress(Exception):
            await snmpclient.close()
        for sink in self.sinks:
            try:
                await sink.close()
            except Exception:
                log.exception("closing %s", sink.name)
        await asyncio.to_thread(self.spool.close)


async def _cancel(tasks: Sequence[asyncio.Task[None]]) -> None:
    for task in tasks:
        task.cancel()
    for task in tasks:
        with contextlib.suppress(asyncio.CancelledError):
            await task

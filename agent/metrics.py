"""Prometheus metrics of one agent, in a registry of its own (never the global one)."""

from __future__ import annotations

import bisect
import contextlib
import math
import time
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from slawatch.model import ComponentRef, Outcome, Result

LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The agent's metrics; live figures of the spool and sinks are read at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        # What every probe run updates is kept as plain numbers and becomes metric families at scrape time: a
        # prometheus_client child takes a lock on every set and inc (a few per cent of a probe's CPU at 1 000/s).
        self.probe_runs = ProbeFigures()
        r.register(self.probe_runs)
        self.component_up = Gauge("slawatch_component_up", "Confirmed state of the component as this agent sees it",
                                  ["component", "class", "tier", "customer"], registry=r)
        self.lateness = Lateness("slawatch_schedule_lateness_seconds", "Actual minus scheduled probe start",
                                 LATENESS_BUCKETS)
        r.register(self.lateness)
        self.reload_ok = Gauge("slawatch_config_last_reload_successful", "1 if the last config (re)load worked",
                               registry=r)
        self.reload_ok.set(1)
        self.spool_errors = Counter("slawatch_spool_append_errors_total",
                                    "Spool appends that failed (disk full, I/O error) and were retried", registry=r)
        self.task_restarts = Counter("slawatch_task_restarts_total",
                                     "Restarts of a long-lived task of the agent after an error", ["task"], registry=r)

    def observe_probe(self, ref: ComponentRef, probe: str, kind: str, result: Result, duration_s: float) -> None:
        figures = self.probe_runs
        outcome = result.outcome
        figures.last[(ref.component, probe, kind)] = (1 if outcome.is_up else 0, duration_s)
        runs = figures.runs.get((kind, outcome))
        if runs is None:
            figures.runs[(kind, outcome)] = [1, time.time()]
        else:
            runs[0] += 1

    def set_component(self, ref: ComponentRef, up: bool) -> None:
        self.component_up.labels(ref.component, ref.klass, ref.tier, ref.customer).set(1 if up else 0)

    def forget(self, refs: Iterable[ComponentRef], probes: Iterable[tuple[str, str, str]]) -> None:
        """Drop the series of components and probes that a reload removed."""
        for ref in refs:
            with contextlib.suppress(KeyError):
                self.component_up.remove(ref.component, ref.klass, ref.tier, ref.customer)
        for key in probes:
            self.probe_runs.last.pop(key, None)

    def watch(self, collect: Callable[[], Iterable[GaugeMetricFamily | CounterMetricFamily]]) -> None:
        """Register a callback producing live metrics (spool size, sink errors) at scrape time."""
        self.registry.register(_Live(collect))


PROBE_LABELS = ("component", "probe", "kind")


class ProbeFigures(Collector):
    """slawatch_probe_success and slawatch_probe_duration_seconds (gauges) of each probe's last run, and
    slawatch_probe_runs_total (a counter by kind and outcome), from plain numbers the event loop updates."""

    def __init__(self) -> None:
        self.last: dict[tuple[str, str, str], tuple[int, float]] = {}  # (component, probe, kind) -> (up, seconds)
        self.runs: dict[tuple[str, Outcome], list[float]] = {}  # (kind, outcome) -> [runs, created (epoch s)]

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, CounterMetricFamily]:
        return (GaugeMetricFamily("slawatch_probe_success", "1 if the last run of the probe was up (or degraded)",
                                  labels=PROBE_LABELS),
                GaugeMetricFamily("slawatch_probe_duration_seconds", "Duration of the last probe run",
                                  labels=PROBE_LABELS),
                CounterMetricFamily("slawatch_probe_runs", "Probe runs by kind and outcome",
                                    labels=("kind", "outcome")))

    def collect(self) -> Iterable[Metric]:
        success, duration, runs = self._families()
        for key, (up, seconds) in list(self.last.items()):  # a copy made under the GIL: scraped from any thread
            success.add_metric(key, up)
            duration.add_metric(key, seconds)
        for (kind, outcome), (count, created) in list(self.runs.items()):
            runs.add_metric((kind, outcome.value), count, created=created)
        return success, duration, runs

    def describe(self) -> Iterable[Metric]:
        return self._families()


class Lateness(Collector):
    """A histogram without labels, as prometheus_client's (same samples), observed without its lock."""

    def __init__(self, name: str, documentation: str, buckets: tuple[float, ...]) -> None:
        self.name, self.documentation = name, documentation
        self._bounds = (*buckets, math.inf)
        self._le = [floatToGoString(b) for b in self._bounds]  # type: ignore[no-untyped-call]
        self._counts = [0] * len(self._bounds)
        self._sum = 0.0
        self._created = time.time()

    def observe(self, value: float) -> None:
        self._counts[bisect.bisect_left(self._bounds, value)] += 1  # the first bucket with value <= its bound
        self._sum += value

    def collect(self) -> Iterable[Metric]:
        counts, total = list(self._counts), self._sum
        cumulative, buckets = 0, []
        for le, count in zip(self._le, counts, strict=True):
            cumulative += count
            buckets.append((le, cumulative))
        family = HistogramMetricFamily(self.name, self.documentation, buckets=buckets, sum_value=total)
        family.samples.append(Sample(self.name + "_created", {}, self._created, None, None))
        return [family]

    def describe(self) -> Iterable[Metric]:
        return [HistogramMetricFamily(self.name, self.documentation)]


class _Live(Collector):
    def __init__(self, collect: Callable[[], Iterable[GaugeMetricFamily | CounterMetricFamily]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        return self._collect()

    def describe(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        return []

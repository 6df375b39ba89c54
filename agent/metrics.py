"""Prometheus metrics of one agent, in a registry of its own (never the global one)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

from slawatch.model import ComponentRef, Outcome, Result

LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """The agent's metrics; live figures of the spool and sinks are read at scrape time."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        probe_labels = ["component", "probe", "kind"]
        self.probe_success = Gauge("slawatch_probe_success", "1 if the last run of the probe was up (or degraded)",
                                   probe_labels, registry=r)
        self.probe_duration = Gauge("slawatch_probe_duration_seconds", "Duration of the last probe run",
                                    probe_labels, registry=r)
        self.probe_runs = Counter("slawatch_probe_runs_total", "Probe runs by kind and outcome",
                                  ["kind", "outcome"], registry=r)
        self.component_up = Gauge("slawatch_component_up", "Confirmed state of the component as this agent sees it",
                                  ["component", "class", "tier", "customer"], registry=r)
        self.lateness = Histogram("slawatch_schedule_lateness_seconds", "Actual minus scheduled probe start",
                                  buckets=LATENESS_BUCKETS, registry=r)
        self.reload_ok = Gauge("slawatch_config_last_reload_successful", "1 if the last config (re)load worked",
                               registry=r)
        self.reload_ok.set(1)
        self.spool_errors = Counter("slawatch_spool_append_errors_total",
                                    "Spool appends that failed (disk full, I/O error) and were retried", registry=r)
        self.task_restarts = Counter("slawatch_task_restarts_total",
                                     "Restarts of a long-lived task of the agent after an error", ["task"], registry=r)
        # Children looked up once: label resolution costs more than the update on the hot path.
        self._labels: dict[tuple[str, str, str], tuple[Gauge, Gauge]] = {}
        self._runs: dict[tuple[str, Outcome], Counter] = {}

    def observe_probe(self, ref: ComponentRef, probe: str, kind: str, result: Result, duration_s: float) -> None:
        key = (ref.component, probe, kind)
        children = self._labels.get(key)
        if children is None:
            children = (self.probe_success.labels(*key), self.probe_duration.labels(*key))
            self._labels[key] = children
        children[0].set(1 if result.outcome.is_up else 0)
        children[1].set(duration_s)
        runs = self._runs.get((kind, result.outcome))
        if runs is None:
            runs = self._runs[(kind, result.outcome)] = self.probe_runs.labels(kind, result.outcome.value)
        runs.inc()

    def set_component(self, ref: ComponentRef, up: bool) -> None:
        self.component_up.labels(ref.component, ref.klass, ref.tier, ref.customer).set(1 if up else 0)

    def forget(self, refs: Iterable[ComponentRef], probes: Iterable[tuple[str, str, str]]) -> None:
        """Drop the series of components and probes that a reload removed."""
        for ref in refs:
            with contextlib.suppress(KeyError):
                self.component_up.remove(ref.component, ref.klass, ref.tier, ref.customer)
        for key in probes:
            if self._labels.pop(key, None) is not None:
                self.probe_success.remove(*key)
                self.probe_duration.remove(*key)

    def watch(self, collect: Callable[[], Iterable[GaugeMetricFamily | CounterMetricFamily]]) -> None:
        """Register a callback producing live metrics (spool size, sink errors) at scrape time."""
        self.registry.register(_Live(collect))


class _Live(Collector):
    def __init__(self, collect: Callable[[], Iterable[GaugeMetricFamily | CounterMetricFamily]]) -> None:
        self._collect = collect

    def collect(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        return self._collect()

    def describe(self) -> Iterable[GaugeMetricFamily | CounterMetricFamily]:
        return []

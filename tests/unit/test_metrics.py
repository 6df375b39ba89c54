"""The agent's per-run metrics, kept as plain numbers, expose what prometheus_client's own metrics would."""

from __future__ import annotations

import re

from hypothesis import given
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

from agent.metrics import LATENESS_BUCKETS, Metrics
from slawatch.model import ComponentRef, Outcome, Result

REFS = [ComponentRef(f"c{i}", "san", "gold", "acme") for i in range(3)]
KINDS = ["tcp", "icmp"]
_CREATED = re.compile(r"^(\w+_created(?:\{[^}]*\})?) [0-9.e+]+$", re.M)


def reference(runs: list[tuple[int, str, Outcome, float]], late: list[float], forgotten: int | None) -> bytes:
    """The same figures through prometheus_client's Gauge, Counter and Histogram, as the agent kept them before."""
    r = CollectorRegistry()
    labels = ["component", "probe", "kind"]
    success = Gauge("slawatch_probe_success", "1 if the last run of the probe was up (or degraded)", labels,
                    registry=r)
    duration = Gauge("slawatch_probe_duration_seconds", "Duration of the last probe run", labels, registry=r)
    counter = Counter("slawatch_probe_runs_total", "Probe runs by kind and outcome", ["kind", "outcome"], registry=r)
    Gauge("slawatch_component_up", "Confirmed state of the component as this agent sees it",
          ["component", "class", "tier", "customer"], registry=r)
    lateness = Histogram("slawatch_schedule_lateness_seconds", "Actual minus scheduled probe start",
                         buckets=LATENESS_BUCKETS, registry=r)
    for i, kind, outcome, seconds in runs:
        key = (REFS[i].component, kind, kind)
        success.labels(*key).set(1 if outcome.is_up else 0)
        duration.labels(*key).set(seconds)
        counter.labels(kind, outcome.value).inc()
    for value in late:
        lateness.observe(value)
    if forgotten is not None:
        key = (REFS[forgotten].component, "tcp", "tcp")
        if key in {(REFS[i].component, k, k) for i, k, _, _ in runs}:
            success.remove(*key)
            duration.remove(*key)
    return generate_latest(r)


def ours(runs: list[tuple[int, str, Outcome, float]], late: list[float], forgotten: int | None) -> bytes:
    m = Metrics()
    for i, kind, outcome, seconds in runs:
        m.observe_probe(REFS[i], kind, kind, Result(outcome, "x"), seconds)
    for value in late:
        m.lateness.observe(value)
    if forgotten is not None:
        m.forget([], [(REFS[forgotten].component, "tcp", "tcp")])
    text = generate_latest(m.registry)
    return text.split(b"# HELP slawatch_config_last_reload_successful")[0]  # the rest is not per run


def without_created(text: bytes) -> str:
    return _CREATED.sub(r"\1 T", text.decode())


RUN = st.tuples(st.integers(0, 2), st.sampled_from(KINDS), st.sampled_from(list(Outcome)),
                st.floats(0, 10, allow_nan=False))
LATE = st.one_of(st.sampled_from([*LATENESS_BUCKETS, 0.0, 100.0]), st.floats(-1, 20, allow_nan=False))


@given(st.lists(RUN, max_size=12), st.lists(LATE, max_size=12), st.one_of(st.none(), st.integers(0, 2)))
def test_the_exposition_is_prometheus_clients(runs: list[tuple[int, str, Outcome, float]], late: list[float],
                                              forgotten: int | None) -> None:
    assert without_created(ours(runs, late, forgotten)) == without_created(reference(runs, late, forgotten))


def test_a_counter_is_created_at_its_first_run() -> None:
    m = Metrics()
    m.observe_probe(REFS[0], "tcp", "tcp", Result(Outcome.UP, ""), 0.1)
    created = m.registry.get_sample_value("slawatch_probe_runs_created", {"kind": "tcp", "outcome": "up"})
    assert created is not None and created > 1.7e9
    m.observe_probe(REFS[1], "tcp", "tcp", Result(Outcome.UP, ""), 0.1)
    assert m.registry.get_sample_value("slawatch_probe_runs_total", {"kind": "tcp", "outcome": "up"}) == 2
    assert m.registry.get_sample_value("slawatch_probe_runs_created", {"kind": "tcp", "outcome": "up"}) == created

"""The Grafana dashboards: their JSON holds together, and every query, with Grafana's macros and variables
substituted the way Grafana does, runs against a real influxd holding what slawatch's own sink wrote and
returns what its panel shows. Prometheus panels are checked against a running agent's /metrics."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import re
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from slawatch.config.settings import InfluxSettings
from slawatch.model import ComponentRef, Heartbeat, Outcome, Point, Sample, StateChange
from slawatch.store.influxdb import RETENTION_POLICY, InfluxSink
from slawatch.testing import free_port
from slawatch.testing.influxd import Influxd, start_influxd

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[2]
GRAFANA = ROOT / "grafana"
DB = "telemetry"  # deliberately not "slawatch": the dashboards must not name a database

Json = dict[str, Any]


def load_generator() -> ModuleType:
    spec = importlib.util.spec_from_file_location("slawatch_grafana_generator", GRAFANA / "generator.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


generator = load_generator()
BOARDS: dict[str, Json] = {p.name: json.loads(p.read_text()) for p in sorted((GRAFANA / "dashboards").glob("*.json"))}
DATASOURCES = yaml.safe_load((GRAFANA / "provisioning" / "datasources" / "slawatch.yaml").read_text())
PROVIDERS = yaml.safe_load((GRAFANA / "provisioning" / "dashboards" / "slawatch.yaml").read_text())


def board(uid: str) -> Json:
    return next(b for b in BOARDS.values() if b["uid"] == uid)


def all_panels(b: Json) -> list[Json]:
    out = []
    for p in b["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def panel(uid: str, title: str) -> Json:
    matches = [p for p in all_panels(board(uid)) if p["title"] == title]
    assert len(matches) == 1, (uid, title)
    return matches[0]


def is_influx(target_or_var: Json) -> bool:
    return bool(target_or_var.get("datasource", {}).get("type") == "influxdb")


# ---------------------------------------------------------------- interpolation, as Grafana's InfluxDB source does

BUILTINS = {"timeFilter", "__timeFilter", "__interval", "__interval_ms", "__rate_interval", "__range", "__from",
            "__to", "__all"}
_VAR = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def regex_escape(value: str) -> str:
    """Grafana's influxSpecialRegexEscape."""
    return re.sub(r"([\\^$*+?.()|\[\]{}/])", r"\\\1", value)


def variable_value(values: list[str] | None) -> str:
    """A multi-value variable with All (`.*`) in a regex: None = All, one value escaped, several `(a|b)`."""
    if values is None:
        return ".*"
    escaped = [regex_escape(v) for v in values]
    return escaped[0] if len(escaped) == 1 else "(" + "|".join(escaped) + ")"


def interval_of(p: Json | None) -> str:
    """$__interval for a panel: 1m, or the panel's minimum interval when larger."""
    if p is not None and p.get("interval"):
        return str(p["interval"])
    return "1m"


def interpolate(query: str, *, b: Json, start_ms: int, end_ms: int, selection: dict[str, list[str]] | None = None,
                p: Json | None = None) -> str:
    selection = selection or {}
    interval = interval_of(p)
    interval_ms = int(interval[:-1]) * {"s": 1000, "m": 60_000, "h": 3_600_000}[interval[-1]]
    constants = {v["name"]: v["query"] for v in b["templating"]["list"] if v["type"] == "constant"}

    def sub(m: re.Match[str]) -> str:
        name = m.group(1) or m.group(2)
        if name in ("timeFilter", "__timeFilter"):
            return f"time >= {start_ms}ms and time <= {end_ms}ms"
        if name == "__from":
            return str(start_ms)
        if name == "__to":
            return str(end_ms)
        if name == "__interval":
            return interval
        if name == "__interval_ms":
            return str(interval_ms)
        if name in constants:
            return str(constants[name])
        return variable_value(selection.get(name))

    out = _VAR.sub(sub, query)
    assert not re.search(r"\$[\w{]", out), out  # every variable replaced ($/ ends a regex)
    return out


# ---------------------------------------------------------------- what the agent stored (written through InfluxSink)

HOUR_MS = 3_600_000
MIN_MS = 60_000
T0 = (int(time.time() * 1000) // HOUR_MS) * HOUR_MS - 3 * HOUR_MS
END = T0 + 3 * HOUR_MS
STEP_MS = 30_000
A, B = "agent-a", "agent-b"

SIP = ComponentRef("sip-1", "sip", "gold", "acme")
NET = ComponentRef("net-1", "network", "platinum", "globex")
LB = ComponentRef("lb-1", "load_balancer", "silver", "globex")
SAN = ComponentRef("san-1", "san", "gold", "acme")
VLAN = ComponentRef("vlan-1", "vlan", "base", "")  # no customer: the tag is absent
# (ref, probe, kind, agents)
PROBES = [(SIP, "options", "sip", (A, B)), (NET, "ping", "icmp", (A, B)), (NET, "ssh", "tcp", (A, B)),
          (LB, "http", "tcp", (A, B)), (SAN, "iscsi", "tcp", (A,)), (VLAN, "gw", "icmp", (B,))]
SIP_DOWN = (T0 + 60 * MIN_MS, T0 + 90 * MIN_MS)  # both agents see it
LB_DOWN_B = (T0 + 140 * MIN_MS, T0 + 160 * MIN_MS)  # only agent b sees it: not the component's downtime
A_GAP = (T0 + 100 * MIN_MS, T0 + 130 * MIN_MS)  # agent a stopped: no samples, no heartbeats


def within(ts: int, span: tuple[int, int]) -> bool:
    return span[0] <= ts < span[1]


def points() -> list[Point]:
    out: list[Point] = []
    for i, (ref, probe, kind, agents) in enumerate(PROBES):
        for agent in agents:
            out.append(StateChange(ref, agent, T0 - 2 * HOUR_MS, True, ""))  # before the range: carried in
            for k, ts in enumerate(range(T0, END, STEP_MS)):
                if agent == A and within(ts, A_GAP):
                    continue
                result = (Outcome.UP, "", 1.0 + i + (k % 20) * 0.5)
                if ref == SIP and within(ts, SIP_DOWN):
                    result = (Outcome.TIMEOUT, "no answer within 5s", None)
                elif ref == LB and agent == B and within(ts, LB_DOWN_B):
                    result = (Outcome.REFUSED, "connection refused", 0.2)
                out.append(Sample(ref, probe, kind, agent, ts, result[0], result[1], result[2]))
    for agent in (A, B):
        out += [StateChange(SIP, agent, SIP_DOWN[0], False, "timeout: no answer within 5s"),
                StateChange(SIP, agent, SIP_DOWN[1], True, "")]
        out += [Heartbeat(agent, ts, 60.0) for ts in range(T0, END, MIN_MS) if not (agent == A and within(ts, A_GAP))]
    out += [StateChange(LB, B, LB_DOWN_B[0], False, "refused: connection refused"),
            StateChange(LB, B, LB_DOWN_B[1], True, "")]
    return out


async def store(url: str) -> None:
    sink = InfluxSink(InfluxSettings(url=url, database=DB))
    try:
        batch = points()
        for i in range(0, len(batch), 5000):
            await sink.write(batch[i:i + 5000])
    finally:
        await sink.close()


@pytest.fixture(scope="module")
def influx(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Influxd]:
    server = start_influxd(tmp_path_factory.mktemp("influxd"))
    try:
        asyncio.run(store(server.url))
        yield server
    finally:
        server.stop()


def run(server: Influxd, b: Json, query: str, *, p: Json | None = None,
        selection: dict[str, list[str]] | None = None) -> list[dict[str, Any]]:
    """The series a query returns: [{"tags": {...}, "columns": [...], "values": [...]}]."""
    q = interpolate(query, b=b, start_ms=T0, end_ms=END - 1, selection=selection, p=p)
    results = server.query(q, DB)
    assert len(results) == 1, q
    return list(results[0].get("series", []))


def by_tag(series: list[dict[str, Any]], tag: str, column: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for s in series:
        (row,) = s["values"]
        out[s["tags"][tag]] = row[s["columns"].index(column)]
    return out


# ---------------------------------------------------------------- structure

def test_dashboards_are_generated_from_the_contract_and_current() -> None:
    contract = yaml.safe_load((ROOT / "config" / "contract.yaml").read_text())
    built = generator.build(contract)
    assert set(built) == set(BOARDS)
    for name, b in built.items():
        assert generator.render(b) == (GRAFANA / "dashboards" / name).read_text(), \
            f"{name} is stale: run .venv/bin/python grafana/generator.py"
    assert generator.RETENTION_POLICY == RETENTION_POLICY
    assert set(generator.OUTCOMES) == {o.value for o in Outcome}


def test_structure_uids_ids_and_schema() -> None:
    uids = [b["uid"] for b in BOARDS.values()]
    assert sorted(uids) == ["slawatch-agents", "slawatch-availability", "slawatch-probes"]
    for b in BOARDS.values():
        assert 36 <= b["schemaVersion"] <= 41  # Grafana 10.x / 11.x
        ids = [p["id"] for p in all_panels(b)]
        assert len(ids) == len(set(ids)), b["uid"]
        for p in all_panels(b):
            assert {"type", "title", "gridPos"} <= set(p), p
            assert p["gridPos"]["x"] + p["gridPos"]["w"] <= 24
            if p["type"] != "row":
                assert p["targets"] and p.get("description"), p["title"]
                refs = [t["refId"] for t in p["targets"]]
                assert len(refs) == len(set(refs)), p["title"]


def datasource_refs(obj: Any) -> Iterator[Json]:
    if isinstance(obj, dict):
        if isinstance(obj.get("datasource"), dict):
            yield obj["datasource"]
        for v in obj.values():
            yield from datasource_refs(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from datasource_refs(v)


def test_datasource_references_resolve_to_the_provisioned_uids() -> None:
    provisioned = {d["uid"]: d["type"] for d in DATASOURCES["datasources"]}
    assert provisioned == {"slawatch-influx": "influxdb", "slawatch-prometheus": "prometheus"}
    for b in BOARDS.values():
        refs = list(datasource_refs(b))
        assert refs
        for ref in refs:
            assert set(ref) == {"type", "uid"} and provisioned[ref["uid"]] == ref["type"], ref
        for p in all_panels(b):
            for t in p.get("targets", []):
                assert isinstance(t.get("datasource"), dict), (p["title"], t)  # never the default datasource


def test_provisioning_reads_the_environment() -> None:
    influx_ds = next(d for d in DATASOURCES["datasources"] if d["uid"] == "slawatch-influx")
    assert influx_ds["url"] == "${SLAWATCH_INFLUX_URL}"
    assert influx_ds["user"] == "${SLAWATCH_INFLUX_USER}"
    assert influx_ds["jsonData"]["dbName"] == "${SLAWATCH_INFLUX_DB}"
    assert influx_ds["jsonData"]["version"] == "InfluxQL"
    assert influx_ds["secureJsonData"] == {"password": "${SLAWATCH_INFLUX_PASSWORD}"}
    assert "password" not in influx_ds
    prom_ds = next(d for d in DATASOURCES["datasources"] if d["uid"] == "slawatch-prometheus")
    assert prom_ds["url"] == "${SLAWATCH_PROMETHEUS_URL}"
    (provider,) = PROVIDERS["providers"]
    assert provider["type"] == "file" and provider["options"]["path"].startswith("/")


def queries(b: Json) -> Iterator[tuple[Json | None, str]]:
    """(panel or None for a variable, query text) of every InfluxQL and PromQL query in a dashboard."""
    for v in b["templating"]["list"]:
        if v["type"] == "query":
            yield None, v["query"]
    for p in all_panels(b):
        for t in p.get("targets", []):
            yield p, t.get("query") or t["expr"]


def test_every_variable_used_is_defined_and_no_database_is_named() -> None:
    for b in BOARDS.values():
        defined = {v["name"] for v in b["templating"]["list"]}
        for _, q in queries(b):
            used = {m.group(1) or m.group(2) for m in _VAR.finditer(q)}
            assert used <= defined | BUILTINS, (b["uid"], used - defined - BUILTINS, q)
        text = json.dumps(b)
        assert '"dbName"' not in text and '"database"' not in text
        for p in all_panels(b):
            for t in p.get("targets", []):
                if is_influx(t):
                    # every measurement is qualified by the retention policy only: "$rp"."slawatch_x"
                    sources = re.findall(r'FROM\s+("[^"]*"(?:\."[^"]*")*)', t["query"])
                    assert sources and all(re.fullmatch(r'"\$rp"\."slawatch_\w+"', s) for s in sources), t["query"]
        for v in b["templating"]["list"]:
            if v["type"] == "query":
                assert v["multi"] and v["includeAll"] and v["allValue"] == ".*", v["name"]
                assert re.fullmatch(r'SHOW TAG VALUES FROM "\$rp"\."slawatch_\w+" WITH KEY = "\w+"( WHERE .*)?',
                                    v["query"]), v["query"]


def test_one_availability_panel_per_contract_target_covers_every_class_and_tier() -> None:
    contract = yaml.safe_load((ROOT / "config" / "contract.yaml").read_text())
    wanted = {float(t) for per_tier in contract["classes"].values() for t in per_tier.values()}
    panels = [p for p in all_panels(board("slawatch-availability")) if p["title"].startswith("Target ")]
    greens = [p["fieldConfig"]["defaults"]["thresholds"]["steps"][-1] for p in panels]
    assert {g["value"] for g in greens} == wanted and all(g["color"] == "green" for g in greens)
    for p in panels:
        assert p["timeFrom"] == "now/M"
        assert "operational view" in p["description"].lower()


# ---------------------------------------------------------------- queries against the real influxd


@pytest.mark.peer("influxd")
def test_every_influxql_query_runs_and_returns_data(influx: Influxd) -> None:
    for b in BOARDS.values():
        for v in b["templating"]["list"]:
            if v["type"] == "query":
                assert run(influx, b, v["query"]), (b["uid"], v["name"])
        for p in all_panels(b):
            targets = [t for t in p.get("targets", []) if is_influx(t)]
            # every query runs without an error; every panel shows something (one query per outcome may be empty)
            results = [run(influx, b, t["query"], p=p) for t in targets]
            assert not targets or any(results), (b["uid"], p["title"])


@pytest.mark.peer("influxd")
def test_availability_this_month_per_component(influx: Influxd) -> None:
    b = board("slawatch-availability")
    seen: dict[str, float] = {}
    for p in all_panels(b):
        if p["title"].startswith("Target "):
            (target,) = p["targets"]
            values = by_tag(run(influx, b, target["query"], p=p), "component", "availability")
            assert not set(values) & set(seen), "a component is in one target panel only"
            seen.update(values)
            if p["title"] == "Target 99 %":  # sip gold, vlan base
                assert set(values) == {"sip-1", "vlan-1"}
            if p["title"] == "Target 99.8 %":
                assert set(values) == {"san-1"}
            if p["title"] == "Target 99.99 %":
                assert set(values) == {"net-1", "lb-1"}
    assert set(seen) == {"sip-1", "net-1", "lb-1", "san-1", "vlan-1"}
    # sip-1 down 30 of 180 minutes (both agents saw it); lb-1 down for agent b only; san-1's agent had a gap
    assert seen["sip-1"] == pytest.approx(150 / 180 * 100, abs=100 / 180)
    assert seen["sip-1"] < 99
    assert {k: v for k, v in seen.items() if k != "sip-1"} == {"net-1": 100, "lb-1": 100, "san-1": 100, "vlan-1": 100}


@pytest.mark.peer("influxd")
def test_availability_follows_the_customer_and_component_selection(influx: Influxd) -> None:
    b = board("slawatch-availability")
    p = panel("slawatch-availability", "Target 99 %")
    acme = by_tag(run(influx, b, p["targets"][0]["query"], p=p, selection={"customer": ["acme"]}), "component",
                  "availability")
    assert set(acme) == {"sip-1"}
    one_agent = by_tag(run(influx, b, panel("slawatch-availability", "Target 99.99 %")["targets"][0]["query"],
                           selection={"agent": [B], "component": ["lb-1", "net-1"]}), "component", "availability")
    assert one_agent["net-1"] == 100
    assert one_agent["lb-1"] == pytest.approx(160 / 180 * 100, abs=100 / 180)  # agent b's own view


@pytest.mark.peer("influxd")
def test_downtime_by_class_and_by_tier(influx: Influxd) -> None:
    b = board("slawatch-availability")
    for by, down_key in (("class", "sip"), ("tier", "gold")):
        p = panel("slawatch-availability", f"Downtime by {by}")
        downtime = by_tag(run(influx, b, p["targets"][0]["query"], p=p), by, "downtime")
        assert downtime.pop(down_key) == pytest.approx(30 * 60, abs=60)
        assert downtime and all(v == 0 for v in downtime.values()), downtime
        assert p["fieldConfig"]["defaults"]["unit"] == "s"


@pytest.mark.peer("influxd")
def test_state_timeline_carries_the_state_in_force_at_the_start(influx: Influxd) -> None:
    b = board("slawatch-availability")
    p = panel("slawatch-availability", "Component state (confirmed, per agent)")
    assert p["type"] == "state-timeline"
    series = run(influx, b, p["targets"][0]["query"], p=p)
    rows = {(s["tags"]["component"], s["tags"]["agent"]): s["values"] for s in series}
    assert set(rows) == {(ref.component, agent) for ref, _, _, agents in PROBES for agent in agents}
    for values in rows.values():
        assert values[0] == [T0 - 2 * HOUR_MS, 1]  # the last change before the range
    assert [v[1] for v in rows[("sip-1", A)]] == [1, 0, 1]
    assert [v[0] for v in rows[("sip-1", A)]][1:] == list(SIP_DOWN)
    assert [v[1] for v in rows[("lb-1", B)]] == [1, 0, 1]
    assert [v[1] for v in rows[("lb-1", A)]] == [1]
    acme = run(influx, b, p["targets"][0]["query"], p=p, selection={"customer": ["acme"], "agent": [A]})
    assert {(s["tags"]["component"], s["tags"]["agent"]) for s in acme} == {("sip-1", A), ("san-1", A)}


@pytest.mark.peer("influxd")
def test_latency_percentiles(influx: Influxd) -> None:
    b = board("slawatch-probes")
    p = panel("slawatch-probes", "Latency percentiles per component and kind")
    series = run(influx, b, p["targets"][0]["query"], p=p)
    keys = {(s["tags"]["component"], s["tags"]["kind"]) for s in series}
    assert keys == {(ref.component, kind) for ref, _, kind, _ in PROBES}
    for s in series:
        assert s["columns"] == ["time", "p50", "p95", "p99"]
        for _, p50, p95, p99 in s["values"]:
            assert p50 <= p95 <= p99
    sip = next(s for s in series if s["tags"]["component"] == "sip-1")
    # fill(none): the minutes of the outage (timeouts, no latency) have no row
    assert len(sip["values"]) == 150


@pytest.mark.peer("influxd")
def test_outcomes_per_agent_and_recent_reasons(influx: Influxd) -> None:
    b = board("slawatch-probes")
    p = panel("slawatch-probes", "Probe outcomes per agent")
    counts: dict[tuple[str, str], int] = {}
    for t in p["targets"]:
        for s in run(influx, b, t["query"], p=p):
            (column,) = s["columns"][1:]
            counts[(column, s["tags"]["agent"])] = sum(v[1] for v in s["values"])
    assert counts[("timeout", A)] == counts[("timeout", B)] == 60  # 30 min at 30 s
    assert counts[("refused", B)] == 40 and ("refused", A) not in counts
    assert counts[("up", A)] > 0 and counts[("up", B)] > 0
    assert ("unreachable", A) not in counts

    table = panel("slawatch-probes", "Recent failures and their reasons")
    (t,) = table["targets"]
    assert t["resultFormat"] == "table"
    (s,) = run(influx, b, t["query"], p=table)
    assert s["columns"] == ["time", "component", "probe", "kind", "agent", "outcome", "reason", "latency_ms"]
    assert len(s["values"]) == 160  # 2 x 60 timeouts + 40 refusals, under the limit of 200
    times = [v[0] for v in s["values"]]
    assert times == sorted(times, reverse=True)
    assert {(v[1], v[5], v[6]) for v in s["values"]} == {("sip-1", "timeout", "no answer within 5s"),
                                                          ("lb-1", "refused", "connection refused")}
    only_a = run(influx, b, t["query"], p=table, selection={"agent": [A]})
    assert {v[4] for v in only_a[0]["values"]} == {A}


@pytest.mark.peer("influxd")
def test_heartbeat_gap_is_visible(influx: Influxd) -> None:
    b = board("slawatch-agents")
    p = panel("slawatch-agents", "Heartbeats per agent")
    assert interval_of(p) == "5m"
    counts = {s["tags"]["agent"]: [v[1] for v in s["values"]] for s in run(influx, b, p["targets"][0]["query"], p=p)}
    assert set(counts) == {A, B}
    assert min(counts[B]) == 5 and counts[B].count(0) == 0
    assert counts[A].count(0) == 6  # 30 minutes without heartbeats = six empty 5-minute buckets

    gap = panel("slawatch-agents", "Longest gap between heartbeats")
    gaps = {s["tags"]["agent"]: max(v[1] for v in s["values"]) for s in run(influx, b, gap["targets"][0]["query"])}
    assert gaps == {A: 31 * 60, B: 60}
    assert gaps[A] > gap["fieldConfig"]["defaults"]["thresholds"]["steps"][-1]["value"] > gaps[B]

    last = panel("slawatch-agents", "Last heartbeat per agent")
    rows = {s["tags"]["agent"]: s["values"] for s in run(influx, b, last["targets"][0]["query"], p=last)}
    assert rows == {A: [[END - MIN_MS, 60.0]], B: [[END - MIN_MS, 60.0]]}


@pytest.mark.peer("influxd")
def test_variables_cascade(influx: Influxd) -> None:
    def values(uid: str, name: str, selection: dict[str, list[str]] | None = None) -> set[str]:
        b = board(uid)
        v = next(v for v in b["templating"]["list"] if v["name"] == name)
        return {row[1] for s in run(influx, b, v["query"], selection=selection) for row in s["values"]}

    uid = "slawatch-availability"
    assert values(uid, "customer") == {"acme", "globex"}
    assert values(uid, "class") == {"sip", "network", "load_balancer", "san", "vlan"}
    assert values(uid, "class", {"customer": ["acme"]}) == {"sip", "san"}
    assert values(uid, "tier", {"customer": ["acme"], "class": ["san"]}) == {"gold"}
    assert values(uid, "component", {"customer": ["globex"]}) == {"net-1", "lb-1"}
    assert values(uid, "component", {"tier": ["gold", "base"]}) == {"sip-1", "san-1", "vlan-1"}
    assert values(uid, "agent", {"component": ["san-1"]}) == {A}
    assert values("slawatch-probes", "agent", {"component": ["vlan-1"]}) == {B}
    assert values("slawatch-agents", "agent") == {A, B}


# ---------------------------------------------------------------- Prometheus panels against a running agent


async def scrape_agent(tmp: Path) -> str:
    from agent.web import serve
    from slawatch.cli.agent import build_agent
    from slawatch.config.loader import bundled_contract, load

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    target = await asyncio.start_server(accept, "127.0.0.1", free_port())
    port = target.sockets[0].getsockname()[1]
    cfg = tmp / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: grafana-test, listen: "127.0.0.1:{free_port()}", heartbeat_s: 1}}
storage: {{sqlite: {{path: {tmp / 'store.db'}}}, spool: {{path: {tmp / 'spool'}}}}}
contract: {bundled_contract()}
defaults: {{interval_s: 0.2, timeout_s: 0.15}}
customers: [{{name: acme, tier: gold}}]
components:
  - {{name: san-1, class: san, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:{port}"}}]}}
""")
    agent = build_agent(load(cfg))
    stop = asyncio.Event()
    task = asyncio.create_task(agent.run(stop))
    web_port = free_port()
    listener = await serve(agent, "127.0.0.1", web_port)
    try:
        await asyncio.sleep(1.0)

        def get() -> str:
            with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as resp:
                return str(resp.read().decode())

        return await asyncio.to_thread(get)
    finally:
        await listener.close()
        stop.set()
        await asyncio.wait_for(task, 15)
        target.close()
        await target.wait_closed()


async def test_prometheus_panels_use_metrics_the_agent_exposes(tmp_path: Path) -> None:
    exposition = await scrape_agent(tmp_path)
    exposed = {m.group(1) for m in re.finditer(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)[{ ]", exposition, re.M)}
    assert "slawatch_schedule_lateness_seconds_bucket" in exposed
    used: set[str] = set()
    for b in BOARDS.values():
        for p in all_panels(b):
            for t in p.get("targets", []):
                if t.get("datasource", {}).get("type") == "prometheus":
                    names = set(re.findall(r"\bslawatch_\w+", t["expr"]))
                    assert names, t["expr"]
                    used |= names
    assert used - exposed == set(), f"not on /metrics: {used - exposed}"
    assert {"slawatch_spool_bytes", "slawatch_spool_samples", "slawatch_sink_write_errors_total",
            "slawatch_schedule_lateness_seconds_bucket"} <= used

"""The slawatch Grafana dashboards, built from the SLA contract (targets per class and tier) as JSON.

    python grafana/generator.py [--contract config/contract.yaml] [--rp slawatch] [--out grafana/dashboards]

The committed JSON under grafana/dashboards/ is this script's output for config/contract.yaml; a test
checks that it is current. Another contract (other classes, tiers or targets) is another run.

Every InfluxQL query names the retention policy (`"$rp"."slawatch_probe"`, a constant variable): unqualified
queries read the database's DEFAULT policy, which is not slawatch's. The database itself comes from the
datasource (uid slawatch-influx), never from a query.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import yaml

from slawatch import schema
from slawatch.model import Outcome

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_VERSION = 39  # Grafana 10.4 / 11.x
RETENTION_POLICY = schema.RETENTION_POLICY
OUTCOMES = tuple(str(o) for o in Outcome)

INFLUX = {"type": "influxdb", "uid": "slawatch-influx"}
PROMETHEUS = {"type": "prometheus", "uid": "slawatch-prometheus"}

PROBE = f'"$rp"."{schema.PROBE.name}"'
STATE = f'"$rp"."{schema.STATE.name}"'
HEARTBEAT = f'"$rp"."{schema.HEARTBEAT.name}"'

BUCKET = "1m"  # the time resolution of the availability and downtime figures
BUCKET_S = 60
HEARTBEAT_GAP_S = 180  # 3 x the default heartbeat_s: the report counts a longer gap as unmonitored (docs/schema.md)

Json = dict[str, Any]


# ---------------------------------------------------------------- InfluxQL pieces


def where_tags(*keys: str) -> str:
    """`"k" =~ /^$k$/` for each key: Grafana interpolates a multi-value variable as `(a|b)`, All as `.*`."""
    return " AND ".join(f'"{k}" =~ /^${k}$/' for k in keys)


COMPONENT_TAGS = ("customer", "class", "tier", "component")
F_COMPONENT = where_tags(*COMPONENT_TAGS, "agent")


def ql_string(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def ql_regex_alternatives(values: Iterable[str]) -> str:
    return "/^(" + "|".join(re.sub(r"([\\/.^$|?*+()\[\]{}-])", r"\\\1", v) for v in values) + ")$/"


def group_by(*tags: str) -> str:
    return ", ".join(f'"{t}"' for t in tags)


def minute_up(tags: Sequence[str], extra: str = "") -> str:
    """One row per minute and component (plus `tags`): 1 when the component was up in that minute.

    Inner: a minute is down for an agent when any of its probes of the component failed in it (min).
    Outer: the component is down in a minute only when every agent that has data for it saw it down (max) -
    the contract's default quorum (majority) for one or two agents, and what keeps one monitoring host's
    own network trouble out of the figure. Minutes without any sample are left out (unmonitored, not down).
    """
    keep = group_by("component", *tags)
    inner = (f'SELECT min("up") AS "up" FROM {PROBE} WHERE $timeFilter AND {F_COMPONENT}{extra} '
             f'GROUP BY time({BUCKET}), {keep}, "agent" fill(none)')
    return f'SELECT max("up") AS "up" FROM ({inner}) WHERE $timeFilter GROUP BY time({BUCKET}), {keep} fill(none)'


def availability_query(extra: str = "") -> str:
    return (f'SELECT mean("up") * 100 AS "availability" FROM ({minute_up((), extra)}) '
            f'WHERE $timeFilter GROUP BY "component"')


def downtime_query(by: str) -> str:
    down = minute_up((by,)).replace('SELECT max("up") AS "up"', 'SELECT 1 - max("up") AS "down"', 1)
    return f'SELECT sum("down") * {BUCKET_S} AS "downtime" FROM ({down}) WHERE $timeFilter GROUP BY "{by}"'


def influx(query: str, ref: str = "A", *, table: bool = False, alias: str = "") -> Json:
    target: Json = {"refId": ref, "datasource": INFLUX, "rawQuery": True, "query": query,
                    "resultFormat": "table" if table else "time_series"}
    if alias:
        target["alias"] = alias
    return target


def prom(expr: str, legend: str, ref: str = "A") -> Json:
    return {"refId": ref, "datasource": PROMETHEUS, "expr": expr, "legendFormat": legend, "range": True,
            "editorMode": "code"}


# ---------------------------------------------------------------- variables


def constant_rp(rp: str) -> Json:
    return {"name": "rp", "label": "Retention policy", "type": "constant", "hide": 2, "query": rp,
            "current": {"text": rp, "value": rp}, "options": [{"selected": True, "text": rp, "value": rp}],
            "description": "The InfluxDB retention policy slawatch writes to (storage.influxdb.retention_policy)"}


def tag_variable(name: str, measurement: str, after: Sequence[str]) -> Json:
    """A multi-value tag variable; `after` are the earlier variables it cascades from."""
    query = f'SHOW TAG VALUES FROM {measurement} WITH KEY = "{name}"'
    if after:
        query += " WHERE " + where_tags(*after)
    return {
        "name": name, "label": name.capitalize(), "type": "query", "datasource": INFLUX,
        "query": query, "definition": query, "refresh": 2, "sort": 1, "regex": "", "hide": 0,
        "multi": True, "includeAll": True,
        # `.*` rather than the list of values: short queries, and points without the tag (a component with
        # no customer) still match.
        "allValue": ".*",
        "current": {"selected": True, "text": ["All"], "value": ["$__all"]}, "options": [],
    }


def component_variables(rp: str) -> list[Json]:
    out = [constant_rp(rp)]
    for i, name in enumerate((*COMPONENT_TAGS, "agent")):
        out.append(tag_variable(name, PROBE, (*COMPONENT_TAGS, "agent")[:i]))
    return out


# ---------------------------------------------------------------- panels


class Layout:
    """Places panels left to right, 24 columns wide, and numbers them."""

    def __init__(self) -> None:
        self.x = self.y = self.row_h = 0
        self.panels: list[Json] = []

    def add(self, panel: Json, w: int, h: int) -> None:
        if self.x + w > 24:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        panel = {"id": len(self.panels) + 1, **panel, "gridPos": {"h": h, "w": w, "x": self.x, "y": self.y}}
        self.panels.append(panel)
        self.x += w
        self.row_h = max(self.row_h, h)

    def row(self, title: str) -> None:
        if self.x:
            self.x, self.y, self.row_h = 0, self.y + self.row_h, 0
        self.panels.append({"id": len(self.panels) + 1, "type": "row", "title": title, "collapsed": False,
                            "panels": [], "gridPos": {"h": 1, "w": 24, "x": 0, "y": self.y}})
        self.y += 1


def panel(kind: str, title: str, description: str, targets: list[Json], *, unit: str = "",
          datasource: Json = INFLUX, defaults: Json | None = None, options: Json | None = None,
          overrides: list[Json] | None = None, **extra: Any) -> Json:
    field_defaults: Json = {"unit": unit} if unit else {}
    field_defaults.update(defaults or {})
    return {"type": kind, "title": title, "description": description, "datasource": datasource,
            "targets": targets, "fieldConfig": {"defaults": field_defaults, "overrides": overrides or []},
            "options": options or {}, **extra}


def thresholds(*steps: tuple[str, float | None]) -> Json:
    return {"mode": "absolute", "steps": [{"color": c, "value": v} for c, v in steps]}


def timeseries(title: str, description: str, targets: list[Json], *, unit: str = "", bars: bool = False,
               stack: bool = False, datasource: Json = INFLUX, **extra: Any) -> Json:
    custom: Json = {"drawStyle": "bars" if bars else "line", "lineWidth": 1, "fillOpacity": 60 if bars else 10,
                    "showPoints": "never", "spanNulls": False,
                    "stacking": {"mode": "normal" if stack else "none", "group": "A"}}
    return panel("timeseries", title, description, targets, unit=unit, datasource=datasource,
                 defaults={"custom": custom, "color": {"mode": "palette-classic"}},
                 options={"legend": {"displayMode": "table", "placement": "right", "showLegend": True,
                                     "calcs": ["max"]},
                          "tooltip": {"mode": "multi", "sort": "desc"}}, **extra)


def bar_gauge(title: str, description: str, targets: list[Json], *, unit: str, display_name: str,
              defaults: Json) -> Json:
    return panel("bargauge", title, description, targets, unit=unit,
                 defaults={"displayName": display_name, **defaults},
                 options={"orientation": "horizontal", "displayMode": "gradient", "valueMode": "color",
                          "namePlacement": "left", "showUnfilled": True, "sizing": "auto", "minVizHeight": 16,
                          "reduceOptions": {"calcs": ["lastNotNull"], "fields": "", "values": False}})


def dashboard(uid: str, title: str, description: str, variables: list[Json], panels: list[Json],
              *, time_from: str = "now-24h") -> Json:
    return {
        "uid": uid, "title": title, "description": description, "tags": ["slawatch"],
        "schemaVersion": SCHEMA_VERSION, "version": 1, "editable": False, "graphTooltip": 1,
        "timezone": "utc", "refresh": "1m", "time": {"from": time_from, "to": "now"},
        "timepicker": {}, "fiscalYearStartMonth": 0, "liveNow": False, "weekStart": "",
        "annotations": {"list": []},
        "links": [{"type": "dashboards", "tags": ["slawatch"], "asDropdown": False, "includeVars": True,
                   "keepTime": True, "title": "slawatch", "icon": "external link", "targetBlank": False,
                   "tooltip": "", "url": ""}],
        "templating": {"list": variables},
        "panels": panels,
    }


# ---------------------------------------------------------------- Availability

OPERATIONAL = ("Operational view, not the contract figure: the monthly report (slawatch report) applies the "
               "720 h basis, announced maintenance, quorum and unmonitored-time policy exactly. ")

AVAILABILITY_HOW = (
    "Time-weighted at 1-minute resolution from slawatch_probe: a minute is down for an agent when any probe "
    "of the component failed in it, and down for the component when every agent with data saw it down; "
    "availability = up minutes / minutes with data. Counting minutes, not samples, keeps faster retries "
    "during an outage from weighing more. Why not slawatch_state: it holds only the changes, and InfluxQL 1.6 "
    "cannot carry the state in force at the start of the range into an aggregate (fill(previous) stops at "
    "the range start, the outer time range bounds every subquery), so a component that has been up all "
    "month would have no value. Minutes without data (agent down) are left out, not counted as down. An "
    "unconfirmed single failure counts here as a down minute (the report ignores it), so this view errs "
    "on the low side. Grafana rounds the shown value; the report rounds down.")


def target_groups(contract: Json) -> list[tuple[float, list[tuple[str, list[str]]]]]:
    """(target %, [(class, [tiers])]) for each distinct target in the contract, highest first."""
    tiers = [str(t) for t in contract.get("tiers", [])]
    by_target: dict[float, list[tuple[str, list[str]]]] = {}
    for klass, targets in contract["classes"].items():
        per: dict[float, list[str]] = {}
        for tier in tiers or list(targets):
            if tier in targets:
                per.setdefault(float(targets[tier]), []).append(str(tier))
        for target, tier_list in per.items():
            by_target.setdefault(target, []).append((str(klass), tier_list))
    return sorted(by_target.items(), reverse=True)


def fmt_pct(target: float) -> str:
    return f"{target:g}"


def availability_dashboard(contract: Json, rp: str) -> Json:
    lay = Layout()
    lay.row("Availability this month against the contract target")
    for target, pairs in target_groups(contract):
        cond = " OR ".join(f'("class" = {ql_string(k)} AND "tier" =~ {ql_regex_alternatives(ts)})'
                           for k, ts in pairs)
        who = "; ".join(f"{k}: {', '.join(ts)}" for k, ts in pairs)
        lay.add(bar_gauge(
            f"Target {fmt_pct(target)} %",
            f"Components whose contract target ({contract.get('name', 'contract')}) is {fmt_pct(target)} % — "
            f"{who}. Red below the target, green at or above it. One panel per distinct target, generated "
            f"from config/contract.yaml by grafana/generator.py, so that each panel's threshold is exactly "
            f"its components' target (Grafana thresholds are per panel, not per row). This month so far. "
            + OPERATIONAL + AVAILABILITY_HOW,
            [influx(availability_query(f" AND ({cond})"), alias="$tag_component")],
            unit="percent", display_name="${__field.labels.component}",
            defaults={"decimals": 3, "min": max(0.0, float(int(target)) - 4), "max": 100,
                      "color": {"mode": "thresholds"}, "thresholds": thresholds(("red", None), ("green", target))}),
            w=8, h=10)
        lay.panels[-1]["timeFrom"] = "now/M"
        lay.panels[-1]["hideTimeOverride"] = False

    lay.row("State and downtime in the selected range")
    lay.add(panel(
        "state-timeline", "Component state (confirmed, per agent)",
        "From slawatch_state: the confirmed state changes each agent recorded, dated at the first failed / "
        "first good probe. The state in force when the range starts is carried in by a second subquery "
        "(the last change before the range), so components without a change in the range still show. "
        "A row per component and agent. " + OPERATIONAL,
        [influx(
            f'SELECT "up" FROM '
            f'(SELECT last("up") AS "up" FROM {STATE} WHERE time < ${{__from}}ms AND {F_COMPONENT} '
            f'GROUP BY "component", "agent"), '
            f'(SELECT "up" FROM {STATE} WHERE $timeFilter AND {F_COMPONENT} GROUP BY "component", "agent") '
            f'GROUP BY "component", "agent"',
            alias="$tag_component · $tag_agent")],
        defaults={"displayName": "${__field.labels.component} · ${__field.labels.agent}",
                  "color": {"mode": "thresholds"}, "thresholds": thresholds(("red", None), ("green", 1)),
                  "mappings": [{"type": "value", "options": {
                      "0": {"index": 0, "text": "down", "color": "red"},
                      "1": {"index": 1, "text": "up", "color": "green"}}}],
                  "custom": {"fillOpacity": 80, "lineWidth": 0}},
        options={"mergeValues": True, "showValue": "never", "alignValue": "left", "rowHeight": 0.9,
                 "legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                 "tooltip": {"mode": "single", "sort": "none"}}),
        w=24, h=12)
    for by in ("class", "tier"):
        lay.add(bar_gauge(
            f"Downtime by {by}",
            f"Component-downtime summed per {by} over the selected range (a {by} with two components down "
            f"for 10 minutes shows 20 minutes). Minutes counted as in the availability panels: "
            + AVAILABILITY_HOW,
            [influx(downtime_query(by), alias=f"$tag_{by}")],
            unit="s", display_name=f"${{__field.labels.{by}}}",
            defaults={"decimals": 0, "min": 0, "color": {"mode": "thresholds"},
                      "thresholds": thresholds(("green", None), ("red", 1))}),
            w=12, h=8)
    return dashboard("slawatch-availability", "slawatch — Availability",
                     "Availability per component against its contract target, state timeline and downtime.",
                     component_variables(rp), lay.panels, time_from="now-7d")


# ---------------------------------------------------------------- Probes

OUTCOME_COLORS = {"up": "green", "degraded": "yellow", "timeout": "orange", "refused": "red",
                  "unreachable": "purple", "bad_response": "dark-red", "agent_error": "blue"}


def probes_dashboard(rp: str) -> Json:
    lay = Layout()
    lay.add(timeseries(
        "Latency percentiles per component and kind",
        "PERCENTILE of latency_ms (p50, p95, p99) per $__interval from slawatch_probe, per component and "
        "probe kind. Failed runs without a latency are not counted.",
        [influx(f'SELECT percentile("latency_ms", 50) AS "p50", percentile("latency_ms", 95) AS "p95", '
                f'percentile("latency_ms", 99) AS "p99" FROM {PROBE} WHERE $timeFilter AND {F_COMPONENT} '
                f'GROUP BY time($__interval), "component", "kind" fill(none)',
                alias="$col $tag_component ($tag_kind)")],
        unit="ms"), w=24, h=10)
    lay.add(timeseries(
        "Probe outcomes per agent",
        "Probe runs per $__interval by outcome and agent. outcome is a field, which InfluxQL cannot GROUP "
        "BY, so there is one query per outcome (the list of slawatch.model.Outcome).",
        [influx(f'SELECT count("up") AS "{o}" FROM {PROBE} WHERE $timeFilter AND {F_COMPONENT} '
                f'AND "outcome" = {ql_string(o)} GROUP BY time($__interval), "agent" fill(none)',
                ref=chr(ord("A") + i), alias="$col · $tag_agent")
         for i, o in enumerate(OUTCOMES)],
        bars=True, stack=True,
        overrides=[{"matcher": {"id": "byRegexp", "options": f"^{o} "},
                    "properties": [{"id": "color", "value": {"mode": "fixed", "fixedColor": c}}]}
                   for o, c in OUTCOME_COLORS.items()]), w=24, h=9)
    lay.add(panel(
        "table", "Recent failures and their reasons",
        "The latest 200 probe runs whose outcome was not up (degraded included), newest first.",
        [influx(f'SELECT "component", "probe", "kind", "agent", "outcome", "reason", "latency_ms" FROM {PROBE} '
                f'WHERE $timeFilter AND {F_COMPONENT} AND "outcome" != \'up\' ORDER BY time DESC LIMIT 200',
                table=True)],
        options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}},
        defaults={"custom": {"align": "auto", "filterable": True}}), w=24, h=10)
    return dashboard("slawatch-probes", "slawatch — Probes",
                     "Probe latencies, outcomes and failure reasons per component, kind and agent.",
                     component_variables(rp), lay.panels, time_from="now-6h")


# ---------------------------------------------------------------- Agents

PROM_NOTE = ("From the optional Prometheus datasource (slawatch-prometheus) scraping the agents' /metrics; "
             "without one this panel has no data. One series per scrape target (instance).")


def agents_dashboard(rp: str) -> Json:
    f_agent = where_tags("agent")
    lay = Layout()
    lay.row("Heartbeats (InfluxDB)")
    lay.add(timeseries(
        "Heartbeats per agent",
        "Heartbeats each agent stored per interval (at least 5 minutes); a gap in monitoring shows as a bar "
        "going to zero (fill(0)), not as silence.",
        [influx(f'SELECT count("period_s") AS "heartbeats" FROM {HEARTBEAT} WHERE $timeFilter AND {f_agent} '
                f'GROUP BY time($__interval), "agent" fill(0)', alias="$tag_agent")],
        bars=True, interval="5m"), w=12, h=9)
    lay.add(panel(
        "timeseries", "Longest gap between heartbeats",
        f"ELAPSED between consecutive heartbeats of each agent, the largest per interval, dated at the heartbeat "
        f"that ended the gap. Red above {HEARTBEAT_GAP_S} s (3 x the default heartbeat_s of 60 s).",
        [influx(f'SELECT max("gap") AS "gap" FROM (SELECT elapsed("period_s", 1s) AS "gap" FROM {HEARTBEAT} '
                f'WHERE $timeFilter AND {f_agent} GROUP BY "agent") WHERE $timeFilter '
                f'GROUP BY time($__interval), "agent" fill(none)', alias="$tag_agent")],
        unit="s",
        defaults={"color": {"mode": "palette-classic"},
                  "thresholds": thresholds(("green", None), ("red", HEARTBEAT_GAP_S)),
                  "custom": {"drawStyle": "points", "pointSize": 6, "showPoints": "always",
                             "thresholdsStyle": {"mode": "line+area"}}},
        options={"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True},
                 "tooltip": {"mode": "multi", "sort": "desc"}}), w=12, h=9)
    lay.add(panel(
        "table", "Last heartbeat per agent",
        "When each agent last stored a heartbeat in the selected range, and its period.",
        [influx(f'SELECT last("period_s") AS "period_s" FROM {HEARTBEAT} WHERE $timeFilter AND {f_agent} '
                f'GROUP BY "agent"', table=True)],
        options={"showHeader": True, "cellHeight": "sm", "footer": {"show": False, "reducer": ["sum"]}}),
        w=24, h=6)

    lay.row("Spool, stores and scheduler (optional Prometheus)")
    prom_panels = [
        ("Spool size", "bytes", [prom("sum by (instance) (slawatch_spool_bytes)", "{{instance}}")],
         "Bytes in each agent's on-disk spool. It grows while a store is down and drains when it is back."),
        ("Points waiting per sink", "short",
         [prom("sum by (instance, sink) (slawatch_spool_samples)", "{{instance}} → {{sink}}")],
         "Points in the spool not yet stored, per sink."),
        ("Store write errors", "short",
         [prom("sum by (instance, sink) (rate(slawatch_sink_write_errors_total[$__rate_interval]))",
               "{{instance}} → {{sink}}", "A"),
          prom("sum by (instance, sink) (rate(slawatch_sink_bad_points_total[$__rate_interval]))",
               "{{instance}} → {{sink}} refused points", "B"),
          prom("sum by (instance) (rate(slawatch_samples_dropped_total[$__rate_interval]))",
               "{{instance}} dropped (spool full)", "C")],
         "Failed writes per second per sink (retried from the spool), points a store refused, and samples "
         "dropped because the spool was full (lost)."),
        ("Schedule lateness", "s",
         [prom(f"histogram_quantile({q}, sum by (le, instance) "
               f"(rate(slawatch_schedule_lateness_seconds_bucket[$__rate_interval])))",
               f"{{{{instance}}}} p{int(q * 100)}", chr(ord("A") + i))
          for i, q in enumerate((0.5, 0.99))],
         "Actual minus scheduled probe start (p50, p99): an agent short of CPU or concurrency starts late."),
    ]
    for title, unit, targets, text in prom_panels:
        lay.add(timeseries(title, text + " " + PROM_NOTE, targets, unit=unit, datasource=PROMETHEUS), w=12, h=8)
    variables = [constant_rp(rp), tag_variable("agent", HEARTBEAT, ())]
    return dashboard("slawatch-agents", "slawatch — Agents",
                     "Whether the agents are watching: heartbeats, spool, store writes, schedule lateness.",
                     variables, lay.panels, time_from="now-24h")


# ---------------------------------------------------------------- output


def build(contract: Json, rp: str = RETENTION_POLICY) -> dict[str, Json]:
    """File name -> dashboard."""
    return {"availability.json": availability_dashboard(contract, rp),
            "probes.json": probes_dashboard(rp),
            "agents.json": agents_dashboard(rp)}


def render(board: Json) -> str:
    return json.dumps(board, indent=2, ensure_ascii=False) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--contract", type=Path, default=ROOT / "config" / "contract.yaml")
    ap.add_argument("--rp", default=RETENTION_POLICY, help="retention policy the agent writes to")
    ap.add_argument("--out", type=Path, default=ROOT / "grafana" / "dashboards")
    args = ap.parse_args(argv)
    contract = yaml.safe_load(args.contract.read_text())
    args.out.mkdir(parents=True, exist_ok=True)
    for name, board in build(contract, args.rp).items():
        (args.out / name).write_text(render(board))
        print(args.out / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

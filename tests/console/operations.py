"""A console site for the incidents and maintenance pages: a contract with priorities P1-P3 on a 24/7 calendar and
a 72 h maintenance notice, the NOC and the customers' contacts to notify, incidents in the store."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from slawatch.model import ComponentRef, Incident, IncidentState
from tests.console.site import SMTP_SECRET

HOOK_SECRET = "hook-pa55word-do-not-show"
CONTRACT = """
name: ops-test
version: "1"
tiers: [silver, gold]
classes:
  sip: {silver: 99, gold: 99.9}
  san: {silver: 99, gold: 99.8}
  load_balancer: {silver: 99.5, gold: 99.99}
  network: {silver: 99.5, gold: 99.99}
maintenance_notice: 72h
priorities:
  - {priority: P1, fault: down, classes: [sip, network]}
  - {priority: P2, fault: down}
  - {priority: P3, fault: degraded}
response:
  targets:
    - {priority: P1, calendar: "24/7", in_hours: {within: 30m}, out_of_hours: {within: 30m}}
    - {priority: P2, calendar: "24/7", in_hours: {within: 2h}, out_of_hours: {within: 2h}}
    - {priority: P3, calendar: "24/7", in_hours: {within: 4h}, out_of_hours: {within: 4h}}
"""
ACME_HOOK = f"json://hook:{HOOK_SECRET}@127.0.0.1:9/incidents"


def write_config(tmp: Path) -> Path:
    """pbx-1 and san-1 of acme (gold), lb-9 and core-1 of globex (silver); the NOC and acme's contacts told."""
    tmp.mkdir(parents=True, exist_ok=True)
    contract = tmp / "contract.yaml"
    contract.write_text(CONTRACT)
    cfg = tmp / "console.yaml"
    cfg.write_text(f"""
agent: {{id: a1, listen: "127.0.0.1:9", heartbeat_s: 1}}
storage: {{sqlite: {{path: {tmp / 'store.db'}}}, spool: {{path: {tmp / 'spool'}}}}}
contract: {contract}
customers:
  - {{name: acme, tier: gold, notify: [ops@acme.example, "{ACME_HOOK}"]}}
  - {{name: globex, tier: silver, notify: [noc@globex.example]}}
notify: {{noc: [noc@provider.example], console_url: "http://127.0.0.1:9"}}
report:
  smtp: {{host: 127.0.0.1, port: 2525, starttls: true, username: mailer, password: "{SMTP_SECRET}"}}
components:
  - name: pbx-1
    class: sip
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:5060"}}]
  - name: san-1
    class: san
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:3260"}}]
  - name: lb-9
    class: load_balancer
    customer: globex
    probes: [{{kind: tcp, target: "127.0.0.1:8443"}}]
  - name: core-1
    class: network
    customer: globex
    probes: [{{kind: tcp, target: "127.0.0.1:80"}}]
""")
    return cfg


def raised(id: str, ref: ComponentRef, raised_ms: int, *, priority: str = "P1", reason: str = "TCP refused",
           state: IncidentState = IncidentState.OPEN, **changes: object) -> Incident:
    """An incident of `ref` raised at `raised_ms`, its fault a minute older."""
    inc = Incident(id, ref, "down", raised_ms - 60_000, raised_ms, priority, state, reason, ("a1",),
                   updated_ms=raised_ms, version=1)
    return dataclasses.replace(inc, **changes)  # type: ignore[arg-type]

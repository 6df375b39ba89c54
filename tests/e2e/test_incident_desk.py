"""The incident desk end to end with real peers: the agent (a subprocess) watches SIPp and HAProxy, and its
notifications arrive at aiosmtpd and a JSON webhook receiver: on the fault, on a degraded pool, on an operator's
`slawatch incident ack`, on recovery, and after a mail server outage spanning an agent restart, each exactly once;
the month's report shows the incident with its response time."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from reporter.calendars import calendars_of
from reporter.maintenance import format_duration
from reporter.response import evaluate, target_of
from slawatch.config.loader import load_contract
from slawatch.testing import free_port
from slawatch.testing.agentproc import ROOT, AgentProcess, store_rows
from slawatch.testing.haproxy import Haproxy, start_haproxy
from slawatch.testing.sipp import Sipp, options_peer
from slawatch.testing.smtp import Mail, SmtpServer
from slawatch.testing.webhook import Webhook, start_webhook

pytestmark = [pytest.mark.timeout(120), pytest.mark.peer("sipp")]

INTERVAL_S = 1.0
NOC = "noc@provider.example"
CUSTOMER = "ops@acme.example"
CONTRACT = ROOT / "config" / "contracts" / "priorities.yaml"


@dataclass
class Peers:
    tmp: Path
    smtp: SmtpServer
    hook: Webhook
    sipp: Sipp
    lb: Haproxy | None = None

    def config(self, *, retry_first: str = "1s", retry_max: str = "2s") -> Path:
        contract = self.tmp / "contract.yaml"
        shutil.copy(CONTRACT, contract)
        pool = "" if self.lb is None else f"""
  - name: web-pool
    class: load_balancer
    customer: acme
    probes: [{{kind: haproxy, target: "{self.lb.url()}", backend: web}}]"""
        cfg = self.tmp / "agent.yaml"
        cfg.write_text(f"""
agent: {{id: e2e-agent, listen: "127.0.0.1:{free_port()}", heartbeat_s: 1}}
storage: {{sqlite: {{path: {self.tmp / 'store.db'}}}, spool: {{path: {self.tmp / 'spool'}}}}}
contract: {contract}
defaults: {{interval_s: {INTERVAL_S}, timeout_s: {INTERVAL_S * 0.8:g}, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold, notify: [{CUSTOMER}]}}]
components:
  - name: sip-core
    class: sip
    customer: acme
    probes: [{{kind: sip, target: "sip:127.0.0.1:{self.sipp.port}"}}]{pool}
notify:
  noc: [{NOC}, "json://127.0.0.1:{self.hook.port}/hook"]
  smtp: {{host: 127.0.0.1, port: {self.smtp.port}, from: desk@provider.example, timeout_s: 2}}
  console_url: https://noc.provider.example/console
  retry_first: {retry_first}
  retry_max: {retry_max}
  timeout_s: 3
""")
        return cfg


@pytest.fixture
async def peers(tmp_path: Path) -> AsyncIterator[Peers]:
    smtp = SmtpServer().start()
    hook = await start_webhook()
    sipp = options_peer(tmp_path)
    try:
        yield Peers(tmp_path, smtp, hook, sipp.start())
    finally:
        sipp.stop()
        await hook.stop()
        smtp.stop()


@pytest.fixture
def spawn() -> Iterator[Callable[[Path], AgentProcess]]:
    started: list[AgentProcess] = []

    def start(cfg: Path) -> AgentProcess:
        agent = AgentProcess(cfg, log_format="json")
        started.append(agent)
        return agent

    yield start
    for agent in started:
        if agent.proc.poll() is None:
            agent.kill()


# ---------------------------------------------------------------- helpers


async def until(check: Callable[[], Any], what: str, timeout: float = 20.0) -> Any:
    """Wait (without blocking the loop the receivers run on) until `check()` gives something true; return it."""
    deadline = time.monotonic() + timeout
    while not (value := check()):
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)
    return value


async def logged(agent: AgentProcess, pattern: str, timeout: float = 20.0) -> dict[str, Any]:
    """The agent's first JSON log record whose message matches `pattern`."""
    line = await asyncio.to_thread(agent.wait_for, pattern, timeout)
    record: dict[str, Any] = json.loads(line)
    return record


def wall(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def mails(smtp: SmtpServer, incident: str, kind: str) -> list[Mail]:
    """Mails about `incident` whose subject says `kind`."""
    heads = {"open": "] DOWN:", "degraded": "] DEGRADED:", "resolve": "] RESOLVED:", "ack": "] ACKNOWLEDGED:"}
    return [m for m in smtp.received if m.subject.endswith(f"- {incident}") and heads[kind] in m.subject]


def hooks(hook: Webhook, incident: str, kind: str) -> list[dict[str, Any]]:
    out = []
    for r in hook.received:
        data = r.json().get("data", {})
        if data.get("incident") == incident and data.get("kind") == kind:
            out.append(data)
    return out


def incident_of(db: Path, component: str) -> dict[str, Any] | None:
    rows = store_rows(db, "SELECT id, priority, fault, state, raised_ms, start_ms, resolved_ms, reason "
                          f"FROM slawatch_incident WHERE component = '{component}' ORDER BY raised_ms")
    if not rows:
        return None
    assert len(rows) == 1, f"one incident per fault, got {rows}"
    keys = ("id", "priority", "fault", "state", "raised_ms", "start_ms", "resolved_ms", "reason")
    return dict(zip(keys, rows[0], strict=True))


def outbox(db: Path) -> list[tuple[Any, ...]]:
    return store_rows(db, "SELECT incident, kind, recipient, state, attempts, last_error FROM slawatch_notification")


def deadline_of(priority: str, raised_ms: int) -> str:
    """The response deadline by the contract's own rules (the engine `slawatch incident clock` runs)."""
    contract = load_contract(CONTRACT)
    verdict = evaluate(calendars_of(contract.response_terms()), target_of(contract, priority, "gold"), raised_ms,
                       None, (), raised_ms)
    assert verdict.deadline_ms is not None
    return datetime.fromtimestamp(verdict.deadline_ms / 1000).astimezone().isoformat()


async def slawatch(*args: str) -> subprocess.CompletedProcess[str]:
    """The `slawatch` command line as an operator runs it beside the agent."""
    return await asyncio.to_thread(subprocess.run, [sys.executable, "-m", "slawatch.cli", *args], cwd=ROOT,
                                   capture_output=True, text=True, timeout=60)


def same_instant(iso: str, other: str) -> bool:
    return abs(wall(iso) - wall(other)) < 0.001


def assert_each_once(peers: Peers, db: Path) -> None:
    """Every outbox row was delivered, and every mail and webhook arrived once per (incident, kind, recipient)."""
    rows = outbox(db)
    assert rows and all(r[3] == "sent" for r in rows), rows
    per_mail = Counter((m.subject.rsplit(" - ", 1)[1], m.subject.split("] ", 1)[1].split(":")[0], rcpt)
                       for m in peers.smtp.received for rcpt in m.rcpt_tos)
    assert per_mail and set(per_mail.values()) == {1}, per_mail
    per_hook = Counter((d["incident"], d["kind"]) for d in (r.json()["data"] for r in peers.hook.received))
    assert per_hook and set(per_hook.values()) == {1}, per_hook
    mail_rows = [r for r in rows if "@" in str(r[2]) and "://" not in str(r[2])]
    assert len(mail_rows) == sum(per_mail.values())
    assert len(rows) - len(mail_rows) == sum(per_hook.values())


# ---------------------------------------------------------------- the tests


@pytest.mark.peer("haproxy")
async def test_fault_degraded_pool_and_recovery_notified_once_each(
        peers: Peers, spawn: Callable[[Path], AgentProcess]) -> None:
    peers.lb = lb = await start_haproxy(peers.tmp)
    try:
        await _desk_life(peers, spawn, lb)
    finally:
        await lb.stop()


async def _desk_life(peers: Peers, spawn: Callable[[Path], AgentProcess], lb: Haproxy) -> None:
    db = peers.tmp / "store.db"
    agent = spawn(peers.config())
    await logged(agent, "watching 2 components")
    await logged(agent, "sip-core is up")
    await logged(agent, "web-pool is up")

    # SIPp stops: the agent confirms DOWN, and within one probe interval a mail reaches aiosmtpd (the NOC and the
    # customer's contact) and a JSON webhook the receiver.
    peers.sipp.stop()
    down = await logged(agent, "sip-core is DOWN")
    confirmed = wall(down["ts"])
    inc = await until(lambda: incident_of(db, "sip-core"), "the incident in the store")
    noc, customer = await until(
        lambda: (m := mails(peers.smtp, inc["id"], "open")) and len(m) >= 2 and (
            next(x for x in m if NOC in x.rcpt_tos), next(x for x in m if CUSTOMER in x.rcpt_tos)),
        "the open mails", timeout=10)
    data, = await until(lambda: hooks(peers.hook, inc["id"], "open"), "the open webhook", timeout=10)
    hook_at = next(r.at for r in peers.hook.received if r.json()["data"]["kind"] == "open")
    for at in (noc.at, customer.at, hook_at):
        assert at - confirmed <= INTERVAL_S, f"delivered {at - confirmed:.3f} s after the confirmation"
    print(f"confirmation to delivery: mail {noc.at - confirmed:.3f} s, {customer.at - confirmed:.3f} s, "
          f"webhook {hook_at - confirmed:.3f} s")

    assert inc["priority"] == "P1" and inc["fault"] == "down" and inc["state"] == "open"
    deadline = deadline_of("P1", inc["raised_ms"])
    for mail in (noc, customer):
        assert mail.subject == f"[P1] DOWN: sip-core (acme) - {inc['id']}"
        text = mail.text
        for row in (f"Incident:     {inc['id']}", "Component:    sip-core", "Priority:     P1",
                    f"Reason:       {down['reason']}", "Respond by:   ",
                    f"Console:      https://noc.provider.example/console/incidents/{inc['id']}"):
            assert row in text, text
        assert mail.message["Message-ID"].startswith(f"<{inc['id']}.1.")
    assert data["component"] == "sip-core" and data["priority"] == "P1" and data["reason"] == down["reason"]
    assert data["reason"] and data["class"] == "sip" and data["customer"] == "acme"
    assert same_instant(data["deadline"], deadline), (data["deadline"], deadline)
    respond_by = re.search(r"Respond by:\s+(\S+ \S+) UTC", noc.text)
    assert respond_by is not None and same_instant(respond_by[1].replace(" ", "T") + "Z", deadline)

    # One backend of the pool stops: HAProxy marks it DOWN, the pool is DEGRADED, an incident of the lower
    # priority (P3 by the contract's rules) is raised and notified.
    await lb.backends[2].aclose()
    degraded = await logged(agent, "web-pool is DEGRADED")
    assert "web3 DOWN" in degraded["reason"]
    pool = await until(lambda: incident_of(db, "web-pool"), "the pool's incident")
    assert pool["priority"] == "P3" and pool["fault"] == "degraded"
    pool_mails = await until(lambda: len(m := mails(peers.smtp, pool["id"], "degraded")) >= 2 and m,
                             "the degraded mails")
    assert {m.subject for m in pool_mails} == {f"[P3] DEGRADED: web-pool (acme) - {pool['id']}"}
    pool_hook, = await until(lambda: hooks(peers.hook, pool["id"], "open"), "the degraded webhook")
    assert pool_hook["fault"] == "degraded" and pool_hook["priority"] == "P3" and "web3 DOWN" in pool_hook["reason"]

    # An operator lists the incidents and acknowledges the SIP one: the running agent sends the ack mail.
    cfg = str(peers.tmp / "agent.yaml")
    listed = await slawatch("incident", "list", "--config", cfg, "--format", "json")
    assert listed.returncode == 0, listed.stderr
    assert [(i["id"], i["priority"], i["state"]) for i in json.loads(listed.stdout)] == [
        (inc["id"], "P1", "open"), (pool["id"], "P3", "open")]
    acked = await slawatch("incident", "ack", inc["id"], "--comment", "engineer dispatched", "--by", "ann",
                           "--config", cfg)
    assert acked.returncode == 0, acked.stderr
    ack_mails = await until(lambda: len(m := mails(peers.smtp, inc["id"], "ack")) >= 2 and m, "the ack mails")
    for mail in ack_mails:
        assert mail.subject == f"[P1] ACKNOWLEDGED: sip-core (acme) - {inc['id']}"
        assert re.search(r"Acknowledged: +\S+ \S+ UTC by ann", mail.text), mail.text
        assert "Comment:      engineer dispatched (ann)" in mail.text
    ack_hook, = await until(lambda: hooks(peers.hook, inc["id"], "ack"), "the ack webhook")
    assert ack_hook["acknowledged_by"] == "ann" and ack_hook["comment"] == "engineer dispatched"

    # SIPp is back: the incident is resolved and the resolve mail carries the outage's duration.
    peers.sipp.start()
    await logged(agent, "sip-core recovered after")
    resolved = await until(lambda: (i := incident_of(db, "sip-core")) and i["state"] == "resolved" and i,
                           "the incident resolved")
    duration = format_duration((resolved["resolved_ms"] - resolved["start_ms"]) / 1000)
    resolve_mails = await until(lambda: len(m := mails(peers.smtp, inc["id"], "resolve")) >= 2 and m,
                                "the resolve mails")
    for mail in resolve_mails:
        assert mail.subject == f"[P1] RESOLVED: sip-core (acme) after {duration} - {inc['id']}"
        assert f"Duration:     {duration}" in mail.text
    resolve_hook, = await until(lambda: hooks(peers.hook, inc["id"], "resolve"), "the resolve webhook")
    assert resolve_hook["duration_s"] == (resolved["resolved_ms"] - resolved["start_ms"]) / 1000

    # Two more intervals: nothing arrives twice.
    await asyncio.sleep(2 * INTERVAL_S)
    assert_each_once(peers, db)

    # The incident as `slawatch incident show` tells it: acknowledged by ann, answered in time, every message sent.
    shown = await slawatch("incident", "show", inc["id"], "--config", cfg, "--format", "json")
    assert shown.returncode == 0, shown.stderr
    doc = json.loads(shown.stdout)
    assert doc["state"] == "resolved" and doc["acknowledged_by"] == "ann" and doc["met"] is True
    assert 0 < doc["response_s"] < 60 and doc["ack_comment"] == "engineer dispatched"
    assert [e["action"] for e in doc["events"]] == ["opened", "acknowledged", "resolved"]
    assert [(n["kind"], n["state"]) for n in doc["notifications"]] == [
        ("open", "sent")] * 3 + [("ack", "sent")] * 3 + [("resolve", "sent")] * 3

    # The month's report shows the incident with its response time, as the command line read it.
    month = datetime.fromtimestamp(inc["raised_ms"] / 1000, UTC).strftime("%Y-%m")
    report = await slawatch("report", "--config", cfg, "--month", month, "--format", "json")
    assert report.returncode == 0, report.stderr
    month_doc = json.loads(report.stdout)
    by_id = {i["id"]: i for i in month_doc["incidents"]}
    sip = by_id[inc["id"]]
    assert (sip["component"], sip["priority"], sip["acknowledged_by"], sip["met"]) == ("sip-core", "P1", "ann", True)
    assert sip["response_s"] == doc["response_s"] and sip["target_s"] == doc["target_s"]
    assert same_instant(sip["deadline"], deadline) and same_instant(sip["raised_at"], data["raised_at"])
    assert by_id[pool["id"]]["priority"] == "P3" and by_id[pool["id"]]["response_s"] is None  # not acknowledged
    assert month_doc["response_summary"]["incidents"] == 2 and month_doc["response_summary"]["met"] == 1
    assert agent.stop() == 0


async def test_mail_server_down_across_an_agent_restart_delivers_once(
        peers: Peers, spawn: Callable[[Path], AgentProcess]) -> None:
    db = peers.tmp / "store.db"
    cfg = peers.config(retry_first="0.5s", retry_max="1s")
    agent = spawn(cfg)
    await logged(agent, "watching 1 components")
    await logged(agent, "sip-core is up")

    peers.smtp.stop()  # the mail server is down before the fault
    peers.sipp.stop()
    await logged(agent, "sip-core is DOWN")
    inc = await until(lambda: incident_of(db, "sip-core"), "the incident in the store")
    # The webhook is not held up by the mail server; the mails wait in the outbox, failing and retried.
    await until(lambda: hooks(peers.hook, inc["id"], "open"), "the open webhook", timeout=10)

    def mail_attempts() -> list[int]:
        return [int(r[4]) for r in outbox(db) if r[1] == "open" and "://" not in str(r[2]) and r[3] == "pending"]

    await until(lambda: len(a := mail_attempts()) == 2 and min(a) >= 1, "failed mail attempts")
    assert all("refused" in str(r[5]) for r in outbox(db) if r[3] == "pending"), outbox(db)

    # The agent restarts while the mail server is still down: the outbox keeps the mails, the new agent retries.
    assert agent.stop() == 0
    before = min(mail_attempts())
    agent = spawn(cfg)
    await logged(agent, "watching 1 components")
    await until(lambda: min(mail_attempts(), default=0) > before, "a retry by the restarted agent")
    assert peers.smtp.received == []

    peers.smtp.start()  # back on the same port
    back = time.time()
    arrived = await until(lambda: len(m := mails(peers.smtp, inc["id"], "open")) >= 2 and m, "the open mails")
    assert {r for m in arrived for r in m.rcpt_tos} == {NOC, CUSTOMER}
    assert max(m.at for m in arrived) - back <= 1.0 + 2 * INTERVAL_S  # retry_max, and a tick
    await asyncio.sleep(2)
    assert_each_once(peers, db)
    assert store_rows(db, "SELECT COUNT(*) FROM slawatch_incident") == [(1,)]
    assert agent.stop() == 0

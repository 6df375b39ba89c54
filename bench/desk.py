"""The incident desk inside the real agent: time from a fault's confirmation to its mail, and a core switch going down.

    python bench/desk.py [--faults 20] [--components 1000] [--interval 1] [--recipients mail,webhook]
                         [--max-seconds 120] [--control] [--workdir DIR]

Runs `python -m slawatch.cli agent` (what `slawatch agent` runs) as a subprocess with a generated config, against TCP
services, an SMTP server (aiosmtpd) and a JSON webhook receiver (aiohttp), all on 127.0.0.1 in this process.

1. latency: `--faults` components, each on its own TCP service; one at a time, its service closes, the agent confirms
   DOWN (its "is DOWN" log line, whose timestamp is the confirmation), the desk raises an incident and the NOC's mail
   and webhook arrive; then the service comes back and its resolve mail is awaited before the next fault. Printed:
   confirmation to mail delivered and to webhook delivered, p50 / p95 / max.
2. storm: `--components` components spread over 8 TCP services that all close at once (a core switch going down).
   Printed: how the confirmations spread, incidents raised per second, notifications delivered per second (every
   one from the first to the last delivery, and per second of the whole storm), each outbox row's time queued to
   delivered (p50 / p95 / max), and the check: per incident id, the mails and webhooks received against the
   outbox rows (missing, duplicated, unexpected); plus the probe schedule lateness (the agent's
   `slawatch_schedule_lateness_seconds` histogram from /metrics) in a quiet window before the storm and during
   it. `--control` runs the same storm with the desk disabled (`desk: {enabled: false}`): the lateness that the
   1 000 failures cause by themselves.

Every wait is bounded (`--max-seconds` per phase); exit status 1 if a notification was lost or duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from slawatch.config.loader import bundled_contract  # noqa: E402
from slawatch.testing import free_port  # noqa: E402
from slawatch.testing.smtp import SmtpServer  # noqa: E402
from slawatch.testing.webhook import Webhook, start_webhook  # noqa: E402

NOC = "noc@provider.example"
POLL_S = 0.05
STORM_PORTS = 8


# ------------------------------------------------------------ peers and the agent


class Service:
    """One TCP service on a fixed loopback port: `up()` accepts and closes, `down()` makes connections refused."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server: asyncio.Server | None = None

    @staticmethod
    async def _handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    async def up(self) -> None:
        if self.server is None:
            self.server = await asyncio.start_server(self._handle, "127.0.0.1", self.port, backlog=4096)

    async def down(self) -> None:
        server, self.server = self.server, None
        if server is not None:
            server.close()
            await server.wait_closed()


class Agent:
    """The agent as a subprocess, JSON log to a file, /metrics on `listen`."""

    def __init__(self, config: Path, listen: int, log: Path) -> None:
        self.config, self.listen, self.log = config, listen, log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(self.config),
                                          "--log-format", "json"], cwd=ROOT, stdin=subprocess.DEVNULL, stdout=out,
                                         stderr=subprocess.STDOUT)

    def cpu_s(self) -> float:
        """The agent's CPU seconds so far (user + system, from /proc)."""
        if self.proc is None:
            return math.nan
        try:
            fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            return math.nan
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def records(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError):
                out.append(json.loads(line))
        return out

    def tail(self, n: int = 1500) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def _get(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.listen}/metrics", timeout=5) as resp:
            return str(resp.read().decode())

    async def metrics(self) -> dict[str, list[tuple[dict[str, str], float]]] | None:
        try:
            text = await asyncio.to_thread(self._get)
        except OSError:
            return None
        out: dict[str, list[tuple[dict[str, str], float]]] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out.setdefault(s.name, []).append((dict(s.labels), s.value))
        return out

    async def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.to_thread(proc.wait, 60)
        except subprocess.TimeoutExpired:
            proc.kill()
            await asyncio.to_thread(proc.wait)


def write_config(path: Path, *, listen: int, db: Path, components: list[tuple[str, int]], interval_s: float,
                 smtp: SmtpServer, hook: Webhook, recipients: list[str], desk: bool = True) -> None:
    noc = [r for r in (NOC if "mail" in recipients else None,
                       f'"json://127.0.0.1:{hook.port}/hook"' if "webhook" in recipients else None) if r]
    lines = [f'  - {{name: {name}, class: network, customer: acme, '
             f'probes: [{{kind: tcp, target: "127.0.0.1:{port}"}}]}}' for name, port in components]
    path.write_text(f"""\
agent: {{id: bench-desk, listen: "127.0.0.1:{listen}", heartbeat_s: 1}}
storage: {{sqlite: {{path: "{db}"}}, spool: {{path: "{db.parent / 'spool'}"}}}}
contract: {bundled_contract()}
defaults: {{interval_s: {interval_s}, timeout_s: {interval_s * 0.8:g}, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
notify:
  noc: [{", ".join(noc)}]
  smtp: {{host: 127.0.0.1, port: {smtp.port}, from: desk@provider.example}}
  retry_first: 1s
  retry_max: 5s
desk: {{enabled: {str(desk).lower()}}}
components:
""" + "\n".join(lines) + "\n")


async def until(check: Any, what: str, timeout_s: float) -> Any:
    deadline = time.monotonic() + timeout_s
    while not (value := check()):
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout_s:g} s waiting for {what}")
        await asyncio.sleep(POLL_S)
    return value


async def all_up(agent: Agent, n: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if agent.proc is not None and agent.proc.poll() is not None:
            raise RuntimeError(f"agent exited: {agent.tail()}")
        m = await agent.metrics()
        if m is not None and sum(v for _, v in m.get("slawatch_component_up", [])) >= n:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"not all {n} components up within {timeout_s:g} s: {agent.tail()}")


def wall(ts: str) -> float:
    return datetime.fromisoformat(ts.replace("Z", "+00:00")).timestamp()


def downs(agent: Agent) -> dict[str, float]:
    """Component -> wall time of its first "is DOWN" log line (the confirmation)."""
    out: dict[str, float] = {}
    for r in agent.records():
        if r.get("state") == "down" and "component" in r:
            out.setdefault(r["component"], wall(r["ts"]))
    return out


def rows(db: Path, sql: str) -> list[tuple[Any, ...]]:
    if not db.exists():
        return []
    try:
        with contextlib.closing(sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.OperationalError:
        return []


def q(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, max(0, math.ceil(p * len(s)) - 1))] if s else float("nan")


def ms(v: float) -> str:
    return "-" if math.isnan(v) else f"{v * 1000:.0f} ms"


def mail_incident(subject: str) -> str:
    return subject.rsplit(" - ", 1)[-1]


def mail_kind(subject: str) -> str:
    return subject.split("] ", 1)[-1].split(":", 1)[0]


# ------------------------------------------------------------ 1. latency


async def latency(args: argparse.Namespace, work: Path, smtp: SmtpServer, hook: Webhook) -> None:
    services = [Service() for _ in range(args.faults)]
    for s in services:
        await s.up()
    names = [f"pbx-{i:03d}" for i in range(args.faults)]
    d = work / "latency"
    d.mkdir()
    listen = free_port()
    write_config(d / "agent.yaml", listen=listen, db=d / "store.db",
                 components=list(zip(names, (s.port for s in services), strict=True)),
                 interval_s=args.interval, smtp=smtp, hook=hook, recipients=["mail", "webhook"])
    agent = Agent(d / "agent.yaml", listen, d / "agent.log")
    agent.start()
    to_mail: list[float] = []
    to_hook: list[float] = []
    try:
        await all_up(agent, args.faults, args.max_seconds)
        deadline = time.monotonic() + args.max_seconds
        for name, service in zip(names, services, strict=True):
            if time.monotonic() > deadline:
                print(f"  stopped after {len(to_mail)} faults: --max-seconds {args.max_seconds:g} reached")
                break
            await service.down()

            def mail_of(kind: str, name: str = name) -> Any:
                return next((m for m in smtp.received if f": {name} " in m.subject and mail_kind(m.subject) == kind),
                            None)

            mail = await until(lambda: mail_of("DOWN"), f"the mail of {name}", 30)
            confirmed = await until(lambda name=name: downs(agent).get(name), f"{name} DOWN in the log", 10)
            webhook = await until(lambda name=name: next((r for r in hook.received
                                                          if r.json()["data"]["component"] == name), None),
                                  f"the webhook of {name}", 30)
            to_mail.append(mail.at - confirmed)
            to_hook.append(webhook.at - confirmed)
            await service.up()
            await until(lambda: mail_of("RESOLVED"), f"the resolve mail of {name}", 30)
    finally:
        await agent.stop()
        for s in services:
            await s.down()
    print(f"confirmation -> delivered, {len(to_mail)} faults one at a time (interval {args.interval:g} s):")
    for what, v in (("mail (aiosmtpd)", to_mail), ("webhook (json://)", to_hook)):
        print(f"  {what:<18} p50 {ms(q(v, 0.5))}  p95 {ms(q(v, 0.95))}  max {ms(max(v, default=math.nan))}"
              f"  min {ms(min(v, default=math.nan))}")


# ------------------------------------------------------------ 2. a core switch goes down


@dataclass
class Lateness:
    """The agent's lateness histogram at one scrape: cumulative counts per upper bound, and the total count."""

    buckets: dict[float, float]
    count: float

    @staticmethod
    def of(metrics: dict[str, list[tuple[dict[str, str], float]]]) -> Lateness:
        buckets = {float(labels["le"]): v for labels, v in metrics.get("slawatch_schedule_lateness_seconds_bucket", [])}
        count = sum(v for _, v in metrics.get("slawatch_schedule_lateness_seconds_count", []))
        return Lateness(buckets, count)

    def minus(self, before: Lateness) -> Lateness:
        return Lateness({le: v - before.buckets.get(le, 0.0) for le, v in self.buckets.items()},
                        self.count - before.count)

    def quantile(self, p: float) -> float:
        """Linear inside the bucket, as Prometheus' histogram_quantile does."""
        if self.count <= 0:
            return math.nan
        rank, lower, below = p * self.count, 0.0, 0.0
        for le in sorted(self.buckets):
            n = self.buckets[le]
            if n >= rank:
                if math.isinf(le):
                    return lower
                return lower + (le - lower) * ((rank - below) / (n - below) if n > below else 0.0)
            lower, below = le, n
        return lower

    def over(self, bound: float) -> float:
        """Share of runs later than `bound` (a bucket boundary)."""
        return 1 - self.buckets.get(bound, 0.0) / self.count if self.count else math.nan

    def line(self) -> str:
        return (f"{int(self.count)} runs, p50 {ms(self.quantile(0.5))}, p99 {ms(self.quantile(0.99))}, "
                f"> 100 ms {self.over(0.1):.1%}, > 1 s {self.over(1.0):.1%}")


async def storm(args: argparse.Namespace, work: Path, smtp: SmtpServer, hook: Webhook, *, desk: bool,
                window_s: float = 0.0) -> tuple[bool, float]:
    """Returns whether nothing was lost or duplicated, and how long the storm lasted (the fault to the last
    delivery). Without the desk, the lateness is measured over `window_s` after the fault (the storm's length with
    the desk), so the two compare."""
    n = args.components
    services = [Service() for _ in range(STORM_PORTS)]
    for s in services:
        await s.up()
    d = work / ("storm" if desk else "storm-control")
    d.mkdir()
    db, listen = d / "store.db", free_port()
    names = [f"sw-{i:05d}" for i in range(n)]
    write_config(d / "agent.yaml", listen=listen, db=db, interval_s=args.interval, smtp=smtp, hook=hook,
                 recipients=args.recipients, desk=desk,
                 components=[(name, services[i % STORM_PORTS].port) for i, name in enumerate(names)])
    mails0, hooks0 = len(smtp.received), len(hook.received)
    agent = Agent(d / "agent.yaml", listen, d / "agent.log")
    agent.start()
    per_incident = ("mail" in args.recipients) + ("webhook" in args.recipients)
    ok = True
    try:
        await all_up(agent, n, args.max_seconds)
        await asyncio.sleep(2 * args.interval)  # past the start's own lateness
        before = await agent.metrics()
        await asyncio.sleep(args.quiet)
        quiet_end = await agent.metrics()
        assert before is not None and quiet_end is not None
        quiet = Lateness.of(quiet_end).minus(Lateness.of(before))
        cpu0, agent_cpu0 = os.times(), agent.cpu_s()
        t0 = time.time()
        for s in services:
            await s.down()
        if desk:
            expected = n * per_incident

            def delivered() -> int:
                return len(smtp.received) - mails0 + len(hook.received) - hooks0

            def done() -> bool:
                if expected == 0:  # no recipients: the desk raising incidents alone
                    return len(rows(db, "SELECT id FROM slawatch_incident")) >= n
                return delivered() >= expected

            try:
                await until(done, f"{expected} notifications" if expected else f"{n} incidents", args.max_seconds)
            except TimeoutError as exc:
                print(f"  {exc} ({delivered()} arrived)")
                ok = False
            t_done = time.time()
        else:
            await until(lambda: len(downs(agent)) >= n, f"{n} components DOWN", args.max_seconds)
            await asyncio.sleep(max(0.0, t0 + window_s - time.time()))
            t_done = time.time()
        agent_cpu = agent.cpu_s() - agent_cpu0
        during = await agent.metrics()
        assert during is not None
        storm_lat = Lateness.of(during).minus(Lateness.of(quiet_end))
        if desk:
            await asyncio.sleep(3 * args.interval)  # what arrives twice arrives now
        cpu1 = os.times()
        confirmations = downs(agent)
    finally:
        await agent.stop()
        for s in services:
            await s.down()

    label = "desk on" if desk else "desk off (control)"
    print(f"\n{n} components fail at once ({label}, interval {args.interval:g} s, confirm down 2):")
    c = sorted(confirmations.values())
    if c:
        print(f"  confirmations: {len(c)}, first {c[0] - t0:.2f} s after the fault, last {c[-1] - t0:.2f} s")
    print(f"  probe schedule lateness, quiet {args.quiet:g} s before: {quiet.line()}")
    print(f"  probe schedule lateness, the fault and the {t_done - t0:.1f} s after it: {storm_lat.line()}")
    print(f"  CPU over those {t_done - t0:.1f} s: agent {agent_cpu:.1f} s, this process (receivers, services) "
          f"{cpu1.user - cpu0.user + cpu1.system - cpu0.system:.1f} s")
    if not desk:
        return ok, t_done - t0

    incidents = rows(db, "SELECT id, component, raised_ms FROM slawatch_incident")
    notes = rows(db, "SELECT id, incident, kind, recipient, state, attempts, created_ms, sent_ms "
                     "FROM slawatch_notification")
    raised = sorted(r[2] / 1000 for r in incidents)
    sent = [r for r in notes if r[4] == "sent"]
    arrivals = sorted([m.at for m in smtp.received[mails0:]] + [r.at for r in hook.received[hooks0:]])
    print(f"  incidents raised: {len(incidents)} (components {len({r[1] for r in incidents})}); first "
          f"{raised[0] - t0:.2f} s, last {raised[-1] - t0:.2f} s after the fault"
          + (f" -> {len(raised) / max(raised[-1] - raised[0], 1e-3):.0f} incidents/s" if len(raised) > 1 else ""))
    if len(arrivals) > 1:
        span = arrivals[-1] - arrivals[0]
        print(f"  notifications delivered: {len(arrivals)}; first {arrivals[0] - t0:.2f} s, "
              f"last {arrivals[-1] - t0:.2f} s after the fault -> {len(arrivals) / span:.0f}/s first to last, "
              f"{len(arrivals) / (arrivals[-1] - t0):.0f}/s over the whole storm")
    if c and arrivals:
        print(f"  first confirmation -> last delivery: {arrivals[-1] - c[0]:.2f} s")
    waits = [(r[7] - r[6]) / 1000 for r in sent if r[7] is not None]
    print(f"  outbox: {len(notes)} rows, {len(sent)} sent, {sum(1 for r in notes if r[4] == 'pending')} pending, "
          f"{sum(1 for r in notes if r[4] == 'failed')} failed, {sum(int(r[5]) for r in notes)} attempts; queued -> "
          f"delivered p50 {ms(q(waits, 0.5))} p95 {ms(q(waits, 0.95))} max {ms(max(waits, default=math.nan))}")

    # The check, per incident id: what the outbox holds against what arrived.
    want = Counter((r[1], r[2], "mail" if "://" not in r[3] else "webhook") for r in notes)
    got: Counter[tuple[str, str, str]] = Counter()
    kinds = {"DOWN": "open", "RESOLVED": "resolve", "UNACKNOWLEDGED DOWN": "escalation"}
    for m in smtp.received[mails0:]:
        got[(mail_incident(m.subject), kinds.get(mail_kind(m.subject), mail_kind(m.subject)), "mail")] += 1
    for r in hook.received[hooks0:]:
        data = r.json()["data"]
        got[(data["incident"], data["kind"], "webhook")] += 1
    missing = sum(max(0, want[k] - got[k]) for k in want)
    duplicated = sum(max(0, got[k] - want[k]) for k in got if k in want)
    unexpected = sum(v for k, v in got.items() if k not in want)
    complete = len(incidents) == n and missing == 0 and duplicated == 0 and unexpected == 0
    print(f"  check per incident: expected {sum(want.values())}, received {sum(got.values())}: missing {missing}, "
          f"duplicated {duplicated}, unexpected {unexpected} -> {'OK' if complete else 'WRONG'}")
    return ok and complete, t_done - t0


# ------------------------------------------------------------ main


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--faults", type=int, default=20)
    parser.add_argument("--components", type=int, default=1000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--quiet", type=float, default=10.0, help="seconds of lateness measured before the storm")
    parser.add_argument("--recipients", default="mail,webhook",
                        help="the NOC's: mail, webhook, both, or none (incidents raised, nothing sent)")
    parser.add_argument("--max-seconds", type=float, default=120.0, help="bound of every phase")
    parser.add_argument("--phases", default="latency,storm", help="latency, storm, or both")
    parser.add_argument("--control", action="store_true", help="also the storm with the desk disabled")
    parser.add_argument("--workdir", type=Path, help="keep configs, stores and logs there")
    args = parser.parse_args()
    args.recipients = [r.strip() for r in args.recipients.split(",") if r.strip() not in ("", "none")]
    if not 1 <= args.faults <= 200 or not 1 <= args.components <= 20_000 or not 0.2 <= args.interval <= 60:
        parser.error("--faults 1..200, --components 1..20000, --interval 0.2..60")
    phases = set(args.phases.split(","))
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-desk-"))
    work.mkdir(parents=True, exist_ok=True)
    ok = True
    # The figures are CPU-bound: a busy machine shows in them, so say how busy it was.
    print("load average at the start: {:.2f} {:.2f} {:.2f}, {} CPUs".format(*os.getloadavg(), os.cpu_count()))
    with SmtpServer() as smtp:
        hook = await start_webhook()
        try:
            if "latency" in phases:
                await latency(args, work, smtp, hook)
            if "storm" in phases:
                ok, lasted = await storm(args, work, smtp, hook, desk=True)
                if args.control:
                    await storm(args, work, smtp, hook, desk=False, window_s=lasted)
        finally:
            await hook.stop()
    if args.workdir:
        print(f"\nwork files in {work}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))

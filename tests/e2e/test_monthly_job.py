"""The agent's composition root runs the reporter's monthly job: started late in a month, it catches up."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

from reporter.monthly import period_key, report_month, run_monthly_reports
from reporter.periods import month_period
from slawatch.cli.agent import build_agent, run_agent
from slawatch.config.loader import bundled_contract, load
from slawatch.config.settings import SqliteSettings
from slawatch.model import ComponentRef, Heartbeat, StateChange
from slawatch.store import open_source
from slawatch.store.sqlite import SqliteSink
from slawatch.testing import free_port


async def test_agent_archives_last_months_report_at_start(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: a1, listen: "127.0.0.1:{free_port()}", heartbeat_s: 1}}
storage: {{sqlite: {{path: store.db}}, spool: {{path: spool}}}}
contract: {bundled_contract()}
defaults: {{interval_s: 1, timeout_s: 0.5}}
customers: [{{name: acme, tier: gold}}]
components:
  - {{name: san-1, class: san, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:{free_port()}"}}]}}
report: {{timezone: UTC, schedule: "0 0 1 * *", archive: archive}}
""")
    # Last month had data: one state change and heartbeats written through the real sink.
    loaded = load(cfg)
    key_month = report_month(time.time_ns() // 1_000_000, "UTC")
    start = month_period(*key_month, "UTC").start_ms
    ref = ComponentRef("san-1", "san", "gold", "acme")
    sink = SqliteSink(SqliteSettings(path=tmp_path / "store.db"))
    await sink.write([StateChange(ref, "a1", start + 1000, True, ""),
                      *(Heartbeat("a1", start + i * 60_000, 60.0) for i in range(100))])
    await sink.close()
    agent = build_agent(loaded)
    stop = asyncio.Event()
    task = asyncio.create_task(run_agent(agent, stop))
    key = period_key(*report_month(time.time_ns() // 1_000_000, "UTC"))
    target = tmp_path / "archive" / key / "acme.json"
    for _ in range(100):
        if target.exists():
            break
        await asyncio.sleep(0.1)
    stop.set()
    await asyncio.wait_for(task, 20)
    doc = json.loads(target.read_text())
    assert [c["name"] for c in doc["components"]] == ["san-1"]
    assert doc["components"][0]["availability_pct"] == 100.0
    assert (tmp_path / "archive" / key / "acme.html").exists()


async def test_a_month_without_monitoring_data_is_not_reported(tmp_path: Path) -> None:
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: a1, listen: "127.0.0.1:{free_port()}"}}
storage: {{sqlite: {{path: store.db}}}}
contract: {bundled_contract()}
customers: [{{name: acme, tier: gold}}]
components:
  - {{name: san-1, class: san, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:{free_port()}"}}]}}
report: {{archive: archive}}
""")
    loaded = load(cfg)
    sink = SqliteSink(SqliteSettings(path=tmp_path / "store.db"))
    await sink.connect()  # the agent's store exists, but holds nothing for last month
    await sink.close()
    year, month = report_month(time.time_ns() // 1_000_000, "UTC")
    source = open_source(loaded.config.storage)
    try:
        run = await run_monthly_reports(loaded, source, year, month, now_ms=time.time_ns() // 1_000_000)
    finally:
        await source.close()
    assert run.skipped == {"acme": "no monitoring data for the month"}
    assert not (tmp_path / "archive").exists()


def test_sighup_does_not_rerun_the_catch_up_nor_repeat_log_lines(tmp_path: Path) -> None:
    """A real agent, started after this month's run time, reloaded twice: the catch-up runs once, no line twice."""
    import asyncio as aio
    import collections
    import signal
    import subprocess
    import sys

    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: a1, listen: "127.0.0.1:{free_port()}", heartbeat_s: 1}}
storage: {{sqlite: {{path: store.db}}, spool: {{path: spool}}}}
contract: {bundled_contract()}
defaults: {{interval_s: 1, timeout_s: 0.5}}
customers: [{{name: acme, tier: gold}}, {{name: globex, tier: gold}}]
components:
  - {{name: san-1, class: san, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:{free_port()}"}}]}}
  - {{name: san-2, class: san, customer: globex, probes: [{{kind: tcp, target: "127.0.0.1:{free_port()}"}}]}}
report: {{timezone: UTC, schedule: "0 0 1 * *", archive: archive}}
""")
    # The store exists (as after the agent's first start) but holds nothing for last month.
    sink = SqliteSink(SqliteSettings(path=tmp_path / "store.db"))
    aio.run(sink.connect())
    aio.run(sink.close())
    log_path = tmp_path / "agent.log"
    root = Path(__file__).resolve().parents[2]
    with open(log_path, "wb") as log_file:
        proc = subprocess.Popen([sys.executable, "-m", "slawatch.cli", "agent", "--config", str(cfg)], cwd=root,
                                stdin=subprocess.DEVNULL, stdout=log_file, stderr=subprocess.STDOUT)

    def lines() -> list[str]:
        return log_path.read_text(errors="replace").splitlines()

    def wait_for(text: str, count: int) -> None:
        for _ in range(200):
            if sum(text in line for line in lines()) >= count:
                return
            assert proc.poll() is None, "\n".join(lines())
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged {count} time(s):\n" + "\n".join(lines()))

    try:
        wait_for("no monitoring data", 1)
        for n in (1, 2):
            proc.send_signal(signal.SIGHUP)
            wait_for("config reloaded", n)
        time.sleep(1.0)  # a catch-up started by the reload would have run by now
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(20)
    assert proc.returncode == 0
    out = lines()
    key = period_key(*report_month(time.time_ns() // 1_000_000, "UTC"))
    # Without the time stamp, every line of the job and of its scheduler is said once.
    messages = [line.split(" ", 2)[2] for line in out
                if " reporter." in line or " apscheduler." in line]
    repeated = {m: n for m, n in collections.Counter(messages).items() if n > 1}
    assert repeated == {}, "\n".join(out)
    no_data = [line for line in out if "no monitoring data" in line]
    assert len(no_data) == 1 and key in no_data[0] and "acme, globex" in no_data[0], "\n".join(out)
    assert sum("config reloaded" in line for line in out) == 2
    assert not (tmp_path / "archive").exists()

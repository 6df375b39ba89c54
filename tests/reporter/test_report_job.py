"""The monthly job when the store is new, failing or down: what it logs, what it retries, what a reload changes."""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
from apscheduler.schedulers.asyncio import AsyncIOScheduler

from reporter.monthly import JOB_ID, period_key, report_month, run_monthly_reports, start_report_scheduler
from reporter.periods import month_period
from slawatch.config.loader import Loaded, bundled_contract, load
from slawatch.config.settings import InfluxSettings, StorageSettings
from slawatch.model import ComponentRef, Heartbeat, StateChange
from slawatch.store import Source, SourceError, open_source
from slawatch.store.influxdb import InfluxSink, InfluxSource
from slawatch.testing import free_port, need_binary
from slawatch.testing.influxd import Influxd
from tests.reporter.april import NOW_MS, FakeSource, april_source, loaded_config
from tests.reporter.smtpd import Smtpd


def influx_config(tmp_path: Path, url: str, database: str, *, smtp_port: int | None = None) -> Loaded:
    smtp = f", smtp: {{host: 127.0.0.1, port: {smtp_port}, from: sla@provider.example}}" if smtp_port else ""
    cfg = tmp_path / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: a1}}
storage: {{influxdb: {{url: "{url}", database: {database}, timeout_s: 2}}, spool: {{path: spool}}}}
contract: {bundled_contract()}
customers:
  - {{name: acme, tier: gold, report_to: [noc@acme.example]}}
  - {{name: globex, tier: gold, report_to: [ops@globex.example]}}
components:
  - {{name: san-1, class: san, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}
  - {{name: san-2, class: san, customer: globex, probes: [{{kind: tcp, target: "127.0.0.1:9"}}]}}
report: {{timezone: UTC, schedule: "0 0 1 * *", archive: archive{smtp}}}
""")
    return load(cfg)


def job_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name.startswith(("reporter", "apscheduler"))]


async def wait_until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.05)


def last_month_key() -> str:
    return period_key(*report_month(time.time_ns() // 1_000_000, "UTC"))


@pytest.mark.peer("influxd")
async def test_a_fresh_influxdb_is_no_data_not_an_error(tmp_path: Path, influxd: Influxd,
                                                        caplog: pytest.LogCaptureFixture) -> None:
    """The agent has not written yet, so its database does not exist: one "no data" line, nothing to retry."""
    caplog.set_level(logging.INFO)
    loaded = influx_config(tmp_path, influxd.url, f"fresh_{uuid.uuid4().hex[:8]}")
    scheduler = start_report_scheduler(loaded, open_source, retry_s=0.2, max_retries=2)
    try:
        await wait_until(lambda: any(r.levelno >= logging.WARNING for r in job_records(caplog)))
        await asyncio.sleep(0.6)  # a retry would have run by now
        assert scheduler.get_job(f"{JOB_ID}-retry-{last_month_key()}") is None
    finally:
        scheduler.shutdown(wait=False)
    records = job_records(caplog)
    assert [r for r in records if r.exc_info] == []
    warnings = [r.getMessage() for r in records if r.levelno >= logging.WARNING]
    assert warnings == [f"report {last_month_key()} for acme, globex not emailed: no monitoring data for the month"]
    assert not (tmp_path / "archive").exists()


class FailingSource(FakeSource):
    """The April store, except that reading these components fails (a query the store refuses)."""

    def __init__(self, base: FakeSource, failing: Sequence[str]) -> None:
        super().__init__(base._changes, base._heartbeats, base._windows)
        self.failing = set(failing)

    async def changes(self, start_ms: int, end_ms: int, components: Sequence[str] | None = None) -> list[StateChange]:
        if components is not None and self.failing & set(components):
            raise SourceError("influxdb:http://127.0.0.1:8086/slawatch.slawatch: partial write: field type conflict")
        return await super().changes(start_ms, end_ms, components)


async def test_a_store_error_for_one_customer_leaves_the_others(tmp_path: Path, smtpd: Smtpd,
                                                                caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    loaded = loaded_config(tmp_path, smtp_port=smtpd.port)
    source = FailingSource(april_source(), ["core-router"])  # acme's, the first customer
    run = await run_monthly_reports(loaded, source, 2026, 4, now_ms=NOW_MS)
    assert run.sent == ["globex"] and list(run.failed) == ["acme"]
    assert [r.rcpt_tos for r in smtpd.handler.received] == [["ops@globex.example"]]
    assert list(source.sent) == [("2026-04", "globex")]
    errors = [r for r in job_records(caplog) if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and not errors[0].exc_info
    assert "report 2026-04 for acme not sent" in errors[0].getMessage()
    assert "field type conflict" in errors[0].getMessage()

    # Through the scheduler: the summary counts the customers, and acme is retried.
    caplog.clear()
    retried = FailingSource(april_source(), ["core-router"])
    retried.sent[("2026-04", "globex")] = (NOW_MS, "x")
    scheduler = start_report_scheduler(loaded, lambda _: retried, clock=lambda: NOW_MS / 1000 + 3600)
    try:
        await wait_until(lambda: any("retrying at" in r.getMessage() for r in caplog.records))
    finally:
        scheduler.shutdown(wait=False)
    summary = [r.getMessage() for r in caplog.records if "retrying at" in r.getMessage()]
    assert len(summary) == 1 and summary[0].startswith("monthly report 2026-04: 1 of 2 customer(s) not sent")
    assert [r for r in job_records(caplog) if r.exc_info] == []


@pytest.mark.peer("influxd")
async def test_store_down_at_start_is_one_line_per_attempt_until_it_is_back(
        tmp_path: Path, smtpd: Smtpd, caplog: pytest.LogCaptureFixture) -> None:
    """InfluxDB on a closed port: each attempt says so in one line, nothing is marked sent; once it is up (with
    last month's data) the retry sends both reports."""
    binary = need_binary("influxd", "influxdb")
    caplog.set_level(logging.INFO)
    port = free_port()  # nothing listens there yet
    database = f"down_{uuid.uuid4().hex[:8]}"
    loaded = influx_config(tmp_path, f"http://127.0.0.1:{port}", database, smtp_port=smtpd.port)
    scheduler = start_report_scheduler(loaded, open_source, retry_s=0.5, max_retries=40)
    server = Influxd(binary=binary, dir=tmp_path / "influxd", http_port=port)
    try:
        await wait_until(lambda: any("retrying at" in r.getMessage() for r in caplog.records))
        await asyncio.sleep(1.2)  # two more attempts
        down = [r for r in job_records(caplog) if r.levelno >= logging.WARNING]
        assert len(down) >= 2
        for r in down:  # one line per attempt, with the reason
            msg = r.getMessage()
            assert msg.startswith(f"monthly report {last_month_key()}: not sent"), msg
            assert "cannot reach the server" in msg and "retrying at" in msg and not r.exc_info
        assert smtpd.handler.received == []

        await asyncio.to_thread(server.start)
        start = month_period(*report_month(time.time_ns() // 1_000_000, "UTC"), "UTC").start_ms
        sink = InfluxSink(InfluxSettings(url=server.url, database=database))
        try:
            await sink.write([
                StateChange(ComponentRef("san-1", "san", "gold", "acme"), "a1", start + 1000, True, ""),
                StateChange(ComponentRef("san-2", "san", "gold", "globex"), "a1", start + 1000, True, ""),
                *(Heartbeat("a1", start + i * 60_000, 60.0) for i in range(100))])
        finally:
            await sink.close()
        await wait_until(lambda: len(smtpd.handler.received) >= 2)
        await asyncio.sleep(0.3)
        assert scheduler.get_job(f"{JOB_ID}-retry-{last_month_key()}") is None
    finally:
        scheduler.shutdown(wait=False)
        await asyncio.to_thread(server.stop)
    assert sorted(r.rcpt_tos[0] for r in smtpd.handler.received) == ["noc@acme.example", "ops@globex.example"]
    assert [r for r in job_records(caplog) if r.exc_info] == []
    assert (tmp_path / "archive" / last_month_key() / "acme.json").exists()


@pytest.mark.peer("influxd")
async def test_a_missing_database_reads_as_empty_and_a_closed_port_as_unavailable(influxd: Influxd) -> None:
    from slawatch.store import StoreUnavailable

    fresh = InfluxSource(InfluxSettings(url=influxd.url, database=f"none_{uuid.uuid4().hex[:8]}"))
    try:
        assert await fresh.changes(0, 10**12) == []
        assert await fresh.heartbeats(0, 10**12) == {}
        assert not await fresh.report_sent("2026-04", "acme")
    finally:
        await fresh.close()
    closed = InfluxSource(InfluxSettings(url=f"http://127.0.0.1:{free_port()}", database="x"))
    try:
        with pytest.raises(StoreUnavailable, match="cannot reach the server"):
            await closed.changes(0, 10**12)
    finally:
        await closed.close()


# ---------------------------------------------------------------- reloads


async def test_a_reload_reschedules_only_a_changed_schedule_and_never_repeats_the_catch_up(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from reporter.monthly import MonthlyJob

    caplog.set_level(logging.INFO)
    loaded = loaded_config(tmp_path, archive="reports")
    opened: list[Source] = []

    def open_(_: StorageSettings) -> Source:
        source = april_source()
        opened.append(source)
        return source

    # 07:00 on 1 May: the 06:00 run of the month was missed.
    job = MonthlyJob(open_, clock=lambda: NOW_MS / 1000 + 3600)
    try:
        job.configure(loaded)
        await wait_until(lambda: (tmp_path / "reports" / "2026-04" / "acme.json").exists())
        scheduler = job.scheduler
        assert isinstance(scheduler, AsyncIOScheduler)
        before = scheduler.get_job(JOB_ID).next_run_time
        assert (before.day, before.hour) == (1, 6)

        job.configure(load(loaded.path))  # a reload with the same report settings
        await asyncio.sleep(0.3)
        assert len(opened) == 1 and job.scheduler is scheduler
        assert scheduler.get_job(JOB_ID).next_run_time == before

        text = loaded.path.read_text()
        loaded.path.write_text(text.replace("timezone: UTC", 'timezone: UTC\n  schedule: "0 7 2 * *"'))
        job.configure(load(loaded.path))
        await asyncio.sleep(0.3)
        after = scheduler.get_job(JOB_ID).next_run_time
        assert (after.day, after.hour) == (2, 7)
        assert len(opened) == 1  # the month was run in this process: no second catch-up
    finally:
        job.stop()
    scheduled = [r.getMessage() for r in caplog.records if "scheduled:" in r.getMessage()]
    assert len(scheduled) == 2 and "'0 7 2 * *'" in scheduled[1]

"""The agent's monthly report job: per customer, build, archive and email last month's report once."""

from __future__ import annotations

import asyncio
import logging
import os
import re
import shutil
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from agent.configfile import Loaded
from agent.settings import SmtpSettings, StorageSettings
from reporter.mail import MailError, build_message, send_message
from reporter.periods import month_of, next_month, previous_month
from reporter.render import render_csv, render_html, render_json, render_text
from reporter.report import build_month_report
from reporter.source import Source

log = logging.getLogger(__name__)

Send = Callable[[EmailMessage, SmtpSettings], Awaitable[list[str]]]
OpenSource = Callable[[StorageSettings], Source]
JOB_ID = "slawatch-monthly-report"
RETRY_S = 3600.0
MAX_RETRIES = 24


@dataclass(slots=True)
class MonthlyRun:
    """What one run did: customers sent, customers that failed (to retry), customers skipped and why."""

    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)


def period_key(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


async def send_monthly_reports(loaded: Loaded, source: Source, year: int, month: int, *, now_ms: int,
                               send: Send = send_message) -> list[str]:
    """Send each customer its report for year-month unless the store says it went out; the names sent."""
    return (await run_monthly_reports(loaded, source, year, month, now_ms=now_ms, send=send)).sent


async def run_monthly_reports(loaded: Loaded, source: Source, year: int, month: int, *, now_ms: int,
                              send: Send = send_message) -> MonthlyRun:
    """The monthly job for one month; a failure for one customer never stops the others."""
    config = loaded.config
    key = period_key(year, month)
    smtp = config.report.smtp
    run = MonthlyRun()
    for customer in config.customers:
        name = customer.name
        if not any(c.customer == name for c in config.components):
            continue
        if await source.report_sent(key, name):
            run.skipped[name] = "already sent"
            continue
        report = await build_month_report(loaded, source, year, month, customer=name)
        if all(c.result.ratio is None for c in report.components):
            # Nothing was monitored that month (e.g. the agent was installed later): no report to send.
            run.skipped[name] = "no monitoring data for the month"
            continue
        html, text, csv = render_html(report), render_text(report), render_csv(report)
        if config.report.archive is not None:
            try:
                await asyncio.to_thread(archive, config.report.archive, key, name,
                                        {"html": html, "json": render_json(report), "csv": csv})
            except OSError as exc:
                log.error("report %s for %s: cannot archive under %s: %s", key, name, config.report.archive, exc)
        if not customer.report_to:
            run.skipped[name] = "no report_to address"
            continue
        if smtp is None:
            run.skipped[name] = "report.smtp is not configured"
            continue
        msg = build_message(report, name, customer.report_to, smtp.from_, now_ms=now_ms, html=html, text=text,
                            csv=csv)
        try:
            refused = await send(msg, smtp)
        except MailError as exc:
            log.error("report %s for %s not sent: %s", key, name, exc)
            run.failed[name] = str(exc)
            continue
        for r in refused:
            log.warning("report %s for %s: recipient refused: %s", key, name, r)
        await source.record_report_sent(key, name, now_ms, report.inputs_sha256)
        log.info("report %s sent to %s (%s)", key, name, ", ".join(customer.report_to))
        run.sent.append(name)
    for name, why in run.skipped.items():
        if why != "already sent":
            log.warning("report %s for %s not emailed: %s", key, name, why)
    if config.report.archive is not None:
        try:
            await asyncio.to_thread(prune_archive, config.report.archive, loaded.contract.retention_s, now_ms)
        except OSError as exc:
            log.error("cannot prune the report archive %s: %s", config.report.archive, exc)
    return run


def prune_archive(root: Path, retention_s: float, now_ms: int) -> list[str]:
    """Delete archived months (root/YYYY-MM/) that ended longer than the contract's retention ago."""
    removed: list[str] = []
    if not root.is_dir():
        return removed
    for folder in sorted(root.iterdir()):
        m = re.fullmatch(r"(\d{4})-(\d{2})", folder.name)
        if not folder.is_dir() or m is None or not 1 <= int(m.group(2)) <= 12:
            continue
        year, month = next_month(int(m.group(1)), int(m.group(2)))
        ended_ms = int(datetime(year, month, 1, tzinfo=UTC).timestamp() * 1000)
        if ended_ms + retention_s * 1000 < now_ms:
            shutil.rmtree(folder)
            removed.append(folder.name)
    if removed:
        log.info("report archive: removed %s (older than the retention)", ", ".join(removed))
    return removed


def archive(root: Path, key: str, customer: str, files: dict[str, str]) -> list[Path]:
    """Write root/<key>/<customer>.<ext> atomically (a temp file renamed), so a reader never sees half."""
    folder = root / key
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for ext, text in sorted(files.items()):
        path = folder / f"{customer}.{ext}"
        tmp = folder / f".{customer}.{ext}.tmp"
        with open(tmp, "wb") as f:
            f.write(text.encode("utf-8"))
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        written.append(path)
    return written


def report_month(now_ms: int, tz: str) -> tuple[int, int]:
    """The month a run at `now_ms` reports on: the one before the current local month."""
    return previous_month(*month_of(now_ms, tz))


def missed_this_month(trigger: CronTrigger, now: datetime, tz: str) -> bool:
    """True when the schedule already fired (or should have) this local month before `now`."""
    local = now.astimezone(ZoneInfo(tz))
    month_start = datetime(local.year, local.month, 1, tzinfo=ZoneInfo(tz))
    first = trigger.get_next_fire_time(None, month_start)
    return first is not None and first <= now


def start_report_scheduler(
    loaded: Loaded,
    open_source_fn: OpenSource,
    *,
    send: Send = send_message,
    clock: Callable[[], float] = time.time,
    catch_up: bool = True,
    retry_s: float = RETRY_S,
    max_retries: int = MAX_RETRIES,
) -> AsyncIOScheduler:
    """Start the monthly job on the running event loop (call it from inside the loop); shut it down with
    `scheduler.shutdown()`.

    With `catch_up`, an agent that starts after this month's scheduled time runs the job at once: the
    send-once record makes that safe. A failed customer is retried every `retry_s`, `max_retries` times.
    """
    settings = loaded.config.report
    tz = settings.timezone
    scheduler = AsyncIOScheduler(timezone=ZoneInfo(tz))
    trigger = CronTrigger.from_crontab(settings.schedule, timezone=tz)

    async def job(year: int | None = None, month: int | None = None, attempt: int = 0) -> None:
        now_ms = int(clock() * 1000)
        if year is None or month is None:
            year, month = report_month(now_ms, tz)
        source = open_source_fn(loaded.config.storage)
        try:
            run = await run_monthly_reports(loaded, source, year, month, now_ms=now_ms, send=send)
        except Exception:
            log.exception("monthly report %s failed", period_key(year, month))
            run = MonthlyRun(failed={"*": "error"})
        finally:
            await source.close()
        if run.failed and attempt < max_retries:
            when = datetime.fromtimestamp(clock() + retry_s, UTC)
            log.warning("monthly report %s: %d customer(s) not sent, retrying at %s", period_key(year, month),
                        len(run.failed), when.isoformat())
            scheduler.add_job(job, DateTrigger(when), args=(year, month, attempt + 1),
                              id=f"{JOB_ID}-retry-{period_key(year, month)}", replace_existing=True)

    scheduler.add_job(job, trigger, id=JOB_ID, coalesce=True, max_instances=1, misfire_grace_time=6 * 3600)
    now = datetime.fromtimestamp(clock(), UTC)
    if catch_up and missed_this_month(trigger, now, tz):
        # No trigger: run once, as soon as the scheduler starts.
        scheduler.add_job(job, id=f"{JOB_ID}-catch-up", misfire_grace_time=None)
    scheduler.start()
    return scheduler

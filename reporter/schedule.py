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

from reporter.mail import MailError, build_message, send_message
from reporter.periods import month_of, next_month, previous_month
from reporter.render import render_csv, render_html, render_json, render_text
from reporter.report import build_month_report, why_not_sent
from slawatch.config.loader import Loaded
from slawatch.config.settings import SmtpSettings, StorageSettings
from slawatch.store import Source, SourceError, StoreUnavailable

log = logging.getLogger(__name__)

Send = Callable[[EmailMessage, SmtpSettings], Awaitable[list[str]]]
OpenSource = Callable[[StorageSettings], Source]
JOB_ID = "slawatch-monthly-report"
RETRY_S = 3600.0
MAX_RETRIES = 24


@dataclass(slots=True)
class MonthlyRun:
    """What one run did: customers sent, customers that failed (to retry), customers skipped and why.

    `unavailable` is the reason when the store could not be reached at all (every customer left is in `failed`).
    """

    sent: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: dict[str, str] = field(default_factory=dict)
    unavailable: str | None = None


def period_key(year: int, month: int) -> str:
    return f"{year:04d}-{month:02d}"


async def send_monthly_reports(loaded: Loaded, source: Source, year: int, month: int, *, now_ms: int,
                               send: Send = send_message) -> list[str]:
    """Send each customer its report for year-month unless the store says it went out; the names sent."""
    return (await run_monthly_reports(loaded, source, year, month, now_ms=now_ms, send=send)).sent


async def run_monthly_reports(loaded: Loaded, source: Source, year: int, month: int, *, now_ms: int,
                              send: Send = send_message) -> MonthlyRun:
    """The monthly job for one month; a failure for one customer never stops the others.

    Only a store that cannot be reached at all ends the run early: the customers left would each wait for the
    same failure. The caller retries the failed customers.
    """
    config = loaded.config
    key = period_key(year, month)
    run = MonthlyRun()
    names = [c.name for c in config.customers if any(comp.customer == c.name for comp in config.components)]
    for i, name in enumerate(names):
        try:
            await _report_customer(loaded, source, year, month, name, now_ms=now_ms, send=send, run=run)
        except StoreUnavailable as exc:
            run.unavailable = str(exc)
            run.failed.update((n, str(exc)) for n in names[i:])
            break
        except SourceError as exc:
            log.error("report %s for %s not sent: %s", key, name, exc, exc_info=log.isEnabledFor(logging.DEBUG))
            run.failed[name] = str(exc)
    by_reason: dict[str, list[str]] = {}
    for name, why in run.skipped.items():
        if why != "already sent":
            by_reason.setdefault(why, []).append(name)
    for why, skipped in by_reason.items():
        log.warning("report %s for %s not emailed: %s", key, ", ".join(skipped), why)
    if config.report.archive is not None:
        try:
            await asyncio.to_thread(prune_archive, config.report.archive, loaded.contract.retention_s, now_ms)
        except OSError as exc:
            log.error("cannot prune the report archive %s: %s", config.report.archive, exc)
    return run


async def _report_customer(loaded: Loaded, source: Source, year: int, month: int, name: str, *, now_ms: int,
                           send: Send, run: MonthlyRun) -> None:
    """Build, archive, send and record one customer's report, noting the outcome in `run`."""
    config = loaded.config
    key = period_key(year, month)
    smtp = config.report.smtp
    customer = config.customer(name)
    assert customer is not None
    if await source.report_sent(key, name):
        run.skipped[name] = "already sent"
        return
    report = await build_month_report(loaded, source, year, month, customer=name)
    why = why_not_sent(report)
    if why is not None:
        # Nothing was monitored that month (e.g. the agent was installed later): no report to send or archive.
        run.skipped[name] = why
        return
    html, text, csv = render_html(report), render_text(report), render_csv(report)
    if config.report.archive is not None:
        try:
            await asyncio.to_thread(archive, config.report.archive, key, name,
                                    {"html": html, "json": render_json(report), "csv": csv})
        except OSError as exc:
            log.error("report %s for %s: cannot archive under %s: %s", key, name, config.report.archive, exc)
    if not customer.report_to:
        run.skipped[name] = "no report_to address"
        return
    if smtp is None:
        run.skipped[name] = "report.smtp is not configured"
        return
    msg = build_message(report, name, customer.report_to, smtp.from_, now_ms=now_ms, html=html, text=text, csv=csv)
    try:
        refused = await send(msg, smtp)
    except MailError as exc:
        log.error("report %s for %s not sent: %s", key, name, exc)
        run.failed[name] = str(exc)
        return
    for r in refused:
        log.warning("report %s for %s: recipient refused: %s", key, name, r)
    log.info("report %s sent to %s (%s)", key, name, ", ".join(customer.report_to))
    run.sent.append(name)
    try:
        await source.record_report_sent(key, name, now_ms, report.inputs_sha256)
    except SourceError as exc:
        # Not a failure to retry: that would send it again at once.
        log.error("report %s for %s sent but not recorded, a later run may send it again: %s", key, name, exc)


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


class MonthlyJob:
    """The agent's monthly report job: one scheduler for the agent's life, reconfigured (not restarted) by a reload.

    A run reads the config of the latest `configure`, and the store the agent started with (the agent, too,
    changes stores only at a restart). The catch-up, a run at once when this month's scheduled time has passed,
    happens at most once per report month in a process: a reload never repeats it.
    """

    def __init__(self, open_source_fn: OpenSource, *, send: Send = send_message,
                 clock: Callable[[], float] = time.time, retry_s: float = RETRY_S,
                 max_retries: int = MAX_RETRIES) -> None:
        self.open_source_fn = open_source_fn
        self.send = send
        self.clock = clock
        self.retry_s = retry_s
        self.max_retries = max_retries
        self.scheduler: AsyncIOScheduler | None = None
        self.loaded: Loaded | None = None
        self._storage: StorageSettings | None = None
        self._when: tuple[str, str] | None = None  # (schedule, timezone) of the cron job
        self._ran: set[str] = set()  # report months this process has run the job for

    def configure(self, loaded: Loaded, *, catch_up: bool = True) -> None:
        """Start the job, or apply a reloaded config; call it from inside the running event loop.

        The cron job changes only when report.schedule or report.timezone did; with neither report.smtp nor
        report.archive there is no job. With `catch_up`, a month whose scheduled time has passed and that this
        process has not run yet is run at once: the send-once record makes that safe.
        """
        settings = loaded.config.report
        self.loaded = loaded
        if self._storage is None:
            self._storage = loaded.config.storage
        enabled = settings.smtp is not None or settings.archive is not None
        if not enabled:
            if self.scheduler is not None or self._when is None:
                log.info("neither report.smtp nor report.archive is set: no monthly report job")
            self.stop()
            self._when = ("", "")
            return
        tz = settings.timezone
        trigger = CronTrigger.from_crontab(settings.schedule, timezone=tz)
        when = (settings.schedule, tz)
        if self.scheduler is None:
            self.scheduler = AsyncIOScheduler(timezone=ZoneInfo(tz))
            self.scheduler.add_job(self._run, trigger, id=JOB_ID, name="monthly report", coalesce=True,
                                   max_instances=1, misfire_grace_time=6 * 3600)
            self.scheduler.start()
        elif when != self._when:
            self.scheduler.reschedule_job(JOB_ID, trigger=trigger)
        if when != self._when:
            job = self.scheduler.get_job(JOB_ID)
            nxt = job.next_run_time.isoformat() if job is not None and job.next_run_time is not None else "never"
            log.info("monthly reports scheduled: %r in %s, next run %s", settings.schedule, tz, nxt)
        self._when = when
        now = datetime.fromtimestamp(self.clock(), UTC)
        key = period_key(*report_month(int(self.clock() * 1000), tz))
        if catch_up and key not in self._ran and missed_this_month(trigger, now, tz):
            self._ran.add(key)
            log.info("monthly report %s: this month's scheduled run was missed, running it now", key)
            # No trigger: run once, as soon as the scheduler runs it.
            self.scheduler.add_job(self._run, id=f"{JOB_ID}-catch-up", name="monthly report catch-up",
                                   misfire_grace_time=None, replace_existing=True)

    def stop(self) -> None:
        if self.scheduler is not None:
            self.scheduler.shutdown(wait=False)
            self.scheduler = None

    async def _run(self, year: int | None = None, month: int | None = None, attempt: int = 0) -> None:
        loaded, storage = self.loaded, self._storage
        assert loaded is not None and storage is not None
        tz = loaded.config.report.timezone
        now_ms = int(self.clock() * 1000)
        if year is None or month is None:
            year, month = report_month(now_ms, tz)
        key = period_key(year, month)
        self._ran.add(key)
        source = self.open_source_fn(storage)
        try:
            run = await run_monthly_reports(loaded, source, year, month, now_ms=now_ms, send=self.send)
            what = _not_sent(run)
        except Exception:
            # A fault of the job itself, not of the store or the mail server: its traceback is worth having.
            log.exception("monthly report %s failed", key)
            what = "failed (see the error above)"
        finally:
            await source.close()
        if what is None:
            return
        if attempt >= self.max_retries or self.scheduler is None:
            log.error("monthly report %s: %s; no more retries (the next agent start tries again)", key, what)
            return
        when = datetime.fromtimestamp(self.clock() + self.retry_s, UTC)
        log.warning("monthly report %s: %s; retrying at %s", key, what, when.isoformat(timespec="seconds"))
        self.scheduler.add_job(self._run, DateTrigger(when), args=(year, month, attempt + 1),
                               id=f"{JOB_ID}-retry-{key}", name=f"monthly report {key} retry",
                               replace_existing=True)


def _not_sent(run: MonthlyRun) -> str | None:
    """What a run left to retry, in words; None when nothing."""
    if not run.failed:
        return None
    if run.unavailable is not None:
        return f"not sent, the store is unavailable: {run.unavailable}"
    total = len(run.sent) + len(run.failed) + len(run.skipped)
    return f"{len(run.failed)} of {total} customer(s) not sent"


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
    """Start the monthly job on the running event loop (see MonthlyJob); shut it down with `scheduler.shutdown()`."""
    job = MonthlyJob(open_source_fn, send=send, clock=clock, retry_s=retry_s, max_retries=max_retries)
    job.configure(loaded, catch_up=catch_up)
    if job.scheduler is None:
        raise ValueError("neither report.smtp nor report.archive is set: no monthly report job")
    return job.scheduler

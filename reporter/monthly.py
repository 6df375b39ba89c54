"""The agent's monthly report job: per customer, build, archive and email last month's report once."""

from __future__ import annotations

import asyncio
import logging
import re
import shutil
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.cron import CronTrigger
from apscheduler.triggers.date import DateTrigger

from reporter.delivery import ALREADY_SENT, Delivery, Send, archive, deliver
from reporter.mail import send_message
from reporter.periods import month_of, month_period, next_month, previous_month, to_ms
from reporter.report import month_key as period_key
from slawatch.config.loader import Loaded
from slawatch.config.settings import StorageSettings
from slawatch.store import Source

log = logging.getLogger(__name__)

OpenSource = Callable[[StorageSettings], Source]
JOB_ID = "slawatch-monthly-report"
RETRY_S = 3600.0
MAX_RETRIES = 24

MonthlyRun = Delivery
__all__ = ["JOB_ID", "MonthlyJob", "MonthlyRun", "archive", "period_key", "prune_archive", "report_month",
           "run_monthly_reports", "send_monthly_reports", "start_report_scheduler"]


async def send_monthly_reports(loaded: Loaded, source: Source, year: int, month: int, *, now_ms: int,
                               send: Send = send_message) -> list[str]:
    """Send each customer its report for year-month unless the store says it went out; the names sent."""
    return (await run_monthly_reports(loaded, source, year, month, now_ms=now_ms, send=send)).sent


async def run_monthly_reports(loaded: Loaded, source: Source, year: int, month: int, *, now_ms: int,
                              send: Send = send_message) -> MonthlyRun:
    """The monthly job for one month (see reporter.delivery.deliver), told in log lines; the caller retries the
    failed customers."""
    config = loaded.config
    key = period_key(year, month)
    names = [c.name for c in config.customers if any(comp.customer == c.name for comp in config.components)]
    run = await deliver(loaded, source, month_period(year, month, config.report.timezone), names,
                        month=(year, month), now_ms=now_ms, send=send, skip_sent=True,
                        archive_to=config.report.archive)
    by_reason: dict[str, list[str]] = {}
    for r in run.results:
        if r.archive_error is not None:
            log.error("report %s for %s: cannot archive under %s: %s", key, r.customer, config.report.archive,
                      r.archive_error)
        if r.pdf_error is not None:
            log.error("report %s for %s %s without its PDF: %s", key, r.customer,
                      "sent" if r.status == "sent" else "archived", r.pdf_error)
        if r.status == "skipped" and r.why != ALREADY_SENT:
            by_reason.setdefault(r.why, []).append(r.customer)
        elif r.status == "failed" and r.why != run.unavailable:  # an unreachable store: one summary line
            log.error("report %s for %s not sent: %s", key, r.customer, r.why,
                      exc_info=r.error if r.error is not None and log.isEnabledFor(logging.DEBUG) else None)
        elif r.status == "sent":
            for refused in r.refused:
                log.warning("report %s for %s: recipient refused: %s", key, r.customer, refused)
            customer = config.customer(r.customer)
            log.info("report %s sent to %s (%s)", key, r.customer, ", ".join(customer.report_to if customer else ()))
            if r.record_error is not None:
                log.error("report %s for %s sent but not recorded, a later run may send it again: %s", key,
                          r.customer, r.record_error)
    for why, skipped in by_reason.items():
        log.warning("report %s for %s not emailed: %s", key, ", ".join(skipped), why)
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
        ended_ms = to_ms(datetime(year, month, 1, tzinfo=UTC))
        if ended_ms + retention_s * 1000 < now_ms:
            shutil.rmtree(folder)
            removed.append(folder.name)
    if removed:
        log.info("report archive: removed %s (older than the retention)", ", ".join(removed))
    return removed


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

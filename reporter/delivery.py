"""Sending reports: per customer, build, archive, email and record once; the one loop that `slawatch report
--email` and the monthly job share (each tells the outcome in its own voice: printed lines or log lines)."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

from reporter.mail import MailError, build_message, send_message
from reporter.pdf import PdfError, render_pdf_apart
from reporter.render import render_csv, render_html, render_json, render_text
from reporter.report import build_report, period_label, why_not_final, why_not_sent
from slawatch.config.loader import Loaded
from slawatch.config.settings import SmtpSettings
from slawatch.model import Interval
from slawatch.store import Source, SourceError, StoreUnavailable

Send = Callable[[EmailMessage, SmtpSettings], Awaitable[list[str]]]
ALREADY_SENT = "already sent"


@dataclass(frozen=True, slots=True)
class Delivered:
    """What became of one customer's report.

    `why` says why it was skipped or failed (`error`: the store's exception, for a traceback on request). A sent
    report may carry the recipients the server refused, why it does not stand for the customer's monthly report
    (`not_final`), or why that could not be recorded (`record_error`). `archive_error` is set when it could not
    be archived, `pdf_error` when it went out without its PDF.
    """

    customer: str
    status: Literal["sent", "skipped", "failed"]
    why: str = ""
    refused: tuple[str, ...] = ()
    not_final: str | None = None
    record_error: str | None = None
    archive_error: str | None = None
    pdf_error: str | None = None
    error: Exception | None = field(default=None, compare=False)


@dataclass(slots=True)
class Delivery:
    """What one run did, customer by customer, in order. `unavailable` is the reason when the store could not be
    reached at all (every customer left is then failed with it)."""

    label: str
    results: list[Delivered] = field(default_factory=list)
    unavailable: str | None = None

    @property
    def sent(self) -> list[str]:
        return [r.customer for r in self.results if r.status == "sent"]

    @property
    def failed(self) -> dict[str, str]:
        return {r.customer: r.why for r in self.results if r.status == "failed"}

    @property
    def skipped(self) -> dict[str, str]:
        return {r.customer: r.why for r in self.results if r.status == "skipped"}


async def deliver(
    loaded: Loaded,
    source: Source,
    period: Interval,
    customers: Sequence[str],
    *,
    month: tuple[int, int] | None = None,
    components: Sequence[str] | None = None,
    now_ms: int,
    send: Send = send_message,
    skip_sent: bool = False,
    archive_to: Path | None = None,
) -> Delivery:
    """Each customer's report over `period`: built from its components (those of `components` only, when given),
    archived under `archive_to`, emailed to its report_to addresses, and recorded in the store as its monthly
    report when it stands for one (`why_not_final`). With `skip_sent`, a customer whose report for the period is
    recorded as sent is skipped. A failure for one customer never stops the others, except a store that cannot
    be reached at all: the customers left would each wait for the same failure.
    """
    run = Delivery(period_label(period, month))
    for i, name in enumerate(customers):
        try:
            run.results.append(await _deliver_one(loaded, source, period, name, month=month, components=components,
                                                  now_ms=now_ms, send=send, skip_sent=skip_sent,
                                                  archive_to=archive_to, run=run))
        except StoreUnavailable as exc:
            run.unavailable = str(exc)
            run.results.extend(Delivered(n, "failed", str(exc)) for n in customers[i:])
            break
        except SourceError as exc:
            run.results.append(Delivered(name, "failed", str(exc), error=exc))
    return run


async def _deliver_one(loaded: Loaded, source: Source, period: Interval, name: str, *,
                       month: tuple[int, int] | None, components: Sequence[str] | None, now_ms: int,
                       send: Send, skip_sent: bool, archive_to: Path | None, run: Delivery) -> Delivered:
    config = loaded.config
    smtp = config.report.smtp
    customer = config.customer(name)
    assert customer is not None
    if skip_sent and await source.report_sent(run.label, name):
        return Delivered(name, "skipped", ALREADY_SENT)
    if archive_to is None and not customer.report_to:
        return Delivered(name, "skipped", "no report_to address")  # nothing to do with the report
    report = await build_report(loaded, source, period, month=month, customer=name, components=components)
    why = why_not_sent(report)
    if why is not None:
        # Nothing was monitored (e.g. the agent was installed later): no report to send or archive.
        return Delivered(name, "skipped", why)
    html, text, csv = render_html(report), render_text(report), render_csv(report)
    mailing = bool(customer.report_to) and smtp is not None
    pdf, pdf_error = None, None
    if mailing or archive_to is not None:
        try:
            # In a child process: the layout would hold up the agent's event loop, and its probes, even in a
            # thread.
            pdf = await render_pdf_apart(report, html)
        except PdfError as exc:
            pdf_error = str(exc)  # the figures are in the mail and the CSV: send it without the PDF, and say so
    archive_error = None
    if archive_to is not None:
        files: dict[str, str | bytes] = {"html": html, "json": render_json(report), "csv": csv}
        if pdf is not None:
            files["pdf"] = pdf
        try:
            await asyncio.to_thread(archive, archive_to, report.label, name, files)
        except OSError as exc:
            archive_error = str(exc)
    if not customer.report_to:
        return Delivered(name, "skipped", "no report_to address", archive_error=archive_error,
                         pdf_error=pdf_error)
    if smtp is None:
        return Delivered(name, "skipped", "report.smtp is not configured", archive_error=archive_error,
                         pdf_error=pdf_error)
    msg = build_message(report, name, customer.report_to, smtp.from_, now_ms=now_ms, html=html, text=text, csv=csv,
                        pdf=pdf)
    try:
        refused = await send(msg, smtp)
    except MailError as exc:
        return Delivered(name, "failed", str(exc), archive_error=archive_error, pdf_error=pdf_error)
    not_final = why_not_final(loaded, report, name)
    record_error = None
    if not_final is None:
        # The monthly job then knows this month went out and does not send it again.
        try:
            await source.record_report_sent(report.label, name, now_ms, report.inputs_sha256)
        except SourceError as exc:
            # Not a failure to retry: that would send it again at once.
            record_error = str(exc)
    return Delivered(name, "sent", refused=tuple(refused), not_final=not_final, record_error=record_error,
                     archive_error=archive_error, pdf_error=pdf_error)


def archive(root: Path, key: str, customer: str, files: Mapping[str, str | bytes]) -> list[Path]:
    """Write root/<key>/<customer>.<ext> atomically (a temp file renamed), so a reader never sees half."""
    folder = root / key
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for ext, text in sorted(files.items()):
        path = folder / f"{customer}.{ext}"
        tmp = folder / f".{customer}.{ext}.tmp"
        with open(tmp, "wb") as f:
            f.write(text.encode("utf-8") if isinstance(text, str) else text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        written.append(path)
    return written

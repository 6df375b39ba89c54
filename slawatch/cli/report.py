"""`slawatch report`: one period's availability report as text, JSON, CSV or HTML, or emailed per customer."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import BinaryIO, TextIO

from reporter.delivery import deliver
from reporter.pdf import PdfError, render_pdf
from reporter.periods import month_period, parse_iso, parse_month
from reporter.render import FORMATS, CsvRows, csv_slice, json_head, json_slice, json_tail, render
from reporter.report import (
    SLICE,
    Progress,
    ReportError,
    ReportRun,
    build_report,
    select_components,
    slice_count,
)
from reporter.workers import DEFAULT_WORKERS, MAX_WORKERS, SliceWorkers, WorkerError, default_workers
from slawatch.cli.usage import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, UsageError
from slawatch.config.loader import ConfigError, Loaded, load
from slawatch.model import Interval
from slawatch.store import Source, SourceError, open_source

log = logging.getLogger(__name__)


def parse_instant(option: str, text: str, tz: str) -> int:
    """An ISO 8601 date or date-time as epoch ms; without an offset it is local time in `tz`."""
    try:
        return parse_iso(text, tz)
    except ValueError:
        raise UsageError(f"invalid {option} {text!r}: write ISO 8601, e.g. 2026-03-01 or "
                         f"2026-03-01T06:00:00Z") from None


def resolve_period(args: argparse.Namespace, tz: str,
                   now_ms: int | None = None) -> tuple[Interval, tuple[int, int] | None]:
    """The report period from --month, or --from/--to; UsageError when they do not make one.

    A month still in progress is reported to `now_ms` ("to date"): the time that has not happened yet is
    neither up, down nor unmonitored. The 720 h basis still applies to the month's downtime so far.
    """
    if args.month is not None:
        if args.end is not None:
            raise UsageError("--to goes with --from, not with --month")
        try:
            year, month = parse_month(args.month)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        period = month_period(year, month, tz)
        now = time.time_ns() // 1_000_000 if now_ms is None else now_ms
        if period.start_ms >= now:
            raise UsageError(f"month {args.month} has not started yet")
        if period.end_ms > now:
            period = Interval(period.start_ms, now)
        return period, (year, month)
    if args.end is None:
        raise UsageError("--from needs --to")
    start = parse_instant("--from", args.start, tz)
    end = parse_instant("--to", args.end, tz)
    if start >= end:
        raise UsageError(f"--from must be before --to (got {args.start} and {args.end})")
    return Interval(start, end), None


def progress_bar(stream: TextIO, width: int = 30) -> Progress | None:
    """A one-line progress bar on a terminal; nothing when `stream` is a file or a pipe."""
    if not stream.isatty():
        return None

    def show(done: int, total: int) -> None:
        filled = width * done // max(1, total)
        stream.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {done}/{total} components")
        if done >= total:
            stream.write("\r" + " " * (width + 30) + "\r")
        stream.flush()

    return show


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    report = sub.add_parser(
        "report", help="availability report of one period (text, json, csv, html; --email to send it)",
        description="Compute each component's availability over a calendar month (--month, in report.timezone) "
                    "or a custom range (--from/--to, measured on its real length) against the contract. "
                    "Exit 0 on success, 1 when the store or SMTP fails, 2 on a bad command line or config.")
    report.add_argument("--config", "-c", required=True, metavar="FILE")
    when = report.add_mutually_exclusive_group(required=True)
    when.add_argument("--month", metavar="YYYY-MM", help="a calendar month in report.timezone")
    when.add_argument("--from", dest="start", metavar="ISO", help="start of a custom range (ISO 8601)")
    report.add_argument("--to", dest="end", metavar="ISO", help="end of a custom range (exclusive)")
    report.add_argument("--customer", metavar="NAME", help="only this customer's components")
    report.add_argument("--component", action="extend", nargs="+", metavar="NAME", default=None,
                        help="only these components")
    report.add_argument("--format", choices=(*FORMATS, "pdf"), default="text",
                        help="pdf: the HTML report laid out on A4 pages")
    report.add_argument("--out", "--output", dest="out", metavar="FILE",
                        help="write the report here instead of standard output")
    report.add_argument("--email", action="store_true",
                        help="send each customer its report (HTML, text, CSV and PDF) to its report_to addresses")
    report.add_argument("--workers", type=_workers, default=default_workers(), metavar="N",
                        help=f"processes computing a JSON or CSV report of more than {SLICE} components side by "
                             f"side, 1-{MAX_WORKERS} (default: one per core, at most {DEFAULT_WORKERS}: here "
                             f"{default_workers()}; 1: none)")
    report.set_defaults(func=report_cmd)


def _workers(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if not 1 <= value <= MAX_WORKERS:
        raise argparse.ArgumentTypeError(f"must be within 1-{MAX_WORKERS}, got {value}")
    return value


def report_cmd(args: argparse.Namespace) -> int:
    if not logging.getLogger().handlers:
        logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s: %(message)s")
    try:
        # The config (100 000 components: millions of objects) lives to the end: out of the collector's sight, so
        # that the collections the report's millions of short-lived changes and results trigger do not walk it.
        loaded = load(args.config, for_good=True)
    except ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_USAGE
    try:
        period, month = resolve_period(args, loaded.config.report.timezone)
        selected = select_components(loaded, args.customer, args.component)
        if args.email and loaded.config.report.smtp is None:
            raise UsageError("--email needs report.smtp in the config")
        if args.format == "pdf" and args.out is None and not args.email and sys.stdout.isatty():
            raise UsageError("--format pdf is binary: give --output FILE or redirect standard output")
    except (UsageError, ReportError) as exc:
        print(f"slawatch report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    workers = None
    slices = slice_count(len(selected))
    if args.format in ("json", "csv") and (args.out is not None or not args.email) and args.workers > 1 \
            and slices > 1:
        # Forked here, before the event loop and its threads start (see SliceWorkers).
        try:
            workers = SliceWorkers(loaded, min(args.workers, slices))
        except OSError as exc:  # no more processes or memory for them: the report's own process still can
            log.warning("cannot start the report's worker processes (%s): computing the report in this one", exc)
    try:
        return asyncio.run(_run(args, loaded, period, month, workers))
    finally:
        if workers is not None:
            workers.close()


async def _run(args: argparse.Namespace, loaded: Loaded, period: Interval, month: tuple[int, int] | None,
               workers: SliceWorkers | None = None) -> int:
    source = open_source(loaded.config.storage)
    try:
        if args.out is not None or not args.email:
            show = progress_bar(sys.stderr) if args.format == "text" or args.out is not None else None
            if args.format in ("json", "csv"):
                # Computed and written a slice of components at a time: the JSON of a month of 100 000 components
                # is hundreds of megabytes, its outages a million.
                run = ReportRun(loaded, source, period, month=month, customer=args.customer,
                                components=args.component, progress=show)
                await _write_streamed(run, args.format, args.out, workers)
                return EXIT_OK if not args.email else await _email(args, loaded, source, period, month)
            report = await build_report(loaded, source, period, month=month, customer=args.customer,
                                        components=args.component, progress=show)
            if args.format == "pdf":
                data = await asyncio.to_thread(render_pdf, report)
                text = None
            else:
                text = render(report, args.format)
                data = text.encode("utf-8")
            if args.out is not None:
                await asyncio.to_thread(Path(args.out).write_bytes, data)
            elif text is not None:
                sys.stdout.write(text)
            else:
                sys.stdout.flush()
                sys.stdout.buffer.write(data)
                sys.stdout.buffer.flush()
        if args.email:
            return await _email(args, loaded, source, period, month)
        return EXIT_OK
    except ReportError as exc:
        print(f"slawatch report: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (SourceError, OSError, PdfError, WorkerError) as exc:
        print(f"slawatch report: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        await source.close()


async def _write_streamed(run: ReportRun, fmt: str, out_path: str | None, workers: SliceWorkers | None) -> None:
    """The JSON or CSV of `run` to the file (made anew) or standard output, each slice as it is computed (by
    `workers` when given). The JSON is written as its UTF-8 bytes, as the workers make it."""
    if fmt == "json":
        out: BinaryIO
        if out_path is None:
            sys.stdout.flush()
            out = sys.stdout.buffer  # the bytes under the text, as the file gets them
        else:
            out = await asyncio.to_thread(Path(out_path).open, "wb")
        try:
            await _write(out, [json_head().encode("utf-8")], out_path is None)
            first = True
            async for text in run.rendered(json_slice, workers):
                if text:
                    await _write(out, [text] if first else [b",", text], out_path is None)
                    first = False
            await _write(out, [json_tail(await run.summary()).encode("utf-8")], out_path is None)
        finally:
            if out_path is None:
                out.flush()
            else:
                await asyncio.to_thread(out.close)
        return
    rows = CsvRows(run.head())
    async for part in run.rendered(csv_slice, workers):
        rows.extend(part)
    pieces = rows.text(await run.summary())
    if out_path is None:
        sys.stdout.writelines(pieces)
        return
    with await asyncio.to_thread(Path(out_path).open, "w", encoding="utf-8", newline="") as file:
        await asyncio.to_thread(file.writelines, pieces)


async def _write(out: BinaryIO, pieces: list[bytes], stdout: bool) -> None:
    if stdout:
        out.writelines(pieces)
    else:
        await asyncio.to_thread(out.writelines, pieces)


async def _email(args: argparse.Namespace, loaded: Loaded, store: Source, period: Interval,
                 month: tuple[int, int] | None) -> int:
    """Send one report per customer; every failure is told, and any failure makes exit 1."""
    run = await deliver(loaded, store, period, _email_customers(loaded, args.customer, args.component), month=month,
                        components=args.component, now_ms=time.time_ns() // 1_000_000)
    status = EXIT_OK
    for r in run.results:
        name, label = r.customer, run.label
        if r.status == "skipped":
            if r.why == "no report_to address":
                print(f"slawatch report: customer {name} has no report_to address: not sent", file=sys.stderr)
            else:
                print(f"slawatch report: {label} for {name}: {r.why}: not sent", file=sys.stderr)
            continue
        if r.status == "failed":
            if r.why != run.unavailable:  # an unreachable store is told once, below
                print(f"slawatch report: sending {label} to {name} failed: {r.why}", file=sys.stderr)
            status = EXIT_FAILURE
            continue
        customer = loaded.config.customer(name)
        for refused in r.refused:
            print(f"slawatch report: {name}: recipient refused: {refused}", file=sys.stderr)
        print(f"sent {label} to {name} ({', '.join(customer.report_to if customer else ())})", file=sys.stderr)
        if r.pdf_error is not None:
            print(f"slawatch report: {label} for {name} sent without its PDF: {r.pdf_error}", file=sys.stderr)
        if r.record_error is not None:
            print(f"slawatch report: {label} for {name} sent but not recorded, so the monthly job may "
                  f"send it again: {r.record_error}", file=sys.stderr)
            status = EXIT_FAILURE
        elif r.not_final is not None and month is not None:
            print(f"slawatch report: {label} for {name} not recorded as sent ({r.not_final}): the monthly job "
                  f"will still send the whole month", file=sys.stderr)
    if run.unavailable is not None:
        print(f"slawatch report: {run.unavailable}", file=sys.stderr)
    return status


def _email_customers(loaded: Loaded, customer: str | None, components: Sequence[str] | None) -> list[str]:
    if customer is not None:
        return [customer]
    selected = {c.customer for c in select_components(loaded, None, components) if c.customer is not None}
    return [c.name for c in loaded.config.customers if c.name in selected]

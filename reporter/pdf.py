"""The report as a PDF: WeasyPrint lays the HTML report out on A4 pages with the page's print styles."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

from reporter.render import render_html
from reporter.report import Report

_SOURCE_ROOT = str(Path(__file__).resolve().parents[1])  # where the child finds this package, installed or not
PDF_TIMEOUT_S = 900.0
"""How long a child process may take to lay out one report (1 000 components take ~95 s on a 2-core host); past
it the mail goes without its PDF."""


class PdfError(Exception):
    """The PDF could not be made (WeasyPrint or the system libraries it needs are missing or failed)."""


def render_pdf(report: Report, html: str | None = None) -> bytes:
    """The HTML report (`html`, else rendered here) as PDF bytes. Blocking and CPU-bound (a second or two for a
    few pages, ~95 s for 1 000 components): where an event loop must keep running, use render_pdf_apart."""
    return _layout(html if html is not None else render_html(report), report.label)


def _layout(page: str, label: str) -> bytes:
    """Nothing is fetched: the page is self-contained and the fetcher refuses every URL, so no text in a report
    can make it read a file or the network."""
    try:
        # lazy: WeasyPrint (and Pango, through cffi) is loaded only when a PDF is made, not with the agent.
        import weasyprint
        from weasyprint.urls import URLFetcher  # lazy, as above
    except (ImportError, OSError) as exc:
        raise PdfError(f"cannot make a PDF: WeasyPrint is not usable here: {exc}") from exc
    try:
        document = weasyprint.HTML(string=page, url_fetcher=URLFetcher(allowed_protocols=()), media_type="print")
        data = document.write_pdf()
    except Exception as exc:  # a layout failure is WeasyPrint's own, of any type: tell it, with its cause
        raise PdfError(f"cannot make a PDF of report {label}: {exc}") from exc
    assert isinstance(data, bytes)
    return data


async def render_pdf_apart(report: Report, html: str, *, timeout_s: float = PDF_TIMEOUT_S) -> bytes:
    """render_pdf in a child process (`python -m reporter.pdf`), for a process that must keep its event loop
    running: WeasyPrint holds the interpreter lock for seconds at a time, so in a thread it stalls the loop
    (measured 3.9 s at once while laying out 1 000 components), and with it the agent's probes."""
    paths = [p for p in (os.environ.get("PYTHONPATH"), _SOURCE_ROOT) if p]
    try:
        child = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "reporter.pdf", report.label, stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONPATH": os.pathsep.join(paths)})
    except OSError as exc:
        raise PdfError(f"cannot make a PDF of report {report.label}: cannot start {sys.executable}: {exc}") from exc
    try:
        async with asyncio.timeout(timeout_s):
            out, err = await child.communicate(html.encode("utf-8"))
    except TimeoutError:
        raise PdfError(f"cannot make a PDF of report {report.label}: not done in {timeout_s:g} s") from None
    finally:
        if child.returncode is None:  # timed out, or the caller was cancelled (the agent stopping)
            child.kill()
            await child.wait()
    if child.returncode != 0:
        lines = err.decode("utf-8", "replace").strip().splitlines()
        raise PdfError(lines[-1] if lines else f"cannot make a PDF of report {report.label}: the layout process "
                       f"ended with status {child.returncode}")
    return out


def main(argv: list[str]) -> int:
    """`python -m reporter.pdf LABEL`: the HTML report on standard input, its PDF on standard output; on failure,
    the reason as the last line of standard error and status 1."""
    label = argv[0] if argv else "report"
    html = sys.stdin.buffer.read().decode("utf-8")
    try:
        data = _layout(html, label)
    except PdfError as exc:
        print(exc, file=sys.stderr)
        return 1
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

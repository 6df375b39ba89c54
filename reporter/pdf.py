"""The report as a PDF: WeasyPrint lays the HTML report out on A4 pages with the page's print styles."""

from __future__ import annotations

from reporter.render import render_html
from reporter.report import Report


class PdfError(Exception):
    """The PDF could not be made (WeasyPrint or the system libraries it needs are missing or failed)."""


def render_pdf(report: Report, html: str | None = None) -> bytes:
    """The HTML report (`html`, else rendered here) as PDF bytes. Blocking and CPU-bound (about a second for a
    few pages): from the event loop, call it in a thread. Nothing is fetched: the page is self-contained and the
    fetcher refuses every URL, so no text in a report can make it read a file or the network."""
    try:
        # lazy: WeasyPrint (and Pango, through cffi) is loaded only when a PDF is made, not with the agent.
        import weasyprint
        from weasyprint.urls import URLFetcher  # lazy, as above
    except (ImportError, OSError) as exc:
        raise PdfError(f"cannot make a PDF: WeasyPrint is not usable here: {exc}") from exc
    page = html if html is not None else render_html(report)
    try:
        document = weasyprint.HTML(string=page, url_fetcher=URLFetcher(allowed_protocols=()), media_type="print")
        data = document.write_pdf()
    except Exception as exc:  # a layout failure is WeasyPrint's own, of any type: tell it, with its cause
        raise PdfError(f"cannot make a PDF of report {report.label}: {exc}") from exc
    assert isinstance(data, bytes)
    return data

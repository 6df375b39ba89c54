"""The PDF of the report: laid out by WeasyPrint, checked as pages turned into PNG by pdftoppm (poppler-utils); the
report mail carries it beside the CSV; `slawatch report --format pdf`; the agent does not load WeasyPrint."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import subprocess
import sys
import time
from pathlib import Path

import pytest
from PIL import Image

from reporter.monthly import run_monthly_reports
from reporter.pdf import PdfError, render_pdf, render_pdf_apart
from reporter.render import TIMELINE_ROWS, render_html
from reporter.report import Report, build_month_report, build_report
from slawatch.cli import report as cli
from slawatch.config.loader import Loaded, load
from slawatch.model import AgentHeartbeats, ComponentRef, Interval, MaintenanceWindow, StateChange
from slawatch.testing import need_binary
from tests.reporter.april import (
    APRIL,
    CONTRACT,
    NOW_MS,
    D,
    FakeSource,
    H,
    M,
    april_source,
    beats,
    fill_sqlite_store,
    fixed_report,
    loaded_config,
    write_config,
)
from tests.reporter.smtpd import Smtpd

ROOT = Path(__file__).resolve().parents[2]
A4_AT_80_DPI = (662, 936)  # 210 x 297 mm
RIGHT_MARGIN_PX = 36  # 12 mm at 80 dpi, less a pixel of anti-aliasing
ORANGE, BLUE, RED = (0xE8, 0x71, 0x0A), (0x7A, 0xA6, 0xD6), (0xD9, 0x30, 0x25)


def png_pages(pdf: bytes, folder: Path) -> list[Image.Image]:
    """The PDF's pages as 80 dpi RGB images, through `pdftoppm -png -r 80`."""
    exe = need_binary("pdftoppm", "poppler-utils")
    folder.mkdir(exist_ok=True)
    (folder / "report.pdf").write_bytes(pdf)
    subprocess.run([exe, "-png", "-r", "80", str(folder / "report.pdf"), str(folder / "page")], check=True,
                   timeout=60, capture_output=True)
    return [Image.open(p).convert("RGB") for p in sorted(folder.glob("page-*.png"))]


def inked(page: Image.Image) -> int:
    """Pixels that are not (nearly) white."""
    return sum(page.convert("L").histogram()[:245])


def colour_px(page: Image.Image, rgb: tuple[int, int, int], tolerance: int = 12) -> int:
    """Pixels of (about) that colour."""
    colours = page.getcolors(maxcolors=1 << 20) or []
    return sum(n for n, colour in colours if all(abs(c - w) <= tolerance for c, w in zip(colour, rgb, strict=True)))


def right_margin_is_blank(page: Image.Image) -> bool:
    """Nothing runs into the right margin: no table cut at the page's edge."""
    width, height = page.size
    strip = page.crop((width - RIGHT_MARGIN_PX, 0, width, height)).convert("L")
    return strip.getextrema()[0] >= 245


def check_pages(pages: list[Image.Image]) -> None:
    for i, page in enumerate(pages, 1):
        assert page.size == A4_AT_80_DPI, f"page {i} is not A4"
        # A page that holds only the running footer (a heading pushed away from its chart, say) has ~1 000.
        assert inked(page) > 4000, f"page {i} is (nearly) blank"
        assert right_margin_is_blank(page), f"page {i}: something runs into the right margin"


async def test_the_fixed_report_prints_one_page_per_customer(tmp_path: Path) -> None:
    report = await fixed_report(tmp_path)
    pdf = render_pdf(report)
    assert pdf.startswith(b"%PDF-")
    pages = png_pages(pdf, tmp_path / "png")
    assert len(pages) == 3  # acme, globex, components without a customer: each section starts a page
    check_pages(pages)
    # Every page has the legend; acme's timeline adds its late-notice outage in orange and its excused maintenance
    # in blue, which the page of lab-vlan (never seen) lacks; BREACHED is red on acme's and globex's pages.
    legend_only = pages[2]
    assert colour_px(pages[0], ORANGE) > colour_px(legend_only, ORANGE) > 0
    assert colour_px(pages[0], BLUE) > colour_px(legend_only, BLUE) > 0
    assert colour_px(pages[1], RED) > colour_px(legend_only, RED) and colour_px(pages[0], RED) > 0


def report_loaded(tmp_path: Path) -> Loaded:
    return load(tmp_path / "big.yaml")


def many_components_report(tmp_path: Path, n: int) -> tuple[Report, int]:
    """One customer with `n` components, outages all month (up to 10 h, to the millisecond: wide cells), long reasons
    and eight windows."""
    (tmp_path / "contract.yaml").write_text(CONTRACT, encoding="utf-8")
    names = [f"router-{i:03d}" + ("-rack-b" * (i % 3)) for i in range(n)]
    components = "\n".join(f'  - {{name: "{name}", class: network, customer: acme, probes: [{{kind: tcp, '
                           f'target: "127.0.0.1:9"}}]}}' for name in names)
    (tmp_path / "big.yaml").write_text(
        "agent: {id: m}\nstorage: {sqlite: {path: store.db}}\ncontract: contract.yaml\n"
        f"customers:\n  - {{name: acme, tier: gold, report_to: [noc@acme.example]}}\ncomponents:\n{components}\n"
        "report: {timezone: UTC}\n", encoding="utf-8")
    loaded = load(tmp_path / "big.yaml")
    t0 = APRIL.start_ms
    changes = []
    for i, name in enumerate(names):
        ref = ComponentRef(name, "network", "gold", "acme")
        changes.append(StateChange(ref, "mon-1", t0 - D, True, ""))
        for k in range(i % 4):
            start = t0 + ((i * 7 + k * 5) % 29) * D + k * H
            changes += [StateChange(ref, "mon-1", start, False, "refused: connection refused by 127.0.0.1:9 "
                                                                  "after 3 retries" if k % 2 else "timeout"),
                        StateChange(ref, "mon-1", start + (i % 7 + 1) * 13 * M + (i % 5) * 90 * M + 763, True, "")]
    windows = [MaintenanceWindow(f"mw-{k:04x}", "customer", "acme", t0 + k * 3 * D, t0 + k * 3 * D + 6 * H,
                                 t0 + k * 3 * D - (H if k % 2 else 100 * H),
                                 "firmware upgrade of the core switches, rolling, one rack at a time")
               for k in range(8)]
    source = FakeSource(changes, {"mon-1": AgentHeartbeats("mon-1", beats(t0 - D, APRIL.end_ms + D), 60.0)},
                        windows)
    return asyncio.run(build_month_report(loaded, source, 2026, 4)), len(windows)


def test_a_long_report_breaks_into_whole_pages(tmp_path: Path) -> None:
    n = 2 * TIMELINE_ROWS + 5
    report, n_windows = many_components_report(tmp_path, n)
    html = render_html(report)
    assert html.count('<svg xmlns="http://www.w3.org/2000/svg"') == 3  # the timeline in charts of TIMELINE_ROWS
    pdf = render_pdf(report, html)
    pages = png_pages(pdf, tmp_path / "png")
    check_pages(pages)
    assert 5 <= len(pages) <= 16, len(pages)
    # Every row of every table is on some page, right to its last column (pdftotext reads what was laid out).
    text = subprocess.run([need_binary("pdftotext", "poppler-utils"), "-raw", str(tmp_path / "png" / "report.pdf"),
                           "-"], check=True, capture_output=True, text=True, timeout=60).stdout
    words = " ".join(text.split())  # -raw: each cell's words in drawing order, its line breaks aside
    assert words.count(" BREACHED ") + words.count(" met ") == n  # the component table's last column
    assert words.count("one rack at a time") == n_windows  # the maintenance table's last column
    assert "page 1 of" in words and f"page {len(pages)} of {len(pages)}" in words


# ---------------------------------------------------------------- the mail and the command


async def test_the_report_mail_carries_the_pdf(tmp_path: Path, smtpd: Smtpd) -> None:
    loaded = loaded_config(tmp_path, smtp_port=smtpd.port)
    run = await run_monthly_reports(loaded, april_source(), 2026, 4, now_ms=NOW_MS)
    assert run.sent == ["acme", "globex"] and all(r.pdf_error is None for r in run.results)
    by_subject = {r.message["Subject"]: r.message for r in smtpd.handler.received}
    msg = by_subject["SLA availability report 2026-04 — acme"]
    attachments = {a.get_filename(): a for a in msg.iter_attachments()}
    assert list(attachments) == ["slawatch-acme-2026-04.csv", "slawatch-acme-2026-04.pdf"]
    pdf_part = attachments["slawatch-acme-2026-04.pdf"]
    assert pdf_part.get_content_type() == "application/pdf"
    pdf = pdf_part.get_content()
    assert isinstance(pdf, bytes) and pdf.startswith(b"%PDF-")
    pages = png_pages(pdf, tmp_path / "png")
    assert len(pages) == 1  # acme's own report: one section
    check_pages(pages)
    assert colour_px(pages[0], RED) > 100  # BREACHED, and the bar of core-router's availability


async def test_without_weasyprint_the_mail_goes_without_the_pdf_and_says_so(
        tmp_path: Path, smtpd: Smtpd, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    # As on a host without Pango: importing WeasyPrint fails, here and in the child process that lays out the PDF.
    fake = tmp_path / "site" / "weasyprint"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text('raise OSError("cannot load library \'libpango-1.0-0\'")\n', encoding="utf-8")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path / "site"))
    monkeypatch.setitem(sys.modules, "weasyprint", None)
    (tmp_path / "r").mkdir()
    with pytest.raises(PdfError, match="WeasyPrint is not usable here"):
        render_pdf(await fixed_report(tmp_path / "r"))
    loaded = loaded_config(tmp_path, smtp_port=smtpd.port)
    with caplog.at_level(logging.INFO, logger="reporter"):
        run = await run_monthly_reports(loaded, april_source(), 2026, 4, now_ms=NOW_MS)
    assert run.sent == ["acme", "globex"]
    assert [[a.get_filename() for a in r.message.iter_attachments()] for r in smtpd.handler.received] == [
        ["slawatch-acme-2026-04.csv"], ["slawatch-globex-2026-04.csv"]]
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert errors == [f"report 2026-04 for {name} sent without its PDF: cannot make a PDF: WeasyPrint is not usable "
                      "here: cannot load library 'libpango-1.0-0'" for name in ("acme", "globex")]


def children_laying_out(label: str) -> list[str]:
    """The processes running `python -m reporter.pdf LABEL`."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:
            continue
        if b"reporter.pdf" in argv and label.encode() in argv:
            found.append(cmdline.parent.name)
    return found


async def test_the_pdf_is_laid_out_apart_from_the_event_loop(tmp_path: Path) -> None:
    """In a thread, WeasyPrint stalled the event loop 184 ms at once for this report (3.9 s for 1 000 components):
    the layout runs in a child process while the loop keeps ticking. A child that takes too long is stopped, and
    the caller told. (The stall's bound is loose: on a loaded machine the loop's own ticks stretch too; that the
    work is in the child is what the ticker checks.)"""
    report, _ = await asyncio.to_thread(many_components_report, tmp_path, 65)
    html = render_html(report)
    worst = 0.0
    ticks_with_a_child = 0
    done = False

    async def tick() -> None:
        nonlocal worst, ticks_with_a_child
        while not done:
            began = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - began - 0.01)
            ticks_with_a_child += bool(children_laying_out(report.label))

    ticker = asyncio.create_task(tick())
    pdf = await render_pdf_apart(report, html)
    done = True
    await ticker
    assert pdf.startswith(b"%PDF-") and len(png_pages(pdf, tmp_path / "png")) >= 5
    assert ticks_with_a_child >= 5, "the loop did not tick while a child laid the PDF out"
    assert worst < 0.5, f"the event loop stalled {worst * 1000:.0f} ms"

    odd = await build_report(report_loaded(tmp_path), FakeSource(), Interval(APRIL.start_ms + 1234, APRIL.end_ms))
    with pytest.raises(PdfError, match=r"cannot make a PDF of report 2026-04-01T00:00:01.234Z/.*: not done in 0.2 s"):
        await render_pdf_apart(odd, render_html(odd), timeout_s=0.2)
    assert children_laying_out(odd.label) == []  # stopped, not left behind


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slawatch")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_format_pdf_to_a_file_and_to_standard_output(tmp_path: Path,
                                                         capsysbinary: pytest.CaptureFixture[bytes]) -> None:
    path = write_config(tmp_path)
    asyncio.run(fill_sqlite_store(load(path)))
    out = tmp_path / "april.pdf"
    argv = ["report", "--config", str(path), "--month", "2026-04", "--customer", "acme", "--format", "pdf"]
    assert run_cli([*argv, "--output", str(out)]) == 0
    pages = png_pages(out.read_bytes(), tmp_path / "png")
    assert len(pages) == 1
    check_pages(pages)
    assert capsysbinary.readouterr().out == b""
    assert run_cli(argv) == 0  # standard output is not a terminal here: the PDF goes there
    assert capsysbinary.readouterr().out.startswith(b"%PDF-")


AGENT_IMPORTS = """
import json, sys
import slawatch.cli.agent, reporter.delivery, reporter.monthly, reporter.pdf
print(json.dumps(sorted(m for m in sys.modules if m.split(".")[0] in ("weasyprint", "pydyf", "tinycss2"))))
"""


def test_the_agent_does_not_load_weasyprint() -> None:
    proc = subprocess.run([sys.executable, "-c", AGENT_IMPORTS], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == []

"""The report's PDF: how long WeasyPrint takes per report size, and how long it holds up an event loop.

    python bench/pdf.py [--components 4 65 300 1000] [--skip-thread-above 400]

For each size, one customer's April 2026 (outages on most components, a few degraded spells, eight maintenance
windows) is written through SqliteSink and built with reporter.report.build_month_report; its HTML is then laid
out twice while an asyncio ticker (10 ms sleeps) records the worst lateness of the loop: in a thread
(reporter.pdf.render_pdf, as a first version did) and in a child process (reporter.pdf.render_pdf_apart, as the
report mail does). Prints per size: pages, PDF size, time and worst loop stall of each way. The thread way is
skipped above --skip-thread-above components (it takes as long and only shows longer stalls).
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from reporter.pdf import render_pdf, render_pdf_apart  # noqa: E402
from reporter.periods import month_period  # noqa: E402
from reporter.render import render_html  # noqa: E402
from reporter.report import Report, build_month_report  # noqa: E402
from slawatch.config.loader import bundled_contract, load  # noqa: E402
from slawatch.model import ComponentRef, Heartbeat, MaintenanceWindow, StateChange  # noqa: E402
from slawatch.store import open_source  # noqa: E402
from slawatch.store.sqlite import SqliteSink  # noqa: E402

M = 60_000
H = 60 * M
D = 24 * H
APRIL = month_period(2026, 4, "UTC")


async def build(folder: Path, n: int) -> Report:
    names = [f"router-{i:04d}" for i in range(n)]
    components = "\n".join(f'  - {{name: {name}, class: network, customer: acme, probes: [{{kind: tcp, '
                           f'target: "127.0.0.1:9"}}]}}' for name in names)
    (folder / "slawatch.yaml").write_text(
        f"agent: {{id: bench}}\nstorage: {{sqlite: {{path: store.db}}}}\ncontract: {bundled_contract()}\n"
        f"customers:\n  - {{name: acme, tier: gold, report_to: [noc@acme.example]}}\ncomponents:\n{components}\n"
        "report: {timezone: UTC}\n", encoding="utf-8")
    loaded = load(folder / "slawatch.yaml")
    t0 = APRIL.start_ms
    points: list[StateChange | Heartbeat] = []
    for i, name in enumerate(names):
        ref = ComponentRef(name, "network", "gold", "acme")
        points.append(StateChange(ref, "bench", t0 - D, True, ""))
        for k in range(i % 4):
            start = t0 + ((i * 7 + k * 5) % 29) * D + k * H
            points += [StateChange(ref, "bench", start, False, "timeout" if k % 2 else "refused: connection refused"),
                       StateChange(ref, "bench", start + (i % 7 + 1) * 13 * M + (i % 5) * 90 * M + 763, True, "")]
        if i % 10 == 3:
            points += [StateChange(ref, "bench", t0 + 2 * D + i * M, True, "fan failure", True),
                       StateChange(ref, "bench", t0 + 2 * D + i * M + 40 * M, True, "")]
    points += [Heartbeat("bench", t, 60.0) for t in range(t0 - D, APRIL.end_ms + D, M)]
    assert loaded.config.storage.sqlite is not None
    sink = SqliteSink(loaded.config.storage.sqlite)
    try:
        await sink.write(points)
    finally:
        await sink.close()
    source = open_source(loaded.config.storage)
    try:
        for k in range(8):
            start = t0 + k * 3 * D
            await source.add_window(MaintenanceWindow(f"mw-{k}", "customer", "acme", start, start + 6 * H,
                                                      start - (H if k % 2 else 100 * H), "firmware upgrade"))
        return await build_month_report(loaded, source, 2026, 4)
    finally:
        await source.close()


async def timed(make: Awaitable[bytes]) -> tuple[bytes, float, float]:
    """(pdf, seconds, worst event-loop lateness in seconds) while `make` runs."""
    worst = 0.0
    done = False

    async def tick() -> None:
        nonlocal worst
        while not done:
            began = time.perf_counter()
            await asyncio.sleep(0.01)
            worst = max(worst, time.perf_counter() - began - 0.01)

    ticker = asyncio.create_task(tick())
    began = time.perf_counter()
    pdf = await make
    took = time.perf_counter() - began
    done = True
    await ticker
    return pdf, took, worst


def pages(pdf: bytes, folder: Path) -> str:
    (folder / "report.pdf").write_bytes(pdf)
    info = subprocess.run(["pdfinfo", str(folder / "report.pdf")], capture_output=True, text=True, check=False)
    return next((line.split()[1] for line in info.stdout.splitlines() if line.startswith("Pages:")), "?")


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--components", type=int, nargs="+", default=[4, 65, 300, 1000])
    parser.add_argument("--skip-thread-above", type=int, default=400)
    args = parser.parse_args()
    print(f"{'components':>10} {'pages':>6} {'KiB':>6} {'thread s':>9} {'stall ms':>9} {'child s':>8} {'stall ms':>9}")
    for n in args.components:
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            report = await build(folder, n)
            html = render_html(report)
            thread = "-", "-"
            if n <= args.skip_thread_above:
                _, took, stall = await timed(asyncio.to_thread(render_pdf, report, html))
                thread = f"{took:.1f}", f"{stall * 1000:.0f}"
            pdf, took, stall = await timed(render_pdf_apart(report, html))
            print(f"{n:>10} {pages(pdf, folder):>6} {len(pdf) // 1024:>6} {thread[0]:>9} {thread[1]:>9} "
                  f"{took:>8.1f} {stall * 1000:>9.0f}", flush=True)


if __name__ == "__main__":
    asyncio.run(main())

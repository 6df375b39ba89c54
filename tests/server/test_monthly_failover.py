"""The monthly reports across a change of leader: only the leader runs the job; its catch-up sends last month's
missed report once, and the server that takes over finds it in the shared ledger and sends nothing again."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from reporter.periods import month_period
from slawatch.config.loader import load
from slawatch.model import Heartbeat, Point, StateChange
from slawatch.store import open_sinks
from slawatch.testing.serverproc import REF, ServerProcess, write_config
from slawatch.testing.smtp import SmtpServer

pytestmark = [pytest.mark.timeout(120)]


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer().start()
    yield server
    server.stop()


async def last_month_watched(cfg: Path) -> None:
    """An agent's record of last month: the component up all month, an hourly heartbeat."""
    today = time.gmtime()
    year, month = (today.tm_year, today.tm_mon - 1) if today.tm_mon > 1 else (today.tm_year - 1, 12)
    period = month_period(year, month, "UTC")
    points: list[Point] = [StateChange(REF, "a1", period.start_ms, True, "")]
    points += [Heartbeat("a1", t, 3600.0) for t in range(period.start_ms, period.end_ms + 3_600_000, 3_600_000)]
    for sink in open_sinks(load(cfg).config.storage):
        try:
            await sink.write(points)
        finally:
            await sink.close()


async def test_a_new_leader_does_not_send_the_months_report_again(tmp_path: Path, smtp: SmtpServer) -> None:
    cfg = write_config(tmp_path, 9)
    text = cfg.read_text().replace("customers: [{name: acme, tier: gold}]",
                                   "customers: [{name: acme, tier: gold, report_to: [ops@acme.example]}]")
    # The 1st of the month at 00:00 has always passed: each leader's start finds this month's run due (a catch-up).
    cfg.write_text(text + f'report: {{schedule: "0 0 1 * *", smtp: {{host: 127.0.0.1, port: {smtp.port}}}}}\n')
    await last_month_watched(cfg)
    first = ServerProcess(cfg, "srv-a")
    second: ServerProcess | None = None
    try:
        await asyncio.to_thread(first.wait_for, r"^server srv-a leads", 30)
        second = ServerProcess(cfg, "srv-b")
        await asyncio.to_thread(first.wait_for, r"^report \d{4}-\d{2} sent to acme", 60)
        assert len(smtp.received) == 1
        await asyncio.to_thread(second.wait_for, r"^server srv-b serving", 30)
        assert not second.has("monthly report")  # a follower runs no job

        mark = len(second.lines)
        assert first.stop() == 0
        await asyncio.to_thread(second.wait_for, r"scheduled run was missed, running it now", 30, after=mark)
        deadline = time.monotonic() + 3.0  # the catch-up's run reads the ledger: it finds the report sent
        while time.monotonic() < deadline and not second.has(r"report \d{4}-\d{2} sent"):
            await asyncio.sleep(0.1)
        assert len(smtp.received) == 1
        assert not second.has(r"report \d{4}-\d{2} sent")
    finally:
        for s in (first, second):
            if s is not None and s.proc.poll() is None:
                s.kill()

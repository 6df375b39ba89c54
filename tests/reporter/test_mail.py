"""The report email against a real local SMTP server (aiosmtpd): content, send-once, refusals, the monthly job."""

from __future__ import annotations

import argparse
import asyncio
import json
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path

import pytest

from reporter.mail import MailError, build_message, send_message
from reporter.monthly import JOB_ID, archive, report_month, send_monthly_reports, start_report_scheduler
from reporter.render import render_csv
from reporter.report import build_month_report
from slawatch.cli import report as cli
from slawatch.config.loader import Loaded, load
from slawatch.config.settings import SmtpSettings
from slawatch.testing import free_port
from tests.reporter.april import (
    NOW_MS,
    FakeSource,
    april_source,
    beats,
    fill_sqlite_store,
    loaded_config,
    write_config,
)
from tests.reporter.smtpd import Smtpd


def parts(msg: EmailMessage) -> tuple[str, str, list[tuple[str, str]]]:
    """(text body, html body, [(attachment filename, content)])."""
    text = msg.get_body(preferencelist=("plain",))
    html = msg.get_body(preferencelist=("html",))
    assert text is not None and html is not None
    attachments = [(a.get_filename() or "", a.get_content()) for a in msg.iter_attachments()]
    return str(text.get_content()), str(html.get_content()), attachments


def smtp_of(loaded: Loaded) -> SmtpSettings:
    assert loaded.config.report.smtp is not None
    return loaded.config.report.smtp


# ---------------------------------------------------------------- the message, apart from sending


async def test_message_structure(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    report = await build_month_report(loaded, april_source(), 2026, 4, customer="acme")
    msg = build_message(report, "acme", ["noc@acme.example", "cto@acme.example"], "sla@provider.example",
                        now_ms=NOW_MS)
    assert msg["Subject"] == "SLA availability report 2026-04 — acme"
    assert msg["To"] == "noc@acme.example, cto@acme.example"
    assert msg["From"] == "sla@provider.example"
    assert msg["Date"] == "Fri, 01 May 2026 06:00:00 +0000"
    assert msg["X-Slawatch-Inputs-SHA256"] == report.inputs_sha256
    assert msg.get_content_type() == "multipart/mixed"
    text, html, attachments = parts(msg)
    assert "core-router" in text and "99.988 %" in text
    assert html.startswith("<!DOCTYPE html>") and "<svg" in html
    assert attachments == [("slawatch-acme-2026-04.csv", render_csv(report))]
    with pytest.raises(ValueError, match="no report_to"):
        build_message(report, "acme", [], "sla@provider.example", now_ms=NOW_MS)


# ---------------------------------------------------------------- the monthly job against a real server


async def test_monthly_reports_reach_the_server_once(tmp_path: Path, smtpd: Smtpd) -> None:
    loaded = loaded_config(tmp_path, smtp_port=smtpd.port)
    source = april_source()
    sent = await send_monthly_reports(loaded, source, 2026, 4, now_ms=NOW_MS)
    assert sent == ["acme", "globex"]
    got = {r.message["Subject"]: r for r in smtpd.handler.received}
    assert set(got) == {"SLA availability report 2026-04 — acme", "SLA availability report 2026-04 — globex"}

    acme = got["SLA availability report 2026-04 — acme"]
    assert acme.mail_from == "slawatch@provider.example"
    assert acme.rcpt_tos == ["noc@acme.example", "cto@acme.example"]
    text, html, attachments = parts(acme.message)
    assert "core-router" in text and "BREACHED" in text and "edge-router" not in text
    assert "core-router" in html and "<svg" in html and "edge-router" not in html
    expected = await build_month_report(loaded, april_source(), 2026, 4, customer="acme")
    assert attachments[0] == ("slawatch-acme-2026-04.csv", render_csv(expected))
    assert [name for name, _ in attachments[1:]] == ["slawatch-acme-2026-04.pdf"]  # the PDF: test_pdf.py
    assert attachments[0][1].splitlines()[1].startswith("2026-04,2026-04-01T00:00:00.000Z,")
    assert got["SLA availability report 2026-04 — globex"].rcpt_tos == ["ops@globex.example"]

    assert source.sent == {("2026-04", "acme"): (NOW_MS, expected.inputs_sha256),
                           ("2026-04", "globex"): (NOW_MS, source.sent[("2026-04", "globex")][1])}
    # A second run (a restart, a catch-up, a retry) sends nothing.
    assert await send_monthly_reports(loaded, source, 2026, 4, now_ms=NOW_MS + 60_000) == []
    assert len(smtpd.handler.received) == 2
    # Another month is another report.
    assert await send_monthly_reports(loaded, source, 2026, 5, now_ms=NOW_MS) == ["acme", "globex"]
    assert len(smtpd.handler.received) == 4


async def test_monthly_reports_are_archived(tmp_path: Path, smtpd: Smtpd) -> None:
    loaded = loaded_config(tmp_path, smtp_port=smtpd.port, archive="reports")
    await send_monthly_reports(loaded, april_source(), 2026, 4, now_ms=NOW_MS)
    folder = tmp_path / "reports" / "2026-04"
    assert sorted(p.name for p in folder.iterdir()) == [
        "acme.csv", "acme.html", "acme.json", "acme.pdf", "globex.csv", "globex.html", "globex.json", "globex.pdf"]
    assert (folder / "acme.pdf").read_bytes().startswith(b"%PDF-")
    doc = json.loads((folder / "acme.json").read_text(encoding="utf-8"))
    assert [c["name"] for c in doc["components"]] == ["core-router", "sip-core"]
    assert (folder / "globex.csv").read_text(encoding="utf-8").startswith("period,period_from,")


def test_archive_replaces_files_whole(tmp_path: Path) -> None:
    archive(tmp_path, "2026-04", "acme", {"json": "{}\n"})
    archive(tmp_path, "2026-04", "acme", {"json": "[]\n"})
    assert [p.name for p in (tmp_path / "2026-04").iterdir()] == ["acme.json"]
    assert (tmp_path / "2026-04" / "acme.json").read_text() == "[]\n"


# ---------------------------------------------------------------- refusals and failures


async def test_refused_recipients_are_a_clear_error(tmp_path: Path, smtpd: Smtpd) -> None:
    smtpd.handler.refuse = "550 5.1.1 no such mailbox"
    loaded = loaded_config(tmp_path, smtp_port=smtpd.port)
    report = await build_month_report(loaded, april_source(), 2026, 4, customer="acme")
    msg = build_message(report, "acme", ["noc@acme.example"], "slawatch@provider.example", now_ms=NOW_MS)
    with pytest.raises(MailError, match=r"refused the recipients \(noc@acme.example: 550 5.1.1 no such mailbox\)"):
        await send_message(msg, smtp_of(loaded))
    # The monthly job records nothing, so a later run tries again.
    source = april_source()
    assert await send_monthly_reports(loaded, source, 2026, 4, now_ms=NOW_MS) == []
    assert source.sent == {}
    assert smtpd.handler.received == []


async def test_no_server_is_a_clear_error(tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    loaded = loaded_config(tmp_path, smtp_port=port)
    report = await build_month_report(loaded, april_source(), 2026, 4, customer="acme")
    msg = build_message(report, "acme", ["noc@acme.example"], "slawatch@provider.example", now_ms=NOW_MS)
    with pytest.raises(MailError, match=rf"SMTP 127.0.0.1:{port}: .*"):
        await send_message(msg, smtp_of(loaded))


# ---------------------------------------------------------------- slawatch report --email


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slawatch")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


def test_cli_email_sends_each_customer_its_report(tmp_path: Path, smtpd: Smtpd,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, smtp_port=smtpd.port)
    asyncio.run(fill_sqlite_store(load(path)))
    assert run_cli(["report", "--config", str(path), "--month", "2026-04", "--email", "--customer", "acme"]) == 0
    assert [r.rcpt_tos for r in smtpd.handler.received] == [["noc@acme.example", "cto@acme.example"]]
    captured = capsys.readouterr()
    assert captured.out == ""
    assert "sent 2026-04 to acme" in captured.err
    _, _, attachments = parts(smtpd.handler.received[0].message)
    assert "core-router,network,99.99,99.988,false,300," in attachments[0][1]


def test_cli_email_smtp_failure_exits_1_with_the_reason(tmp_path: Path, smtpd: Smtpd,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    smtpd.handler.refuse = "550 5.7.1 relaying denied"
    path = write_config(tmp_path, smtp_port=smtpd.port)
    asyncio.run(fill_sqlite_store(load(path)))
    assert run_cli(["report", "--config", str(path), "--month", "2026-04", "--email"]) == 1
    err = capsys.readouterr().err
    assert "sending 2026-04 to acme failed" in err and "550 5.7.1 relaying denied" in err
    # The next customer is still tried (globex has no data for April: not sent, by the same rule as the job).
    assert "2026-04 for globex: no monitoring data for the month: not sent" in err


# ---------------------------------------------------------------- the scheduler


def test_report_month_is_the_previous_local_month() -> None:
    assert report_month(NOW_MS, "UTC") == (2026, 4)
    jan_1_local = 1_767_222_000_000  # 2026-01-01T00:00+01:00 is still December in UTC
    assert report_month(jan_1_local, "Europe/Paris") == (2025, 12)
    assert report_month(jan_1_local, "UTC") == (2025, 11)


async def test_scheduler_catches_up_a_missed_run_and_schedules_the_next(tmp_path: Path, smtpd: Smtpd) -> None:
    loaded = loaded_config(tmp_path, smtp_port=smtpd.port)
    source = april_source()
    opened: list[FakeSource] = []

    def open_source(_: object) -> FakeSource:
        opened.append(source)
        return source

    # The agent starts at 07:00 on 1 May: the 06:00 run was missed.
    scheduler = start_report_scheduler(loaded, open_source, clock=lambda: NOW_MS / 1000 + 3600)
    try:
        for _ in range(600):  # two reports with their PDFs: up to 30 s on a loaded machine
            if len(smtpd.handler.received) >= 2 and source.closed:
                break
            await asyncio.sleep(0.05)
        assert sorted(source.sent) == [("2026-04", "acme"), ("2026-04", "globex")]
        assert source.closed
        job = scheduler.get_job(JOB_ID)
        assert job is not None
        nxt = job.next_run_time
        assert (nxt.day, nxt.hour, nxt.minute) == (1, 6, 0)
        assert nxt > datetime.now(UTC)
    finally:
        scheduler.shutdown(wait=False)
    await asyncio.sleep(0)
    assert len(smtpd.handler.received) == 2


# ---------------------------------------------------------------- what `report --email` records as sent


def was_recorded(loaded: Loaded, key: str, customer: str) -> bool:
    from slawatch.store.sqlite import SqliteSource

    async def check() -> bool:
        assert loaded.config.storage.sqlite is not None
        source = SqliteSource(loaded.config.storage.sqlite)
        try:
            return await source.report_sent(key, customer)
        finally:
            await source.close()
    return asyncio.run(check())


def monthly_job(loaded: Loaded, year: int, month: int, now_ms: int) -> tuple[list[str], dict[str, str]]:
    """Run the monthly job on the SQLite store: (customers sent, customers skipped and why)."""
    from reporter.monthly import run_monthly_reports
    from slawatch.store import open_source

    async def run() -> tuple[list[str], dict[str, str]]:
        source = open_source(loaded.config.storage)
        try:
            done = await run_monthly_reports(loaded, source, year, month, now_ms=now_ms)
        finally:
            await source.close()
        return done.sent, done.skipped
    return asyncio.run(run())


def test_cli_email_of_the_month_in_progress_is_not_recorded(tmp_path: Path, smtpd: Smtpd,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    import time

    from reporter.periods import month_of, month_period
    from slawatch.model import ComponentRef, Heartbeat, StateChange
    from slawatch.store.sqlite import SqliteSink

    path = write_config(tmp_path, smtp_port=smtpd.port)
    loaded = load(path)
    now_ms = time.time_ns() // 1_000_000
    year, month = month_of(now_ms, "UTC")
    this_month = month_period(year, month, "UTC")
    key = f"{year:04d}-{month:02d}"

    async def fill() -> None:
        assert loaded.config.storage.sqlite is not None
        sink = SqliteSink(loaded.config.storage.sqlite)
        core = ComponentRef("core-router", "network", "gold", "acme")
        sip = ComponentRef("sip-core", "sip", "gold", "acme")
        try:
            await sink.write([StateChange(core, "mon-1", this_month.start_ms - 1000, True, ""),
                              StateChange(sip, "mon-1", this_month.start_ms - 1000, True, ""),
                              *(Heartbeat("mon-1", t, 60.0) for t in beats(this_month.start_ms, now_ms))])
        finally:
            await sink.close()

    asyncio.run(fill())
    assert run_cli(["report", "--config", str(path), "--month", key, "--email", "--customer", "acme"]) == 0
    assert [r.rcpt_tos for r in smtpd.handler.received] == [["noc@acme.example", "cto@acme.example"]]
    err = capsys.readouterr().err
    assert f"sent {key} to acme" in err
    assert f"{key} for acme not recorded as sent (the month is still in progress)" in err
    assert not was_recorded(loaded, key, "acme")
    # Once the month is over, the job sends acme the whole month.
    sent, _ = monthly_job(loaded, year, month, this_month.end_ms + 6 * 3_600_000)
    assert sent == ["acme"]
    assert len(smtpd.handler.received) == 2


def test_cli_email_of_some_components_is_not_recorded(tmp_path: Path, smtpd: Smtpd,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, smtp_port=smtpd.port)
    loaded = load(path)
    asyncio.run(fill_sqlite_store(loaded))
    assert run_cli(["report", "--config", str(path), "--month", "2026-04", "--email",
                    "--component", "core-router"]) == 0
    assert [r.rcpt_tos for r in smtpd.handler.received] == [["noc@acme.example", "cto@acme.example"]]
    _, _, attachments = parts(smtpd.handler.received[0].message)
    assert "sip-core" not in attachments[0][1]
    err = capsys.readouterr().err
    assert "2026-04 for acme not recorded as sent (only some of acme's components)" in err
    assert not was_recorded(loaded, "2026-04", "acme")
    # The job still sends acme its whole report (globex has no data for April: not sent).
    sent, skipped = monthly_job(loaded, 2026, 4, NOW_MS)
    assert sent == ["acme"] and skipped == {"globex": "no monitoring data for the month"}
    _, _, attachments = parts(smtpd.handler.received[1].message)
    assert "core-router" in attachments[0][1] and "sip-core" in attachments[0][1]


def test_cli_email_of_a_whole_past_month_is_recorded(tmp_path: Path, smtpd: Smtpd,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, smtp_port=smtpd.port)
    loaded = load(path)
    asyncio.run(fill_sqlite_store(loaded))
    # All of acme's components, named one by one: the same as the customer's whole report.
    assert run_cli(["report", "--config", str(path), "--month", "2026-04", "--email",
                    "--component", "core-router", "sip-core"]) == 0
    assert "not recorded" not in capsys.readouterr().err
    assert was_recorded(loaded, "2026-04", "acme")
    sent, skipped = monthly_job(loaded, 2026, 4, NOW_MS)
    assert sent == [] and skipped["acme"] == "already sent"
    assert len(smtpd.handler.received) == 1


def test_a_month_without_data_is_sent_by_neither_the_command_nor_the_job(
        tmp_path: Path, smtpd: Smtpd, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_config(tmp_path, smtp_port=smtpd.port)
    loaded = load(path)
    asyncio.run(fill_sqlite_store(loaded))  # April only: February has no data at all
    assert run_cli(["report", "--config", str(path), "--month", "2026-02", "--email"]) == 0
    err = capsys.readouterr().err
    assert "2026-02 for acme: no monitoring data for the month: not sent" in err
    assert "2026-02 for globex: no monitoring data for the month: not sent" in err
    sent, skipped = monthly_job(loaded, 2026, 2, NOW_MS)
    assert sent == [] and skipped == {"acme": "no monitoring data for the month",
                                      "globex": "no monitoring data for the month"}
    assert smtpd.handler.received == []
    assert not was_recorded(loaded, "2026-02", "acme") and not was_recorded(loaded, "2026-02", "globex")

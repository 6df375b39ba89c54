"""The sent ledger: what `slawatch report --email` records as a customer's monthly report, so that the monthly job
does not send it again. Only a whole, finished calendar month of all of a customer's components is recorded."""

from __future__ import annotations

import argparse
import asyncio
from pathlib import Path

import pytest

from reporter.monthly import run_monthly_reports
from reporter.report import Report, build_month_report, build_report, why_not_final, why_not_sent
from slawatch.cli import report as cli
from slawatch.config.loader import Loaded, load
from slawatch.model import ComponentRef, Heartbeat, Interval, StateChange
from slawatch.store import open_source
from slawatch.store.sqlite import SqliteSink
from tests.reporter.april import APRIL, NOW_MS, D, H, april_source, beats, loaded_config, write_config
from tests.reporter.smtpd import Smtpd


def run_cli(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="slawatch")
    cli.register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(argv)
    return int(args.func(args))


# ---------------------------------------------------------------- the rule, as a table


async def april_report(loaded: Loaded, **kwargs: object) -> Report:
    return await build_month_report(loaded, april_source(), 2026, 4, **kwargs)  # type: ignore[arg-type]


async def test_why_not_final(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    whole = await april_report(loaded, customer="acme")
    named = await april_report(loaded, components=["core-router", "sip-core"])
    some = await april_report(loaded, components=["core-router"])
    to_date = await build_report(loaded, april_source(), Interval(APRIL.start_ms, APRIL.end_ms - D), month=(2026, 4),
                                 customer="acme")
    as_range = await build_report(loaded, april_source(), APRIL, customer="acme")
    cases = [(whole, "acme", None), (named, "acme", None), (some, "acme", "only some of acme's components"),
             (to_date, "acme", "the month is still in progress"), (as_range, "acme", "not a calendar month"),
             # globex's only component, named with one of acme's: a whole report for globex, not for acme.
             (await april_report(loaded, components=["core-router", "edge-router"]), "globex", None)]
    for report, customer, why in cases:
        assert why_not_final(loaded, report, customer) == why, (report.label, report.period, customer)


async def test_why_not_sent_is_about_data_not_about_the_period(tmp_path: Path) -> None:
    loaded = loaded_config(tmp_path)
    assert why_not_sent(await april_report(loaded, customer="acme")) is None
    assert why_not_sent(await april_report(loaded, customer="globex")) is None  # edge-router has data in April
    empty = await build_month_report(loaded, april_source(), 2026, 2, customer="acme")
    assert why_not_sent(empty) == "no monitoring data for the month"
    in_range = await build_report(loaded, april_source(), Interval(APRIL.start_ms - 40 * D, APRIL.start_ms - 35 * D),
                                  customer="acme")
    assert why_not_sent(in_range) == "no monitoring data for the period"


# ---------------------------------------------------------------- the command and the job on one SQLite store


async def fill(loaded: Loaded) -> None:
    """April in the store: every customer's components up all month, core-router down an hour on the 10th."""
    assert loaded.config.storage.sqlite is not None
    sink = SqliteSink(loaded.config.storage.sqlite)
    refs = [ComponentRef("core-router", "network", "gold", "acme"), ComponentRef("sip-core", "sip", "gold", "acme"),
            ComponentRef("edge-router", "network", "gold", "globex")]
    down = APRIL.start_ms + 9 * D
    try:
        await sink.write([*(StateChange(ref, "mon-1", APRIL.start_ms - D, True, "") for ref in refs),
                          StateChange(refs[0], "mon-1", down, False, "timeout"),
                          StateChange(refs[0], "mon-1", down + H, True, ""),
                          *(Heartbeat("mon-1", t, 60.0) for t in beats(APRIL.start_ms - D, APRIL.end_ms + D))])
    finally:
        await sink.close()


def recorded(loaded: Loaded, key: str) -> list[str]:
    async def check() -> list[str]:
        source = open_source(loaded.config.storage)
        try:
            return [c.name for c in loaded.config.customers if await source.report_sent(key, c.name)]
        finally:
            await source.close()
    return asyncio.run(check())


def job(loaded: Loaded, year: int, month: int) -> tuple[list[str], dict[str, str]]:
    async def go() -> tuple[list[str], dict[str, str]]:
        source = open_source(loaded.config.storage)
        try:
            run = await run_monthly_reports(loaded, source, year, month, now_ms=NOW_MS)
        finally:
            await source.close()
        return run.sent, run.skipped
    return asyncio.run(go())


@pytest.fixture
def store(tmp_path: Path, smtpd: Smtpd) -> tuple[Path, Loaded]:
    path = write_config(tmp_path, smtp_port=smtpd.port)
    loaded = load(path)
    asyncio.run(fill(loaded))
    return path, loaded


def test_one_customer_by_hand_records_that_customer_only(store: tuple[Path, Loaded], smtpd: Smtpd,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    path, loaded = store
    assert run_cli(["report", "--config", str(path), "--month", "2026-04", "--email", "--customer", "acme"]) == 0
    assert "not recorded" not in capsys.readouterr().err
    assert recorded(loaded, "2026-04") == ["acme"]
    sent, skipped = job(loaded, 2026, 4)
    assert sent == ["globex"] and skipped == {"acme": "already sent"}
    assert [r.rcpt_tos for r in smtpd.handler.received] == [["noc@acme.example", "cto@acme.example"],
                                                            ["ops@globex.example"]]


def test_components_of_two_customers_record_the_one_whose_report_is_whole(
        store: tuple[Path, Loaded], smtpd: Smtpd, capsys: pytest.CaptureFixture[str]) -> None:
    path, loaded = store
    assert run_cli(["report", "--config", str(path), "--month", "2026-04", "--email",
                    "--component", "core-router", "edge-router"]) == 0
    err = capsys.readouterr().err
    assert "sent 2026-04 to acme" in err and "sent 2026-04 to globex" in err
    assert "2026-04 for acme not recorded as sent (only some of acme's components)" in err
    assert "for globex not recorded" not in err
    assert recorded(loaded, "2026-04") == ["globex"]
    sent, skipped = job(loaded, 2026, 4)
    assert sent == ["acme"] and skipped == {"globex": "already sent"}


def test_a_range_covering_the_month_is_not_the_monthly_report(store: tuple[Path, Loaded], smtpd: Smtpd,
                                                              capsys: pytest.CaptureFixture[str]) -> None:
    """--from/--to over exactly April is measured on its real length (basis period), not on the contract's 720 h
    of a month report: it is sent, and the job still sends the month."""
    path, loaded = store
    assert run_cli(["report", "--config", str(path), "--from", "2026-04-01", "--to", "2026-05-01", "--email",
                    "--customer", "acme"]) == 0
    assert "sent 2026-04-01T00:00:00.000Z/2026-05-01T00:00:00.000Z to acme" in capsys.readouterr().err
    assert recorded(loaded, "2026-04") == []
    sent, _ = job(loaded, 2026, 4)
    assert sent == ["acme", "globex"]
    assert len(smtpd.handler.received) == 3


def test_a_customer_without_data_gets_no_mail_from_either(tmp_path: Path, smtpd: Smtpd,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    """globex's only component has no data in April (the agent watched acme's only): neither the command nor the
    job mails or records it, and both say why in the same words."""
    path = write_config(tmp_path, smtp_port=smtpd.port)
    loaded = load(path)

    async def acme_only() -> None:
        assert loaded.config.storage.sqlite is not None
        sink = SqliteSink(loaded.config.storage.sqlite)
        ref = ComponentRef("core-router", "network", "gold", "acme")
        try:
            await sink.write([StateChange(ref, "mon-1", APRIL.start_ms - D, True, ""),
                              *(Heartbeat("mon-1", t, 60.0) for t in beats(APRIL.start_ms - D, APRIL.end_ms + D))])
        finally:
            await sink.close()

    asyncio.run(acme_only())
    assert run_cli(["report", "--config", str(path), "--month", "2026-04", "--email", "--customer", "globex"]) == 0
    assert "2026-04 for globex: no monitoring data for the month: not sent" in capsys.readouterr().err
    sent, skipped = job(loaded, 2026, 4)
    assert sent == ["acme"] and skipped == {"globex": "no monitoring data for the month"}
    assert recorded(loaded, "2026-04") == ["acme"]
    assert [r.rcpt_tos for r in smtpd.handler.received] == [["noc@acme.example", "cto@acme.example"]]

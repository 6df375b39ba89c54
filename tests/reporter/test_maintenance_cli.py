"""`slawatch maintenance` through its argparse registration, against a real SQLite store and a real influxd."""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import sqlite3
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from reporter.maintenance import format_duration
from slawatch.cli.maintenance import parse_time, register
from slawatch.cli.usage import EXIT_FAILURE as EXIT_STORE
from slawatch.cli.usage import EXIT_OK, EXIT_USAGE, UsageError
from slawatch.config.loader import load
from slawatch.model import MaintenanceWindow as StoredWindow
from slawatch.store import open_source
from slawatch.testing.influxd import Influxd

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]

CONFIG = """\
agent: {{id: mon-test}}
storage:
{storage}
contract: contract.yaml
customers:
  - {{name: acme, tier: gold}}
  - {{name: initech, tier: silver, policy: {{maintenance_notice: 7d}}}}
components:
  - {{name: sip-core-1, class: sip, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:5060"}}]}}
  - {{name: san-a, class: san, customer: initech, probes: [{{kind: tcp, target: "127.0.0.1:3260"}}]}}
"""

SOON = datetime.now(UTC).replace(second=0, microsecond=0) + timedelta(days=3)


def iso(dt: datetime) -> str:
    return dt.isoformat().replace("+00:00", "Z")


def write_config(tmp_path: Path, storage: str = "  sqlite: {path: store.db}") -> Path:
    shutil.copy(ROOT / "config" / "contract.yaml", tmp_path / "contract.yaml")
    path = tmp_path / "slawatch.yaml"
    path.write_text(CONFIG.format(storage=storage), encoding="utf-8")
    load(path)  # the fixture itself must be valid
    return path


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="slawatch")
    sub = parser.add_subparsers(dest="command")
    register(sub)
    args = parser.parse_args(list(argv))
    code: int = args.func(args)
    return code


def stored_windows(config: Path) -> list[StoredWindow]:
    async def read() -> list[StoredWindow]:
        source = open_source(load(config).config.storage)
        try:
            return await source.windows()
        finally:
            await source.close()

    return asyncio.run(read())


@pytest.fixture
def config(tmp_path: Path) -> Path:
    return write_config(tmp_path)


def add(config: Path, *target: str, start: datetime = SOON, hours: float = 4, announced: datetime | None = None,
        reason: str = "core switch firmware") -> int:
    argv = ["maintenance", "add", *target, "--start", iso(start), "--end", iso(start + timedelta(hours=hours)),
            "--reason", reason, "--config", str(config)]
    if announced is not None:
        argv += ["--announced-at", iso(announced)]
    return run(*argv)


# ---------------------------------------------------------------- add


def test_add_stores_the_window_and_its_announcement(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    announced = SOON - timedelta(days=4)
    assert add(config, "--component", "sip-core-1", announced=announced) == EXIT_OK
    out = capsys.readouterr().out
    [w] = stored_windows(config)
    assert w.id.startswith("mw-") and len(w.id) == 11 and w.id in out
    assert (w.scope, w.value, w.reason) == ("component", "sip-core-1", "core switch firmware")
    assert w.start_ms == int(SOON.timestamp() * 1000)
    assert w.end_ms == w.start_ms + 4 * 3_600_000
    assert w.announced_ms == int(announced.timestamp() * 1000)
    assert "meets the 72h notice" in out


def test_add_defaults_the_announcement_to_now(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = datetime.now(UTC).timestamp() * 1000
    assert add(config, "--class", "san", start=SOON) == EXIT_OK
    [w] = stored_windows(config)
    assert before - 1000 <= w.announced_ms <= datetime.now(UTC).timestamp() * 1000
    assert abs(w.created_ms - w.announced_ms) < 1000


def test_add_late_notice_is_recorded_and_said(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    soon = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=10)
    assert add(config, "--customer", "acme", start=soon) == EXIT_OK
    assert "LATE NOTICE" in capsys.readouterr().out
    assert len(stored_windows(config)) == 1


def test_ids_are_unique(config: Path) -> None:
    for i in range(20):
        assert add(config, "--component", "sip-core-1", start=SOON + timedelta(days=i)) == EXIT_OK
    assert len({w.id for w in stored_windows(config)}) == 20


@pytest.mark.parametrize(("args", "message"), [
    (["--start", "2030-05-01T22:00:00", "--end", "2030-05-02T02:00:00Z"],
     "--start '2030-05-01T22:00:00' has no UTC offset"),
    (["--start", "2030-05-01T22:00:00Z", "--end", "2030-05-02 02:00"],
     "--end '2030-05-02 02:00' has no UTC offset"),
    (["--start", "tomorrow", "--end", "2030-05-02T02:00:00Z"], "is not an ISO 8601 time"),
    (["--start", "2030-05-01T22:00:00Z", "--end", "2030-05-01T22:00:00+00:00"], "must be after --start"),
    (["--start", "2030-05-01T22:00:00+02:00", "--end", "2030-05-01T19:30:00Z"], "must be after --start"),
])
def test_bad_times_exit_2(config: Path, capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code = run("maintenance", "add", "--component", "sip-core-1", *args, "--reason", "x", "--config", str(config))
    assert code == EXIT_USAGE
    assert message in capsys.readouterr().err
    assert stored_windows(config) == []


def test_announced_in_the_future_exits_2(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert add(config, "--component", "sip-core-1", announced=SOON - timedelta(days=1)) == EXIT_USAGE
    assert "is in the future" in capsys.readouterr().err


@pytest.mark.parametrize(("target", "message"), [
    (["--component", "sip-core-9"], "unknown component 'sip-core-9'"),
    (["--component", "a' OR '1'='1"], "unknown component \"a' OR '1'='1\""),
    (["--class", "fax"], "unknown class 'fax'"),
    (["--customer", "globex"], "unknown customer 'globex'"),
])
def test_unknown_names_exit_2(config: Path, capsys: pytest.CaptureFixture[str], target: list[str],
                              message: str) -> None:
    assert add(config, *target) == EXIT_USAGE
    err = capsys.readouterr().err
    assert message in err and "slawatch.yaml has" in err
    assert stored_windows(config) == []


def test_class_of_the_contract_is_known(config: Path) -> None:
    assert add(config, "--class", "vlan") == EXIT_OK  # in the contract, no component uses it yet


def test_exactly_one_target(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        add(config, "--component", "sip-core-1", "--customer", "acme")
    assert exc.value.code == EXIT_USAGE
    with pytest.raises(SystemExit) as exc:
        add(config)
    assert exc.value.code == EXIT_USAGE


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "bad.yaml").write_text("components: [{name: x}]\n")
    assert add(tmp_path / "bad.yaml", "--component", "x") == EXIT_USAGE
    assert "bad.yaml" in capsys.readouterr().err
    assert add(tmp_path / "missing.yaml", "--component", "x") == EXIT_USAGE


def test_store_error_exits_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "store.db").mkdir()  # a directory where the SQLite file should be
    config = write_config(tmp_path)
    assert add(config, "--component", "sip-core-1") == EXIT_STORE
    assert "store error" in capsys.readouterr().err
    assert run("maintenance", "list", "--config", str(config)) == EXIT_STORE


# ---------------------------------------------------------------- list


def test_list_table_shows_lead_time_and_the_notice_verdict(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert add(config, "--component", "sip-core-1", announced=SOON - timedelta(days=4)) == EXIT_OK
    # initech's own policy needs 7 days: 4 days is late for it.
    assert add(config, "--component", "san-a", start=SOON + timedelta(days=1), announced=SOON - timedelta(days=3),
               reason="array\nfirmware") == EXIT_OK
    capsys.readouterr()
    assert run("maintenance", "list", "--config", str(config)) == EXIT_OK
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["ID", "TARGET", "START", "(UTC)", "END", "(UTC)", "LENGTH", "ANNOUNCED", "(UTC)",
                                "NOTICE", "MEETS", "REASON"]
    assert "component sip-core-1" in lines[1] and " 96h " in lines[1] and " yes " in lines[1]
    assert lines[1].endswith("core switch firmware")
    assert "component san-a" in lines[2] and " 96h " in lines[2] and "LATE (<7d)" in lines[2]
    assert lines[2].endswith("array firmware")


def test_list_json(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert add(config, "--customer", "acme", announced=SOON - timedelta(hours=80), hours=2) == EXIT_OK
    capsys.readouterr()
    assert run("maintenance", "list", "--json", "--config", str(config)) == EXIT_OK
    [doc] = json.loads(capsys.readouterr().out)
    assert doc["scope"] == "customer" and doc["value"] == "acme"
    assert doc["start"] == iso(SOON) and doc["end"] == iso(SOON + timedelta(hours=2))
    assert doc["announced"] == iso(SOON - timedelta(hours=80))
    assert doc["lead_time_s"] == 80 * 3600 and doc["notice_required_s"] == 72 * 3600 and doc["notice_ok"] is True
    assert doc["duration_s"] == 7200


def test_list_empty_before_any_store_exists(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run("maintenance", "list", "--config", str(config)) == EXIT_OK
    assert capsys.readouterr().out.strip() == "no maintenance windows"
    assert not (config.parent / "store.db").exists()


def test_list_config_from_the_environment(config: Path, monkeypatch: pytest.MonkeyPatch,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("SLAWATCH_CONFIG", str(config))
    assert run("maintenance", "list", "--json") == EXIT_OK
    assert json.loads(capsys.readouterr().out) == []


# ---------------------------------------------------------------- remove


def test_remove_keeps_the_row_as_evidence(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert add(config, "--component", "sip-core-1") == EXIT_OK
    assert add(config, "--class", "sip") == EXIT_OK
    first, second = stored_windows(config)
    assert run("maintenance", "remove", first.id, "--config", str(config)) == EXIT_OK
    assert stored_windows(config) == [second]
    with sqlite3.connect(config.parent / "store.db") as db:
        assert db.execute("SELECT removed FROM slawatch_maintenance WHERE id = ?", (first.id,)).fetchone() == (1,)
    capsys.readouterr()
    assert run("maintenance", "remove", first.id, "--config", str(config)) == EXIT_USAGE
    assert f"no window '{first.id}'" in capsys.readouterr().err
    assert run("maintenance", "remove", "a' OR '1'='1", "--config", str(config)) == EXIT_USAGE
    assert stored_windows(config) == [second]


def test_group_without_action_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert run("maintenance") == EXIT_USAGE
    assert "add" in capsys.readouterr().err


# ---------------------------------------------------------------- InfluxDB


@pytest.mark.peer("influxd")
def test_add_list_remove_in_influxdb(influxd: Influxd, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = f"t_{uuid.uuid4().hex[:10]}"
    config = write_config(tmp_path, f"  influxdb: {{url: '{influxd.url}', database: {db}}}")
    assert run("maintenance", "list", "--config", str(config)) == EXIT_OK  # the database does not exist yet
    assert add(config, "--component", "sip-core-1", announced=SOON - timedelta(days=5)) == EXIT_OK
    assert add(config, "--customer", "initech", start=SOON + timedelta(days=2)) == EXIT_OK
    first, second = stored_windows(config)
    rows = influxd.rows('SELECT * FROM "slawatch"."slawatch_maintenance"', db)
    assert {r["id"] for r in rows} == {first.id, second.id}
    assert run("maintenance", "remove", first.id, "--config", str(config)) == EXIT_OK
    assert stored_windows(config) == [second]
    capsys.readouterr()
    assert run("maintenance", "list", "--json", "--config", str(config)) == EXIT_OK
    [doc] = json.loads(capsys.readouterr().out)
    assert doc["id"] == second.id and doc["notice_ok"] is False


# ---------------------------------------------------------------- helpers


@pytest.mark.parametrize(("text", "ms"), [
    ("2024-05-01T22:00:00Z", 1714600800000),
    ("2024-05-02T00:00:00+02:00", 1714600800000),
    ("2024-05-01T22:00:00.250+00:00", 1714600800250),
])
def test_parse_time(text: str, ms: int) -> None:
    assert parse_time(text, "--start") == ms


def test_parse_time_naive_says_so() -> None:
    with pytest.raises(UsageError, match="no UTC offset"):
        parse_time("2024-05-01T22:00", "--start")


@pytest.mark.parametrize(("seconds", "text"), [
    (0, "0s"), (45, "45s"), (90, "1m 30s"), (3600, "1h"), (72 * 3600, "72h"), (80 * 3600 + 60, "80h 1m"),
    (168 * 3600, "7d"), (200 * 3600, "8d 8h"),
    (3 * 3600 + 900, "3h 15m"), (-7200, "-2h"),
])
def test_format_duration(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


# ---------------------------------------------------------------- the same notice rule as the report


SHARED_CLASS = """\
agent: {id: mon-test}
storage: {sqlite: {path: store.db}}
contract: contract.yaml
customers:
  - {name: acme, tier: gold}
  - {name: initech, tier: gold, policy: {maintenance_notice: 7d}}
components:
  - {name: san-a, class: san, customer: initech, probes: [{kind: tcp, target: "127.0.0.1:3260"}]}
  - {name: san-b, class: san, customer: acme, probes: [{kind: tcp, target: "127.0.0.1:3261"}]}
"""


def test_a_class_window_with_a_customer_notice_override_gets_the_reports_verdict(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A window over class san announced 4 days ahead: timely under the contract's 72 h (acme's san-b), late under
    initech's own 7 days (san-a). `maintenance list` and the report must say the same for each component."""
    from reporter.report import build_report
    from slawatch.model import ComponentRef, Heartbeat, Interval, StateChange
    from slawatch.store.sqlite import SqliteSink

    shutil.copy(ROOT / "config" / "contract.yaml", tmp_path / "contract.yaml")
    config = tmp_path / "slawatch.yaml"
    config.write_text(SHARED_CLASS, encoding="utf-8")
    assert add(config, "--class", "san", announced=SOON - timedelta(days=4)) == EXIT_OK
    assert "LATE NOTICE for initech" in capsys.readouterr().out
    assert run("maintenance", "list", "--config", str(config)) == EXIT_OK
    assert "LATE for initech (<7d)" in capsys.readouterr().out
    assert run("maintenance", "list", "--json", "--config", str(config)) == EXIT_OK
    [doc] = json.loads(capsys.readouterr().out)
    assert (doc["notice_ok"], doc["late_for"], doc["notice_required_s"]) == (False, ["initech"], 7 * 86400)

    # Both components down for the first hour of the window, as the agent would store it.
    loaded = load(config)
    [window] = stored_windows(config)
    refs = [ComponentRef("san-a", "san", "gold", "initech"), ComponentRef("san-b", "san", "gold", "acme")]
    start = window.start_ms
    points = [p for ref in refs for p in (StateChange(ref, "mon-test", start - 2 * 86_400_000, True, ""),
                                          StateChange(ref, "mon-test", start, False, "iSCSI login refused"),
                                          StateChange(ref, "mon-test", start + 3_600_000, True, ""))]
    beats = [Heartbeat("mon-test", t, 60.0) for t in range(start - 86_400_000, start + 86_400_000, 60_000)]

    async def report() -> dict[str, tuple[bool, int]]:
        assert loaded.config.storage.sqlite is not None
        sink = SqliteSink(loaded.config.storage.sqlite)
        try:
            await sink.write([*points, *beats])
        finally:
            await sink.close()
        source = open_source(loaded.config.storage)
        try:
            built = await build_report(loaded, source, Interval(start - 3_600_000, start + 86_400_000 - 60_000))
        finally:
            await source.close()
        return {c.customer or "": (c.result.outages[0].late_notice, c.result.downtime_ms) for c in built.components}

    figures = asyncio.run(report())
    assert figures == {"initech": (True, 3_600_000), "acme": (False, 0)}
    late_in_report = sorted(customer for customer, (late, _) in figures.items() if late)
    assert late_in_report == doc["late_for"]

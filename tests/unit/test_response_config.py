"""The contract's response terms: hours and closures parsed, cross-checks located, the example contracts valid,
loadable by check-config and shipped in the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from slawatch.config.loader import ConfigError, load_contract
from slawatch.config.settings import Contract
from slawatch.config.terms import ALL_DAY, OpenHours, parse_closure, parse_hours

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = sorted((ROOT / "config" / "contracts").glob("*.yaml"))
BASE = "tiers: [base, gold]\nclasses:\n  sip: {base: 99, gold: 99.9}\n  vlan: {base: 99, gold: 99.8}\n"


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slawatch.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def problems(tmp_path: Path, text: str) -> list[str]:
    path = tmp_path / "contract.yaml"
    path.write_text(BASE + text, encoding="utf-8")
    with pytest.raises(ConfigError) as exc:
        load_contract(path)
    return [str(p).removeprefix(f"{path}:") for p in exc.value.problems]


@pytest.mark.parametrize(("text", "expected"), [
    ("mon-fri 09:00-17:00", (OpenHours(frozenset(range(5)), 540, 1020),)),
    ("mon,wed 08:00-12:30", (OpenHours(frozenset({0, 2}), 480, 750),)),
    ("sat 09:00-13:00", (OpenHours(frozenset({5}), 540, 780),)),
    ("Sat-Sun  00:00-24:00", (OpenHours(frozenset({5, 6}), 0, 1440),)),
    ("mon-tue,fri 07:00-19:00", (OpenHours(frozenset({0, 1, 4}), 420, 1140),)),
    ("24/7", ALL_DAY),
])
def test_hours(text: str, expected: tuple[OpenHours, ...]) -> None:
    assert parse_hours(text) == expected


@pytest.mark.parametrize(("text", "message"), [
    ("17:00-09:00", "write DAYS HH:MM-HH:MM"),
    ("mon-fri 9-17", "write DAYS HH:MM-HH:MM"),
    ("mon-fri 17:00-09:00", "the end must be after the start"),
    ("mon-fri 09:00-09:00", "the end must be after the start"),
    ("fri-mon 09:00-17:00", "a range runs forwards"),
    ("mon-fry 09:00-17:00", "bad days 'mon-fry'"),
    ("mon 25:00-26:00", "times are 00:00 to 23:59"),
    ("mon 09:60-10:00", "times are 00:00 to 23:59"),
    ("mon 24:00-24:00", "times are 00:00 to 23:59"),
    ("", "write DAYS HH:MM-HH:MM"),
])
def test_bad_hours_say_what_is_wrong(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_hours(text)


def test_closures() -> None:
    assert parse_closure("2026-12-24") == (parse_closure("2026-12-24")[0],) * 2
    first, last = parse_closure("2026-12-28/2026-12-31")
    assert (last - first).days == 3
    for bad, message in [("2026-12-31/2026-12-28", "ends before it starts"), ("2026-13-01", "write a date"),
                         ("24/12/2026", "write a date"), ("2026-01-01/2028-01-01", "at most 367 days")]:
        with pytest.raises(ValueError, match=message):
            parse_closure(bad)


def test_cross_checks_are_located(tmp_path: Path) -> None:
    found = problems(tmp_path, """
calendars:
  office: {hours: ["mon-fri 09:00-17:00"]}
priorities:
  - {priority: P1, classes: [sip]}
response:
  urgent: {base: 1h}
""")
    assert found == [
        "8: priorities: no rule gives a priority to down on vlan, degraded on vlan: add rules for them or a "
        "catch-all (a rule without `classes`, or without `fault`)",
        "11: response.urgent: priority 'urgent' is never given by `priorities` (they give P1)",
    ]


def test_a_catch_all_covers_every_fault(tmp_path: Path) -> None:
    path = tmp_path / "contract.yaml"
    path.write_text(BASE + "priorities:\n  - {priority: P1, fault: down, classes: [sip]}\n  - {priority: P4}\n",
                    encoding="utf-8")
    terms = load_contract(path).response_terms()
    assert [r.priority for r in terms.priorities] == ["P1", "P4"] and terms.default_priority == "P1"


@pytest.mark.parametrize(("text", "message"), [
    ('calendars:\n  "24/7": {hours: ["24/7"]}\n', "calendars.24/7: '24/7' is the built-in always-open calendar"),
    ('calendars:\n  "my office": {hours: ["24/7"]}\n', "calendars: bad calendar name 'my office'"),
    ("calendars:\n  x: {hours: []}\n", "calendars.x.hours: must not be empty"),
    ("calendars:\n  x: {hours: ['24/7'], holidays: {country: XX}}\n", "unknown holiday country 'XX'"),
    ("response:\n  targets: []\n", "response.targets: must not be empty"),
    ("response:\n  targets:\n    - {in_hours: {within: 0s}}\n", "duration must be positive"),
    ("response:\n  targets:\n    - {in_hours: {within: 32d}}\n", "to 31 days"),
    ("response:\n  targets:\n    - {in_hours: {by: next_business_day}, tiers: []}\n",
     "response.targets[0].tiers: must not be empty"),
    ("priorities:\n  - {priority: P1, fault: up}\n",
     "priorities[0].fault: must be one of 'down' or 'degraded', got 'up'"),
    ("priorities: []\n", "priorities: must not be empty"),
])
def test_bad_terms(tmp_path: Path, text: str, message: str) -> None:
    assert any(message in p for p in problems(tmp_path, text)), problems(tmp_path, text)


def test_the_short_form_is_unchanged(tmp_path: Path) -> None:
    path = tmp_path / "contract.yaml"
    path.write_text(BASE + "response:\n  urgent: {base: 2h, gold: 1h}\n", encoding="utf-8")
    contract = load_contract(path)
    assert contract.response_s == {"urgent": {"base": 7200, "gold": 3600}} and contract.response_rules is None
    assert [(t.priority, t.tiers, t.calendar) for t in contract.response_terms().targets] == [
        ("urgent", frozenset({"base"}), "24/7"), ("urgent", frozenset({"gold"}), "24/7")]


def test_yaml_on_key_is_the_measuring_calendar(tmp_path: Path) -> None:
    path = tmp_path / "contract.yaml"
    path.write_text(BASE + "calendars:\n  office: {hours: ['mon-fri 09:00-17:00']}\nresponse:\n  targets:\n"
                    "    - {calendar: office, in_hours: {within: 1h}, out_of_hours: {within: 2h, on: 24/7}}\n",
                    encoding="utf-8")
    target = load_contract(path).response_terms().targets[0]
    assert target.out_of_hours.on == "24/7" and target.in_hours.on is None


def test_there_are_four_example_contracts() -> None:
    assert [p.stem for p in CONTRACTS] == ["priorities", "support-plans", "tiered", "working-hours"]


@pytest.mark.parametrize("path", CONTRACTS, ids=lambda p: p.stem)
def test_check_config_accepts_a_config_on_each_example_contract(tmp_path: Path, path: Path) -> None:
    contract = load_contract(path)
    tier = contract.tiers[-1]
    config = tmp_path / "slawatch.yaml"
    config.write_text(f"contract: {path}\ncustomers:\n  - {{name: acme, tier: {tier}}}\ncomponents:\n"
                      "  - {name: pbx, class: sip, customer: acme, probes: [{kind: tcp, target: '127.0.0.1:5060'}]}\n",
                      encoding="utf-8")
    proc = run_cli("check-config", str(config))
    assert proc.returncode == 0, proc.stderr
    assert f"contract {contract.name} 2026.1" in proc.stdout
    assert contract.response_terms().targets  # each example sets response targets
    assert path.read_text(encoding="utf-8").startswith("# ")  # and says which contract wording it encodes


def test_example_contracts_ship_in_the_package(tmp_path: Path) -> None:
    build = tmp_path / "build"
    proc = subprocess.run([sys.executable, "-c", "import sys, setuptools; setuptools.setup()", "-q", "build_py",
                           "--build-lib", str(build)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    shipped = sorted(p.name for p in (build / "slawatch" / "defaults" / "contracts").glob("*.yaml"))
    assert shipped == [p.name for p in CONTRACTS]


@pytest.mark.parametrize("path", CONTRACTS, ids=lambda p: p.stem)
def test_the_dump_of_a_contract_reads_back_to_the_same_terms(path: Path) -> None:
    """A report carries the contract's dump: it keeps the form `response` was written in, calendars included."""
    contract = load_contract(path)
    again = Contract.model_validate(contract.model_dump(mode="json", by_alias=True))
    assert again.response_terms() == contract.response_terms()
    assert Contract.model_validate(contract.model_dump()).response_terms() == contract.response_terms()


def test_a_contract_without_response_terms_dumps_as_before() -> None:
    dump = load_contract(ROOT / "config" / "contract.yaml").model_dump(mode="json", by_alias=True)
    assert "calendars" not in dump and "priorities" not in dump
    assert dump["response"] == {"urgent": {"base": 7200.0, "silver": 7200.0, "gold": 7200.0, "platinum": 3600.0}}

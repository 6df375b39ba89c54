"""`slawatch incident clock` as a subprocess on the example contracts: JSON and text verdicts, the tier from the
component or the customer, and located usage errors with exit 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
CONTRACTS = ROOT / "config" / "contracts"


def slawatch(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slawatch.cli", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "slawatch.yaml"
    path.write_text(f"""contract: {CONTRACTS / "priorities.yaml"}
customers:
  - {{name: acme, tier: base}}
  - {{name: globex, tier: base}}
components:
  - {{name: pbx, class: sip, customer: acme, tier: gold, probes: [{{kind: tcp, target: "127.0.0.1:5060"}}]}}
  - {{name: san1, class: san, customer: globex, probes: [{{kind: tcp, target: "127.0.0.1:3260"}}]}}
""", encoding="utf-8")
    return path


@pytest.fixture
def plans(tmp_path: Path) -> Path:
    path = tmp_path / "plans.yaml"
    path.write_text(f"""contract: {CONTRACTS / "support-plans.yaml"}
customers:
  - {{name: acme, tier: standard}}
components:
  - {{name: pbx, class: sip, customer: acme, tier: premium, probes: [{{kind: tcp, target: "127.0.0.1:5060"}}]}}
""", encoding="utf-8")
    return path


def clock(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return slawatch("incident", "clock", "--config", str(config), *args)


def test_json_verdict_out_of_hours_with_a_pause(config: Path) -> None:
    # P2 raised Friday 18:00 (office closed): by the close of the next business day, Monday 18:00 = 10 office hours.
    proc = clock(config, "--customer", "acme", "--priority", "P2", "--raised", "2026-06-05T18:00:00+01:00",
                 "--acknowledged", "2026-06-08T10:00:00+01:00",
                 "--paused", "2026-06-08T08:30:00+01:00/2026-06-08T09:00:00+01:00")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert {k: doc[k] for k in ("response_s", "target_s", "deadline", "met", "paused_s", "calendar")} == {
        "response_s": 5400.0, "target_s": 36000.0, "deadline": "2026-06-09T07:30:00Z", "met": True,
        "paused_s": 1800.0, "calendar": "office"}
    assert doc["in_hours"] is False and doc["tier"] == "base" and doc["remaining_s"] is None


def test_p1_out_of_hours_is_counted_on_24_7(config: Path) -> None:
    proc = clock(config, "--customer", "acme", "--component", "pbx", "--priority", "P1",
                 "--raised", "2026-06-06T03:00:00Z", "--acknowledged", "2026-06-06T03:45:00Z")
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert (doc["calendar"], doc["target_s"], doc["response_s"], doc["met"], doc["deadline"], doc["tier"]) == (
        "24/7", 1800.0, 2700.0, False, "2026-06-06T03:30:00Z", "gold")


def test_tier_from_the_component_or_the_customer(plans: Path) -> None:
    args = ("--priority", "P1", "--raised", "2026-06-01T08:00:00+01:00", "--acknowledged",
            "2026-06-01T12:00:00+01:00")
    premium = json.loads(clock(plans, "--customer", "acme", "--component", "pbx", *args).stdout)
    standard = json.loads(clock(plans, "--customer", "acme", *args).stdout)
    assert (premium["tier"], premium["calendar"], premium["response_s"], premium["met"]) == (
        "premium", "premium_hours", 4 * 3600.0, True)
    # Standard support hours open at 09:00: 3 h counted of 24.
    assert (standard["tier"], standard["calendar"], standard["response_s"], standard["target_s"]) == (
        "standard", "standard_hours", 3 * 3600.0, 24 * 3600.0)
    assert standard["deadline"] == "2026-06-03T16:00:00Z"  # Wednesday 17:00 BST


def test_text_for_people(config: Path) -> None:
    proc = clock(config, "--customer", "acme", "--priority", "P1", "--raised", "2026-06-01T10:00:00+01:00",
                 "--now", "2026-06-01T10:20:00+01:00", "--format", "text")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines() == [
        "priority P1, tier base: raised in hours, counted on calendar office",
        "response 20m of a 15m target: unacknowledged, LATE by 5m",
        "deadline 2026-06-01T09:15:00Z",
    ]


def test_an_open_pause_runs_to_now(config: Path) -> None:
    proc = clock(config, "--customer", "acme", "--priority", "P3", "--raised", "2026-06-01T10:00:00+01:00",
                 "--paused", "2026-06-01T10:30:00+01:00/", "--now", "2026-06-01T12:00:00+01:00")
    doc = json.loads(proc.stdout)
    assert (doc["response_s"], doc["paused_s"], doc["remaining_s"], doc["met"]) == (1800.0, 5400.0, 12600.0, None)
    assert doc["deadline"] == "2026-06-01T14:30:00Z"


@pytest.mark.parametrize(("args", "message"), [
    (("--customer", "acme", "--priority", "P1", "--raised", "2026-06-01T10:00:00"),
     "--raised '2026-06-01T10:00:00' has no UTC offset"),
    (("--customer", "acme", "--priority", "P1", "--raised", "yesterday"), "--raised 'yesterday' is not an ISO 8601"),
    (("--customer", "nobody", "--priority", "P1", "--raised", "2026-06-01T10:00:00Z"),
     "--customer: unknown customer 'nobody'"),
    (("--customer", "acme", "--priority", "P9", "--raised", "2026-06-01T10:00:00Z"),
     "--priority: unknown priority 'P9' (the contract has P1, P2, P3)"),
    (("--customer", "acme", "--component", "san1", "--priority", "P1", "--raised", "2026-06-01T10:00:00Z"),
     "--component: 'san1' belongs to customer 'globex', not 'acme'"),
    (("--customer", "acme", "--component", "nas", "--priority", "P1", "--raised", "2026-06-01T10:00:00Z"),
     "--component: unknown component 'nas'"),
    (("--customer", "acme", "--priority", "P1", "--raised", "2026-06-01T10:00:00Z", "--paused", "2026-06-01T11:00Z"),
     "--paused '2026-06-01T11:00Z': write START/END"),
    (("--customer", "acme", "--priority", "P1", "--raised", "2026-06-01T10:00:00Z", "--paused",
      "2026-06-01T11:00Z/2026-06-01T10:00Z"), "ends before it starts"),
])
def test_bad_input_exits_2_with_the_reason(config: Path, args: tuple[str, ...], message: str) -> None:
    proc = clock(config, *args)
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.startswith("slawatch incident: ") and message in proc.stderr, proc.stderr


def test_a_bad_config_is_located(tmp_path: Path) -> None:
    path = tmp_path / "slawatch.yaml"
    path.write_text(f"contract: {ROOT / 'tests/fixtures/config/bad-response-refs.yaml.txt'}\n", encoding="utf-8")
    proc = clock(path, "--customer", "acme", "--priority", "P1", "--raised", "2026-06-01T10:00:00Z")
    assert proc.returncode == 2
    assert "bad-response-refs.yaml.txt:15: response.targets[0].calendar: unknown calendar 'ofice'" in proc.stderr


def test_incident_without_an_action_shows_the_actions() -> None:
    proc = slawatch("incident")
    assert proc.returncode == 2 and "clock" in proc.stderr
    assert "--acknowledged" in slawatch("incident", "clock", "--help").stdout

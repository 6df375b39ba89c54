"""Config validation: the example passes, each invalid fixture fails with its exact message."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from agent.configfile import ConfigError, bundled_contract, load, load_contract
from agent.settings import parse_duration_s, split_host_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "config"
INVALID = sorted(FIXTURES.glob("invalid-*.yaml"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "agent.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def test_example_config_passes() -> None:
    proc = run_cli("check-config", "config/example.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "config/example.yaml: OK" in proc.stdout
    assert "load_balancer  silver        1   target 99.99 %" in proc.stdout
    assert "probes: haproxy 1, http 1, icmp 1, sip 1, snmp 1, tcp 1, ups 1" in proc.stdout


def test_there_are_enough_invalid_cases() -> None:
    assert len(INVALID) >= 12


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_config_fails_with_its_exact_message(path: Path) -> None:
    expected = path.with_suffix(".expected").read_text()
    proc = run_cli("check-config", str(path.relative_to(ROOT)))
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr == expected


def test_env_vars_expand_and_secrets_never_print(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
contract: {bundled_contract()}
storage:
  influxdb: {{url: "http://127.0.0.1:8086", database: sw, username: u, password: "${{INFLUX_PW}}"}}
report: {{smtp: {{host: 127.0.0.1, password: "${{SMTP_PW:-fallback-secret}}"}}}}
""")
    loaded = load(cfg, {"INFLUX_PW": "hunter2-very-secret"})
    db = loaded.config.storage.influxdb
    assert db is not None and db.password is not None
    assert db.password.get_secret_value() == "hunter2-very-secret"
    smtp = loaded.config.report.smtp
    assert smtp is not None and smtp.password is not None
    assert smtp.password.get_secret_value() == "fallback-secret"
    assert "hunter2" not in repr(loaded.config) and "hunter2" not in str(loaded.config.model_dump())
    proc = run_cli("check-config", str(cfg), env={"INFLUX_PW": "hunter2-very-secret", "PATH": "/usr/bin"})
    assert proc.returncode == 0, proc.stderr
    assert "hunter2" not in proc.stdout + proc.stderr


def test_defaults_flow_into_probes(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
contract: {bundled_contract()}
defaults: {{interval_s: 20, timeout_s: 4}}
components:
  - name: a
    class: network
    tier: gold
    interval_s: 10
    probes:
      - {{kind: icmp, target: 127.0.0.1}}
      - {{kind: tcp, name: t2, target: "127.0.0.1:22", timeout_s: 2, interval_s: 5}}
""")
    comp = load(cfg).config.components[0]
    assert (comp.probes[0].interval_s, comp.probes[0].timeout_s) == (10, 4)
    assert (comp.probes[1].interval_s, comp.probes[1].timeout_s) == (5, 2)


def test_all_errors_are_reported_at_once(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""contract: {bundled_contract()}
components:
  - {{name: a, class: nope, tier: gold, probes: [{{kind: icmp, target: 127.0.0.1}}]}}
  - {{name: a, class: network, tier: tin, probes: [{{kind: icmp, target: 127.0.0.1}}]}}
""")
    with pytest.raises(ConfigError) as info:
        load(cfg)
    messages = [str(p) for p in info.value.problems]
    assert len(messages) == 3
    assert messages[0].endswith("components[0].class: unknown class 'nope' "
                                "(the contract has network, power, sip, load_balancer, vlan, san)")
    assert ":4: components[1].name: duplicate component name" in messages[1]
    assert ":4: components[1].tier: unknown tier 'tin'" in messages[2]


def test_bundled_contract_has_the_table() -> None:
    contract = load_contract(bundled_contract())
    assert contract.tiers == ["base", "silver", "gold", "platinum"]
    assert contract.classes["network"] == {"base": 99, "silver": 99.99, "gold": 99.99, "platinum": 99.99}
    assert contract.classes["vlan"] == {"base": 99, "silver": 99, "gold": 99.8, "platinum": 99.8}
    assert contract.classes["san"] == contract.classes["vlan"]
    assert set(contract.classes["sip"].values()) == {99}
    assert contract.basis == "720h"
    assert contract.maintenance_notice_s == 72 * 3600
    assert contract.response_s["urgent"] == {"base": 7200, "silver": 7200, "gold": 7200, "platinum": 3600}
    assert contract.retention_s == 6 * 30 * 86400


@pytest.mark.parametrize(("text", "seconds"), [
    ("72h", 259200), ("15 min", 900), ("30s", 30), ("6 months", 15552000), ("1.5h", 5400), (90, 90),
    ("2 days", 172800), ("500ms", 0.5),
])
def test_durations(text: str | int, seconds: float) -> None:
    assert parse_duration_s(text) == seconds


@pytest.mark.parametrize("text", ["", "72", "h", "-5s", "0s", "5 parsecs", "1e3h"])
def test_bad_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration_s(text)


@pytest.mark.parametrize(("text", "default", "expected"), [
    ("127.0.0.1:161", None, ("127.0.0.1", 161)), ("[::1]:1161", None, ("::1", 1161)),
    ("::1", 161, ("::1", 161)), ("ups-a.example.net", 161, ("ups-a.example.net", 161)),
    ("host:65535", None, ("host", 65535)),
])
def test_host_port(text: str, default: int | None, expected: tuple[str, int]) -> None:
    assert split_host_port(text, default) == expected


@pytest.mark.parametrize("text", ["127.0.0.1", "host:0", "host:65536", "host:x", "[::1", "bad host:1", ":80"])
def test_bad_host_port(text: str) -> None:
    with pytest.raises(ValueError):
        split_host_port(text)


@given(st.text(max_size=40))
def test_host_port_raises_only_value_error(text: str) -> None:
    try:
        host, port = split_host_port(text, 161)
    except ValueError:
        return
    assert host and 0 < port < 65536

"""Config validation: the example passes, each invalid fixture fails with its exact message."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from slawatch.config.loader import ConfigError, bundled_contract, load, load_contract
from slawatch.config.settings import parse_duration_s, redact_url, split_host_port

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT / "tests" / "fixtures" / "config"
INVALID = sorted(FIXTURES.glob("invalid-*.yaml"))


def run_cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slawatch.cli", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env=env)


def test_example_config_passes() -> None:
    proc = run_cli("check-config", "config/example.yaml")
    assert proc.returncode == 0, proc.stderr
    assert "config/example.yaml: OK" in proc.stdout
    assert "load_balancer  silver        1   target 99.99 %" in proc.stdout
    assert "probes: dns 1, haproxy 1, http 1, icmp 1, sip 1, snmp 1, tcp 1, ups 1" in proc.stdout


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
report: {{smtp: {{host: 127.0.0.1, starttls: true, password: "${{SMTP_PW:-fallback-secret}}"}}}}
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


# ---------------------------------------------------------------- hostile and absurd input


def test_alias_bomb_is_refused_in_little_memory_and_time(tmp_path: Path) -> None:
    """A few hundred bytes of nested aliases (9 levels of 9: 387 million nodes) are refused from the parser's
    events, under a 512 MiB address-space limit."""
    import resource

    lines = ["contract: ../c.yaml", 'a0: &a0 ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"a{i}: &a{i} [{','.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 10)]
    cfg = tmp_path / "bomb.yaml"
    cfg.write_text("\n".join(lines) + "\n")
    assert cfg.stat().st_size < 800

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (512 << 20, 512 << 20))

    proc = subprocess.run([sys.executable, "-m", "slawatch.cli", "check-config", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=30, preexec_fn=limit)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"{cfg}:7: YAML aliases expand to more than 100000 nodes"), proc.stderr
    assert "Traceback" not in proc.stderr


def test_a_file_larger_than_the_limit_is_refused_unread(tmp_path: Path) -> None:
    cfg = tmp_path / "big.yaml"
    with cfg.open("w") as f:
        f.write("components: []\n")
        f.truncate(17 << 20)
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert [str(p) for p in info.value.problems] == [
        f"{cfg}: the file is 17.0 MiB: more than the 16 MiB a config may be"]


def test_a_huge_value_from_the_environment_is_cut_in_the_message(tmp_path: Path) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""contract: {bundled_contract()}
components:
  - {{name: "${{NAME}}", class: network, tier: gold, probes: [{{kind: icmp, target: 127.0.0.1}}]}}
""")
    with pytest.raises(ConfigError) as info:
        load(cfg, {"NAME": "a/" * (25 << 20)})
    message = str(info.value.problems[0])
    assert len(message) < 300
    assert message.endswith("components[0].name: bad component name 'a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/"
                            "a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/a/…: use letters, digits and - _ . : only")


@pytest.mark.parametrize(("setting", "message"), [
    ("agent: {heartbeat_s: .inf}", "agent.heartbeat_s: must be from 0.1 s to 1 h, got inf"),
    ("agent: {heartbeat_s: 7200}", "agent.heartbeat_s: must be from 0.1 s to 1 h, got 7200"),
    ("agent: {concurrency: 100000000}", "agent.concurrency: must be from 1 to 1000000, got 100000000"),
    ("defaults: {interval_s: .nan}", "defaults.interval_s: must be from 0.1 s to 1 day, got nan"),
    ("defaults: {interval_s: 0.01}", "defaults.interval_s: must be from 0.1 s to 1 day, got 0.01"),
    ("defaults: {retry_interval_s: -.inf}", "defaults.retry_interval_s: must be from 0.1 s to 1 day, got -inf"),
    ("defaults: {timeout_s: 1e300}", "defaults.timeout_s: must be from 0.001 s to 1 h, got 1e+300"),
    ("defaults: {confirm: {down: 1000000}}", "defaults.confirm.down: must be from 1 to 1000, got 1000000"),
    ("storage: {influxdb: {url: 'http://127.0.0.1:8086', database: d, timeout_s: .inf}}",
     "storage.influxdb.timeout_s: must be from 0.1 s to 10 min, got inf"),
    ("storage: {spool: {max_bytes: 100TiB}}", "storage.spool.max_bytes: max_bytes must be from 1MiB to 16TiB, "
                                              "got 100.0TiB"),
    ("report: {smtp: {timeout_s: 0}}", "report.smtp.timeout_s: must be from 0.1 s to 10 min, got 0"),
])
def test_every_duration_and_size_is_bounded(tmp_path: Path, setting: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"contract: {bundled_contract()}\n{setting}\n")
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert [str(p).split(": ", 1)[1] for p in info.value.problems] == [message]


@pytest.mark.parametrize(("probe", "message"), [
    ("{kind: icmp, target: 127.0.0.1, packet_interval_s: .inf}",
     "packet_interval_s: must be from 0.001 s to 10 s, got inf"),
    ("{kind: icmp, target: 127.0.0.1, max_rtt_ms: .nan}", "max_rtt_ms: must be from more than 0 s to 1000 h, "
                                                          "got nan"),
    ("{kind: http, target: 'http://127.0.0.1/', max_body_bytes: 99999999999}",
     "max_body_bytes: must be from 1 to 1073741824, got 99999999999"),
    ("{kind: snmp, target: 127.0.0.1, checks: [{oid: 1.3.6.1.2.1.1.3.0, gt: .nan}]}",
     "checks[0].gt: must be a finite number, got nan"),
    ("{kind: http, target: 'https://u:p4ssw0rd@127.0.0.1/'}",
     "target: bad URL 'https://***@127.0.0.1/': no user:password@ in the URL, set the username and "
     "password settings"),
])
def test_probe_settings_are_bounded(tmp_path: Path, probe: str, message: str) -> None:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"contract: {bundled_contract()}\ncomponents:\n"
                   f"  - {{name: a, class: network, tier: gold, probes: [{probe}]}}\n")
    with pytest.raises(ConfigError) as info:
        load(cfg)
    assert [str(p).split(": ", 1)[1] for p in info.value.problems] == [f"components[0].probes[0].{message}"]


def test_zero_maintenance_notice_is_valid(tmp_path: Path) -> None:
    """A contract that excludes any announced maintenance has no notice rule: `0h`."""
    contract = tmp_path / "contract.yaml"
    contract.write_text("tiers: [gold]\nclasses: {network: {gold: 99.9}}\nmaintenance_notice: 0h\n")
    cfg = tmp_path / "c.yaml"
    cfg.write_text("contract: contract.yaml\ncustomers: [{name: acme, tier: gold, policy: {maintenance_notice: 0}}]\n")
    loaded = load(cfg)
    assert loaded.contract.maintenance_notice_s == 0
    assert loaded.config.customers[0].policy.maintenance_notice_s == 0
    assert parse_duration_s("0h", allow_zero=True) == 0
    with pytest.raises(ValueError, match="duration must be zero or positive"):
        parse_duration_s(-1, allow_zero=True)


def test_urls_are_redacted_in_messages() -> None:
    assert redact_url("http://user:pw@db.example:8086/x?y=1") == "http://***@db.example:8086/x?y=1"
    assert redact_url("http://db.example:8086/") == "http://db.example:8086/"


def test_check_config_into_a_closed_pipe_exits_quietly() -> None:
    """`slawatch check-config FILE | head -1`: the reader is gone before the summary is written."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run([sys.executable, "-m", "slawatch.cli", "check-config", "config/example.yaml"], cwd=ROOT,
                              stdout=write_end, stderr=subprocess.PIPE, text=True, timeout=60)
    finally:
        os.close(write_end)
    assert proc.stderr == ""
    assert proc.returncode == 1


def test_the_summary_names_twenty_customers_and_counts_the_rest_by_tier(tmp_path: Path) -> None:
    from slawatch.cli.check_config import summary

    tiers = ("base", "silver", "gold", "platinum")
    customers = "".join(f"  - {{name: c{i:02}, tier: {tiers[i % 4]}}}\n" for i in range(25))
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"contract: {bundled_contract()}\ncustomers:\n{customers}components:\n"
                   "  - {name: n1, class: network, customer: c00, probes: [{kind: tcp, target: '127.0.0.1:1'}]}\n")
    line = next(x for x in summary(load(cfg)).splitlines() if x.startswith("customers: "))
    assert line.startswith("customers: c00 (base), c01 (silver), ") and "c19 (platinum), … 5 more" in line
    assert "c20" not in line and line.endswith("25 in all: base 7, gold 6, platinum 6, silver 6")

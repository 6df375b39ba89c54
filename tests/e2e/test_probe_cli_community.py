"""`slawatch probe snmp|ups`: the community from the environment or a file, kept off the command line."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from slawatch.testing.snmp import run_snmpsim

ROOT = Path(__file__).resolve().parents[2]
UPS_SOURCE = "1.3.6.1.2.1.33.1.4.1.0"


@pytest.fixture(scope="module")
def sim_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """snmpsim serving tests/fixtures/snmp: each recording's name is its community."""
    with run_snmpsim(tmp_path_factory.mktemp("snmpsim"), ROOT / "tests" / "fixtures" / "snmp", "ups-online") as sim:
        yield sim.port


def probe(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slawatch.cli", "probe", *argv], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, env={**os.environ, **(env or {})})


@pytest.mark.timeout(90)
@pytest.mark.peer("snmpsim")
def test_community_from_env_and_file_reaches_the_agent(sim_port: int, tmp_path: Path) -> None:
    target = f"127.0.0.1:{sim_port}"
    # snmpsim serves each recording under its name as the community: a wrong one gets no answer
    by_env = probe("ups", target, "--community-env", "UPS_COMMUNITY", env={"UPS_COMMUNITY": "ups-onbattery"})
    assert by_env.stdout.startswith(f"WARNING - ups {target}: "), by_env.stdout + by_env.stderr
    secret = tmp_path / "community"
    secret.write_text("ups-online\n")
    by_file = probe("ups", target, "--community-file", str(secret))
    assert by_file.stdout.startswith(f"OK - ups {target}: "), by_file.stdout + by_file.stderr
    snmp = probe("snmp", target, "--oid", UPS_SOURCE, "--equals", "5", "--community-file", str(secret))
    assert (snmp.returncode, snmp.stdout.startswith(f"CRITICAL - snmp {target}: ")) == (2, True), snmp.stdout
    snmp = probe("snmp", target, "--oid", UPS_SOURCE, "--equals", "3", "--community-file", str(secret))
    assert snmp.returncode == 0, snmp.stdout


def test_community_options_exclude_each_other_and_missing_sources_are_unknown(tmp_path: Path) -> None:
    both = probe("ups", "127.0.0.1:9", "--community", "x", "--community-env", "C", env={"C": "y"})
    assert (both.returncode, both.stdout.strip()) == (
        3, "UNKNOWN - ups 127.0.0.1:9: --community and --community-env exclude each other")
    unset = probe("ups", "127.0.0.1:9", "--community-env", "SLAWATCH_TEST_UNSET")
    assert unset.stdout.strip() == ("UNKNOWN - ups 127.0.0.1:9: --community-env: environment variable "
                                    "SLAWATCH_TEST_UNSET is not set")
    missing = probe("ups", "127.0.0.1:9", "--community-file", str(tmp_path / "nope"))
    assert missing.stdout.strip() == (f"UNKNOWN - ups 127.0.0.1:9: --community-file: cannot read "
                                      f"{tmp_path / 'nope'}: No such file or directory")
    typed = probe("ups", "127.0.0.1:9", "--community-env", "not a variable name")
    assert typed.stdout.strip() == ("UNKNOWN - ups 127.0.0.1:9: --community-env takes the NAME of an "
                                    "environment variable")
    v3 = probe("ups", "127.0.0.1:9", "--v3-user", "u", "--community-file", str(tmp_path / "nope"))
    assert v3.stdout.strip() == "UNKNOWN - ups 127.0.0.1:9: --community-file and --v3-user exclude each other"

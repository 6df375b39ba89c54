"""`slawatch probe snmp|ups`: the community from the environment or a file, kept off the command line."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from slawatch.testing import free_port, need

ROOT = Path(__file__).resolve().parents[2]
UPS_SOURCE = "1.3.6.1.2.1.33.1.4.1.0"
# An SNMPv2c GET of sysUpTime.0 with community "ups-online", for the readiness check.
READY_GET = bytes.fromhex("302a020101040a7570732d6f6e6c696e65a019020101020100020100300e300c06082b0601020101"
                          "03000500")


@pytest.fixture(scope="module")
def sim_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """snmpsim serving tests/fixtures/snmp: each recording's name is its community."""
    beside = Path(sys.executable).with_name("snmpsim-command-responder")
    exe = str(beside) if beside.exists() else shutil.which("snmpsim-command-responder")
    need(exe is not None, "snmpsim-command-responder not found (pip install snmpsim pysmi)")
    assert exe is not None
    tmp = tmp_path_factory.mktemp("snmpsim")
    port = free_port(socket.SOCK_DGRAM)
    with open(tmp / "out.log", "wb") as out:
        proc = subprocess.Popen([exe, f"--data-dir={ROOT / 'tests' / 'fixtures' / 'snmp'}",
                                 f"--cache-dir={tmp / 'cache'}", f"--agent-udpv4-endpoint=127.0.0.1:{port}"],
                                stdout=out, stderr=subprocess.STDOUT, cwd=tmp,
                                env={**os.environ, "SNMPSIM_ALLOW_ROOT": "true"})
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(0.2)
            for _ in range(150):
                assert proc.poll() is None, (tmp / "out.log").read_text(errors="replace")[-2000:]
                sock.sendto(READY_GET, ("127.0.0.1", port))
                try:
                    sock.recvfrom(65536)
                    break
                except (TimeoutError, ConnectionRefusedError):
                    time.sleep(0.05)
            else:
                pytest.fail("snmpsim did not answer within 30 s")
        yield port
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


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

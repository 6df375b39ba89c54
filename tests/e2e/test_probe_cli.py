"""`slawatch probe` as a subprocess, against real servers on loopback: the line, the JSON and the exit code."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from slawatch.testing import free_port, need

ROOT = Path(__file__).resolve().parents[2]
SLAWATCH = ROOT / ".venv" / "bin" / "slawatch"
PERF = r" \| latency=\d+\.\d{6}s;;;0"


async def slawatch(*argv: str) -> tuple[int, str, str]:
    # Run without blocking the loop: the test's own server must keep answering meanwhile.
    proc = await asyncio.create_subprocess_exec(str(SLAWATCH), *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.fixture
async def server() -> AsyncIterator[int]:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"+OK slawatch test server\r\n")
        await writer.drain()
        writer.close()

    srv = await asyncio.start_server(answer, "127.0.0.1", 0)
    port = srv.sockets[0].getsockname()[1]
    async with srv:
        yield port


@pytest.fixture(autouse=True)
def _installed() -> None:
    assert SLAWATCH.exists(), f"{SLAWATCH} missing: pip install -e '.[test]'"


@pytest.mark.timeout(60)
async def test_tcp_open_port_is_ok(server: int) -> None:
    code, out, err = await slawatch("probe", "tcp", f"127.0.0.1:{server}")
    assert re.fullmatch(rf"OK - tcp 127\.0\.0\.1:{server}: up{PERF}\n", out), out + err
    assert code == 0


@pytest.mark.timeout(60)
async def test_tcp_expect_mismatch_is_critical(server: int) -> None:
    code, out, _ = await slawatch("probe", "tcp", f"127.0.0.1:{server}", "--expect", "^-ERR")
    assert out.startswith(f"CRITICAL - tcp 127.0.0.1:{server}: ")
    assert code == 2


@pytest.mark.timeout(60)
async def test_tcp_closed_port_is_critical() -> None:
    port = free_port()
    code, out, _ = await slawatch("probe", "tcp", f"127.0.0.1:{port}")
    assert re.fullmatch(rf"CRITICAL - tcp 127\.0\.0\.1:{port}: .*refused.* \| latency=U;;;0\n", out), out
    assert code == 2


@pytest.mark.timeout(60)
async def test_icmp_loopback_is_ok() -> None:
    low, high = (int(n) for n in Path("/proc/sys/net/ipv4/ping_group_range").read_text().split())
    need(os.geteuid() == 0 or low <= os.getegid() <= high, "ICMP needs root or a ping_group_range covering this gid")
    code, out, err = await slawatch("probe", "icmp", "127.0.0.1", "--count", "2")
    assert re.fullmatch(rf"OK - icmp 127\.0\.0\.1: up{PERF}\n", out), out + err
    assert code == 0


@pytest.mark.timeout(60)
async def test_json_output(server: int) -> None:
    code, out, _ = await slawatch("probe", "tcp", f"127.0.0.1:{server}", "--json", "--timeout", "2")
    doc = json.loads(out)
    assert code == 0
    assert set(doc) == {"kind", "target", "outcome", "reason", "latency_s", "started"}
    assert (doc["kind"], doc["target"], doc["outcome"]) == ("tcp", f"127.0.0.1:{server}", "up")
    assert isinstance(doc["latency_s"], float) and 0 < doc["latency_s"] < 2
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", doc["started"])


@pytest.mark.timeout(60)
async def test_json_output_of_a_failure() -> None:
    port = free_port()
    code, out, _ = await slawatch("probe", "tcp", f"127.0.0.1:{port}", "--json")
    doc = json.loads(out)
    assert (code, doc["outcome"], doc["latency_s"]) == (2, "refused", None)


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("argv", "line"), [
    (("tcp", "127.0.0.1"), "UNKNOWN - tcp 127.0.0.1: target: '127.0.0.1' has no port: write host:port\n"),
    (("icmp", "no such host"), "UNKNOWN - icmp no such host: target: bad host 'no such host'\n"),
    (("tcp", "127.0.0.1:99999"),
     "UNKNOWN - tcp 127.0.0.1:99999: target: bad port in '127.0.0.1:99999': must be 1-65535\n"),
])
async def test_bad_target_is_unknown(argv: tuple[str, ...], line: str) -> None:
    code, out, _ = await slawatch("probe", *argv)
    assert (code, out) == (3, line)


@pytest.mark.timeout(60)
async def test_usage_error_is_unknown() -> None:
    code, out, err = await slawatch("probe", "icmp")
    assert code == 3
    assert out == "UNKNOWN - slawatch probe icmp: the following arguments are required: HOST\n"
    assert "usage:" in err


@pytest.mark.parametrize("argv", [["probe"], ["probe", "tcp", "127.0.0.1:1", "--bogus"]])
def test_probe_usage_errors_are_nagios_unknown(argv: list[str]) -> None:
    proc = subprocess.run([sys.executable, "-m", "slawatch.cli", *argv], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3, proc.stderr

"""SNMP agents on loopback: snmpsim serving `.snmprec` recordings, and the readiness check Debian's snmpd needs too."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from slawatch.testing import SERVERS, PeerMissing, free_port


def _ber_len(n: int) -> bytes:
    return bytes([n]) if n < 0x80 else bytes([0x81, n])


def _tlv(tag: int, body: bytes) -> bytes:
    return bytes([tag]) + _ber_len(len(body)) + body


def v2c_get_sysuptime(community: str) -> bytes:
    """A hand-made SNMPv2c GET of sysUpTime.0: readiness checks need no SNMP library."""
    varbind = _tlv(0x30, _tlv(0x06, bytes([0x2B, 6, 1, 2, 1, 1, 3, 0])) + b"\x05\x00")
    pdu = _tlv(0xA0, b"\x02\x01\x01" + b"\x02\x01\x00" + b"\x02\x01\x00" + _tlv(0x30, varbind))
    return _tlv(0x30, b"\x02\x01\x01" + _tlv(0x04, community.encode()) + pdu)


def wait_until_answers(proc: subprocess.Popen[bytes], addr: tuple[str, int], community: str, log: Path,
                       within_s: float = 30.0) -> None:
    """Return once the agent answers a v2c GET for `community`; RuntimeError with its log if it never does."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET
    deadline = time.monotonic() + within_s
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise RuntimeError(f"SNMP agent exited with {proc.returncode}:\n"
                                   f"{log.read_text(errors='replace')[-3000:]}")
            sock.sendto(v2c_get_sysuptime(community), addr)
            try:
                sock.recvfrom(65536)
                return
            except (TimeoutError, ConnectionRefusedError):
                continue
    raise RuntimeError(f"SNMP agent at {addr} did not answer within {within_s}s:\n"
                       f"{log.read_text(errors='replace')[-3000:]}")


def stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL after 5 s."""
    proc.terminate()
    try:
        proc.wait(5)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@dataclass(frozen=True)
class Sim:
    port: int
    port6: int | None

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


def snmpsim_binary() -> str:
    """snmpsim's responder, beside this Python first (a venv), else on PATH; PeerMissing if neither."""
    name = "snmpsim-command-responder"
    beside = Path(sys.executable).with_name(name)
    path = str(beside) if beside.exists() else shutil.which(name)
    if path is None:
        raise PeerMissing(f"{name} not found (pip install snmpsim pysmi)", SERVERS[name])
    return path


def ipv6_loopback() -> bool:
    try:
        free_port(socket.SOCK_DGRAM, "::1")
        return True
    except OSError:
        return False


@contextlib.contextmanager
def run_snmpsim(workdir: Path, recordings: Path, ready_community: str,
                extra_args: Sequence[str] = ()) -> Iterator[Sim]:
    """snmpsim serving `recordings` on loopback (and ::1 when there is one): each recording's name is a community.

    Ready once `ready_community` answers a GET of sysUpTime.0, so that recording must hold it."""
    exe = snmpsim_binary()
    port = free_port(socket.SOCK_DGRAM)
    port6 = free_port(socket.SOCK_DGRAM, "::1") if ipv6_loopback() else None
    log = workdir / "snmpsim.log"
    cmd = [exe, f"--data-dir={recordings}", f"--cache-dir={workdir / 'cache'}",
           f"--agent-udpv4-endpoint=127.0.0.1:{port}", f"--logging-method=file:{log}", *extra_args]
    if port6 is not None:
        cmd.append(f"--agent-udpv6-endpoint=[::1]:{port6}")
    env = {**os.environ, "SNMPSIM_ALLOW_ROOT": "true"}  # as root it refuses to start without this
    with open(workdir / "stdout.log", "wb") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=workdir)
    try:
        wait_until_answers(proc, ("127.0.0.1", port), ready_community, workdir / "stdout.log")
        yield Sim(port, port6)
    finally:
        stop(proc)


__all__ = ["Sim", "ipv6_loopback", "run_snmpsim", "snmpsim_binary", "stop", "v2c_get_sysuptime",
           "wait_until_answers"]

"""The snmp probe against real agents on loopback: snmpsim recordings (v1/v2c) and Debian snmpd (v3 USM)."""

from __future__ import annotations

import asyncio
import logging
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from agent.probes import run_probe, snmp, snmpclient
from slawatch.config.probes import SnmpProbe
from slawatch.model import Outcome, Result
from slawatch.testing import free_port, need, need_binary
from slawatch.testing.snmp import Sim, stop, wait_until_answers
from tests.probes.snmphelpers import (  # noqa: F401  (fresh_snmp_state is an autouse fixture)
    DECODER_CRASH,
    SLACK_S,
    assert_no_traceback,
    fresh_snmp_state,
    garbage_peer,
    run_snmpsim,
)

pytestmark = pytest.mark.timeout(60)

ROOT = Path(__file__).resolve().parents[2]
IF_OPER = "1.3.6.1.2.1.2.2.1.8"


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with run_snmpsim(tmp_path_factory) as peer:
        yield peer


@dataclass(frozen=True)
class Snmpd:
    port: int

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"


V3_USERS = {
    "slawatch": "createUser slawatch SHA authkey123 AES privkey123\nrouser slawatch priv",
    "slawatch256": "createUser slawatch256 SHA256 authkey256 AES privkey256\nrouser slawatch256 priv",
    "slawauth": "createUser slawauth MD5 authkey-md5\nrouser slawauth auth",
}


@pytest.fixture(scope="module")
def snmpd(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Snmpd]:
    """Debian's snmpd with USM users (snmpsim serves v3 only under a context name; devices use the empty one)."""
    exe = need_binary("snmpd", "snmpd")
    tmp = tmp_path_factory.mktemp("snmpd")
    port = free_port(socket.SOCK_DGRAM)
    conf = tmp / "snmpd.conf"
    conf.write_text(f"agentAddress udp:127.0.0.1:{port}\n" + "\n".join(V3_USERS.values())
                    + "\nrocommunity ready 127.0.0.1\n")
    log = tmp / "snmpd.log"
    proc = subprocess.Popen([exe, "-f", "-C", "-c", str(conf), "-Lf", str(log), "-p", str(tmp / "snmpd.pid"),
                             f"--persistentDir={tmp / 'persist'}"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=tmp)
    try:
        wait_until_answers(proc, ("127.0.0.1", port), "ready", log)
        yield Snmpd(port)
    finally:
        stop(proc)


def settings(target: str, checks: list[dict[str, Any]], **kw: Any) -> SnmpProbe:
    return SnmpProbe.model_validate({"kind": "snmp", "target": target, "checks": checks, "timeout_s": 2.0, **kw})


async def probe(target: str, checks: list[dict[str, Any]], **kw: Any) -> Result:
    return (await run_probe(settings(target, checks, **kw))).result


# ---------------------------------------------------------------- v1 / v2c against snmpsim


@pytest.mark.peer("snmpsim")
@pytest.mark.parametrize("version", ["1", "2c"])
async def test_links_and_vlan_up(sim: Sim, version: str) -> None:
    result = await probe(sim.target, [
        {"oid": f"{IF_OPER}.1", "equals": 1, "label": "uplink0"},
        {"oid": f".{IF_OPER}.100", "in": [1], "label": "vlan100"},
        {"oid": "1.3.6.1.2.1.2.2.1.14.1", "lt": 100, "label": "ifInErrors uplink0"},
        {"oid": "1.3.6.1.2.1.2.2.1.2.1", "equals": "uplink0"},
    ], community="switch", version=version)
    assert result.outcome is Outcome.UP and result.reason == ""
    assert result.latency_s is not None and result.latency_s < 1.0


@pytest.mark.peer("snmpsim")
@pytest.mark.parametrize("version", ["1", "2c"])
async def test_link_down_names_the_check(sim: Sim, version: str) -> None:
    result = await probe(sim.target, [{"oid": f"{IF_OPER}.1", "equals": 1, "label": "uplink0"},
                                      {"oid": f"{IF_OPER}.2", "equals": 1, "label": "uplink1"}],
                         community="switch", version=version)
    assert result == Result(Outcome.BAD_RESPONSE, f"uplink1 ({IF_OPER}.2) = 2, expected 1", result.latency_s)


@pytest.mark.peer("snmpsim")
async def test_numeric_comparison_fails_with_the_value(sim: Sim) -> None:
    result = await probe(sim.target, [{"oid": "1.3.6.1.2.1.2.2.1.14.1", "gt": 100, "label": "ifInErrors"}],
                         community="switch")
    assert result.outcome is Outcome.BAD_RESPONSE
    assert result.reason == "ifInErrors (1.3.6.1.2.1.2.2.1.14.1) = 17, expected > 100"


@pytest.mark.peer("snmpsim")
async def test_wrong_type_is_a_bad_response(sim: Sim) -> None:
    result = await probe(sim.target, [{"oid": "1.3.6.1.2.1.2.2.1.2.1", "equals": 1, "label": "ifDescr"}],
                         community="switch")
    assert result.outcome is Outcome.BAD_RESPONSE
    assert result.reason == "ifDescr (1.3.6.1.2.1.2.2.1.2.1): wrong type OctetString 'uplink0', expected an integer"


@pytest.mark.peer("snmpsim")
@pytest.mark.parametrize(("version", "why"), [("2c", "noSuchInstance"), ("1", "agent answered noSuchName")])
async def test_missing_oid_is_a_bad_response_naming_it(sim: Sim, version: str, why: str) -> None:
    result = await probe(sim.target, [{"oid": f"{IF_OPER}.1", "equals": 1},
                                      {"oid": f"{IF_OPER}.7", "equals": 1, "label": "uplink7"}],
                         community="switch", version=version)
    assert result.outcome is Outcome.BAD_RESPONSE
    assert result.reason == f"uplink7 ({IF_OPER}.7): {why}"


@pytest.mark.peer("snmpsim")
async def test_reboot_is_reported_once(sim: Sim) -> None:
    checks = [{"oid": f"{IF_OPER}.1", "equals": 1}]
    assert (await probe(sim.target, checks, community="reboot-before")).outcome is Outcome.UP
    # same agent (host:port), now answering with a recording whose sysUpTime is smaller
    rebooted = await probe(sim.target, checks, community="reboot-after")
    assert rebooted.outcome is Outcome.DEGRADED and rebooted.up
    assert rebooted.reason == "rebooted: sysUpTime went from 1d01h00m00s to 15s"
    assert (await probe(sim.target, checks, community="reboot-after")).outcome is Outcome.UP
    assert snmp.LAST_UPTIME[("127.0.0.1", sim.port)][0] == 1500


@pytest.mark.peer("snmpsim")
async def test_reboot_check_can_be_off(sim: Sim) -> None:
    checks = [{"oid": f"{IF_OPER}.1", "equals": 1}]
    await probe(sim.target, checks, community="reboot-before", check_reboot=False)
    assert (await probe(sim.target, checks, community="reboot-after", check_reboot=False)).outcome is Outcome.UP
    assert snmp.LAST_UPTIME == {}


@pytest.mark.peer("snmpsim")
async def test_reboot_note_rides_along_a_failure(sim: Sim) -> None:
    checks = [{"oid": f"{IF_OPER}.2", "equals": 1}]
    await probe(sim.target, checks, community="reboot-before")
    result = await probe(sim.target, checks, community="reboot-after")
    assert result.outcome is Outcome.BAD_RESPONSE
    assert result.reason == f"{IF_OPER}.2 = 2, expected 1; rebooted: sysUpTime went from 1d01h00m00s to 15s"


@pytest.mark.peer("snmpsim")
async def test_wrong_community_times_out_with_a_reason(sim: Sim) -> None:
    t0 = time.perf_counter()
    run = await run_probe(settings(sim.target, [{"oid": f"{IF_OPER}.1"}], community="not-a-recording",
                                   timeout_s=0.5))
    elapsed = time.perf_counter() - t0
    assert run.result == Result(Outcome.TIMEOUT, f"no SNMP answer from {sim.target} within 0.45s "
                                                 "(no agent, wrong community, or filtered)")
    assert elapsed <= 0.5 + SLACK_S


@pytest.mark.peer("snmpsim")
async def test_ipv6(sim: Sim) -> None:
    if sim.port6 is None:
        need(False, "no ::1 on this machine")
    result = await probe(f"[::1]:{sim.port6}", [{"oid": f"{IF_OPER}.1", "equals": 1}], community="switch")
    assert result.outcome is Outcome.UP


@pytest.mark.peer("snmpd")
async def test_200_concurrent_probes_share_one_engine(snmpd: Snmpd) -> None:
    """Against snmpd (C): snmpsim itself answers only a few hundred requests a second."""
    checks = [{"oid": "1.3.6.1.2.1.1.3.0", "gt": 0}]
    await probe(snmpd.target, checks, community="ready")  # warm
    t0 = time.perf_counter()
    results = await asyncio.gather(*(probe(snmpd.target, checks, community="ready") for _ in range(200)))
    elapsed = time.perf_counter() - t0
    assert all(r.outcome is Outcome.UP for r in results), {r.reason for r in results}
    assert elapsed < 2.0  # measured ~0.3 s here
    assert len(snmpclient._loops[asyncio.get_running_loop()].engines) == 1


# ---------------------------------------------------------------- deadline against a silent peer


class Silent(asyncio.DatagramProtocol):
    """Reads every datagram, never answers."""

    def __init__(self) -> None:
        self.received = 0

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1


@pytest.mark.parametrize("timeout_s", [0.3, 1.0, 2.5])
async def test_timeout_within_the_deadline(timeout_s: float) -> None:
    loop = asyncio.get_running_loop()
    transport, silent = await loop.create_datagram_endpoint(Silent, local_addr=("127.0.0.1", 0))
    try:
        port = transport.get_extra_info("sockname")[1]
        await snmpclient.warm()
        t0 = time.perf_counter()
        run = await run_probe(settings(f"127.0.0.1:{port}", [{"oid": "1.3.6.1.2.1.1.3.0"}], timeout_s=timeout_s))
        elapsed = time.perf_counter() - t0
    finally:
        transport.close()
    assert run.result.outcome is Outcome.TIMEOUT
    assert run.result.reason.startswith(f"no SNMP answer from 127.0.0.1:{port} within ")
    assert elapsed <= timeout_s + SLACK_S
    assert silent.received == (2 if timeout_s >= 2.5 else 1)  # one retry once each try gets >= 1 s


# ---------------------------------------------------------------- garbage from the peer (test_ups.py uses these too)

NOT_BER = b"\x00garbage\xff"  # dropped quietly by pysnmp (snmpInASNParseErrs)


def echo_as_response(request: bytes) -> bytes:
    """The GET sent back as a GetResponse (PDU tag 0xA0 -> 0xA2): a valid answer, every value NULL."""
    i = request.index(b"\xa0")
    return request[:i] + b"\xa2" + request[i + 1:]


@pytest.mark.parametrize("garbage", [DECODER_CRASH, NOT_BER], ids=["decoder-crash", "not-ber"])
async def test_garbage_is_a_malformed_response_without_a_traceback(
        garbage: bytes, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    async with garbage_peer(lambda request: [garbage]) as target:
        t0 = time.perf_counter()
        run = await run_probe(settings(target, [{"oid": "1.3.6.1.2.1.1.3.0"}], timeout_s=1.0))
        elapsed = time.perf_counter() - t0
    assert run.result == Result(Outcome.BAD_RESPONSE,
                                f"malformed SNMP response from {target} (no valid answer within 0.9s)")
    assert elapsed <= 1.0 + SLACK_S
    assert_no_traceback(caplog, capsys)


async def test_garbage_then_a_valid_answer_is_up(caplog: pytest.LogCaptureFixture,
                                                 capsys: pytest.CaptureFixture[str]) -> None:
    async with garbage_peer(lambda request: [DECODER_CRASH, NOT_BER, echo_as_response(request)]) as target:
        run = await run_probe(settings(target, [{"oid": "1.3.6.1.2.1.1.3.0"}], timeout_s=1.0))
    assert run.result.outcome is Outcome.UP, run.result
    assert_no_traceback(caplog, capsys)


@pytest.mark.peer("snmpsim")
def test_first_probe_of_a_fresh_process_fits_a_1s_timeout(sim: Sim) -> None:
    """pysnmp's first request loads MIBs (~0.5 s): it must not blow a 1 s timeout."""
    code = f"""
import asyncio, time
from agent.probes import run_probe, snmpclient
from slawatch.config.probes import SnmpProbe
async def main():
    s = SnmpProbe(kind="snmp", target="127.0.0.1:{sim.port}", community="switch", timeout_s=1.0,
                  checks=[{{"oid": "{IF_OPER}.1", "equals": 1}}])
    t = time.perf_counter(); first = await run_probe(s); t1 = time.perf_counter() - t
    t = time.perf_counter(); second = await run_probe(s); t2 = time.perf_counter() - t
    print(first.result.outcome, round(t1, 3), second.result.outcome, round(t2, 3))
    await snmpclient.close()
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    first, t1, second, t2 = out.stdout.split()
    assert (first, second) == ("up", "up"), out.stdout
    assert float(t1) < 1.0 and float(t2) < 0.2


# ---------------------------------------------------------------- v3 USM against snmpd


UPTIME = [{"oid": "1.3.6.1.2.1.1.3.0", "gt": 0, "label": "sysUpTime"}]


def v3(user: str, auth_key: str | None, priv_key: str | None = None, **kw: Any) -> dict[str, Any]:
    return {"version": "3", "v3": {"user": user, "auth_key": auth_key, "priv_key": priv_key, **kw}}


@pytest.fixture
def ciphers() -> None:
    need(snmpclient.CIPHERS, "SNMPv3 privacy needs the 'cryptography' package (pip install cryptography)")


@pytest.mark.usefixtures("ciphers")
@pytest.mark.parametrize("access", [
    v3("slawatch", "authkey123", "privkey123"),
    v3("slawatch256", "authkey256", "privkey256", auth_protocol="SHA256"),
    v3("slawauth", "authkey-md5", None, auth_protocol="MD5"),
], ids=["SHA-AES", "SHA256-AES", "MD5-authNoPriv"])
@pytest.mark.peer("snmpd")
async def test_v3_right_keys_up(snmpd: Snmpd, access: dict[str, Any]) -> None:
    result = await probe(snmpd.target, UPTIME, **access)
    assert result.outcome is Outcome.UP, result.reason


@pytest.mark.usefixtures("ciphers")
@pytest.mark.parametrize(("access", "reason"), [
    (v3("slawatch", "wrongkey123", "privkey123"),
     "SNMPv3 authentication failed at {peer} for user 'slawatch': wrong auth_key or auth_protocol "
     "(usmStatsWrongDigests)"),
    (v3("slawatch", "authkey123", "privkey123", auth_protocol="MD5"),
     "SNMPv3 authentication failed at {peer} for user 'slawatch': wrong auth_key or auth_protocol "
     "(usmStatsWrongDigests)"),
    (v3("nobody", "authkey123", "privkey123"),
     "SNMPv3 user 'nobody' is unknown to {peer} (usmStatsUnknownUserNames)"),
], ids=["wrong-auth-key", "wrong-auth-protocol", "unknown-user"])
@pytest.mark.peer("snmpd")
async def test_v3_wrong_credentials_refused_with_reason(snmpd: Snmpd, access: dict[str, Any], reason: str) -> None:
    t0 = time.perf_counter()
    result = await probe(snmpd.target, UPTIME, **access)
    assert result == Result(Outcome.REFUSED, reason.format(peer=snmpd.target))
    assert time.perf_counter() - t0 < 1.0  # an answer, not a timeout


@pytest.mark.peer("snmpd")
@pytest.mark.usefixtures("ciphers")
async def test_v3_right_and_wrong_key_for_one_user_do_not_mix(snmpd: Snmpd) -> None:
    right, wrong = v3("slawatch", "authkey123", "privkey123"), v3("slawatch", "wrongkey123", "privkey123")
    results = await asyncio.gather(*(probe(snmpd.target, UPTIME, **(right if i % 2 else wrong)) for i in range(10)))
    assert [r.outcome for r in results] == [Outcome.REFUSED, Outcome.UP] * 5


@pytest.mark.peer("snmpd")
@pytest.mark.usefixtures("ciphers")
async def test_v3_wrong_priv_key_is_silence_from_net_snmp(snmpd: Snmpd) -> None:
    """net-snmp drops a message it cannot decrypt without a report: the timeout reason names the suspect."""
    t0 = time.perf_counter()
    run = await run_probe(settings(snmpd.target, UPTIME, timeout_s=1.0, **v3("slawatch", "authkey123", "wrongpriv1")))
    assert run.result == Result(Outcome.TIMEOUT, f"no SNMP answer from {snmpd.target} within 0.9s "
                                                 "(no agent, wrong priv_key or priv_protocol, or filtered)")
    assert time.perf_counter() - t0 <= 1.0 + SLACK_S


@pytest.mark.peer("snmpsim")
@pytest.mark.usefixtures("ciphers")
async def test_v3_wrong_priv_key_reported_by_the_agent_is_refused(sim: Sim) -> None:
    """snmpsim (pysnmp) answers an undecryptable message with a usmStatsDecryptionErrors report."""
    result = await probe(sim.target, UPTIME, **v3("slawatch", "authkey123", "wrongpriv1"))
    assert result == Result(Outcome.REFUSED, f"SNMPv3 decryption failed at {sim.target} for user 'slawatch': "
                                             "wrong priv_key or priv_protocol (usmStatsDecryptionErrors)")

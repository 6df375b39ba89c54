"""The dns probe against a real dnsmasq on loopback: through the probe function, `slawatch probe dns` and the agent."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import cast

import dns.message
import dns.rcode
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import pytest

from agent.probes import dns as dns_probe
from agent.probes import run_probe
from slawatch.config.loader import bundled_contract
from slawatch.config.probes import DnsProbe
from slawatch.model import Outcome, Result
from slawatch.testing import free_port, need_binary
from slawatch.testing.agentproc import AgentProcess, poll, store_rows

ROOT = Path(__file__).resolve().parents[2]
SLAWATCH = ROOT / ".venv" / "bin" / "slawatch"
DOMAIN = "example.test"


def _free_udp_and_tcp_port() -> int:
    """A port free for both UDP and TCP on 127.0.0.1 (dnsmasq listens on both)."""
    for _ in range(20):
        port = free_port(socket.SOCK_DGRAM)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        return port
    raise AssertionError("no port free for UDP and TCP")


def _answers(port: int) -> bool:
    query = dns.message.make_query(f"sip.{DOMAIN}", "A")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(0.2)
        s.sendto(query.to_wire(), ("127.0.0.1", port))
        try:
            return bool(s.recv(4096))
        except (TimeoutError, ConnectionRefusedError):
            return False


@pytest.fixture(scope="module")
def dnsmasq() -> Iterator[int]:
    """dnsmasq answering for example.test only: names it has records for, NXDOMAIN for other names in the domain,
    REFUSED outside it."""
    binary = need_binary("dnsmasq", "dnsmasq-base")
    port = _free_udp_and_tcp_port()
    proc = subprocess.Popen([
        binary, "-k", f"--port={port}", "--listen-address=127.0.0.1", "--bind-interfaces", "--no-resolv",
        "--no-hosts", "--conf-file=/dev/null", "--pid-file=", f"--local=/{DOMAIN}/",
        f"--host-record=sip.{DOMAIN},127.0.0.7", f"--host-record=v6.{DOMAIN},::7",
        f"--host-record=multi.{DOMAIN},127.0.0.8", f"--host-record=multi.{DOMAIN},127.0.0.9",
        f"--srv-host=_sip._udp.{DOMAIN},sip.{DOMAIN},5060",
        f"--txt-record={DOMAIN},v=spf1 -all",
        f"--naptr-record={DOMAIN},10,100,S,SIP+D2U,,_sip._udp.{DOMAIN}",
    ], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 10
        while not _answers(port):
            assert proc.poll() is None, f"dnsmasq exited: {proc.stderr.read() if proc.stderr else ''}"
            assert time.monotonic() < deadline, "dnsmasq did not answer within 10 s"
            time.sleep(0.05)
        yield port
    finally:
        proc.terminate()
        proc.wait(10)
        if proc.stderr is not None:
            proc.stderr.close()


class _Servfail(asyncio.DatagramProtocol):
    """A DNS server that answers every query SERVFAIL, as a recursive server does whose upstream is broken."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = dns.message.make_response(dns.message.from_wire(data))
        reply.set_rcode(dns.rcode.SERVFAIL)
        self.transport.sendto(reply.to_wire(), addr)


@pytest.fixture
async def servfail() -> AsyncIterator[int]:
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(_Servfail, local_addr=("127.0.0.1", 0))
    try:
        yield int(transport.get_extra_info("sockname")[1])
    finally:
        transport.close()


def settings(port: int, query: str, **kw: object) -> DnsProbe:
    return DnsProbe.model_validate({"kind": "dns", "target": f"127.0.0.1:{port}", "query": query,
                                    "timeout_s": 2.0, **kw})


# ---------------------------------------------------------------- matching records (pure)


@pytest.mark.parametrize(("rdtype", "text", "expect", "matches"), [
    ("A", "127.0.0.7", "127.0.0.7", True),
    ("A", "127.0.0.7", " 127.0.0.7 ", True),
    ("A", "127.0.0.7", "127.0.0.8", False),
    ("A", "127.0.0.7", "sip.example.test", False),
    ("AAAA", "::7", "0:0::7", True),
    ("SRV", "0 0 5060 sip.example.test.", "0 0 5060 sip.example.test", True),
    ("SRV", "0 0 5060 sip.example.test.", "0 0 5060 SIP.Example.Test.", True),
    ("SRV", "0 0 5060 sip.example.test.", "0 0 5061 sip.example.test", False),
    ("TXT", '"v=spf1 -all"', "v=spf1 -all", True),
    ("TXT", '"v=spf1 -all"', '"v=spf1 -all"', True),
    ("TXT", '"v=spf1 -all"', "v=spf1", False),
    ("NAPTR", '10 100 "S" "SIP+D2U" "" _sip._udp.example.test.', '10 100 "S" "SIP+D2U" "" _sip._udp.example.test',
     True),
])
def test_record_matches(rdtype: str, text: str, expect: str, matches: bool) -> None:
    record = dns.rdata.from_text(dns.rdataclass.IN, dns.rdatatype.from_text(rdtype), text)
    assert dns_probe.record_matches(expect, record) is matches


# ---------------------------------------------------------------- the probe function


@pytest.mark.peer("dnsmasq")
@pytest.mark.parametrize(("query", "kw"), [
    (f"sip.{DOMAIN}", {}),
    (f"sip.{DOMAIN}", {"expect": "127.0.0.7"}),
    (f"multi.{DOMAIN}", {"expect": "127.0.0.9"}),
    (f"v6.{DOMAIN}", {"type": "AAAA", "expect": "::7"}),
    (f"_sip._udp.{DOMAIN}", {"type": "SRV", "expect": f"0 0 5060 sip.{DOMAIN}"}),
    (DOMAIN, {"type": "TXT", "expect": "v=spf1 -all"}),
    (DOMAIN, {"type": "NAPTR"}),
])
async def test_an_answer_with_records_is_up(dnsmasq: int, query: str, kw: dict[str, object]) -> None:
    r = await dns_probe.probe(settings(dnsmasq, query, **kw))
    assert r.outcome is Outcome.UP, r
    assert r.latency_s is not None and 0 < r.latency_s < 1


@pytest.mark.peer("dnsmasq")
@pytest.mark.parametrize(("query", "kw", "reason"), [
    (f"nope.{DOMAIN}", {}, f"NXDOMAIN: nope.{DOMAIN} does not exist"),
    ("elsewhere.invalid", {}, "server answered REFUSED to A elsewhere.invalid"),
    (f"sip.{DOMAIN}", {"type": "AAAA"}, f"no AAAA record for sip.{DOMAIN} (NOERROR, empty answer)"),
    (f"sip.{DOMAIN}", {"expect": "127.0.0.8"}, f"A sip.{DOMAIN} is 127.0.0.7, expected 127.0.0.8"),
    (f"_sip._udp.{DOMAIN}", {"type": "SRV", "expect": f"0 0 5061 sip.{DOMAIN}"},
     f"SRV _sip._udp.{DOMAIN} is 0 0 5060 sip.{DOMAIN}., expected 0 0 5061 sip.{DOMAIN}"),
])
async def test_a_wrong_answer_is_a_bad_response(dnsmasq: int, query: str, kw: dict[str, object],
                                                reason: str) -> None:
    assert await dns_probe.probe(settings(dnsmasq, query, **kw)) == Result(Outcome.BAD_RESPONSE, reason)


async def test_servfail_is_a_bad_response(servfail: int) -> None:
    r = await dns_probe.probe(settings(servfail, f"sip.{DOMAIN}"))
    assert r == Result(Outcome.BAD_RESPONSE, f"server answered SERVFAIL to A sip.{DOMAIN}")


async def test_no_answer_is_a_timeout_within_the_deadline() -> None:
    port = free_port(socket.SOCK_DGRAM)
    t0 = time.monotonic()
    run = await run_probe(settings(port, f"sip.{DOMAIN}", timeout_s=0.5))
    elapsed = time.monotonic() - t0
    assert run.result == Result(Outcome.TIMEOUT, f"no DNS answer from 127.0.0.1:{port} within 0.45s")
    assert 0.4 < elapsed < 0.7


def test_settings_refuse_a_bad_name_and_type() -> None:
    with pytest.raises(ValueError, match="bad DNS name 'no such name'"):
        settings(53, "no such name")
    with pytest.raises(ValueError, match="type"):
        settings(53, "example.test", type="MX")


# ---------------------------------------------------------------- `slawatch probe dns`


async def slawatch(*argv: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(str(SLAWATCH), *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


@pytest.mark.peer("dnsmasq")
@pytest.mark.timeout(60)
async def test_one_shot_command(dnsmasq: int) -> None:
    server = f"127.0.0.1:{dnsmasq}"
    code, out, err = await slawatch("probe", "dns", server, "--name", f"_sip._udp.{DOMAIN}", "--type", "SRV",
                                    "--expect", f"0 0 5060 sip.{DOMAIN}")
    assert (code, out.split(" | ")[0]) == (0, f"OK - dns {server}: up"), out + err
    assert " | latency=" in out
    code, out, _ = await slawatch("probe", "dns", server, "--name", f"sip.{DOMAIN}", "--expect", "127.0.0.8")
    assert (code, out.split(" | ")[0]) == (2, f"CRITICAL - dns {server}: A sip.{DOMAIN} is 127.0.0.7, "
                                              f"expected 127.0.0.8")
    code, out, _ = await slawatch("probe", "dns", server, "--name", f"nope.{DOMAIN}")
    assert (code, out.split(" | ")[0]) == (2, f"CRITICAL - dns {server}: NXDOMAIN: nope.{DOMAIN} does not exist")


@pytest.mark.timeout(60)
async def test_one_shot_command_without_an_answer_in_time(servfail: int) -> None:
    closed = f"127.0.0.1:{free_port(socket.SOCK_DGRAM)}"
    code, out, _ = await slawatch("probe", "dns", closed, "--name", f"sip.{DOMAIN}", "--timeout", "0.5")
    assert (code, out) == (2, f"CRITICAL - dns {closed}: no DNS answer from {closed} within 0.45s | latency=U;;;0\n")
    code, out, _ = await slawatch("probe", "dns", f"127.0.0.1:{servfail}", "--name", f"sip.{DOMAIN}")
    assert code == 2 and f"server answered SERVFAIL to A sip.{DOMAIN}" in out, out


@pytest.mark.timeout(60)
async def test_one_shot_command_bad_input_is_unknown() -> None:
    code, out, _ = await slawatch("probe", "dns", "127.0.0.1", "--name", "bad name!")
    assert (code, out) == (3, "UNKNOWN - dns 127.0.0.1: --name: bad DNS name 'bad name!'\n")
    code, out, _ = await slawatch("probe", "dns", "127.0.0.1", "--name", "x.test", "--type", "MX")
    assert code == 3 and "invalid choice: 'MX'" in out, out


# ---------------------------------------------------------------- the agent


def _config(tmp: Path, port: int) -> Path:
    cfg = tmp / "agent.yaml"
    cfg.write_text(f"""
agent: {{id: dns-agent, listen: "127.0.0.1:{free_port()}", heartbeat_s: 1}}
storage: {{sqlite: {{path: {tmp / 'store.db'}}}, spool: {{path: {tmp / 'spool'}}}}}
contract: {bundled_contract()}
defaults: {{interval_s: 0.5, timeout_s: 0.4, confirm: {{down: 2, up: 1}}}}
customers: [{{name: acme, tier: gold}}]
components:
  - name: sip-dns
    class: sip
    customer: acme
    probes:
      - {{kind: dns, name: srv, target: "127.0.0.1:{port}", query: _sip._udp.{DOMAIN}, type: SRV,
          expect: "0 0 5060 sip.{DOMAIN}"}}
      - {{kind: dns, name: gone, target: "127.0.0.1:{port}", query: gone.{DOMAIN}}}
""")
    return cfg


@pytest.mark.peer("dnsmasq")
@pytest.mark.timeout(90)
def test_agent_runs_dns_probes_and_stores_their_samples(dnsmasq: int, tmp_path: Path) -> None:
    cfg = _config(tmp_path, dnsmasq)
    check = subprocess.run([sys.executable, "-m", "slawatch.cli", "check-config", str(cfg)], capture_output=True,
                           text=True, cwd=ROOT, timeout=30)
    assert check.returncode == 0, check.stderr
    assert "probes: dns 2" in check.stdout
    db = tmp_path / "store.db"
    agent = AgentProcess(cfg)
    try:
        poll(lambda: len(store_rows(db, "SELECT 1 FROM slawatch_probe WHERE probe = 'srv'")) >= 3
             and len(store_rows(db, "SELECT 1 FROM slawatch_state")) >= 1, what="dns samples and a state change")
    finally:
        with contextlib.suppress(ProcessLookupError):
            assert agent.stop() == 0, agent.log
    samples = store_rows(db, "SELECT probe, kind, up, outcome, reason FROM slawatch_probe")
    assert {s[:4] for s in samples} == {("srv", "dns", 1, "up"), ("gone", "dns", 0, "bad_response")}
    assert ("gone", "dns", 0, "bad_response", f"NXDOMAIN: gone.{DOMAIN} does not exist") in samples
    assert store_rows(db, "SELECT component, up, reason FROM slawatch_state")[0] == (
        "sip-dns", 0, f"gone: NXDOMAIN: gone.{DOMAIN} does not exist")

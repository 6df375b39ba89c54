"""The icmp probe against loopback, and inside network namespaces made for the test (never a real network)."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from icmplib import ICMPReply, ICMPv4Socket, ICMPv6Socket

from agent.probes import icmp as icmp_module
from agent.probes import run_probe
from agent.probes.icmp import PAYLOAD, Collector, Echoes, echo_request, judge, may_ping, permission_reason
from slawatch.config.probes import IcmpProbe
from slawatch.model import Outcome, Result
from slawatch.testing import need

ROOT = Path(__file__).resolve().parents[2]
HAS_IPV6 = Path("/proc/net/if_inet6").exists()


MAY_PING = may_ping()
NOBODY = 65534

# Runs one probe in whatever namespace the subprocess has, and prints the Result and the wall time. Given a uid
# (argv[2]) it drops to that uid and gid, with no groups and so no capabilities, once everything is imported: the
# checkout may sit under a directory only root can enter (a mode-0700 home), which that user could not import from.
SCRIPT = """
import asyncio, json, os, sys, time
from agent.probes import kind, run_probe
from slawatch.config.probes import IcmpProbe
settings = IcmpProbe.model_validate(json.loads(sys.argv[1]))
kind("icmp")  # the kind's module loads on first use: load it now
import encodings.idna  # what the socket module imports on its first send
if len(sys.argv) > 2:
    ident = int(sys.argv[2])
    os.setgroups([])
    os.setresgid(ident, ident, ident)
    os.setresuid(ident, ident, ident)
    os.chdir("/")
with open("/proc/self/status") as status:
    cap_eff = next(int(line.split()[1], 16) for line in status if line.startswith("CapEff:"))
t0 = time.monotonic()
run = asyncio.run(run_probe(settings))
r = run.result
print(json.dumps({"outcome": str(r.outcome), "reason": r.reason, "latency_s": r.latency_s,
                  "elapsed_s": time.monotonic() - t0, "uid": os.getuid(), "gid": os.getgid(),
                  "groups": os.getgroups(), "cap_eff": cap_eff}))
"""


def icmp(target: str, **kw: object) -> IcmpProbe:
    return IcmpProbe.model_validate({"kind": "icmp", "target": target, **kw})


# ---------------------------------------------------------------- pure: judging the replies

LOSSY = icmp("h", count=4, max_loss_pct=50)
SLOW = icmp("h", max_rtt_ms=10)


@pytest.mark.parametrize(("settings", "echoes", "outcome", "reason"), [
    (LOSSY, Echoes(4, (1.0, 1.0, 1.0, 1.0)), Outcome.UP, ""),
    (LOSSY, Echoes(4, (1.0, 1.0, 1.0)), Outcome.DEGRADED, "25% loss (3/4 replies)"),
    (LOSSY, Echoes(4, (1.0, 1.0)), Outcome.DEGRADED, "50% loss (2/4 replies)"),  # at the threshold: not down
    (LOSSY, Echoes(4, (1.0,)), Outcome.TIMEOUT, "75% loss from h (1/4 replies), above 50%"),
    (LOSSY, Echoes(4, (1.0,), ("h: ICMP destination unreachable (x)",)), Outcome.UNREACHABLE,
     "75% loss from h (1/4 replies), above 50%"),
    (LOSSY, Echoes(4), Outcome.TIMEOUT, "no echo reply from h (4 sent)"),
    (LOSSY, Echoes(4, (), ("h: ICMP destination unreachable (Packet filtered)",)), Outcome.UNREACHABLE,
     "h: ICMP destination unreachable (Packet filtered) (4 sent)"),
    (SLOW, Echoes(3, (5.0, 10.0, 15.0)), Outcome.UP, ""),  # average 10: not above
    (SLOW, Echoes(3, (5.0, 10.0, 18.0)), Outcome.DEGRADED, "rtt avg 11 ms above 10 ms"),
    (SLOW, Echoes(3, (30.0, 30.0)), Outcome.DEGRADED, "33% loss (2/3 replies), rtt avg 30 ms above 10 ms"),
    (icmp("h", max_loss_pct=0), Echoes(3, (1.0, 1.0)), Outcome.TIMEOUT, "33% loss from h (2/3 replies), above 0%"),
])
def test_judge(settings: IcmpProbe, echoes: Echoes, outcome: Outcome, reason: str) -> None:
    result = judge(settings, "h", echoes)
    assert (result.outcome, result.reason) == (outcome, reason)
    if echoes.rtts_ms:
        assert result.latency_s == pytest.approx(sum(echoes.rtts_ms) / len(echoes.rtts_ms) / 1000)


def test_permission_reason_names_what_is_missing() -> None:
    assert permission_reason(65534, "1 0") == (
        "ICMP needs root, CAP_NET_RAW, or net.ipv4.ping_group_range covering gid 65534 (it is 1 0)")


@given(st.sampled_from([4, 6]), st.integers(0, 0xFFFF), st.integers(0, 0xFFFF))
def test_echo_request_is_icmplibs_packet_with_the_fixed_payload(version: int, ident: int, seq: int) -> None:
    builder = object.__new__(ICMPv6Socket if version == 6 else ICMPv4Socket)  # no socket: only its packet code
    builder._sock = None
    assert echo_request(version, ident, seq) == builder._create_packet(id=ident, sequence=seq, payload=PAYLOAD)


async def test_a_reply_to_another_request_is_not_taken() -> None:
    settled: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    run = Collector(2, 4, "127.0.0.1", settled)

    def reply(seq: int, at: float, kind: int = 0) -> ICMPReply:
        return ICMPReply(source="127.0.0.1", family=4, id=7, sequence=seq, type=kind, code=0, bytes_received=64,
                         time=at)

    run.sent(0, 100.0)
    run.reply(reply(1, 100.5))  # not sent (yet): another run's, or a stray
    run.reply(reply(0, 100.001, kind=8))  # an echo request (ours, looped back) is no reply
    assert not run.rtts and not run.errors
    run.reply(reply(0, 100.002))
    run.reply(reply(0, 100.003))  # a duplicate counts once
    run.sent(1, 100.2)
    assert not settled.done()
    run.reply(reply(1, 100.204))
    assert settled.done()
    echoes = run.echoes()
    assert echoes.sent == 2 and echoes.errors == ()
    assert echoes.rtts_ms == pytest.approx((2.0, 4.0))


# ---------------------------------------------------------------- loopback, in this process


@pytest.fixture
def may_ping() -> None:
    need(MAY_PING, "ICMP needs root or a net.ipv4.ping_group_range covering this gid")


@pytest.mark.timeout(20)
@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
async def test_loopback_is_up(target: str, may_ping: None) -> None:
    if target == "::1":
        need(HAS_IPV6, "IPv6 is disabled on this machine")
    run = await run_probe(icmp(target, timeout_s=2))
    assert run.result.outcome is Outcome.UP, run.result
    assert run.result.latency_s is not None and run.result.latency_s > 0
    assert run.result.reason == ""


@pytest.mark.timeout(20)
async def test_rtt_threshold_degrades(may_ping: None) -> None:
    run = await run_probe(icmp("127.0.0.1", count=2, max_rtt_ms=1e-6, timeout_s=2))
    assert run.result.outcome is Outcome.DEGRADED
    assert "rtt avg" in run.result.reason and "above 1e-06 ms" in run.result.reason


@pytest.mark.timeout(30)
@pytest.mark.parametrize("targets", [[f"127.0.0.{n}" for n in range(1, 51)], ["::1"]])
async def test_many_concurrent_probes_match_their_own_replies(targets: list[str], may_ping: None) -> None:
    if targets == ["::1"]:
        need(HAS_IPV6, "IPv6 is disabled on this machine")
    runs = await asyncio.gather(*(run_probe(icmp(targets[i % len(targets)], count=2, timeout_s=4))
                                  for i in range(1000)))
    assert [r.result for r in runs if not r.result.up][:3] == []
    assert not icmp_module._SHARED.get(asyncio.get_running_loop()), "the shared socket outlived its last run"


@pytest.mark.timeout(20)
async def test_more_packets_than_the_timeout_holds_is_a_config_error() -> None:
    run = await run_probe(icmp("127.0.0.1", count=30, packet_interval_s=0.2, timeout_s=2))
    assert run.result == Result(Outcome.AGENT_ERROR, "30 packets 0.2s apart do not fit in timeout_s 2")


# ---------------------------------------------------------------- inside namespaces of our own


class Netns:
    """Network namespaces created for one test and deleted after it."""

    def __init__(self) -> None:
        self.names: list[str] = []
        self.links: list[tuple[str, str]] = []

    def add(self) -> str:
        name = f"swtest-{secrets.token_hex(4)}"
        proc = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
        need(proc.returncode == 0, f"ip netns add is not permitted here: {proc.stderr.strip()}")
        self.names.append(name)
        return name

    def sh(self, ns: str, *cmd: str) -> None:
        subprocess.run(["ip", "netns", "exec", ns, *cmd], check=True, capture_output=True)

    def probe(self, ns: str, settings: IcmpProbe, *, uid: int | None = None) -> dict[str, object]:
        cmd = ["ip", "netns", "exec", ns, sys.executable, "-c", SCRIPT, settings.model_dump_json(),
               *([] if uid is None else [str(uid)])]
        proc = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, timeout=30,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert proc.returncode == 0, proc.stderr
        out: dict[str, object] = json.loads(proc.stdout)
        if uid is not None:  # the probe really ran unprivileged
            assert (out["uid"], out["gid"], out["groups"], out["cap_eff"]) == (uid, uid, [], 0), out
        return out

    def close(self) -> None:
        for name in self.names:
            subprocess.run(["ip", "netns", "del", name], capture_output=True)


@pytest.fixture
def netns() -> Iterator[Netns]:
    need(shutil.which("ip") is not None, "ip not found (apt-get install -y iproute2)")
    need(os.geteuid() == 0, "network namespaces need root")
    spaces = Netns()
    try:
        yield spaces
    finally:
        spaces.close()


@pytest.mark.timeout(60)
def test_link_down_is_unreachable(netns: Netns) -> None:
    ns = netns.add()  # a new namespace has only `lo`, and it is down
    result = netns.probe(ns, icmp("127.0.0.1", timeout_s=2))
    assert result["outcome"] == "unreachable"
    assert result["reason"] == "127.0.0.1: network is unreachable (3 sent)"


@pytest.mark.timeout(60)
def test_unresolvable_name_is_unreachable(netns: Netns) -> None:
    ns = netns.add()  # no link up: no DNS server can be reached, nothing leaves the namespace
    result = netns.probe(ns, icmp("nowhere.invalid", timeout_s=2))
    assert result["outcome"] == "unreachable"
    assert result["reason"] == "cannot resolve nowhere.invalid"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("timeout_s", [1.0, 3.0])
def test_no_reply_is_a_timeout_within_the_deadline(netns: Netns, timeout_s: float) -> None:
    ns = netns.add()
    netns.sh(ns, "ip", "link", "set", "lo", "up")
    netns.sh(ns, "sysctl", "-qw", "net.ipv4.icmp_echo_ignore_all=1")
    result = netns.probe(ns, icmp("127.0.0.1", timeout_s=timeout_s))
    assert result["outcome"] == "timeout"
    assert result["reason"] == "no echo reply from 127.0.0.1 (3 sent)"
    elapsed = result["elapsed_s"]
    assert isinstance(elapsed, float) and timeout_s * 0.8 < elapsed <= timeout_s + 0.1


def _routed_to_a_prohibit_route(netns: Netns) -> str:
    """Two namespaces joined by a veth pair; the far one answers 198.51.100.0/24 with ICMP 'packet filtered'.
    The addresses are documentation ranges that exist only inside these namespaces."""
    near, far = netns.add(), netns.add()
    subprocess.run(["ip", "link", "add", "swa", "netns", near, "type", "veth", "peer", "name", "swb", "netns", far],
                   check=True, capture_output=True)
    netns.sh(near, "ip", "addr", "add", "192.0.2.1/30", "dev", "swa")
    netns.sh(near, "ip", "link", "set", "swa", "up")
    netns.sh(near, "ip", "link", "set", "lo", "up")
    netns.sh(near, "ip", "route", "add", "198.51.100.0/24", "via", "192.0.2.2")
    netns.sh(far, "ip", "addr", "add", "192.0.2.2/30", "dev", "swb")
    netns.sh(far, "ip", "link", "set", "swb", "up")
    netns.sh(far, "sysctl", "-qw", "net.ipv4.ip_forward=1", "net.ipv4.icmp_ratelimit=0")
    netns.sh(far, "ip", "route", "add", "prohibit", "198.51.100.0/24")
    return near


@pytest.mark.timeout(60)
def test_icmp_destination_unreachable_is_unreachable(netns: Netns) -> None:
    near = _routed_to_a_prohibit_route(netns)
    up = netns.probe(near, icmp("192.0.2.2", timeout_s=2))
    assert up["outcome"] == "up"
    result = netns.probe(near, icmp("198.51.100.7", timeout_s=2))
    assert result["outcome"] == "unreachable"
    assert result["reason"] == "198.51.100.7: ICMP destination unreachable (Packet filtered) (3 sent)"
    # Not "every packet answered at once": the kernel's global ICMP rate limit, shared with the whole host, may eat
    # an error message or two.
    assert isinstance(result["elapsed_s"], float) and result["elapsed_s"] <= 2.1


@pytest.mark.timeout(60)
def test_unprivileged_sees_destination_unreachable(netns: Netns) -> None:
    near = _routed_to_a_prohibit_route(netns)
    netns.sh(near, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
    result = netns.probe(near, icmp("198.51.100.7", timeout_s=2), uid=NOBODY)
    assert result["outcome"] == "unreachable"
    assert result["reason"] == "198.51.100.7: ICMP destination unreachable (Packet filtered) (3 sent)"


@pytest.mark.timeout(60)
@pytest.mark.parametrize("target", ["127.0.0.1", "::1"])
def test_unprivileged_when_ping_group_range_allows(netns: Netns, target: str) -> None:
    ns = netns.add()
    netns.sh(ns, "ip", "link", "set", "lo", "up")
    netns.sh(ns, "sysctl", "-qw", "net.ipv4.ping_group_range=0 2147483647")
    result = netns.probe(ns, icmp(target, timeout_s=2), uid=NOBODY)
    assert result["outcome"] == "up", result
    assert isinstance(result["latency_s"], float) and result["latency_s"] > 0


@pytest.mark.timeout(60)
def test_unprivileged_without_permission_says_what_is_missing(netns: Netns) -> None:
    ns = netns.add()
    netns.sh(ns, "ip", "link", "set", "lo", "up")
    netns.sh(ns, "sysctl", "-qw", "net.ipv4.ping_group_range=1 0")
    result = netns.probe(ns, icmp("127.0.0.1", timeout_s=2), uid=NOBODY)
    assert result["outcome"] == "agent_error"
    assert result["reason"] == ("ICMP needs root, CAP_NET_RAW, or net.ipv4.ping_group_range covering gid 65534 "
                                "(it is 1 0)")


@pytest.mark.timeout(30)
async def test_waiting_for_replies_leaves_the_event_loop_free(may_ping: None) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    task = asyncio.create_task(ticker())
    t0 = time.monotonic()
    try:
        # 127.0.0.1 answers at once, so wait on count × interval: the loop must keep ticking meanwhile.
        run = await run_probe(icmp("127.0.0.1", count=5, packet_interval_s=0.1, timeout_s=2))
    finally:
        task.cancel()
    assert run.result.outcome is Outcome.UP
    assert ticks >= (time.monotonic() - t0) / 0.01 * 0.5


@pytest.mark.timeout(30)
async def test_cancelled_runs_release_the_shared_socket(may_ping: None) -> None:
    loop = asyncio.get_running_loop()
    # 127.0.0.1 answers at once: wait on the interval so the runs are mid-flight when cancelled.
    tasks = [asyncio.create_task(run_probe(icmp("127.0.0.1", count=5, packet_interval_s=0.2, timeout_s=3)))
             for _ in range(50)]
    await asyncio.sleep(0.3)
    if os.geteuid() == 0:  # raw sockets are shared; datagram sockets are each run's own
        assert icmp_module._SHARED.get(loop), "the runs should be sharing a socket by now"
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    assert not icmp_module._SHARED.get(loop)

"""`agent.loop`: the agent on asyncio's loop or on uvloop, and a clear error when uvloop is chosen but missing."""

from __future__ import annotations

import asyncio
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import cast

import pytest
import uvloop

from agent.probes import run_probe
from agent.probes.icmp import may_ping
from slawatch.cli.agent import build_agent
from slawatch.cli.usage import UsageError, loop_factory, loop_problem, run_on
from slawatch.config.loader import ConfigError, load
from slawatch.config.probes import HttpProbe, SipProbe, TcpProbe
from slawatch.model import Outcome, Result
from slawatch.testing import free_port
from tests.e2e.agentconfig import write_config

ROOT = Path(__file__).resolve().parents[2]


async def loop_type() -> type[asyncio.AbstractEventLoop]:
    return type(asyncio.get_running_loop())


def test_run_on_runs_the_chosen_loop() -> None:
    assert loop_factory("asyncio") is None
    assert not issubclass(run_on("asyncio", loop_type), uvloop.Loop)
    assert run_on("uvloop", loop_type) is uvloop.Loop
    assert loop_problem("asyncio") is None and loop_problem("uvloop") is None
    with pytest.raises(UsageError, match="unknown event loop 'trio'"):
        loop_factory("trio")


def test_the_config_takes_asyncio_or_uvloop_only(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port())
    assert load(cfg).config.agent.loop == "asyncio"  # the default
    cfg.write_text(cfg.read_text().replace("heartbeat_s: 1}", "heartbeat_s: 1, loop: uvloop}"))
    assert load(cfg).config.agent.loop == "uvloop"
    cfg.write_text(cfg.read_text().replace("loop: uvloop", "loop: trio"))
    with pytest.raises(ConfigError) as exc:
        load(cfg)
    assert any("agent.loop" in str(p) for p in exc.value.problems)


def test_uvloop_missing_is_a_config_error_for_check_config_and_the_agent(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, free_port())
    cfg.write_text(cfg.read_text().replace("heartbeat_s: 1}", "heartbeat_s: 1, loop: uvloop}"))
    hide = tmp_path / "hide"  # first on the path: `import uvloop` fails as it does where the extra is not installed
    hide.mkdir()
    (hide / "uvloop.py").write_text("raise ImportError('No module named uvloop')\n")
    env = {"PYTHONPATH": f"{hide}:{ROOT}", "PATH": "/usr/bin:/bin"}

    def slawatch(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "slawatch.cli", *args], capture_output=True, text=True,
                              timeout=60, env=env, cwd=tmp_path)

    check = slawatch("check-config", str(cfg))
    assert check.returncode == 2, check.stderr
    assert "agent.loop" in check.stderr and "pip install 'slawatch[uvloop]'" in check.stderr
    agent = slawatch("agent", "--config", str(cfg))
    assert agent.returncode == 2, agent.stderr
    assert "pip install 'slawatch[uvloop]'" in agent.stderr
    assert not (tmp_path / "spool").exists()  # refused before anything was opened
    env["PYTHONPATH"] = str(ROOT)
    assert slawatch("check-config", str(cfg)).returncode == 0  # with uvloop importable the same file passes


class SipResponder(asyncio.DatagramProtocol):
    """Answers every SIP request over UDP with 200 OK, echoing the headers that tie the answer to it."""

    transport: asyncio.DatagramTransport

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)  # uvloop's is not a subclass of asyncio's

    def datagram_received(self, data: bytes, addr: tuple[str | int, ...]) -> None:
        lines = data.decode().split("\r\n")
        keep = [h for h in lines if h.split(":", 1)[0].lower() in ("via", "from", "to", "call-id", "cseq")]
        keep = [h + ";tag=t" if h.lower().startswith("to:") else h for h in keep]
        self.transport.sendto(("SIP/2.0 200 OK\r\n" + "\r\n".join(keep) + "\r\nContent-Length: 0\r\n\r\n").encode(),
                              addr)


async def probe_on_this_loop(tmp_path: Path) -> list[tuple[object, ...]]:
    """The real agent for ~1.5 s against a TCP listener, a SIP responder and ICMP to loopback; its stored runs."""

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    transport, _ = await asyncio.get_running_loop().create_datagram_endpoint(SipResponder,
                                                                             local_addr=("127.0.0.1", 0))
    try:
        tcp_port, sip_port = server.sockets[0].getsockname()[1], transport.get_extra_info("sockname")[1]
        sip = f'{{kind: sip, target: "sip:127.0.0.1:{sip_port}"}}'
        icmp = '{kind: icmp, target: "127.0.0.1", count: 1}'
        extra = (f"  - {{name: pbx, class: sip, tier: gold, probes: [{sip}]}}\n"
                 + (f"  - {{name: gw, class: network, tier: gold, probes: [{icmp}]}}\n" if may_ping() else ""))
        agent = build_agent(load(write_config(tmp_path, tcp_port, interval=0.25, extra_components=extra)))
        stop = asyncio.Event()
        task = asyncio.create_task(agent.run(stop))
        await asyncio.sleep(1.5)
        stop.set()
        await asyncio.wait_for(task, 15)
    finally:
        transport.close()
        server.close()
        await server.wait_closed()
    with sqlite3.connect(tmp_path / "store.db") as db:
        return db.execute("SELECT kind, outcome, count(*) FROM slawatch_probe GROUP BY kind, outcome").fetchall()


@pytest.mark.timeout(30)
def test_the_agent_probes_tcp_sip_and_icmp_on_uvloop(tmp_path: Path) -> None:
    rows = run_on("uvloop", lambda: probe_on_this_loop(tmp_path))
    kinds = {"tcp", "sip", "icmp"} if may_ping() else {"tcp", "sip"}
    assert {k for k, _, _ in rows} == kinds
    assert all(outcome == "up" and int(str(n)) >= 3 for _, outcome, n in rows), rows


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_a_refused_connect_reads_the_same_on_both_loops(loop: str) -> None:
    closed = free_port()  # nothing listens there
    settings = TcpProbe(kind="tcp", target=f"127.0.0.1:{closed}", timeout_s=2.0)
    sip = SipProbe(kind="sip", target=f"sip:127.0.0.1:{closed}", transport="tcp", timeout_s=2.0)
    assert run_on(loop, lambda: run_probe(settings)).result == Result(Outcome.REFUSED, "connection refused")
    assert run_on(loop, lambda: run_probe(sip)).result == Result(
        Outcome.REFUSED, f"connection refused by TCP 127.0.0.1:{closed}")


@pytest.mark.parametrize("loop", ["asyncio", "uvloop"])
def test_the_http_probe_runs_on_both_loops(loop: str) -> None:
    """uvloop's transports are not asyncio's classes: the HTTP client must take any transport."""

    async def probe() -> Result:
        async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
            await writer.drain()
            writer.close()

        server = await asyncio.start_server(answer, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        try:
            settings = HttpProbe(kind="http", target=f"http://127.0.0.1:{port}/health", expect_body="ok",
                                 timeout_s=2.0)
            return (await run_probe(settings)).result
        finally:
            server.close()
            await server.wait_closed()

    assert run_on(loop, probe).outcome == Outcome.UP

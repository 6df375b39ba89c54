"""What the snmp and ups probe tests share: snmpsim on the recordings, a garbage-answering peer, the state reset."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from agent.probes import snmp, snmpclient
from slawatch.testing import snmp as snmppeer
from slawatch.testing.snmp import Sim

RECORDINGS = Path(__file__).resolve().parents[1] / "fixtures" / "snmp"
SLACK_S = 0.1


@contextlib.contextmanager
def run_snmpsim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    """snmpsim serving tests/fixtures/snmp on loopback: the community is the recording's name."""
    with snmppeer.run_snmpsim(
            tmp_path_factory.mktemp("snmpsim"), RECORDINGS, "switch",
            # a v3 user, for the decryption-error report (snmpsim serves v3 data only under a context name)
            ["--v3-user=slawatch", "--v3-auth-key=authkey123", "--v3-auth-proto=SHA",
             "--v3-priv-key=privkey123", "--v3-priv-proto=AES"]) as sim:
        yield sim


@pytest.fixture(autouse=True)
async def fresh_snmp_state() -> AsyncIterator[None]:
    snmp.LAST_UPTIME.clear()
    yield
    await snmpclient.close()  # pytest gives each test its own loop: close that loop's engine sockets



# A constructed context tag where pysnmp expects a SEQUENCE: pyasn1 raises TypeError from inside pysnmp's receive
# callback, which once reached the event loop's exception handler (a traceback in the log).
DECODER_CRASH = bytes.fromhex("b700")


class Garbage(asyncio.DatagramProtocol):
    """Answers each request with the datagrams `answer(request)` makes."""

    def __init__(self, answer: Callable[[bytes], list[bytes]]) -> None:
        self.answer = answer
        self.transport: asyncio.DatagramTransport | None = None
        self.received = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.received += 1
        assert self.transport is not None
        for datagram in self.answer(data):
            self.transport.sendto(datagram, addr)


@contextlib.asynccontextmanager
async def garbage_peer(answer: Callable[[bytes], list[bytes]]) -> AsyncIterator[str]:
    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(lambda: Garbage(answer), local_addr=("127.0.0.1", 0))
    try:
        await snmpclient.warm()  # the deadline is for the peer, not for building the engine
        yield f"127.0.0.1:{transport.get_extra_info('sockname')[1]}"
    finally:
        transport.close()


def assert_no_traceback(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info] == []
    assert "Traceback" not in capsys.readouterr().err

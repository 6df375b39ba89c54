"""Address literals resolve locally, names go to the resolver."""

from __future__ import annotations

import socket

import pytest

from agent.probes.address import literal, resolve


@pytest.mark.parametrize(("host", "kind", "expected"), [
    ("127.0.0.1", socket.SOCK_STREAM, [(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP, "",
                                        ("127.0.0.1", 80))]),
    ("::1", socket.SOCK_DGRAM, [(socket.AF_INET6, socket.SOCK_DGRAM, socket.IPPROTO_UDP, "", ("::1", 80, 0, 0))]),
    ("localhost", socket.SOCK_STREAM, None),
    ("fe80::1%lo", socket.SOCK_STREAM, None),
    ("300.1.1.1", socket.SOCK_STREAM, None),
])
def test_literal(host: str, kind: socket.SocketKind, expected: object) -> None:
    assert literal(host, 80, kind) == expected


@pytest.mark.parametrize("host", ["127.0.0.1", "::1"])
async def test_literal_matches_the_system_resolver(host: str) -> None:
    mine = await resolve(host, 5060, socket.SOCK_DGRAM)
    system = socket.getaddrinfo(host, 5060, type=socket.SOCK_DGRAM)
    assert [(f, t, a) for f, t, _, _, a in mine] == [(f, t, a) for f, t, _, _, a in system]

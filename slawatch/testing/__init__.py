"""Real local peers for the tests and the benchmarks: servers on loopback ports, started from plain Python.

Nothing here needs a test runner. What a peer needs and does not find (a binary, root, an IPv6 loopback) raises
`PeerMissing` with the reason: pytest turns it into a skip (a failure under CI=true), a script exits with it.
"""

from __future__ import annotations

import os
import shutil
import socket

# Binaries that are servers the tests start, and the name a test's `peer` marker gives each.
SERVERS = {
    "influxd": "influxd",
    "victoria-metrics": "victoria-metrics",
    "sipp": "sipp",
    "kamailio": "kamailio",
    "snmpd": "snmpd",
    "snmpsim-command-responder": "snmpsim",
    "haproxy": "haproxy",
    "dnsmasq": "dnsmasq",
    "unbound": "unbound",
    "postgres": "postgresql",
    "pg_ctl": "postgresql",
    "prometheus": "prometheus",
    "prometheus-blackbox-exporter": "blackbox_exporter",
    "chromium": "chromium",
}


class PeerMissing(RuntimeError):
    """A real peer this machine does not have; `server` is its peer name when it is one of SERVERS."""

    def __init__(self, reason: str, server: str | None = None) -> None:
        super().__init__(reason)
        self.reason = reason
        self.server = server


def need(condition: bool, reason: str) -> None:
    """Raise PeerMissing(reason) unless `condition` holds."""
    if not condition:
        raise PeerMissing(reason)


def need_binary(name: str, package: str) -> str:
    """The path of `name` (on PATH or in /usr/sbin, /usr/bin), or PeerMissing naming the Debian package."""
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    if path is None:
        raise PeerMissing(f"{name} not found (apt-get install -y {package})", SERVERS.get(name))
    return path


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    """A port the kernel just handed out on `host` (TCP by default), free again for a server to bind."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


__all__ = ["SERVERS", "PeerMissing", "free_port", "need", "need_binary"]

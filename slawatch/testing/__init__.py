"""Real local peers for the tests and the benchmarks: servers on loopback ports, started from plain Python.

Nothing here needs a test runner. What a peer needs and does not find (a binary, root, an IPv6 loopback) raises
`PeerMissing` with the reason: pytest turns it into a skip (a failure under CI=true), a script exits with it.
"""

from __future__ import annotations

import os
import random
import shutil
import socket
from pathlib import Path

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
    """A port free on `host` (TCP by default) for a server to bind, taken below the kernel's ephemeral range.

    Outside that range, no outgoing connection is given the port as its own while the server is not listening yet
    (a store started only after an outage, an agent's `/metrics` before it binds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    low = _ephemeral_low()
    for _ in range(100):
        port = random.randrange(20000, low) if low > 21000 else 0
        with socket.socket(family, kind) as s:
            try:
                s.bind((host, port))
            except OSError:
                continue
            return int(s.getsockname()[1])
    raise PeerMissing(f"no free port on {host}")


def _ephemeral_low() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 0


__all__ = ["SERVERS", "PeerMissing", "free_port", "need", "need_binary"]

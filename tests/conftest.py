"""Shared test helpers: real local peers, and the rule that CI never skips a real-server test."""

from __future__ import annotations

import os
import shutil
import socket

import pytest

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


def need(condition: bool, reason: str) -> None:
    """Skip with the reason when a real peer is missing; fail instead under CI=true."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI=true and a required peer is missing: {reason}", pytrace=False)
    pytest.skip(reason)


def need_binary(name: str, package: str) -> str:
    path = shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.path.exists(p)), None)
    need(path is not None, f"{name} not found (apt-get install -y {package})")
    assert path is not None
    return path


def free_port(kind: int = socket.SOCK_STREAM, host: str = "127.0.0.1") -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, kind) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])

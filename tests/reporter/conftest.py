"""Fixtures for the reporter tests: a real SMTP server on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from aiosmtpd.controller import Controller

from slawatch.testing import free_port
from tests.reporter.smtpd import Handler, Smtpd


@pytest.fixture
def smtpd() -> Iterator[Smtpd]:
    handler = Handler()
    port = free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port)
    controller.start()
    try:
        yield Smtpd(port, handler)
    finally:
        controller.stop()

"""A real SMTP server on loopback (aiosmtpd in its own thread) that keeps what it receives and can be stopped and
started again on the same port, for the notification tests and benchmarks."""

from __future__ import annotations

import email
import email.policy
import threading
import time
from dataclasses import dataclass, field
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from slawatch.testing import free_port


@dataclass(frozen=True, slots=True)
class Mail:
    at: float  # time.time() when the server accepted it
    mail_from: str
    rcpt_tos: tuple[str, ...]
    message: EmailMessage

    @property
    def subject(self) -> str:
        return str(self.message["Subject"])

    @property
    def text(self) -> str:
        part = self.message.get_body(("plain",))
        return "" if part is None else str(part.get_content())


@dataclass
class _Handler:
    received: list[Mail] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        msg = email.message_from_bytes(envelope.original_content, policy=email.policy.default)
        assert isinstance(msg, EmailMessage)
        with self.lock:
            self.received.append(Mail(time.time(), envelope.mail_from, tuple(envelope.rcpt_tos), msg))
        return "250 Message accepted for delivery"


class SmtpServer:
    """aiosmtpd on 127.0.0.1:`port` (one the kernel picks by default). `stop()` makes connections refused;
    `start()` again listens on the same port; `received` keeps every mail across restarts."""

    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self._handler = _Handler()
        self._controller: Controller | None = None

    @property
    def received(self) -> list[Mail]:
        with self._handler.lock:
            return list(self._handler.received)

    def start(self) -> SmtpServer:
        if self._controller is None:
            controller = Controller(self._handler, hostname="127.0.0.1", port=self.port)
            controller.start()
            self._controller = controller
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()

    def __enter__(self) -> SmtpServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

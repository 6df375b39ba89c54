"""SMTP AUTH sends the password only over TLS, unless the config says a plain connection is acceptable."""

from __future__ import annotations

from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword

from reporter.mail import MailError, send_message
from slawatch.config.loader import ConfigError, bundled_contract, load
from slawatch.config.settings import SmtpSettings
from slawatch.testing import free_port
from tests.reporter.smtpd import Handler


class Logins:
    """An authenticator that records every login the server receives."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def __call__(self, server: Any, session: Any, envelope: Any, mechanism: str, data: Any) -> AuthResult:
        assert isinstance(data, LoginPassword)
        self.seen.append((data.login.decode(), data.password.decode()))
        return AuthResult(success=True)


@pytest.fixture
def plain_auth_server() -> Iterator[tuple[int, Handler, Logins]]:
    """A server that offers AUTH without TLS, as a careless relay would."""
    handler, logins, port = Handler(), Logins(), free_port()
    controller = Controller(handler, hostname="127.0.0.1", port=port, authenticator=logins,
                            auth_require_tls=False)
    controller.start()
    try:
        yield port, handler, logins
    finally:
        controller.stop()


def message() -> EmailMessage:
    msg = EmailMessage()
    msg["Subject"], msg["From"], msg["To"] = "test", "slawatch@provider.example", "noc@acme.example"
    msg.set_content("hello")
    return msg


def smtp_config(tmp_path: Path, port: int, extra: str) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""contract: {bundled_contract()}
report:
  smtp: {{host: 127.0.0.1, port: {port}, username: slawatch, password: "${{SMTP_PW}}"{extra}}}
""")
    return cfg


def test_auth_over_a_plain_connection_is_a_config_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(smtp_config(tmp_path, 25, ""), {"SMTP_PW": "pw-in-clear"})
    text = str(info.value)
    assert "report.smtp: SMTP AUTH over an unencrypted connection would send the password in clear text" in text
    assert "pw-in-clear" not in text


async def test_send_refuses_auth_without_tls_and_the_server_sees_nothing(
        plain_auth_server: tuple[int, Handler, Logins]) -> None:
    port, handler, logins = plain_auth_server
    # settings made in code, past the config check
    smtp = SmtpSettings.model_construct(host="127.0.0.1", port=port, username="slawatch",
                                        password=None, starttls=False, ssl=False, timeout_s=5.0,
                                        allow_plaintext_auth=False)
    with pytest.raises(MailError, match=f"SMTP 127.0.0.1:{port}: refusing to send the password over an "
                                        "unencrypted connection"):
        await send_message(message(), smtp)
    assert logins.seen == [] and handler.received == []


async def test_allow_plaintext_auth_sends_with_auth(tmp_path: Path,
                                                    plain_auth_server: tuple[int, Handler, Logins]) -> None:
    port, handler, logins = plain_auth_server
    loaded = load(smtp_config(tmp_path, port, ", allow_plaintext_auth: true"), {"SMTP_PW": "local-relay-pw"})
    smtp = loaded.config.report.smtp
    assert smtp is not None
    assert await send_message(message(), smtp) == []
    assert logins.seen == [("slawatch", "local-relay-pw")]
    assert [r.rcpt_tos for r in handler.received] == [["noc@acme.example"]]


async def test_starttls_is_never_skipped_for_a_server_without_it(
        tmp_path: Path, plain_auth_server: tuple[int, Handler, Logins]) -> None:
    port, handler, logins = plain_auth_server
    loaded = load(smtp_config(tmp_path, port, ", starttls: true"), {"SMTP_PW": "pw"})
    smtp = loaded.config.report.smtp
    assert smtp is not None
    with pytest.raises(MailError, match=f"SMTP 127.0.0.1:{port}"):
        await send_message(message(), smtp)
    assert logins.seen == [] and handler.received == []

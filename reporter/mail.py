"""The report email: built as an EmailMessage apart from sending it, sent over SMTP with aiosmtplib."""

from __future__ import annotations

import email.utils
from collections.abc import Sequence
from email.message import EmailMessage

import aiosmtplib

from reporter.periods import from_ms
from reporter.render import render_csv, render_html, render_text
from reporter.report import Report
from slawatch.config.settings import SmtpSettings


class MailError(Exception):
    """The report could not be sent; the message says why (server reply, refused connection...)."""


def subject(report: Report, customer: str) -> str:
    return f"SLA availability report {report.label} — {customer}"


def attachment_name(report: Report, customer: str, ext: str = "csv") -> str:
    # A custom range label holds ':' and '/', which mail clients and file systems dislike.
    key = report.label.replace(":", "").replace("/", "_")
    return f"slawatch-{customer}-{key}.{ext}"


def build_message(
    report: Report,
    customer: str,
    recipients: Sequence[str],
    sender: str,
    *,
    now_ms: int,
    html: str | None = None,
    text: str | None = None,
    csv: str | None = None,
    pdf: bytes | None = None,
) -> EmailMessage:
    """One customer's report: text body, HTML alternative, the CSV attached, and the PDF (reporter.pdf) beside it
    when given. Pure: no clock, no network."""
    if not recipients:
        raise ValueError(f"customer {customer!r} has no report_to address")
    msg = EmailMessage()
    msg["Subject"] = subject(report, customer)
    msg["From"] = sender
    msg["To"] = ", ".join(recipients)
    msg["Date"] = email.utils.format_datetime(from_ms(now_ms))
    domain = sender.rpartition("@")[2] or "localhost"
    msg["Message-ID"] = f"<slawatch.{report.inputs_sha256[:16]}.{customer}.{now_ms}@{domain}>"
    msg["X-Slawatch-Inputs-SHA256"] = report.inputs_sha256
    msg.set_content(text if text is not None else render_text(report))
    msg.add_alternative(html if html is not None else render_html(report), subtype="html")
    msg.add_attachment((csv if csv is not None else render_csv(report)).encode("utf-8"), maintype="text",
                       subtype="csv", filename=attachment_name(report, customer))
    if pdf is not None:
        msg.add_attachment(pdf, maintype="application", subtype="pdf",
                           filename=attachment_name(report, customer, "pdf"))
    return msg


async def send_message(msg: EmailMessage, smtp: SmtpSettings) -> list[str]:
    """Send over SMTP as configured (implicit TLS, STARTTLS, auth); MailError with the reason on failure.

    Returns the recipients the server refused while accepting others ("addr: 550 reason"), usually [].
    """
    password = smtp.password.get_secret_value() if smtp.password is not None else None
    if (smtp.username is not None or password is not None) and not (
            smtp.ssl or smtp.starttls or smtp.allow_plaintext_auth):
        raise MailError(f"SMTP {smtp.host}:{smtp.port}: refusing to send the password over an unencrypted "
                        "connection (set starttls or ssl, or allow_plaintext_auth for a trusted local relay)")
    try:
        errors, _ = await aiosmtplib.send(
            msg,
            hostname=smtp.host,
            port=smtp.port,
            use_tls=smtp.ssl,
            start_tls=smtp.starttls,
            username=smtp.username,
            password=password,
            timeout=smtp.timeout_s,
        )
    except aiosmtplib.SMTPRecipientsRefused as exc:
        refused = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in exc.recipients)
        raise MailError(f"SMTP {smtp.host}:{smtp.port} refused the recipients ({refused})") from exc
    except aiosmtplib.SMTPResponseException as exc:
        raise MailError(f"SMTP {smtp.host}:{smtp.port} answered {exc.code} {exc.message}") from exc
    except (aiosmtplib.SMTPException, OSError) as exc:
        raise MailError(f"SMTP {smtp.host}:{smtp.port}: {exc}") from exc
    return [f"{addr}: {resp.code} {resp.message}" for addr, resp in sorted(errors.items())]

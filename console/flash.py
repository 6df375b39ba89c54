"""A message for the next page a user sees (after a form's POST and its redirect), kept in the session."""

from __future__ import annotations

from dataclasses import dataclass

from aiohttp_session import Session

KEY = "flash"
MAX_CHARS = 1000  # the session is a cookie: a long ActionError or store error is cut


@dataclass(frozen=True, slots=True)
class Flash:
    ok: bool
    text: str


def put(session: Session, ok: bool, text: str) -> None:
    session[KEY] = {"ok": ok, "text": text[:MAX_CHARS]}


def take(session: Session) -> Flash | None:
    """The message left for this page, removed from the session (it is shown once)."""
    doc = session.pop(KEY, None)
    if not isinstance(doc, dict) or not isinstance(doc.get("text"), str):
        return None
    return Flash(bool(doc.get("ok")), doc["text"])

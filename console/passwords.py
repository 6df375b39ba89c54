"""Argon2 password hashes for console accounts (argon2-cffi); verifying runs off the event loop."""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

MIN_LENGTH = 8
MAX_LENGTH = 1024
_HASHER = PasswordHasher()  # immutable parameters (RFC 9106 low-memory profile): no state is shared through it
# Verified when the user does not exist, so that an unknown name takes as long as a wrong password.
_DUMMY = "$argon2id$v=19$m=65536,t=3,p=4$+dzBge436R8DhCcQIlfb9w$ODmVH3jcbmjiqC+Euh2cGPwoEE9sS8TL8f+AxNZZ5LQ"


class PasswordError(ValueError):
    """A password that cannot be used (too short or too long); the message says why, never what it was."""


def check(password: str) -> None:
    if len(password) < MIN_LENGTH:
        raise PasswordError(f"the password must have at least {MIN_LENGTH} characters")
    if len(password) > MAX_LENGTH:
        raise PasswordError(f"the password must have at most {MAX_LENGTH} characters")


def hash_password(password: str) -> str:
    check(password)
    return _HASHER.hash(password)


def verify(password_hash: str | None, password: str) -> bool:
    """Whether `password` matches; with no hash (unknown user) the work is done all the same, and False."""
    if len(password) > MAX_LENGTH:
        return False
    try:
        return _HASHER.verify(password_hash or _DUMMY, password) and password_hash is not None
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False


async def verify_async(password_hash: str | None, password: str) -> bool:
    # Argon2 takes tens of milliseconds of CPU by design: in a thread, so that probing is not held up.
    return await asyncio.to_thread(verify, password_hash, password)

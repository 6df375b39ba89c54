"""Debian's chromium driven by Playwright for the console's browser tests (headless, nothing downloaded)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from slawatch.testing import need_binary

CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


@asynccontextmanager
async def chromium() -> AsyncIterator[object]:
    """A headless chromium (PeerMissing, so the test skips or fails in CI, when it is not installed)."""
    binary = need_binary("chromium", "chromium")
    from playwright.async_api import async_playwright  # only when chromium is there: the test skips before

    async with async_playwright() as pw:
        b = await pw.chromium.launch(executable_path=binary, args=CHROMIUM_ARGS, headless=True)
        try:
            yield b
        finally:
            await b.close()

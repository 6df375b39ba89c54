"""Placeholder for `slawatch probe` until it lands."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the `probe` command (not yet)."""

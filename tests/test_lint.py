"""The code passes `ruff check` and `mypy --strict` (slawatch/, agent/, reporter/, desk/ and console/)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.timeout(300)
def test_ruff() -> None:
    paths = ["slawatch", "agent", "reporter", "desk", "console", "tests", "bench", "grafana"]
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", *paths], cwd=ROOT, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.timeout(600)
def test_mypy_strict() -> None:
    packages = ["slawatch", "agent", "reporter", "desk", "console"]
    proc = subprocess.run([sys.executable, "-m", "mypy", "--strict", *packages], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr

"""The shipped systemd unit of `slawatch server` is valid for systemd and runs the real command."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from slawatch.testing import need

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "contrib" / "systemd" / "slawatch-server.service"


def test_server_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    need(analyze is not None, "systemd-analyze not found (apt-get install -y systemd)")
    assert analyze is not None
    slawatch = Path(sys.executable).parent / "slawatch"
    unit = tmp_path / "slawatch-server.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/slawatch", str(slawatch)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if "slawatch-server.service" in line]
    assert problems == [], problems


def test_server_unit_runs_the_server_without_capabilities() -> None:
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/slawatch server --config /etc/slawatch/config.yaml" in text
    assert "\nCapabilityBoundingSet=\n" in text
    assert "AmbientCapabilities" not in text
    assert "RestartPreventExitStatus=2" in text

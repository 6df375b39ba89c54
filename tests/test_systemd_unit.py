"""The shipped systemd unit is valid for systemd and runs the real commands."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

from slawatch.testing import need

ROOT = Path(__file__).resolve().parents[1]
UNIT = ROOT / "contrib" / "systemd" / "slawatch-agent.service"


def test_unit_verifies(tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    need(analyze is not None, "systemd-analyze not found (apt-get install -y systemd)")
    assert analyze is not None
    slawatch = Path(sys.executable).parent / "slawatch"
    unit = tmp_path / "slawatch-agent.service"
    unit.write_text(UNIT.read_text().replace("/usr/local/bin/slawatch", str(slawatch)))
    proc = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (proc.stdout + proc.stderr).splitlines() if "slawatch-agent.service" in line]
    assert problems == [], problems


def test_unit_commands_exist() -> None:
    text = UNIT.read_text()
    assert "ExecStart=/usr/local/bin/slawatch agent --config /etc/slawatch/config.yaml" in text
    assert "ExecReload=/bin/kill -HUP $MAINPID" in text
    assert "AmbientCapabilities=CAP_NET_RAW" in text

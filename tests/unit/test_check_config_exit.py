"""`slawatch check-config` run as a process ends without the interpreter's teardown: its output and exit code are
still exactly those of the command run in-process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slawatch.cli import main
from slawatch.config.loader import bundled_contract
from slawatch.testing import need

ROOT = Path(__file__).resolve().parents[2]


def _config(tmp_path: Path, n: int, bad: str = "") -> Path:
    rows = "".join(f"  - {{name: c{i}, class: san, tier: gold, probes: [{{kind: tcp, target: '127.0.0.1:9'}}]}}\n"
                   for i in range(n))
    path = tmp_path / "c.yaml"
    path.write_text(f"contract: {bundled_contract()}\ncomponents:\n{rows}{bad}")
    return path


def _run_to_files(tmp_path: Path, cfg: Path, *command: str) -> tuple[int, str, str]:
    """The command with stdout and stderr to regular files, buffered: what is not flushed before the end is lost."""
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}
    with out.open("wb") as o, err.open("wb") as e:
        code = subprocess.run([*command, "check-config", str(cfg)], cwd=ROOT, stdout=o, stderr=e,
                              stdin=subprocess.DEVNULL, timeout=60, env=env).returncode
    return code, out.read_text(), err.read_text()


@pytest.mark.parametrize("how", ["module", "script"])
def test_the_summary_and_exit_code_are_those_of_the_in_process_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], how: str) -> None:
    script = Path(sys.executable).with_name("slawatch")
    if how == "script":  # a missing script skips by hand and fails under CI=true, as a missing peer does
        need(script.exists(), f"no `slawatch` script beside this interpreter ({script}): pip install -e .")
    command = (sys.executable, "-m", "slawatch.cli") if how == "module" else (str(script),)
    cfg = _config(tmp_path, 300)
    assert main(["check-config", str(cfg)]) == 0  # in-process: returns, does not end the test's process
    expected = capsys.readouterr()
    assert "components: 300" in expected.out
    assert _run_to_files(tmp_path, cfg, *command) == (0, expected.out, expected.err)


def test_errors_and_their_exit_code_are_those_of_the_in_process_command(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = _config(tmp_path, 300, bad="  - {name: x, class: nope, tier: gold}\n")
    assert main(["check-config", str(cfg)]) == 2
    expected = capsys.readouterr()
    assert "c.yaml:303: components[300].probes: required key" in expected.err and expected.err.endswith(": 1 error\n")
    assert _run_to_files(tmp_path, cfg, sys.executable, "-m", "slawatch.cli") == (2, "", expected.err)

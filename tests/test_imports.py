"""The layout's import rules: the import-linter contracts in pyproject.toml, what `slawatch probe` loads, and
imports inside functions."""

from __future__ import annotations

import ast
import json
import shutil
import socket
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

pytestmark = pytest.mark.timeout(120)

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("agent", "reporter", "desk", "console", "slawatch")
LINTER = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
CONTRACTS = {c["id"]: c for c in LINTER["contracts"]}


def lint_imports(*contracts: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("lint-imports")
    command = str(exe) if exe.exists() else shutil.which("lint-imports")
    assert command is not None, "lint-imports not found: pip install -e '.[test]'"
    args = [command, "--no-cache", "--no-logo", *(a for c in contracts for a in ("--contract", c))]
    return subprocess.run(args, cwd=cwd, capture_output=True, text=True, timeout=100)


@pytest.mark.parametrize("contract", list(CONTRACTS))
def test_import_contract_is_kept(contract: str) -> None:
    proc = lint_imports(contract)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "KEPT" in proc.stdout and "BROKEN" not in proc.stdout


def test_the_kernel_contract_names_every_module_of_the_kernel() -> None:
    children = {f"slawatch.{p.stem}" for p in (ROOT / "slawatch").iterdir()
                if p.stem not in ("__init__", "__main__", "cli")
                and (p.suffix == ".py" or (p / "__init__.py").exists())}
    assert set(CONTRACTS["kernel"]["source_modules"]) == children


def test_contracts_catch_what_they_forbid(tmp_path: Path) -> None:
    """A copy of the tree with one wrong import per rule: each contract says so."""
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    wrong = {"pure-engines": ("agent/state.py", "import time"),
             "kernel": ("slawatch/model.py", "import agent.spool"),
             "kernel-root": ("slawatch/__init__.py", "import slawatch.cli"),
             "agent-reporter": ("agent/health.py", "import reporter.report"),
             "cli-on-top": ("reporter/render.py", "import slawatch.cli.usage"),
             "probe-kinds": ("agent/probes/haproxy.py", "import agent.probes.http"),
             "desk-beside": ("reporter/render.py", "import desk.incidents"),
             "desk-not-agent": ("desk/messages.py", "import agent.spool"),
             "console-beside": ("desk/messages.py", "import console.scope"),
             "console-not-agent": ("console/scope.py", "import agent.spool")}
    assert set(wrong) == set(CONTRACTS)
    for path, line in wrong.values():
        with open(tmp_path / path, "a", encoding="utf-8") as f:
            f.write(f"\n{line}  # noqa\n")
    for contract in wrong:
        proc = lint_imports(contract, cwd=tmp_path)
        assert proc.returncode == 1 and "BROKEN" in proc.stdout, (contract, proc.stdout + proc.stderr)


PROBE_RUN = """
import json, sys
from slawatch.cli import main
code = main(["probe", "tcp", sys.argv[1], "--timeout", "2"])
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def probe_imports() -> tuple[str, int, set[str]]:
    """What `slawatch probe tcp` printed, its exit code, and every module loaded by the end of the run."""
    with socket.socket() as s:  # a closed loopback port: the probe is refused at once
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.run([sys.executable, "-c", PROBE_RUN, f"127.0.0.1:{port}"], cwd=ROOT, capture_output=True,
                          text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    line, result = proc.stdout.splitlines()
    doc = json.loads(result)
    return line, doc["code"], set(doc["modules"])


@pytest.mark.parametrize("heavy", ["reporter", "aiosmtplib", "aiosqlite", "sqlite3", "apscheduler", "jinja2"])
def test_slawatch_probe_loads_no_reporter_nor_store_library(heavy: str) -> None:
    line, code, modules = probe_imports()
    assert line.startswith("CRITICAL - tcp 127.0.0.1:") and code == 2, line
    assert {"agent.probes.tcp", "slawatch.cli.probe"} <= modules  # the probe did run through the command
    loaded = sorted(m for m in modules if m == heavy or m.startswith(heavy + "."))
    assert not loaded, f"`slawatch probe tcp` imports {loaded}"


# Imports inside a function that carry no comment saying why: none (an entry here would have to be taken out once
# gone).
UNEXPLAINED: set[tuple[str, str]] = set()


def test_an_import_inside_a_function_says_why() -> None:
    """Lazy imports for start-up time are fine where a comment on the line or just above says so ("lazy",
    "start-up", "only when"); none may dodge a cycle."""
    found: set[tuple[str, str]] = set()
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            lines = path.read_text(encoding="utf-8").splitlines()
            for node in ast.walk(ast.parse("\n".join(lines))):
                if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    continue
                for inner in ast.walk(node):
                    if not isinstance(inner, ast.Import | ast.ImportFrom):
                        continue
                    comment = lines[inner.lineno - 1].partition("#")[2] + lines[inner.lineno - 2].partition("#")[2]
                    said = any(word in comment for word in ("lazy", "start-up", "only when"))
                    if not said:
                        name = inner.module if isinstance(inner, ast.ImportFrom) else inner.names[0].name
                        found.add((path.relative_to(ROOT).as_posix(), str(name)))
    assert found - UNEXPLAINED == set(), "an import inside a function without a comment saying why"
    assert UNEXPLAINED - found == set(), "gone: take these out of UNEXPLAINED"

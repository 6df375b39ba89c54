"""Where test helpers live and how they are imported, and the rule that a test starting a server is marked `peer`."""

from __future__ import annotations

import ast
import shutil
import signal
import time
from pathlib import Path

import pytest

from slawatch.testing.influxd import start_influxd

ROOT = Path(__file__).resolve().parents[1]

pytest_plugins = ("pytester",)


def imported_modules(path: Path, top_level_only: bool = False) -> list[tuple[int, str]]:
    """(line, module) of every import in `path`; relative imports are not used in this project."""
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    found: list[tuple[int, str]] = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.append((node.lineno, node.module))
    return found


def test_no_test_module_imports_a_test_module_or_a_conftest() -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: {module}"
           for path in sorted((ROOT / "tests").rglob("*.py"))
           for line, module in imported_modules(path)
           if module.rsplit(".", 1)[-1].startswith("test_") or module.rsplit(".", 1)[-1] == "conftest"
           or module in ("peers", "agentproc")]
    assert bad == []


def test_bench_imports_nothing_from_tests() -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: {module}"
           for path in sorted((ROOT / "bench").glob("*.py"))
           for line, module in imported_modules(path)
           if module == "tests" or module.startswith("tests.")]
    assert bad == []


def test_the_peer_helpers_need_no_test_runner_and_no_agent_or_reporter() -> None:
    bad = [f"{path.relative_to(ROOT)}:{line}: {module}"
           for path in sorted((ROOT / "slawatch" / "testing").glob("*.py"))
           for line, module in imported_modules(path, top_level_only=True)
           if module.split(".")[0] in ("pytest", "_pytest", "tests", "agent", "reporter")]
    assert bad == []


# ---------------------------------------------------------------- the peer marker is checked, so it cannot drift

CONFTEST = (ROOT / "tests" / "conftest.py").read_text(encoding="utf-8")
INI = """[pytest]
addopts = -p no:cacheprovider --strict-markers
markers = peer(name, ...): starts a real local server process
"""


def fake_server(directory: Path, name: str) -> Path:
    """An executable called like a server binary (the check goes by name) that exits at once."""
    path = directory / "bin" / name
    path.parent.mkdir(exist_ok=True)
    path.write_text("#!/bin/sh\nexit 0\n")
    path.chmod(0o755)
    return path


def run_inner(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch, source: str, *,
              ci: bool = False) -> pytest.RunResult:
    """Run `source` as a test module under a copy of tests/conftest.py, in a pytest of its own."""
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    pytester.makepyfile(test_inner=source)
    if ci:
        monkeypatch.setenv("CI", "true")
    else:
        monkeypatch.delenv("CI", raising=False)
    return pytester.runpytest_subprocess("-q", "-rfEs")


def test_starting_a_server_without_the_marker_fails_and_with_it_passes(pytester: pytest.Pytester,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    haproxy = fake_server(pytester.path, "haproxy")
    result = run_inner(pytester, monkeypatch, f"""
import subprocess
import pytest

def test_unmarked():
    subprocess.run([{str(haproxy)!r}], check=True)

@pytest.mark.peer("haproxy")
def test_marked():
    subprocess.run([{str(haproxy)!r}], check=True)

@pytest.mark.peer("influxd")
def test_marked_for_another_server():
    subprocess.run([{str(haproxy)!r}], check=True)

def test_a_tool_is_no_server():
    subprocess.run([{shutil.which("true") or "/bin/true"!r}], check=True)
""")
    result.assert_outcomes(passed=2, failed=2)
    result.stdout.fnmatch_lines(["*test_unmarked starts haproxy but is not marked @pytest.mark.peer('haproxy')*",
                                 "*test_marked_for_another_server starts haproxy but is not marked*"])


def test_a_test_using_a_server_fixture_someone_else_started_needs_the_marker_too(
        pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    haproxy = fake_server(pytester.path, "haproxy")
    result = run_inner(pytester, monkeypatch, f"""
import subprocess
import pytest

@pytest.fixture(scope="module")
def lb():
    subprocess.run([{str(haproxy)!r}], check=True)
    return 1

@pytest.mark.peer("haproxy")
def test_first(lb):
    pass

def test_second_unmarked(lb):
    pass

def test_without_it():
    pass
""")
    result.assert_outcomes(passed=2, errors=1)
    result.stdout.fnmatch_lines(["*test_second_unmarked uses fixture 'lb', which starts haproxy but is not marked*"])

def test_a_missing_peer_skips_and_fails_under_ci(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    source = """
import pytest
from slawatch.testing import need, need_binary

@pytest.mark.peer("sipp")
def test_marked():
    need_binary("sipp-that-is-not-installed-here", "sip-tester")

@pytest.mark.peer("kamailio")
def test_marked_missing_root():
    need(False, "needs root")

@pytest.fixture(scope="module")
def server():
    need_binary("influxd-that-is-not-installed-here", "influxdb")

@pytest.mark.peer("influxd")
def test_marked_fixture(server):
    pass
"""
    result = run_inner(pytester, monkeypatch, source)
    result.assert_outcomes(skipped=3)
    result.stdout.fnmatch_lines(["*sipp-that-is-not-installed-here not found (apt-get install -y sip-tester)*"])
    result = run_inner(pytester, monkeypatch, source, ci=True)
    result.assert_outcomes(failed=2, errors=1)
    result.stdout.fnmatch_lines(["*CI=true and a required peer is missing: needs root*"])


def test_a_missing_server_without_the_marker_fails(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> None:
    result = run_inner(pytester, monkeypatch, """
import pytest
from slawatch.testing import need_binary

def test_unmarked(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("os.path.exists", lambda p: False)
    need_binary("dnsmasq", "dnsmasq-base")

@pytest.mark.peer("dnsmasq")
def test_marked(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setattr("os.path.exists", lambda p: False)
    need_binary("dnsmasq", "dnsmasq-base")
""")
    result.assert_outcomes(failed=1, skipped=1)
    result.stdout.fnmatch_lines(["*test_unmarked needs dnsmasq but is not marked @pytest.mark.peer('dnsmasq')*"])


# ---------------------------------------------------------------- the influxd handle tests and bench/faults.py share


@pytest.mark.peer("influxd")
def test_influxd_handle_reads_series_stalls_and_stops_when_stalled(tmp_path: Path) -> None:
    server = start_influxd(tmp_path)
    try:
        server.query("CREATE DATABASE handle_test", method="POST")
        assert ["handle_test"] in server.series("SHOW DATABASES")[0]["values"]
        server.send_signal(signal.SIGSTOP)
        with pytest.raises(OSError):  # a stalled store: the connection is accepted, no answer comes
            server.series("SHOW DATABASES", timeout_s=0.5)
        server.send_signal(signal.SIGCONT)
        assert ["handle_test"] in server.series("SHOW DATABASES")[0]["values"]
        server.send_signal(signal.SIGSTOP)
        t0 = time.monotonic()
        server.stop()  # a stalled process is woken up to act on SIGTERM, not killed after the timeout
        assert time.monotonic() - t0 < 5.0
        assert server.proc is None
    finally:
        server.kill()

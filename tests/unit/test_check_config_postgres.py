"""check-config with the PostgreSQL store: a missing asyncpg or an unreadable password source is a located error,
the DSN is shown without secrets, and the password never appears."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from slawatch.cli.check_config import storage_problems
from slawatch.config.loader import bundled_contract, load

ROOT = Path(__file__).resolve().parents[2]
SECRET = "pg-hunter2-very-secret"


def config(tmp_path: Path, postgres: str) -> Path:
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"""
contract: {bundled_contract()}
storage:
  postgres: {{dsn: "postgresql://slawatch@db.example:5432/slawatch?sslmode=require", {postgres}}}
""")
    return cfg


def check(cfg: Path, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "slawatch.cli", "check-config", str(cfg)], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={"PATH": os.environ["PATH"], **env})


def test_a_readable_password_passes_and_is_never_shown(tmp_path: Path) -> None:
    proc = check(config(tmp_path, "password_env: PG_PW"), PG_PW=SECRET)
    assert proc.returncode == 0, proc.stderr
    assert "postgres postgresql://slawatch@db.example:5432/slawatch" in proc.stdout
    assert "records in postgres postgresql://slawatch@db.example:5432/slawatch" in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr and "sslmode" not in proc.stdout


def test_an_unset_password_variable_is_a_located_error(tmp_path: Path) -> None:
    cfg = config(tmp_path, "password_env: PG_PW")
    proc = check(cfg)
    assert proc.returncode == 2 and proc.stdout == ""
    assert f"{cfg}: storage.postgres.password_env: the environment variable PG_PW" in proc.stderr


def test_a_password_file_that_is_a_directory_is_a_located_error(tmp_path: Path) -> None:
    proc = check(config(tmp_path, f"password_file: {tmp_path}"))
    assert proc.returncode == 2 and "storage.postgres.password_file: cannot read" in proc.stderr


def test_a_password_file_that_is_not_one_is_refused_without_echoing_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope"
    proc = check(config(tmp_path, f"password_file: {missing}"))
    assert proc.returncode == 2
    assert f"storage.postgres.password_file: cannot read postgres.password_file {missing}" in proc.stderr
    big = tmp_path / "big"
    big.write_text(SECRET * 1000)
    proc = check(config(tmp_path, f"password_file: {big}"))
    assert proc.returncode == 2 and "not a password file" in proc.stderr and SECRET not in proc.stderr


def test_a_missing_asyncpg_is_a_located_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    loaded = load(config(tmp_path, "password_env: PG_PW"), {"PG_PW": SECRET})
    monkeypatch.setenv("PG_PW", SECRET)
    assert storage_problems(loaded) == []
    monkeypatch.setitem(sys.modules, "asyncpg", None)  # as if not installed
    (problem,) = storage_problems(loaded)
    assert problem[0] == "storage.postgres" and "needs the asyncpg library" in problem[1]
    assert "postgresql://slawatch@db.example:5432/slawatch" in problem[1] and SECRET not in problem[1]

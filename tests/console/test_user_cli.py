"""`slawatch user add|passwd|remove|list` and the account store, on real SQLite files."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

import pytest

from console.passwords import PasswordError, hash_password, verify
from slawatch.cli import main
from slawatch.cli.usage import EXIT_OK, EXIT_USAGE
from slawatch.config.loader import load
from slawatch.model import User
from slawatch.store import open_user_store
from slawatch.store.sqlite_users import SqliteUserStore
from tests.console.site import PASSWORD, write_config

pytestmark = pytest.mark.timeout(60)
ROOT = Path(__file__).resolve().parents[2]


def users_of(cfg: Path) -> list[User]:
    async def read() -> list[User]:
        store = open_user_store(load(cfg).config.storage)
        try:
            return await store.users()
        finally:
            await store.close()

    return asyncio.run(read())


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return write_config(tmp_path)


@pytest.fixture
def pw_file(tmp_path: Path) -> Path:
    f = tmp_path / "pw"
    f.write_text(PASSWORD + "\n")
    return f


def test_add_list_passwd_remove(cfg: Path, pw_file: Path, capsys: pytest.CaptureFixture[str],
                                monkeypatch: pytest.MonkeyPatch) -> None:
    assert main(["user", "list", "--config", str(cfg)]) == EXIT_OK
    assert "no console user yet: run `slawatch user add NAME --role admin" in capsys.readouterr().out

    assert main(["user", "add", "root", "--role", "admin", "--config", str(cfg), "--password-file", str(pw_file)]) == 0
    monkeypatch.setenv("NOC_PW", "another password")
    assert main(["user", "add", "acme-noc", "--role", "customer", "--customer", "acme", "--customer", "globex",
                 "--config", str(cfg), "--password-env", "NOC_PW"]) == EXIT_OK
    capsys.readouterr()
    assert main(["user", "list", "--config", str(cfg)]) == EXIT_OK
    out = capsys.readouterr().out
    assert out.splitlines() == ["acme-noc  customer  acme, globex", "root      admin"]
    assert PASSWORD not in out and "argon2" not in out

    root, noc = sorted(users_of(cfg), key=lambda u: u.name, reverse=True)
    assert verify(root.password_hash, PASSWORD) and root.password_hash.startswith("$argon2id$")
    assert verify(noc.password_hash, "another password") and noc.customers == ("acme", "globex")

    monkeypatch.setenv("NEW_PW", "a brand new one")
    assert main(["user", "passwd", "root", "--config", str(cfg), "--password-env", "NEW_PW"]) == EXIT_OK
    (root_after,) = [u for u in users_of(cfg) if u.name == "root"]
    assert verify(root_after.password_hash, "a brand new one") and not verify(root_after.password_hash, PASSWORD)
    assert root_after.role == "admin" and root_after.created_ms == root.created_ms

    assert main(["user", "passwd", "acme-noc", "--config", str(cfg), "--password-env", "NEW_PW",
                 "--role", "operator"]) == EXIT_OK
    (noc_after,) = [u for u in users_of(cfg) if u.name == "acme-noc"]
    assert (noc_after.role, noc_after.customers) == ("operator", ())

    assert main(["user", "remove", "acme-noc", "--config", str(cfg)]) == EXIT_OK
    assert [u.name for u in users_of(cfg)] == ["root"]


@pytest.mark.parametrize(("args", "message"), [
    (["add", "x", "--role", "customer"], "a customer account needs at least one --customer NAME"),
    (["add", "x", "--role", "customer", "--customer", "initech"], "unknown customer(s) initech"),
    (["add", "x", "--role", "operator", "--customer", "acme"], "--customer is for customer accounts"),
    (["add", " x", "--role", "admin"], "a user name is 1 to 64 printable characters"),
    (["passwd", "nobody"], "no user 'nobody'"),
    (["remove", "nobody"], "no user 'nobody'"),
])
def test_usage_errors(cfg: Path, pw_file: Path, capsys: pytest.CaptureFixture[str], args: list[str],
                      message: str) -> None:
    extra = ["--password-file", str(pw_file)] if args[0] in ("add", "passwd") else []
    assert main(["user", *args, "--config", str(cfg), *extra]) == EXIT_USAGE
    assert message in capsys.readouterr().err


def test_a_taken_name_a_short_password_and_no_terminal(cfg: Path, pw_file: Path, tmp_path: Path,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    add = ["user", "add", "root", "--role", "admin", "--config", str(cfg)]
    assert main([*add, "--password-file", str(pw_file)]) == EXIT_OK
    assert main([*add, "--password-file", str(pw_file)]) == EXIT_USAGE
    assert "user 'root' exists already" in capsys.readouterr().err
    short = tmp_path / "short"
    short.write_text("abc\n")
    assert main(["user", "add", "other", "--role", "admin", "--config", str(cfg), "--password-file", str(short)]) == 2
    err = capsys.readouterr().err
    assert "at least 8 characters" in err and "abc" not in err
    # No password option on the command line at all; without a terminal the prompt is refused, not read from stdin.
    proc = subprocess.run([sys.executable, "-m", "slawatch.cli", "user", "add", "third", "--role", "admin",
                           "--config", str(cfg)], cwd=ROOT, input=PASSWORD + "\n", capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == EXIT_USAGE and "use --password-file FILE or --password-env VAR" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "slawatch.cli", "user", "add", "third", "--role", "admin",
                           "--config", str(cfg), "--password", PASSWORD], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == EXIT_USAGE and "slawatch user add: error:" in proc.stderr
    assert [u.name for u in users_of(cfg)] == ["root"]


def test_passwords_are_checked_and_hashed() -> None:
    with pytest.raises(PasswordError):
        hash_password("short")
    with pytest.raises(PasswordError):
        hash_password("x" * 1025)
    h = hash_password(PASSWORD)
    assert h != hash_password(PASSWORD)  # salted
    assert verify(h, PASSWORD) and not verify(h, PASSWORD + "x") and not verify(None, PASSWORD)
    assert not verify("not a hash", PASSWORD)


async def test_the_account_store_on_sqlite(tmp_path: Path) -> None:
    a, b = SqliteUserStore(tmp_path / "r.db"), SqliteUserStore(tmp_path / "r.db")  # two processes, one file
    try:
        assert await a.count() == 0 and await a.users() == []
        u = User("ops", "customer", "$argon2id$x", ("acme", "ünï"), 10, 10)
        assert await a.add(u)
        assert not await b.add(u)
        assert await b.get("ops") == u and await b.count() == 1
        changed = User("ops", "operator", "$argon2id$y", (), 10, 20)
        assert await b.replace(changed)
        assert await a.get("ops") == changed
        assert not await a.replace(User("nobody", "admin", "h"))
        assert await a.remove("ops") and not await b.remove("ops")
        assert await b.get("ops") is None
    finally:
        await a.close()
        await b.close()

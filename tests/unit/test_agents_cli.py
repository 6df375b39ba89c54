"""`slawatch agents`: every lease, live or stale, with each live agent's expected share; Nagios-style exit codes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent.assign import owners
from slawatch.cli import main
from slawatch.cli.agent import overrides
from slawatch.config.loader import bundled_contract, load
from slawatch.model import AgentLease
from slawatch.store.sqlite_members import SqliteMemberStore
from slawatch.testing.agentproc import ROOT

COMPONENTS = [f"sip-{i}" for i in range(10)]


def config(tmp: Path) -> Path:
    cfg = tmp / "agents.yaml"
    comps = "".join(f"""
  - name: {c}
    class: sip
    customer: acme
    probes: [{{kind: tcp, target: "127.0.0.1:5060"}}]""" for c in COMPONENTS)
    cfg.write_text(f"""
agent: {{heartbeat_s: 6, assign: auto, replicas: 2}}
storage: {{sqlite: {{path: {tmp / 'store.db'}}}}}
contract: {bundled_contract()}
customers: [{{name: acme, tier: gold}}]
components:{comps}
""")
    return cfg


def renew(db: Path, *leases: AgentLease) -> None:
    async def run() -> None:
        store = SqliteMemberStore(db)
        for lease in leases:
            await store.renew(lease)
        await store.close()
    asyncio.run(run())


def lease(agent: str, assign: str = "auto") -> AgentLease:
    return AgentLease(agent, 0, 1, 6.0, "", "auto" if assign == "auto" else "static", 2, 5, "mon-1", "0.1.0")


def test_all_live_exit_0_with_shares(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    renew(tmp_path / "store.db", lease("a1"), lease("a2"), lease("a3"), lease("s1", "static"))
    assert main(["agents", "-c", str(cfg), "--format", "json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    expected = {a: sum(1 for c in COMPONENTS if a in owners(c, ["a1", "a2", "a3"], 2)) for a in ("a1", "a2", "a3")}
    got = {r["agent"]: r["expected"] for r in doc["agents"]}
    assert got == {**expected, "s1": len(COMPONENTS)}
    assert sum(expected.values()) == 2 * len(COMPONENTS)
    assert all(r["live"] for r in doc["agents"])
    assert main(["agents", "-c", str(cfg)]) == 0
    text = capsys.readouterr().out.splitlines()
    assert text[0].split() == ["AGENT", "STATE", "ZONE", "ASSIGN", "REPLICAS", "WATCHING", "SHARE", "SEEN", "HOST",
                               "VERSION"]
    assert text[1].split()[:7] == ["a1", "live", "-", "auto", "2", "5", str(expected["a1"])]


def test_stale_lease_is_a_warning_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    cfg = config(tmp_path)
    db = tmp_path / "store.db"
    renew(db, lease("a1"), lease("a2"))
    with sqlite3.connect(db) as conn:  # a2 last renewed a minute ago: stale after 4 s (2/3 of 6 s)
        conn.execute("UPDATE slawatch_agent SET seen_ms = ? WHERE agent = 'a2'", (int(time.time() * 1000) - 60_000,))
    assert main(["agents", "-c", str(cfg)]) == 1
    lines = capsys.readouterr().out.splitlines()
    assert lines[2].split()[:2] == ["a2", "STALE"]
    assert lines[2].split()[6] == "-"  # a stale agent has no share
    assert lines[1].split()[6] == str(len(COMPONENTS))  # a1 alone (fewer agents than replicas): everything


def test_no_leases_exit_0(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["agents", "-c", str(config(tmp_path))]) == 0
    assert "no agent" in capsys.readouterr().out


def test_bad_config_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent: {assign: sometimes}\n")
    assert main(["agents", "-c", str(bad)]) == 2
    assert "assign" in capsys.readouterr().err


def test_unreadable_store_exit_3(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("x")
    cfg = config(tmp_path)
    cfg.write_text(cfg.read_text().replace(f"path: {tmp_path / 'store.db'}", f"path: {tmp_path / 'file' / 'x.db'}"))
    assert main(["agents", "-c", str(cfg)]) == 3
    assert "UNKNOWN" in capsys.readouterr().err


def test_agent_overrides_are_validated(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    for flags, message in ((["--id", "bad id"], "--id"), (["--listen", "nowhere"], "--listen")):
        out = subprocess.run([sys.executable, "-m", "slawatch.cli", "agent", "-c", str(cfg), *flags],
                             cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert out.returncode == 2, out.stderr
        assert message in out.stderr


def test_overrides_apply_to_a_loaded_config(tmp_path: Path) -> None:
    loaded = load(config(tmp_path))
    overrides("mon-b", "127.0.0.1:9911", str(tmp_path / "spool-b"))(loaded)
    assert (loaded.config.agent.id, loaded.config.agent.listen) == ("mon-b", "127.0.0.1:9911")
    assert loaded.config.storage.spool.path == tmp_path / "spool-b"
    assert loaded.config.agent.assign == "auto" and loaded.config.agent.replicas == 2  # the rest is kept

"""`slawatch incident list|show|ack|pause|resume|priority|resolve` as a subprocess on a SQLite store in tmp_path,
with incidents raised there by the Desk on a fixed clock: the JSON shapes, the response clock, what each action
records and queues, and the refusals (exit 1 for an action that does not apply, 2 for an unknown incident or a bad
argument)."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from desk import incidents as steps
from desk.desk import Desk
from reporter.periods import parse_iso
from slawatch.cli.incident import _recipient, _scrubbed
from slawatch.config.loader import load
from slawatch.model import ComponentRef, Incident, IncidentEvent, IncidentState, Notification, StateChange
from slawatch.store.sqlite_desk import SqliteDeskStore

ROOT = Path(__file__).resolve().parents[2]
CONTRACT = ROOT / "config" / "contracts" / "priorities.yaml"
T0 = parse_iso("2026-06-01T10:00:00Z")  # a Monday, 11:00 in London: office hours
M = 60_000
SECRET = "hunter2"
NOC = "noc@provider.example"
ACME = ["ops@acme.example", f"json://hook:{SECRET}@127.0.0.1:9/incidents"]

PBX = ComponentRef("pbx", "sip", "gold", "acme")
SAN = ComponentRef("san1", "san", "base", "globex")
SWITCH = ComponentRef("sw1", "network", "base", "globex")

LIST_KEYS = {"id", "component", "customer", "class", "tier", "priority", "state", "fault", "since", "raised_at",
             "acknowledged_at", "acknowledged_by", "resolved_at", "response_s", "target_s", "deadline", "met",
             "remaining_s", "paused_s", "reason"}


def write_config(tmp_path: Path, store: Path) -> Path:
    path = tmp_path / "slawatch.yaml"
    path.write_text(f"""contract: {CONTRACT}
storage: {{sqlite: {{path: {store}}}}}
notify: {{noc: [{NOC}]}}
customers:
  - {{name: acme, tier: base, notify: {json.dumps(ACME)}}}
  - {{name: globex, tier: base}}
components:
  - {{name: pbx, class: sip, customer: acme, tier: gold, probes: [{{kind: tcp, target: "127.0.0.1:5060"}}]}}
  - {{name: san1, class: san, customer: globex, probes: [{{kind: tcp, target: "127.0.0.1:3260"}}]}}
  - {{name: sw1, class: network, customer: globex, probes: [{{kind: tcp, target: "127.0.0.1:22"}}]}}
""", encoding="utf-8")
    return path


@pytest.fixture
async def config(tmp_path: Path) -> Path:
    """Three incidents raised by the Desk: sw1 (raised T0-3h, recovered T0-2h: resolved), san1 (P2, raised T0-1h,
    acknowledged by bob at T0-50m) and pbx (P1, raised T0: open)."""
    return await raised(tmp_path, T0)


@pytest.fixture
async def live(tmp_path: Path) -> Path:
    """The same, pbx raised a minute ago: its response deadline is still ahead (the actions act at the real time)."""
    return await raised(tmp_path, time.time_ns() // 1_000_000 - M)


async def raised(tmp_path: Path, t0: int) -> Path:
    path = write_config(tmp_path, tmp_path / "slawatch.db")
    loaded = load(path)
    store = SqliteDeskStore(loaded.config.storage.records_path)
    now = [t0]
    desk = Desk(loaded, store, None, clock_ms=lambda: now[0])

    async def at(ms: int, change: StateChange | None = None) -> None:
        now[0] = ms
        if change is not None:
            desk.feed(change)
        await desk.pass_once()

    try:
        await at(t0 - 180 * M, StateChange(SWITCH, "a1", t0 - 181 * M, False, "TCP refused"))
        await at(t0 - 120 * M, StateChange(SWITCH, "a1", t0 - 120 * M, True, ""))
        await at(t0 - 60 * M, StateChange(SAN, "a1", t0 - 61 * M, False, "iSCSI timeout"))
        (san,) = [i for i in await store.active() if i.ref.component == "san1"]
        now[0] = t0 - 50 * M
        await desk.act(san.id, lambda i: steps.acknowledge(i, "bob", "looking", t0 - 50 * M))
        await at(t0, StateChange(PBX, "a1", t0 - M, False, "SIP 503 Service Unavailable"))
        assert len(await store.incidents()) == 3
    finally:
        await store.close()
    return path


def slawatch(*args: str, user: str = "ann") -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LOGNAME", "USER", "LNAME", "USERNAME")}
    env["LOGNAME"] = user  # getpass.getuser(): the default --by
    return subprocess.run([sys.executable, "-m", "slawatch.cli", "incident", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


def run(config: Path, *args: str, user: str = "ann") -> subprocess.CompletedProcess[str]:
    return slawatch(*args, "--config", str(config), user=user)


def ok_json(config: Path, *args: str) -> object:
    proc = run(config, *args, "--format", "json")
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def ids(config: Path) -> dict[str, str]:
    doc = ok_json(config, "list", "--all")
    assert isinstance(doc, list)
    return {row["component"]: row["id"] for row in doc}


def read(config: Path) -> SqliteDeskStore:
    return SqliteDeskStore(load(config).config.storage.records_path)


async def stored(config: Path, id: str) -> tuple[Incident, list[IncidentEvent], list[Notification]]:
    store = read(config)
    try:
        incident = await store.get(id)
        assert incident is not None
        return incident, await store.events(id), await store.notifications(id)
    finally:
        await store.close()


# ---------------------------------------------------------------- list


def test_list_json_gives_the_active_incidents_open_first_with_their_response_clock(config: Path) -> None:
    doc = ok_json(config, "list", "--now", "2026-06-01T10:05:00Z")
    assert isinstance(doc, list)
    assert [r["component"] for r in doc] == ["pbx", "san1"]  # open before acknowledged, though raised later
    assert all(set(r) == LIST_KEYS for r in doc)
    pbx, san = doc
    assert {k: pbx[k] for k in ("customer", "class", "tier", "priority", "state", "fault", "since", "raised_at",
                                "acknowledged_at", "acknowledged_by", "resolved_at", "reason")} == {
        "customer": "acme", "class": "sip", "tier": "gold", "priority": "P1", "state": "open", "fault": "down",
        "since": "2026-06-01T09:59:00Z", "raised_at": "2026-06-01T10:00:00Z", "acknowledged_at": None,
        "acknowledged_by": None, "resolved_at": None, "reason": "SIP 503 Service Unavailable"}
    # P1 in office hours: 15 minutes, from the raise (not from the fault's start a minute earlier).
    assert (pbx["response_s"], pbx["target_s"], pbx["deadline"], pbx["met"], pbx["remaining_s"]) == (
        300.0, 900.0, "2026-06-01T10:15:00Z", None, 600.0)
    assert pbx["id"].startswith("INC-2026-")
    assert (san["priority"], san["state"], san["acknowledged_by"], san["acknowledged_at"]) == (
        "P2", "acknowledged", "bob", "2026-06-01T09:10:00Z")
    assert (san["response_s"], san["target_s"], san["met"], san["remaining_s"]) == (600.0, 3600.0, True, None)


def test_list_all_adds_the_resolved_and_filters_narrow_it(config: Path) -> None:
    doc = ok_json(config, "list", "--all", "--now", "2026-06-01T10:05:00Z")
    assert isinstance(doc, list)
    assert [(r["component"], r["state"]) for r in doc] == [
        ("pbx", "open"), ("san1", "acknowledged"), ("sw1", "resolved")]
    sw = doc[2]
    assert (sw["resolved_at"], sw["met"], sw["remaining_s"], sw["acknowledged_at"]) == (
        "2026-06-01T08:00:00Z", None, None, None)
    globex = ok_json(config, "list", "--all", "--customer", "globex")
    assert isinstance(globex, list) and [r["component"] for r in globex] == ["san1", "sw1"]
    recent = ok_json(config, "list", "--all", "--since", "2026-06-01T09:00:00Z")
    assert isinstance(recent, list) and [r["component"] for r in recent] == ["pbx", "san1"]
    one = ok_json(config, "list", "--component", "san1")
    assert isinstance(one, list) and [r["component"] for r in one] == ["san1"]


def test_list_text_is_an_aligned_table(config: Path) -> None:
    proc = run(config, "list", "--now", "2026-06-01T10:20:00Z")
    assert proc.returncode == 0, proc.stderr
    header, pbx, san = proc.stdout.splitlines()
    assert header.split()[:5] == ["ID", "PRI", "STATE", "COMPONENT", "CUSTOMER"]
    assert header.index("REASON") == pbx.index("SIP 503") == san.index("iSCSI timeout")
    assert "2026-06-01 10:15" in pbx and "LATE by 5m" in pbx
    assert "10m, met" in san
    assert run(config, "list", "--customer", "nobody").stdout.startswith("no active incidents")


# ---------------------------------------------------------------- acting


def test_ack_records_the_login_name_and_comment_and_queues_a_notification_per_recipient(config: Path) -> None:
    pbx = ids(config)["pbx"]
    proc = run(config, "ack", pbx, "--comment", "on it, engineer dispatched")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{pbx} (pbx) acknowledged by ann: response ")
    assert proc.stdout.rstrip().endswith("; 3 notifications queued")
    incident, events, notes = asyncio.run(stored(config, pbx))
    assert incident.state is IncidentState.ACKNOWLEDGED and incident.acknowledged_by == "ann"
    last = events[-1]
    assert (last.action, last.actor, last.comment) == ("acknowledged", "ann", "on it, engineer dispatched")
    acks = [n for n in notes if n.kind == "ack"]
    assert sorted(n.recipient for n in acks) == sorted([NOC, *ACME])
    assert all(n.state == "pending" and n.id.startswith(f"{pbx}.{last.seq}.") for n in acks)


def test_ack_json_and_by(config: Path) -> None:
    pbx = ids(config)["pbx"]
    doc = ok_json(config, "ack", pbx.lower(), "--comment", "mine", "--by", "Dana Scully")
    assert isinstance(doc, dict)
    assert {k: doc[k] for k in ("id", "action", "actor", "comment", "notifications_queued")} == {
        "id": pbx, "action": "acknowledged", "actor": "Dana Scully", "comment": "mine", "notifications_queued": 3}
    assert set(doc["incident"]) == LIST_KEYS
    assert (doc["incident"]["state"], doc["incident"]["acknowledged_by"], doc["incident"]["met"]) == (
        "acknowledged", "Dana Scully", False)  # acknowledged months after a 15-minute target


def test_acting_twice_is_refused_with_exit_1_and_queues_nothing(config: Path) -> None:
    pbx = ids(config)["pbx"]
    assert run(config, "ack", pbx, "--comment", "first").returncode == 0
    _, events, notes = asyncio.run(stored(config, pbx))
    again = run(config, "ack", pbx, "--comment", "second", user="eve")
    assert again.returncode == 1 and again.stdout == ""
    assert f"{pbx} was already acknowledged by ann" in again.stderr
    assert asyncio.run(stored(config, pbx))[1:] == (events, notes)


def test_unknown_incident_and_bad_usage_exit_2(config: Path) -> None:
    for action in (("show",), ("ack", "--comment", "x"), ("pause", "--reason", "x"), ("resume",),
                   ("resolve", "--comment", "x"), ("priority", "P2", "--comment", "x")):
        proc = run(config, action[0], "INC-2026-999999", *action[1:])
        assert proc.returncode == 2, (action, proc.stderr)
        assert "no incident INC-2026-999999" in proc.stderr
    pbx = ids(config)["pbx"]
    blank = run(config, "ack", pbx, "--comment", "  ")
    assert blank.returncode == 2 and "--comment must say what is being done" in blank.stderr
    long = run(config, "resolve", pbx, "--comment", "x" * (steps.MAX_COMMENT_CHARS + 1))
    assert long.returncode == 2 and "too long" in long.stderr
    assert run(config, "ack", pbx).returncode == 2  # --comment is required
    assert run(config, "list", "--since", "2026-06-01 09:00").returncode == 2  # no UTC offset
    assert asyncio.run(stored(config, pbx))[0].state is IncidentState.OPEN


def test_pause_and_resume_stop_and_restart_the_clock(live: Path) -> None:
    config = live
    pbx = ids(config)["pbx"]
    before = ok_json(config, "list", "--component", "pbx")
    assert isinstance(before, list) and before[0]["deadline"] is not None and before[0]["remaining_s"] > 0
    paused = run(config, "pause", pbx, "--reason", "waiting for remote access", "--by", "carol")
    assert paused.returncode == 0, paused.stderr
    assert "paused by carol" in paused.stdout and "3 notifications queued" in paused.stdout
    twice = run(config, "pause", pbx, "--reason", "again")
    assert twice.returncode == 1 and "already paused" in twice.stderr
    row = ok_json(config, "list", "--component", "pbx")
    assert isinstance(row, list) and (row[0]["state"], row[0]["deadline"]) == ("paused", None)
    assert "paused" in run(config, "list").stdout
    resumed = ok_json(config, "resume", pbx, "--comment", "access granted")
    assert isinstance(resumed, dict) and resumed["incident"]["state"] == "open"
    # The deadline is back, pushed later by the time paused (not counted).
    assert resumed["incident"]["deadline"] > before[0]["deadline"] and resumed["incident"]["paused_s"] > 0
    assert resumed["notifications_queued"] == 3
    not_paused = run(config, "resume", pbx)
    assert not_paused.returncode == 1 and f"{pbx} is not paused" in not_paused.stderr
    doc = ok_json(config, "show", pbx)
    assert isinstance(doc, dict)
    (pause,) = doc["pauses"]
    assert pause["reason"] == "waiting for remote access" and pause["end"] is not None
    assert [(e["action"], e["actor"]) for e in doc["events"]] == [
        ("opened", "slawatch"), ("paused", "carol"), ("resumed", "ann")]


def test_priority_must_be_one_the_contract_knows(config: Path) -> None:
    pbx = ids(config)["pbx"]
    unknown = run(config, "priority", pbx, "P9", "--comment", "worse")
    assert unknown.returncode == 2
    assert "unknown priority 'P9' (the contract has P1, P2, P3)" in unknown.stderr
    same = run(config, "priority", pbx, "P1", "--comment", "same")
    assert same.returncode == 1 and f"{pbx} is already P1" in same.stderr
    changed = run(config, "priority", pbx, "p2", "--comment", "only one site affected")
    assert changed.returncode == 0, changed.stderr
    assert f"{pbx} (pbx) priority P1 -> P2 by ann" in changed.stdout
    doc = ok_json(config, "show", pbx, "--now", "2026-06-01T10:05:00Z")
    assert isinstance(doc, dict)
    assert (doc["priority"], doc["target_s"], doc["deadline"]) == ("P2", 3600.0, "2026-06-01T11:00:00Z")
    last = doc["events"][-1]
    assert (last["action"], last["actor"], last["comment"], last["detail"]) == (
        "priority", "ann", "only one site affected", {"old": "P1", "new": "P2"})
    assert [n["kind"] for n in doc["notifications"]].count("priority") == 3


def test_a_resolved_incident_cannot_be_paused_or_resolved_again(config: Path) -> None:
    pbx = ids(config)["pbx"]
    resolved = run(config, "resolve", pbx, "--comment", "replaced the PSU")
    assert resolved.returncode == 0, resolved.stderr
    assert f"{pbx} (pbx) resolved by ann, " in resolved.stdout
    for action in (("pause", "--reason", "x"), ("resolve", "--comment", "x"), ("ack", "--comment", "x"),
                   ("priority", "P2", "--comment", "x")):
        proc = run(config, action[0], pbx, *action[1:])
        assert proc.returncode == 1 and f"{pbx} is resolved" in proc.stderr, (action, proc.stderr)
    doc = ok_json(config, "show", pbx)
    assert isinstance(doc, dict)
    assert (doc["state"], doc["resolved_by"], doc["remaining_s"]) == ("resolved", "ann", None)
    assert [n["kind"] for n in doc["notifications"]].count("resolve") == 3
    active = ok_json(config, "list")
    assert isinstance(active, list) and [r["component"] for r in active] == ["san1"]


# ---------------------------------------------------------------- show


def test_show_gives_the_clock_the_event_log_and_the_notifications_without_secrets(config: Path) -> None:
    pbx = ids(config)["pbx"]
    assert run(config, "ack", pbx, "--comment", "on it").returncode == 0
    doc = ok_json(config, "show", pbx)
    assert isinstance(doc, dict)
    assert set(doc) >= LIST_KEYS and doc["ack_comment"] == "on it" and doc["agents"] == ["a1"]
    assert [(e["seq"], e["action"], e["actor"], e["comment"]) for e in doc["events"]] == [
        (1, "opened", "slawatch", ""), (2, "acknowledged", "ann", "on it")]
    assert doc["events"][0]["time"] == "2026-06-01T10:00:00Z"
    notes = doc["notifications"]
    assert [n["kind"] for n in notes] == ["open"] * 3 + ["ack"] * 3
    assert {n["recipient"] for n in notes} == {NOC, "ops@acme.example", "json://***@127.0.0.1:9/…"}
    assert all(set(n) >= {"recipient", "state", "attempts", "last_error"} for n in notes)
    assert {(n["state"], n["attempts"], n["last_error"]) for n in notes} == {("pending", 0, None)}
    text = run(config, "show", pbx)
    assert text.returncode == 0, text.stderr
    assert SECRET not in text.stdout and SECRET not in json.dumps(doc)
    lines = text.stdout.splitlines()
    assert lines[0] == f"{pbx}  pbx (customer acme, class sip, tier gold)"
    assert any(line.split()[:1] == ["acknowledged"] and line.endswith("UTC by ann: on it") for line in lines)
    events = lines.index("EVENTS")
    assert lines[events + 1].split() == ["SEQ", "TIME", "(UTC)", "ACTION", "ACTOR", "COMMENT"]
    assert lines[events + 2].split()[:5] == ["1", "2026-06-01", "10:00:00", "opened", "slawatch"]
    assert "json://***@127.0.0.1:9/…" in text.stdout


def test_a_store_not_yet_made_is_not_created_by_reading(tmp_path: Path) -> None:
    config = write_config(tmp_path, tmp_path / "later" / "slawatch.db")
    proc = run(config, "list")
    assert (proc.returncode, proc.stdout.strip()) == (0, "no active incidents (--all for the resolved ones too)")
    assert run(config, "list", "--format", "json").stdout.strip() == "[]"
    shown = run(config, "show", "INC-2026-000001")
    assert shown.returncode == 2 and "no incident INC-2026-000001" in shown.stderr
    assert run(config, "ack", "INC-2026-000001", "--comment", "x").returncode == 2
    assert not (tmp_path / "later").exists()


# ---------------------------------------------------------------- recipients as shown


@pytest.mark.parametrize(("recipient", "shown"), [
    ("noc@provider.example", "noc@provider.example"),
    ("json://user:pass@127.0.0.1:8080/hook?token=abc", "json://***@127.0.0.1:8080/…"),
    ("json://127.0.0.1:8080", "json://127.0.0.1:8080"),
    ("https://[::1]:8443/x", "https://[::1]:8443/…"),
    ("mailto://user:pw@smtp.example.com", "mailto://***@smtp.example.com"),
    ("slack://T1JJ3T3L2/A1BRTD4JD/TIiajkdnlazkcOXrIdevi7FQ/#ops", "slack://…"),
    ("tgram://123456789:AAHdqTcvCH1vGWJxfSeofSAs0K5PALDsaw/12345", "tgram://…"),
    ("form://host:notaport/x", "form://host/…"),
])
def test_recipients_are_shown_without_credentials_or_tokens(recipient: str, shown: str) -> None:
    assert _recipient(recipient) == shown


def test_delivery_errors_are_shown_without_the_credentials() -> None:
    to = "json://user:pass@127.0.0.1:9/hook"
    assert _scrubbed(f"POST {to} refused", to) == "POST json://***@127.0.0.1:9/… refused"
    assert _scrubbed("smtp://relay:secret@10.0.0.1 said 535", "ops@acme.example") == (
        "smtp://***@10.0.0.1 said 535")

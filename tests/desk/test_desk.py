"""The incident desk on a real SQLite store with a fixed clock: faults raise one incident each, recoveries resolve
them, flapping re-opens, degraded then down worsens, the quorum and maintenance decide, escalations repeat, and
every step queues its notifications in the outbox."""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from desk import incidents as steps
from desk.desk import Desk
from reporter.periods import parse_iso
from slawatch.config.loader import Loaded, load
from slawatch.model import ComponentRef, Incident, IncidentEvent, IncidentState, MaintenanceWindow, StateChange
from slawatch.store import DeskStore
from slawatch.store.sqlite import SqliteSink, SqliteSource
from slawatch.store.sqlite_desk import SqliteDeskStore
from tests.sinks.pg import pg_settings

ROOT = Path(__file__).resolve().parents[2]
T0 = parse_iso("2026-06-03T10:00:00Z")  # a Wednesday, 11:00 in London: office hours
MIN = 60_000

CONFIG = """
contract: contract.yaml
storage: {{sqlite: {{path: {db}}}}}
notify:
  noc: [noc@provider.example]
  console_url: https://noc.provider.example/console
  reopen_within: 10m
  escalation: {{to: [duty@provider.example], every: 10m, at_target_pct: [50, 100]}}
  {extra}
customers:
  - {{name: acme, tier: gold, notify: [ops@acme.example, "json://127.0.0.1:9/hook"]}}
components:
  - {{name: pbx-1, class: sip, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:5060"}}]}}
  - {{name: ups-1, class: power, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:3493"}}]}}
  - {{name: san-1, class: san, customer: acme, probes: [{{kind: tcp, target: "127.0.0.1:3260"}}]}}
"""


class Clock:
    def __init__(self, now_ms: int) -> None:
        self.now_ms = now_ms

    def __call__(self) -> int:
        return self.now_ms


def config(tmp_path: Path, extra: str = "") -> Loaded:
    shutil.copy(ROOT / "config" / "contracts" / "priorities.yaml", tmp_path / "contract.yaml")
    path = tmp_path / "slawatch.yaml"
    path.write_text(CONFIG.format(db=tmp_path / "s.db", extra=extra), encoding="utf-8")
    return load(path)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.peer("postgresql"))])
def open_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], DeskStore]:
    """Opens another object on the test's desk store (another process): the SQLite file, or PostgreSQL."""
    if request.param == "postgres":
        from slawatch.store.postgres import PostgresDeskStore

        settings = pg_settings(request.getfixturevalue("pg_dsn"))
        return lambda: PostgresDeskStore(settings)
    return lambda: SqliteDeskStore(tmp_path / "s.db")


@pytest.fixture
async def store(open_store: Callable[[], DeskStore]) -> AsyncIterator[DeskStore]:
    s = open_store()
    yield s
    await s.close()


def change(component: str, ts_ms: int, up: bool, reason: str = "", *, agent: str = "a1",
           degraded: bool = False, klass: str = "sip") -> StateChange:
    return StateChange(ComponentRef(component, klass, "gold", "acme"), agent, ts_ms, up, reason, degraded)


async def desk_at(tmp_path: Path, store: DeskStore, clock: Clock, extra: str = "") -> Desk:
    desk = Desk(config(tmp_path, extra), store, None, clock_ms=clock)
    await desk.load()
    return desk


async def test_a_fault_raises_one_incident_and_its_recovery_resolves_it(tmp_path: Path,
                                                                        store: DeskStore) -> None:
    clock = Clock(T0)
    desk = await desk_at(tmp_path, store, clock)
    desk.feed(change("pbx-1", T0 - 2 * MIN, False, "SIP 503 Service Unavailable"))
    await desk.pass_once()
    (incident,) = await store.incidents()
    assert incident.id == "INC-2026-000001" and incident.priority == "P1" and incident.fault == "down"
    assert (incident.start_ms, incident.raised_ms) == (T0 - 2 * MIN, T0)  # the clock starts at the raise
    assert incident.state is IncidentState.OPEN and incident.agents == ("a1",)
    opened = await store.notifications(incident.id)
    assert [n.recipient for n in opened] == ["noc@provider.example", "ops@acme.example", "json://127.0.0.1:9/hook"]
    data = json.loads(opened[0].data)
    assert data["deadline"] == "2026-06-03T10:15:00Z" and data["component"] == "pbx-1"
    assert data["url"] == "https://noc.provider.example/console/incidents/INC-2026-000001"
    assert "Respond by:" in opened[0].text and "SIP 503" in opened[0].text
    assert opened[0].subject == "[P1] DOWN: pbx-1 (acme) - INC-2026-000001"

    desk.feed(change("pbx-1", T0 - 2 * MIN, False, "SIP 503 Service Unavailable"))  # the same change again
    await desk.pass_once()
    clock.now_ms = T0 + 5 * MIN
    desk.feed(change("pbx-1", T0 + 4 * MIN, True))
    await desk.pass_once()
    (resolved,) = await store.incidents()
    assert resolved.state is IncidentState.RESOLVED and resolved.resolved_ms == T0 + 4 * MIN
    resolve = [n for n in await store.notifications(incident.id) if n.kind == "resolve"]
    assert len(resolve) == 3 and resolve[0].subject.endswith("after 6m - INC-2026-000001")
    assert json.loads(resolve[0].data)["duration_s"] == 360
    assert [e.action for e in await store.events(incident.id)] == ["opened", "resolved"]


async def test_a_restarted_desk_raises_nothing_twice(tmp_path: Path, store: DeskStore) -> None:
    clock = Clock(T0)
    first = await desk_at(tmp_path, store, clock)
    first.feed(change("pbx-1", T0 - MIN, False, "timeout"))
    await first.pass_once()
    again = await desk_at(tmp_path, store, clock)  # a restart: the same change comes back from the store
    again.feed(change("pbx-1", T0 - MIN, False, "timeout"))
    await again.pass_once()
    assert len(await store.incidents()) == 1 and len(await store.notifications()) == 3


async def test_failing_again_soon_after_recovery_reopens_the_same_incident(tmp_path: Path,
                                                                            store: DeskStore) -> None:
    clock = Clock(T0)
    desk = await desk_at(tmp_path, store, clock)
    for ts, up in ((T0, False), (T0 + MIN, True), (T0 + 5 * MIN, False)):
        clock.now_ms = ts + 30_000
        desk.feed(change("pbx-1", ts, up, "" if up else "refused"))
        await desk.pass_once()
    (incident,) = await store.incidents()
    assert incident.state is IncidentState.OPEN and incident.resolved_ms is None
    assert [e.action for e in await store.events(incident.id)] == ["opened", "resolved", "reopened"]
    reopen = [n.recipient for n in await store.notifications(incident.id) if n.kind == "reopen"]
    assert reopen == ["noc@provider.example"]  # flapping is the provider's business, not the customer's
    # Well after the recovery: a new incident.
    for ts, up in ((T0 + 6 * MIN, True), (T0 + 30 * MIN, False)):
        clock.now_ms = ts + 30_000
        desk.feed(change("pbx-1", ts, up, "" if up else "refused"))
        await desk.pass_once()
    assert [i.id for i in await store.incidents()] == ["INC-2026-000001", "INC-2026-000002"]


async def test_degraded_then_down_raises_one_incident_whose_priority_rises(tmp_path: Path,
                                                                           store: DeskStore) -> None:
    clock = Clock(T0)
    desk = await desk_at(tmp_path, store, clock)
    desk.feed(change("ups-1", T0, True, "on battery", degraded=True, klass="power"))
    await desk.pass_once()
    (incident,) = await store.incidents()
    assert (incident.fault, incident.priority) == ("degraded", "P3")
    clock.now_ms = T0 + 20 * MIN
    desk.feed(change("ups-1", T0 + 19 * MIN, False, "battery depleted", klass="power"))
    await desk.pass_once()
    (worse,) = await store.incidents()
    assert (worse.id, worse.fault, worse.priority, worse.raised_ms) == (incident.id, "down", "P1", T0)
    kinds = [n.kind for n in await store.notifications(incident.id)]
    assert kinds.count("open") == 3 and kinds.count("priority") == 3


async def test_the_quorum_decides_and_dates_the_fault(tmp_path: Path, store: DeskStore) -> None:
    clock = Clock(T0)
    desk = await desk_at(tmp_path, store, clock)
    for agent in ("a1", "a2", "a3"):
        desk.feed(change("pbx-1", T0 - 60 * MIN, True, agent=agent))
    desk.feed(change("pbx-1", T0 - 3 * MIN, False, "timeout", agent="a1"))
    await desk.pass_once()
    assert await store.incidents() == []  # one agent of three: its own network, perhaps
    desk.feed(change("pbx-1", T0 - MIN, False, "timeout", agent="a3"))
    await desk.pass_once()
    (incident,) = await store.incidents()
    assert incident.start_ms == T0 - MIN and incident.agents == ("a1", "a3")


async def test_announced_maintenance_raises_nothing_and_late_notice_does(tmp_path: Path,
                                                                         store: DeskStore) -> None:
    clock = Clock(T0)
    loaded = config(tmp_path)
    source = SqliteSource(loaded.config.storage.sqlite)  # type: ignore[arg-type]
    try:
        await source.add_window(MaintenanceWindow("mw-ok", "component", "pbx-1", T0 - 10 * MIN, T0 + 60 * MIN,
                                                  T0 - 100 * 3600_000, "firmware"))
        await source.add_window(MaintenanceWindow("mw-late", "component", "san-1", T0 - 10 * MIN, T0 + 60 * MIN,
                                                  T0 - 3600_000, "disk swap"))
        desk = Desk(loaded, store, source, clock_ms=clock)
        await desk.load()
        desk.feed(change("pbx-1", T0 - MIN, False, "refused"))
        desk.feed(change("san-1", T0 - MIN, False, "refused", klass="san"))
        await desk.pass_once()
        assert [i.ref.component for i in await store.incidents()] == ["san-1"]
        # Still down when the window ends: now it is a fault like any other.
        clock.now_ms = T0 + 61 * MIN
        await desk.pass_once()
        assert sorted(i.ref.component for i in await store.incidents()) == ["pbx-1", "san-1"]
    finally:
        await source.close()


async def test_escalation_repeats_while_unacknowledged_and_stops_at_the_ack(tmp_path: Path,
                                                                             store: DeskStore) -> None:
    clock = Clock(T0)
    desk = await desk_at(tmp_path, store, clock)
    desk.feed(change("pbx-1", T0, False, "refused"))
    await desk.pass_once()
    (incident,) = await store.incidents()
    # P1 in hours: 15 min. Escalations at 7.5 min (50 %), 10 min (every), 15 min (100 %).
    for minutes, expected in ((7, 0), (8, 1), (10, 2), (12, 2), (15, 3)):
        clock.now_ms = T0 + minutes * MIN
        await desk.pass_once()
        escalations = [n for n in await store.notifications(incident.id) if n.kind == "escalation"]
        assert len({n.id.rsplit(".", 1)[0] for n in escalations}) == expected, minutes
    assert {n.recipient for n in escalations} == {"noc@provider.example", "duty@provider.example"}
    clock.now_ms = T0 + 16 * MIN
    await desk.act(incident.id, lambda i: steps.acknowledge(i, "ann", "looking", clock.now_ms))
    clock.now_ms = T0 + 40 * MIN
    await desk.pass_once()
    after = [n for n in await store.notifications(incident.id) if n.kind == "escalation"]
    assert len(after) == len(escalations)
    acked = await store.get(incident.id)
    assert acked is not None and acked.acknowledged_by == "ann" and acked.state is IncidentState.ACKNOWLEDGED


async def test_an_operator_acting_meanwhile_wins_and_the_desk_goes_on_from_it(tmp_path: Path,
                                                                               store: DeskStore,
        open_store: Callable[[], DeskStore]) -> None:
    clock = Clock(T0)
    desk = await desk_at(tmp_path, store, clock)
    desk.feed(change("pbx-1", T0, False, "refused"))
    await desk.pass_once()
    (incident,) = await store.incidents()
    other = open_store()  # `slawatch incident ack` in another process
    try:
        operator = Desk(config(tmp_path), other, None, clock_ms=clock)
        await operator.act(incident.id, lambda i: steps.acknowledge(i, "bob", "on it", T0 + MIN))
    finally:
        await other.close()
    clock.now_ms = T0 + 3 * MIN
    desk.feed(change("pbx-1", T0 + 2 * MIN, True))
    await desk.pass_once()  # its cached copy is stale: refused, re-read, done on the next pass
    await desk.pass_once()
    final = await store.get(incident.id)
    assert final is not None and final.state is IncidentState.RESOLVED and final.acknowledged_by == "bob"
    assert [e.action for e in await store.events(incident.id)] == ["opened", "acknowledged", "resolved"]


async def test_actions_that_do_not_apply_say_why(tmp_path: Path, store: DeskStore) -> None:
    clock = Clock(T0)
    desk = await desk_at(tmp_path, store, clock)
    desk.feed(change("pbx-1", T0, False, "refused"))
    await desk.pass_once()
    (incident,) = await store.incidents()
    await desk.act(incident.id, lambda i: steps.acknowledge(i, "ann", "", T0 + MIN))
    with pytest.raises(steps.ActionError, match="already acknowledged by ann"):
        await desk.act(incident.id, lambda i: steps.acknowledge(i, "bob", "", T0 + MIN))
    with pytest.raises(steps.ActionError, match="needs a reason"):
        await desk.act(incident.id, lambda i: steps.pause(i, "ann", " ", T0 + MIN))
    with pytest.raises(steps.ActionError, match="no incident INC-2026-000099"):
        await desk.act("INC-2026-000099", lambda i: steps.resume(i, "ann", "", T0))


async def test_at_start_the_desk_takes_what_the_store_says(tmp_path: Path, store: DeskStore) -> None:
    """A fault written to the store while no desk followed (the agent restarted, another agent wrote it) is raised
    from the store; a resolved incident older than the retention is pruned."""
    loaded = config(tmp_path)
    sink = SqliteSink(loaded.config.storage.sqlite)  # type: ignore[arg-type]
    await sink.write([change("pbx-1", T0 - 2 * MIN, True), change("pbx-1", T0 - MIN, False, "SIP 503"),
                      change("san-1", T0 - 5 * MIN, True, klass="san")])
    await sink.close()
    old = Incident("INC-2025-000001", ComponentRef("san-1", "san", "gold", "acme"), "down", 0, 0, "P2",
                   IncidentState.RESOLVED, "old", resolved_ms=60_000, version=1)
    await store.open(old, [IncidentEvent(old.id, 1, 0, "opened", "slawatch")], [])
    source = SqliteSource(loaded.config.storage.sqlite)  # type: ignore[arg-type]
    try:
        desk = Desk(loaded, store, source, clock_ms=Clock(T0))
        await desk.load()
        await desk.pass_once()
        assert await desk.prune() == 3  # the old incident, its fault and its event
    finally:
        await source.close()
    (incident,) = await store.incidents()
    assert (incident.ref.component, incident.start_ms, incident.reason) == ("pbx-1", T0 - MIN, "SIP 503")


async def test_a_thousand_faults_at_once_are_raised_in_one_pass_with_the_clock_from_their_confirmation(
        tmp_path: Path, store: DeskStore) -> None:
    clock = Clock(T0)
    desk = await desk_at(tmp_path, store, clock)
    for k in range(300):
        desk.feed(change(f"edge-{k:03d}", T0 - MIN, False, "refused", klass="network"))
    clock.now_ms = T0 + 7_000  # the desk gets to them seven seconds later
    await desk.pass_once()
    await desk.pass_once()
    raised = await store.incidents()
    assert len(raised) == 300 and len({i.id for i in raised}) == 300
    assert {i.raised_ms for i in raised} == {T0}  # when the change reached the desk, not when it was written
    assert sorted(i.id for i in raised)[-1] == "INC-2026-000300"
    assert len(await store.notifications()) == 900  # the NOC and the two contacts of acme, each

"""The incidents and maintenance pages over HTTP on a real SQLite store: the list and the incident with its clock;
every action recorded under the signed-in user's name with its notifications queued; CSRF on every POST; customer
scoping of pages and POSTs; an action that does not apply; escaping; maintenance with good and late notice,
preview, live verdict and removal."""

from __future__ import annotations

import dataclasses
import re
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from console.pages import incidents
from console.pages.incidents import countdown
from console.pages.maintenance import notice_for, verdict_words
from reporter.maintenance import Notice, notice_of
from slawatch.config.loader import Loaded, load
from slawatch.model import IncidentState, MaintenanceWindow, NotificationState, User
from tests.console.operations import ACME_HOOK, HOOK_SECRET, raised, write_config
from tests.console.site import CSRF, SMTP_SECRET, XSS, Site, ref, site

pytestmark = pytest.mark.timeout(60)

NOW = (int(time.time()) // 60) * 60_000
H = 3_600_000
ACME = "INC-2026-000001"  # pbx-1 (acme), P1, raised 10 minutes ago: due in 20m
GLOBEX = "INC-2026-000002"  # lb-9 (globex), P2


def unescaped(text: str) -> str:
    return text.replace("&#39;", "'").replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<") \
        .replace("&gt;", ">")


async def with_incidents(s: Site) -> None:
    await s.desk_store.open(raised(ACME, ref(s.loaded, "pbx-1"), NOW - 600_000), [], [])
    await s.desk_store.open(raised(GLOBEX, ref(s.loaded, "lb-9"), NOW - 300_000, priority="P2",
                                   reason="TLS handshake failed"), [], [])


async def token(s: Site, path: str) -> str:
    found = CSRF.search(await (await s.client.get(path)).text())
    assert found, path
    return found.group(1)


async def post(s: Site, path: str, data: dict[str, str], *, csrf_from: str | None = None):  # type: ignore[no-untyped-def]
    data = {**data, "csrf": await token(s, csrf_from or "/incidents")}
    return await s.client.post(path, data=data, allow_redirects=False)


async def act(s: Site, id: str, action: str, **fields: str) -> str:
    """POST an action form as the page would, follow the redirect back, return the incident page's text."""
    resp = await post(s, f"/incidents/{id}/{action}", fields, csrf_from=f"/incidents/{id}")
    assert resp.status == 303 and resp.headers["Location"] == f"/incidents/{id}", resp.status
    return await (await s.client.get(resp.headers["Location"])).text()


async def written(s: Site) -> tuple[object, ...]:
    """Everything the desk's store holds about incidents: equal before and after means nothing was written."""
    incs = await s.desk_store.incidents()
    return (tuple(incs), tuple([tuple(await s.desk_store.events(i.id)) for i in incs]),
            tuple(await s.desk_store.notifications()))


# ---------------------------------------------------------------- pages


async def test_the_list_shows_open_incidents_first_with_a_countdown_and_the_months_resolved(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        await with_incidents(s)
        await s.desk_store.open(raised("INC-2026-000003", ref(s.loaded, "san-1"), NOW - 2 * H, priority="P2",
                                       state=IncidentState.RESOLVED, resolved_ms=NOW - H, resolved_by="bob",
                                       acknowledged_ms=NOW - 2 * H + 120_000, acknowledged_by="bob"), [], [])
        await s.desk_store.open(raised("INC-2026-000004", ref(s.loaded, "core-1"), NOW - H, priority="P1",
                                       state=IncidentState.ACKNOWLEDGED, acknowledged_ms=NOW - H + 60_000,
                                       acknowledged_by="cy"), [], [])
        assert (await s.login("ann")).status == 303
        text = await (await s.client.get("/incidents")).text()
        open_part, resolved_part = text.split("Resolved in", 1)
        # Open first (P1 then P2), then the one being worked on; the resolved one below.
        assert [m for m in re.findall(r'data-id="(INC-[0-9-]+)"', open_part)] == [
            ACME, GLOBEX, "INC-2026-000004"]
        assert re.findall(r'data-id="(INC-[0-9-]+)"', resolved_part) == ["INC-2026-000003"]
        assert 'href="/components/pbx-1"' in open_part and "acme" in open_part and "TCP refused" in open_part
        # The deadline, server-rendered: raised 10 minutes ago with a 30-minute target.
        deadline = NOW - 600_000 + 30 * 60_000
        assert f'data-deadline-ms="{deadline}">due in 20m</span>' in open_part
        assert "20m left" in open_part  # the counted response time left
        assert f'data-deadline-ms="{NOW - 300_000 + 2 * H}">due in 1h 55m</span>' in open_part
        assert "2m, met" in resolved_part and "by bob" in resolved_part
        assert '<script src="/static/operations.js" defer>' in text
        script = await s.client.get("/static/operations.js")
        assert script.status == 200 and "due in " in await script.text()


async def test_the_list_shows_the_latest_resolved_unless_all_are_asked_for(tmp_path: Path,
                                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(incidents, "RESOLVED_SHOWN", 2)
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        for n in range(1, 4):
            await s.desk_store.open(raised(f"INC-2026-00001{n}", ref(s.loaded, "san-1"), NOW - 9 * H + n * H,
                                           state=IncidentState.RESOLVED, resolved_ms=NOW - 8 * H + n * H), [], [])
        assert (await s.login("ann")).status == 303
        latest = await (await s.client.get("/incidents")).text()
        assert re.findall(r'data-id="(INC-[0-9-]+)"', latest) == ["INC-2026-000013", "INC-2026-000012"]
        assert "Resolved in" in latest and "(3)" in latest and 'href="/incidents?resolved=all"' in latest
        every = await (await s.client.get("/incidents?resolved=all")).text()
        assert re.findall(r'data-id="(INC-[0-9-]+)"', every) == [
            "INC-2026-000013", "INC-2026-000012", "INC-2026-000011"]


async def test_the_incident_page_shows_its_clock_log_and_notifications_with_recipients_redacted(
        tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        await with_incidents(s)
        assert (await s.login("ann")).status == 303
        page = await act(s, ACME, "ack", comment="engineer on the way")
        notes = await s.desk_store.notifications(ACME)
        hook = next(n for n in notes if n.recipient == ACME_HOOK)
        await s.desk_store.mark(dataclasses.replace(
            hook, state=NotificationState.FAILED, attempts=3,
            last_error=f"connection refused by {ACME_HOOK} (json://hook:{HOOK_SECRET}@127.0.0.1:9)"))
        page = await (await s.client.get(f"/incidents/{ACME}")).text()
        assert "pbx-1" in page and "class sip, tier gold" in page and "TCP refused" in page
        assert "30m of 24/7 time" in page
        assert re.search(r"0s, met|[0-9]+s, met|10m, met", page), "the response time once acknowledged"
        for shown in ("noc@provider.example", "ops@acme.example", "json://", "failed", ">3<"):
            assert shown in page, shown
        assert HOOK_SECRET not in page and SMTP_SECRET not in page
        events = page.split("Event log", 1)[1].split("Notifications", 1)[0]
        assert "acknowledged" in events and "ann" in events and "engineer on the way" in events
        assert (await s.client.get("/incidents/INC-2026-999999")).status == 404
        assert (await s.client.get("/incidents/" + "X" * 500)).status == 404


# ---------------------------------------------------------------- actions


async def test_every_action_is_recorded_with_the_users_name_and_queues_its_notifications(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        await with_incidents(s)
        assert (await s.login("ann")).status == 303
        everyone = {"noc@provider.example", "ops@acme.example", ACME_HOOK}
        woken: list[int] = []
        s.console.extra[incidents.SENDER_WAKE] = lambda: woken.append(1)
        steps = [("ack", {"comment": "engineer on the way"}, "acknowledged", "ack",
                  "acknowledged by ann: response 10m, met"),
                 ("pause", {"comment": "waiting for remote access"}, "paused", "pause", "paused by ann"),
                 ("resume", {"comment": "access granted"}, "resumed", "resume", "resumed by ann"),
                 ("priority", {"priority": "p2", "comment": "only one site affected"}, "priority", "priority",
                  "priority P1 -> P2 by ann"),
                 ("resolve", {"comment": "card replaced"}, "resolved", "resolve", "resolved by ann")]
        for action, fields, recorded, kind, said in steps:
            before = len(await s.desk_store.notifications(ACME))
            page = await act(s, ACME, action, **fields)
            assert said in unescaped(page), (action, page[:2000])
            event = (await s.desk_store.events(ACME))[-1]
            assert (event.action, event.actor, event.comment) == (recorded, "ann", fields["comment"])
            notes = (await s.desk_store.notifications(ACME))[before:]
            assert {n.kind for n in notes} == {kind} and {n.recipient for n in notes} == everyone, action
            assert all(n.state is NotificationState.PENDING for n in notes)
            assert f"{len(notes)} notifications queued" in page
        incident = await s.desk_store.get(ACME)
        assert incident is not None
        assert woken == [1] * len(steps)  # the sender beside the console is woken once per action
        assert (incident.state, incident.priority, incident.acknowledged_by, incident.ack_comment,
                incident.resolved_by) == (IncidentState.RESOLVED, "P2", "ann", "engineer on the way", "ann")
        assert incident.pauses[0].reason == "waiting for remote access" and incident.pauses[0].end_ms is not None
        # The other incident was not touched; a resolved one offers no action.
        assert (await s.desk_store.get(GLOBEX)) == dataclasses.replace(
            raised(GLOBEX, ref(s.loaded, "lb-9"), NOW - 300_000, priority="P2", reason="TLS handshake failed"))
        assert 'action="/incidents/' not in await (await s.client.get(f"/incidents/{ACME}")).text()


async def test_the_acknowledged_incident_shows_who_acknowledged_it(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        await with_incidents(s)
        assert (await s.login("ann")).status == 303
        before = await (await s.client.get(f"/incidents/{ACME}")).text()
        assert 'action="/incidents/INC-2026-000001/ack"' in before and "due in 20m" in before
        s.clock.now_ms = NOW + 60_000
        page = await act(s, ACME, "ack", comment="on it")
        assert re.search(r"acknowledged</dt><dd class=\"acked\">[^<]+ by <b>ann</b>: <q>on it</q>", page), page
        assert 'action="/incidents/INC-2026-000001/ack"' not in page  # acknowledged once
        listed = await (await s.client.get("/incidents")).text()
        row = listed.split(f'data-id="{ACME}"', 1)[1].split("</tr>", 1)[0]
        assert "acknowledged" in row and "by ann" in row and "11m, met" in row


async def test_an_action_that_does_not_apply_says_why_and_writes_nothing(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        await s.add_user("bob")
        await with_incidents(s)
        assert (await s.login("bob")).status == 303
        await act(s, ACME, "ack", comment="mine")
        assert (await s.login("ann")).status == 303
        cases = [("ack", {"comment": "me too"}, f"{ACME} was already acknowledged by bob"),
                 ("resume", {"comment": ""}, f"{ACME} is not paused"),
                 ("pause", {"comment": "   "}, "a pause needs a reason"),
                 ("priority", {"priority": "P9", "comment": "why not"}, "unknown priority 'P9' (the contract has "
                                                                        "P1, P2, P3)"),
                 ("priority", {"priority": "P2", "comment": ""}, "say why the priority changes"),
                 ("priority", {"priority": "P1", "comment": "same"}, f"{ACME} is already P1"),
                 ("resolve", {"comment": "x" * 2001}, "comment too long (2001 characters, at most 2000)")]
        for action, fields, why in cases:
            before = await written(s)
            page = await act(s, ACME, action, **fields)
            assert f"Not done: {why}" in unescaped(page), (action, fields)
            assert 'class="flash-note error"' in page
            assert await written(s) == before, action
        # Shown once: the next visit has no message.
        assert "Not done" not in await (await s.client.get(f"/incidents/{ACME}")).text()


async def test_every_post_needs_the_csrf_token_and_writes_nothing_without_it(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        await with_incidents(s)
        window = MaintenanceWindow("mw-00000001", "component", "pbx-1", NOW + 100 * H, NOW + 101 * H, NOW, "fw")
        await s.console.source.add_window(window)
        assert (await s.login("ann")).status == 303
        form = {"comment": "x", "priority": "P2", "scope": "component", "value": "pbx-1", "step": "save",
                "start": "2030-01-01T00:00", "end": "2030-01-01T01:00", "reason": "fw"}
        paths = [f"/incidents/{ACME}/{a}" for a in ("ack", "pause", "resume", "priority", "resolve")]
        paths += ["/maintenance/new", "/maintenance/mw-00000001/remove"]
        for path in paths:
            for csrf in (None, "", "x" * 43, "bm90LWEtdG9rZW4="):
                before = (await written(s), await s.console.source.windows())
                data = form if csrf is None else {**form, "csrf": csrf}
                resp = await s.client.post(path, data=data, allow_redirects=False)
                assert resp.status == 403, (path, csrf)
                assert (await written(s), await s.console.source.windows()) == before, (path, csrf)
        # With the token the same forms work.
        assert (await post(s, f"/incidents/{ACME}/ack", {"comment": "x"})).status == 303
        assert (await s.desk_store.get(ACME)).acknowledged_by == "ann"  # type: ignore[union-attr]


# ---------------------------------------------------------------- customers


async def test_a_customer_account_sees_its_incidents_only_and_acts_on_none(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        await s.add_user("acme-noc", "customer", ("acme",))
        await with_incidents(s)
        assert (await s.login("ann")).status == 303
        await act(s, ACME, "ack", comment="on it")  # told to the NOC, acme's contacts
        assert (await s.login("acme-noc")).status == 303
        listed = await (await s.client.get("/incidents")).text()
        assert ACME in listed and GLOBEX not in listed and "lb-9" not in listed and "globex" not in listed
        mine = await (await s.client.get(f"/incidents/{ACME}")).text()
        assert "ops@acme.example" in mine and "noc@provider.example" not in mine  # only its own contacts
        assert 'action="/incidents/' not in mine and "do not act on them" in mine
        other = await s.client.get(f"/incidents/{GLOBEX}")
        missing = await s.client.get("/incidents/INC-2026-999999")
        assert other.status == missing.status == 404 and await other.text() == await missing.text()
        for action in ("ack", "pause", "resume", "priority", "resolve"):
            fields = {"comment": "please", "priority": "P3"}
            before = await written(s)
            theirs = await post(s, f"/incidents/{GLOBEX}/{action}", fields, csrf_from=f"/incidents/{ACME}")
            nobody = await post(s, f"/incidents/INC-2026-999999/{action}", fields, csrf_from=f"/incidents/{ACME}")
            assert theirs.status == nobody.status == 404 and await theirs.text() == await nobody.text(), action
            own = await post(s, f"/incidents/{ACME}/{action}", fields, csrf_from=f"/incidents/{ACME}")
            assert own.status == 403, action
            assert await written(s) == before, action


async def test_a_customer_account_sees_its_maintenance_only_and_changes_none(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("acme-noc", "customer", ("acme",))
        windows = [MaintenanceWindow("mw-acme0001", "component", "pbx-1", NOW + 100 * H, NOW + 101 * H, NOW, "acme fw"),
                   MaintenanceWindow("mw-glbx0001", "customer", "globex", NOW + 10 * H, NOW + 11 * H, NOW, "globex"),
                   MaintenanceWindow("mw-both0001", "class", "sip", NOW + 5 * H, NOW + 6 * H, NOW, "all sip")]
        for w in windows:
            await s.console.source.add_window(w)
        assert (await s.login("acme-noc")).status == 303
        page = await (await s.client.get("/maintenance")).text()
        assert "mw-acme0001" in page and "mw-both0001" in page and "mw-glbx0001" not in page
        assert "globex" not in page.replace("mw-glbx0001", ""), page[page.find("globex") - 300:][:600]
        assert "/remove" not in page and "Add a maintenance window" not in page
        assert (await s.client.get("/maintenance/new")).status == 403
        assert (await s.client.get("/api/maintenance/notice?scope=component&value=pbx-1")).status == 403
        assert (await s.client.get("/maintenance/mw-acme0001/remove")).status == 403
        theirs = await s.client.get("/maintenance/mw-glbx0001/remove")
        nobody = await s.client.get("/maintenance/mw-nothing/remove")
        assert theirs.status == nobody.status == 404 and await theirs.text() == await nobody.text()
        for id, status in (("mw-glbx0001", 404), ("mw-acme0001", 403), ("mw-nothing", 404)):
            resp = await post(s, f"/maintenance/{id}/remove", {}, csrf_from="/maintenance")
            assert resp.status == status, id
        add = await post(s, "/maintenance/new", {"scope": "component", "value": "pbx-1", "step": "save",
                                                 "start": "2030-01-01T00:00", "end": "2030-01-01T01:00",
                                                 "reason": "mine"}, csrf_from="/maintenance")
        assert add.status == 403
        assert sorted(w.id for w in await s.console.source.windows()) == sorted(w.id for w in windows)


# ---------------------------------------------------------------- escaping


async def test_reasons_and_comments_are_shown_as_text(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        await s.desk_store.open(raised(ACME, ref(s.loaded, "pbx-1"), NOW - 600_000, reason=XSS), [], [])
        assert (await s.login("ann")).status == 303
        await act(s, ACME, "ack", comment=XSS)
        await act(s, ACME, "pause", comment=XSS)
        await act(s, ACME, "priority", priority="P2", comment=XSS)
        failed = await act(s, ACME, "priority", priority=XSS, comment="x")  # the reason repeats what was asked
        assert "Not done: unknown priority" in failed
        await s.console.source.add_window(MaintenanceWindow("mw-00000001", "component", "pbx-1", NOW + H,
                                                            NOW + 2 * H, NOW, XSS))
        preview = await post(s, "/maintenance/new", {"scope": "component", "value": XSS, "start": XSS, "end": "",
                                                     "reason": XSS, "step": "preview"}, csrf_from="/maintenance")
        pages = [failed, await preview.text()]
        for path in ("/incidents", f"/incidents/{ACME}", "/maintenance", "/maintenance/mw-00000001/remove"):
            pages.append(await (await s.client.get(path)).text())
        for text in pages:
            assert "<script>alert" not in text
            assert "&lt;script&gt;alert(1)&lt;/script&gt;" in text


# ---------------------------------------------------------------- maintenance


def local(ts_ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M", time.gmtime(ts_ms / 1000))


async def test_maintenance_preview_then_save_with_good_and_late_notice_and_remove(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        assert (await s.login("ann")).status == 303
        blank = await (await s.client.get("/maintenance/new")).text()
        assert f'name="announced" value="{local(NOW)}"' in blank  # default: now
        assert 'id="mw-save" hidden' in blank  # saving comes after the verdict is shown
        good = {"scope": "component", "value": "pbx-1", "start": local(NOW + 80 * H), "end": local(NOW + 82 * H),
                "announced": "", "reason": "firmware upgrade"}
        preview = await post(s, "/maintenance/new", {**good, "step": "preview"}, csrf_from="/maintenance/new")
        text = await preview.text()
        assert preview.status == 200
        assert "announced 80h ahead: excluded from downtime" in text and 'class="preview ok"' in text
        assert 'id="mw-save" hidden' not in text
        assert await s.console.source.windows() == []  # a preview writes nothing
        live = await (await s.client.get("/api/maintenance/notice", params=good)).json()
        assert live["ok"] is True and live["text"] in unescaped(text)
        saved = await post(s, "/maintenance/new", {**good, "step": "save"}, csrf_from="/maintenance/new")
        assert saved.status == 303 and saved.headers["Location"] == "/maintenance"
        [window] = await s.console.source.windows()
        assert (window.scope, window.value, window.start_ms, window.end_ms, window.announced_ms, window.reason) == (
            "component", "pbx-1", NOW + 80 * H, NOW + 82 * H, NOW, "firmware upgrade")
        listed = await (await s.client.get("/maintenance")).text()
        assert f"Added {window.id}: component pbx-1" in listed and "excluded from downtime" in listed

        late = {**good, "value": "san-1", "announced": local(NOW - 2 * H), "start": local(NOW + 8 * H),
                "end": local(NOW + 9 * H), "reason": "controller swap"}
        live = await (await s.client.get("/api/maintenance/notice", params=late)).json()
        assert live["ok"] is False and live["text"].endswith(
            "late: 10h of the required 72h notice, counts as downtime")
        preview = await post(s, "/maintenance/new", {**late, "step": "preview"}, csrf_from="/maintenance/new")
        text = await preview.text()
        assert "late: 10h of the required 72h notice, counts as downtime" in text and 'class="preview late"' in text
        assert (await post(s, "/maintenance/new", {**late, "step": "save"})).status == 303
        listed = await (await s.client.get("/maintenance")).text()
        rows = dict(re.findall(r'<tr class="(notice-\w+)" data-id="mw-\w+">\s*<td class="wid">mw-\w+</td>\s*'
                               r'<td class="covers">component <a href="/components/([\w-]+)"', listed))
        assert rows == {"notice-ok": "pbx-1", "notice-late": "san-1"}, rows

        confirm = await (await s.client.get(f"/maintenance/{window.id}/remove")).text()
        assert f"Remove {window.id}?" in confirm and "firmware upgrade" in confirm
        assert len(await s.console.source.windows()) == 2  # asking is not removing
        gone = await post(s, f"/maintenance/{window.id}/remove", {}, csrf_from=f"/maintenance/{window.id}/remove")
        assert gone.status == 303 and gone.headers["Location"] == "/maintenance"
        assert [w.value for w in await s.console.source.windows()] == ["san-1"]
        assert f"Removed {window.id}" in await (await s.client.get("/maintenance")).text()
        assert (await s.client.get(f"/maintenance/{window.id}/remove")).status == 404


async def test_a_maintenance_form_with_problems_says_them_and_saves_nothing(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, cfg=write_config(tmp_path)) as s:
        await s.add_user("ann")
        assert (await s.login("ann")).status == 303
        cases = [({"value": "no-such"}, "there is no component 'no-such'"),
                 ({"end": local(NOW + 79 * H)}, "end: must be after the start"),
                 ({"start": "tomorrow"}, "start: 'tomorrow' is not a time"),
                 ({"announced": local(NOW + H)}, "announced: that is in the future"),
                 ({"reason": " "}, "reason: say what is done"),
                 ({"scope": "rack"}, "scope: choose component, class or customer")]
        base = {"scope": "component", "value": "pbx-1", "start": local(NOW + 80 * H), "end": local(NOW + 82 * H),
                "announced": "", "reason": "firmware"}
        for change, problem in cases:
            for step in ("preview", "save"):
                resp = await post(s, "/maintenance/new", {**base, **change, "step": step},
                                  csrf_from="/maintenance/new")
                assert resp.status == 422 and problem in unescaped(await resp.text()), (change, step)
            doc = await (await s.client.get("/api/maintenance/notice", params={**base, **change})).json()
            assert doc["ok"] is None and any(problem in p for p in doc["problems"]), change
        assert await s.console.source.windows() == []


# ---------------------------------------------------------------- the words, as tables and properties


@pytest.mark.parametrize(("lead_h", "required_h", "late_for", "words"), [
    (80, 72, (), "announced 80h ahead: excluded from downtime"),
    (72, 72, (), "announced 72h ahead: excluded from downtime"),
    (10, 72, ("acme",), "late: 10h of the required 72h notice, counts as downtime"),
    (-2, 72, ("acme",), "late: announced 2h after it began, 72h notice required, counts as downtime"),
    (0.5, 0, (), "announced 30m ahead: excluded from downtime"),
])
def test_verdict_words(lead_h: float, required_h: float, late_for: tuple[str, ...], words: str) -> None:
    notice = Notice(round(lead_h * H), round(required_h * H), ("acme",), late_for)
    assert verdict_words(notice) == words


def test_a_late_notice_for_some_customers_names_them() -> None:
    notice = Notice(10 * H, 72 * H, ("acme", "globex"), ("globex",))
    assert verdict_words(notice) == "late for globex: 10h of the required 72h notice, counts as downtime"


@pytest.mark.parametrize(("left_ms", "words"), [
    (20 * 60_000, "due in 20m"), (0, "due in 0s"), (65_000, "due in 1m 5s"), (-5 * 60_000, "overdue by 5m"),
    (3 * H + 60_000, "due in 3h 1m"), (101 * H, "due in 4d 5h")])
def test_countdown(left_ms: int, words: str) -> None:
    assert countdown(NOW + left_ms, NOW) == words


@pytest.fixture(scope="module")
def loaded(tmp_path_factory: pytest.TempPathFactory) -> Loaded:
    return load(write_config(tmp_path_factory.mktemp("cfg")))


@settings(max_examples=60, deadline=None)
@given(scope=st.sampled_from(["component", "class", "customer"]),
       value=st.sampled_from(["pbx-1", "lb-9", "sip", "san", "network", "acme", "globex", "nobody"]),
       lead_h=st.integers(-10, 200), mine=st.sampled_from([("acme",), ("globex",), ("acme", "globex")]))
def test_a_customer_is_shown_a_window_only_over_its_own_and_a_verdict_about_its_own(
        loaded: Loaded, scope: str, value: str, lead_h: int, mine: tuple[str, ...]) -> None:
    window = MaintenanceWindow("mw-1", scope, value, NOW, NOW + H, NOW - lead_h * H, "r")  # type: ignore[arg-type]
    customer = User("c", "customer", "", mine)
    full = notice_of(loaded, window)
    assert notice_for(loaded, User("o", "operator", ""), window) == full
    shown = notice_for(loaded, customer, window)
    if not set(full.covers) & set(mine):
        assert shown is None
        return
    assert shown is not None
    assert set(shown.covers) <= set(mine) and set(shown.late_for) <= set(mine)
    # Every customer here has the contract's 72 h notice: the verdict a customer sees is the true one.
    assert shown.ok == full.ok == (lead_h >= 72)

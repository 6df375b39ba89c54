"""Reports, agents and the public status page over HTTP on a real SQLite store: every archived file and month to date
scoped to the user's customers (404 otherwise), no path outside the archive reachable, the agents page for operators
only with what /healthz knows, and a public page that shows states and figures but no reason, agent or incident."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from console import archive
from console.board import Figure, Status
from console.health import LocalHealth, SinkHealth, TaskHealth
from console.pages.agents import agent_rows
from console.pages.status import public_rows
from reporter.availability import Availability
from slawatch.model import (
    AgentHeartbeats,
    ComponentRef,
    Heartbeat,
    Interval,
    MaintenanceWindow,
    Outcome,
    StateChange,
)
from tests.console.site import XSS, Site, incident, ref, sample, site, write

pytestmark = pytest.mark.timeout(60)

NOW = (int(time.time()) // 60) * 60_000
MONTHS = ("2026-09", "2026-10")
SECRET_REASON = "fan tray 2 failed on chassis-7"
HIDDEN_AGENT = "probe-node-zulu-7"


def fill_archive(root: Path) -> None:
    """Two months of reports for acme and globex, with what must never be served beside them."""
    for month in MONTHS:
        folder = root / month
        folder.mkdir(parents=True)
        for customer in ("acme", "globex"):
            for fmt in ("html", "json", "csv"):
                (folder / f"{customer}.{fmt}").write_text(f"{customer} {month} {fmt}")
        (folder / ".acme.html.tmp").write_text("half written")
        (folder / "notes.txt").write_text("not a report")
    (root / MONTHS[1] / "acme.pdf").write_bytes(b"%PDF-1.7 acme")
    outside = root.parent / "outside.html"
    outside.write_text("outside the archive")
    os.symlink(outside, root / MONTHS[1] / "evil.html")
    os.symlink(root.parent, root / "2026-08")  # a month folder that is a link out of the archive
    (root / "2026-13").mkdir()
    (root / "2026-13" / "acme.html").write_text("not a month")


async def with_archive(s: Site, tmp_path: Path) -> Path:
    root = tmp_path / "archive"
    fill_archive(root)
    s.loaded.config.report.archive = root
    return root


async def stored(s: Site, agent: str = "a1") -> None:
    loaded = s.loaded
    await write(loaded, [
        StateChange(ref(loaded, "pbx-1"), agent, NOW - 600_000, True, ""),
        StateChange(ref(loaded, "pbx-1"), agent, NOW - 120_000, False, SECRET_REASON),
        StateChange(ref(loaded, "san-1"), agent, NOW - 900_000, True, ""),
        StateChange(ref(loaded, "san-1"), agent, NOW - 300_000, True, "pool short of members", True),
        StateChange(ref(loaded, "lb-9"), agent, NOW - 700_000, True, ""),
        *(Heartbeat(agent, t, 1.0) for t in range(NOW - 900_000, NOW, 1000)),
    ])
    await s.refresh()


async def test_the_archive_is_listed_and_served_per_customer(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await with_archive(s, tmp_path)
        await s.add_user("ops")
        await s.add_user("acme-user", "customer", ("acme",))
        assert (await s.login("ops")).status == 303
        page = await (await s.client.get("/reports")).text()
        for month in MONTHS:
            for customer in ("acme", "globex"):
                assert f'href="/reports/{month}/{customer}.csv"' in page
        assert 'href="/reports/2026-10/acme.pdf"' in page
        assert "evil" not in page and "notes" not in page and "tmp" not in page and "2026-13" not in page
        assert "2026-08" not in page
        resp = await s.client.get("/reports/2026-10/globex.html")
        assert resp.status == 200 and await resp.text() == "globex 2026-10 html"
        assert resp.headers["Content-Disposition"].startswith("inline")
        assert resp.headers["Content-Security-Policy"].startswith("sandbox")
        resp = await s.client.get("/reports/2026-10/globex.html?download")
        assert resp.headers["Content-Disposition"] == 'attachment; filename="slawatch-2026-10-globex.html"'
        resp = await s.client.get("/reports/2026-09/acme.csv")
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/csv")
        assert resp.headers["Content-Disposition"].startswith("attachment")
        pdf = await s.client.get("/reports/2026-10/acme.pdf")
        assert pdf.status == 200 and await pdf.read() == b"%PDF-1.7 acme"
        assert pdf.headers["Content-Type"] == "application/pdf"

        # A customer account: its own customer's files only; the other's are answered as if they did not exist.
        s.client.session.cookie_jar.clear()
        assert (await s.login("acme-user")).status == 303
        page = await (await s.client.get("/reports")).text()
        assert 'href="/reports/2026-10/acme.html"' in page and "globex" not in page
        assert 'href="/reports/to-date/acme.html"' in page
        for month in MONTHS:
            assert (await s.client.get(f"/reports/{month}/acme.json")).status == 200
            for fmt in ("html", "json", "csv"):
                resp = await s.client.get(f"/reports/{month}/globex.{fmt}")
                assert resp.status == 404, (month, fmt)
                assert "globex" not in await resp.text()
        assert (await s.client.get("/reports/2026-10/nobody.html")).status == 404


@pytest.mark.parametrize("path", [
    "/reports/2026-10/..%2F..%2Fconsole.yaml",
    "/reports/2026-10/%2e%2e%2f%2e%2e%2fstore.db",
    "/reports/2026-10/..",
    "/reports/2026-10/.acme.html.tmp",
    "/reports/2026-10/notes.txt",
    "/reports/2026-10/evil.html",
    "/reports/2026-08/outside.html",
    "/reports/2026-13/acme.html",
    "/reports/..%2F2026-10/acme.html",
    "/reports/2026-10/acme.html%00.txt",
    "/reports/2026-10/acme.html/",
    "/reports/2026-10//etc/passwd",
    "/reports/2026-10/%2Fetc%2Fpasswd",
    "/reports/to-date/..%2F..%2Fconsole.yaml",
    "/reports/to-date/acme.yaml",
    "/reports/to-date/acme",
    "/reports/to-date/globex.html",
])
async def test_no_path_reaches_a_file_outside_the_listing(tmp_path: Path, path: str) -> None:
    async with site(tmp_path, NOW) as s:
        await with_archive(s, tmp_path)
        await s.add_user("acme-user", "customer", ("acme",))
        assert (await s.login("acme-user")).status == 303
        resp = await s.client.get(path, allow_redirects=False)
        body = await resp.read()
        assert resp.status in (404, 400), (path, resp.status)
        for leaked in (b"outside the archive", b"half written", b"not a report", b"not a month", b"sqlite", b"agent:"):
            assert leaked not in body, path


async def test_month_to_date_is_the_reporters_own_and_scoped(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await stored(s)
        await s.add_user("acme-user", "customer", ("acme",))
        await s.add_user("ops")
        assert (await s.login("acme-user")).status == 303
        resp = await s.client.get("/reports/to-date/acme.json?download")
        assert resp.status == 200 and resp.headers["Content-Disposition"].startswith("attachment")
        doc = json.loads(await resp.text())
        assert doc["format"] == "slawatch-report/1" and doc["period"]["kind"] == "month"
        assert [c["name"] for c in doc["components"]] == ["pbx-1", "san-1"]
        assert doc["period"]["to"] <= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(NOW / 1000 + 1)) + ".000Z"
        pbx = doc["components"][0]
        assert pbx["availability_pct"] is not None and pbx["downtime_s"] == pytest.approx(120, abs=1)
        html = await s.client.get("/reports/to-date/acme.html")
        assert html.status == 200 and "pbx-1" in await html.text()
        assert html.headers["Content-Security-Policy"].startswith("sandbox")
        csv = await s.client.get("/reports/to-date/acme.csv")
        assert csv.status == 200 and "pbx-1" in await csv.text()
        assert (await s.client.get("/reports/to-date/globex.json")).status == 404
        assert (await s.client.get("/reports/to-date/globex.html")).status == 404

        s.client.session.cookie_jar.clear()
        assert (await s.login("ops")).status == 303
        doc = json.loads(await (await s.client.get("/reports/to-date/globex.json")).text())
        assert [c["name"] for c in doc["components"]] == ["lb-9", "core-1"]
        page = await (await s.client.get("/reports")).text()
        assert "No archive: set <code>report.archive</code>" in page


async def test_the_agents_page_is_for_operators_and_shows_heartbeats_and_local_health(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        await stored(s)
        loaded = s.loaded
        # An agent that stopped beating 10 minutes ago, whose last state of lb-9 is still stored.
        await write(loaded, [StateChange(ref(loaded, "lb-9"), "old-agent", NOW - 3_600_000, True, ""),
                             *(Heartbeat("old-agent", t, 30.0) for t in range(NOW - 3_600_000, NOW - 600_000, 30_000))])
        s.console.local_health = lambda: LocalHealth(
            "a1", ("store influxdb: writes failing for 2m00s: HTTP 500",), 3600.0, 4, 1234, 8192, 7,
            (SinkHealth("influxdb", 420, 120.0, "HTTP 500 " + XSS), SinkHealth("sqlite", 0, 0.0, "")),
            (TaskHealth("drain-influxdb", 2, "RuntimeError: boom", True),))
        await s.add_user("ops")
        await s.add_user("acme-user", "customer", ("acme",))
        assert (await s.login("ops")).status == 303
        resp = await s.client.get("/agents")
        text = await resp.text()
        assert resp.status == 200
        assert 'data-agent="a1"' in text and 'data-agent="old-agent"' in text
        a1 = text[text.index('data-agent="a1"'):text.index('data-agent="old-agent"')]
        assert "FRESH" in a1 and "(this process)" in a1
        old = text[text.index('data-agent="old-agent"'):]
        assert "SILENT" in old.split("</tr>")[0]
        assert "UNHEALTHY" in text and "writes failing for 2m00s" in text and ">420<" in text
        assert XSS not in text and "&lt;script&gt;" in text
        assert "drain-influxdb" in text and "RuntimeError: boom" in text

        s.client.session.cookie_jar.clear()
        assert (await s.login("acme-user")).status == 303
        assert (await s.client.get("/agents")).status == 404
        assert 'href="/agents"' not in await (await s.client.get("/")).text()


async def test_the_public_status_page_shows_states_but_no_reason_agent_or_incident(tmp_path: Path) -> None:
    async with site(tmp_path, NOW, console="{public: [acme]}") as s:
        loaded = s.loaded
        await stored(s, HIDDEN_AGENT)
        await write(loaded, [sample(loaded, "pbx-1", NOW - 5000, None, Outcome.REFUSED, SECRET_REASON)])
        await s.desk_store.open(incident("INC-2026-0042", ref(loaded, "pbx-1"), NOW - 120_000), [], [])
        await s.add_user("ops")
        resp = await s.client.get("/status/acme")
        text = await resp.text()
        assert resp.status == 200
        assert 'data-name="pbx-1" data-state="down"' in text and 'data-name="san-1" data-state="degraded"' in text
        assert "lb-9" not in text and "globex" not in text  # another customer's components
        for secret in (SECRET_REASON, "pool short of members", HIDDEN_AGENT, "INC-2026", "a1", "csrf", "Sign out",
                       str(loaded.path), "store.db"):
            assert secret not in text, secret
        assert " %" in text  # the month-to-date figures
        again = await s.client.get("/status/acme", headers={"If-None-Match": resp.headers["ETag"]})
        assert again.status == 304
        assert (await s.client.get("/status/globex")).status == 404
        assert (await s.client.get("/status/nobody")).status == 404

        # A maintenance window in progress shows as maintenance.
        await s.console.source.add_window(MaintenanceWindow("w1", "component", "pbx-1", NOW - 60_000, NOW + 3_600_000,
                                                            NOW - 86_400_000 * 4, "swap the fan tray"))
        s.clock.now_ms = NOW + 1000
        await s.refresh()
        text = await (await s.client.get("/status/acme")).text()
        assert 'data-name="pbx-1" data-state="maintenance"' in text and "fan tray" not in text


# ------------------------------------------------------------------------------------------------ pure rules

@pytest.mark.parametrize(("name", "parsed"), [
    ("acme.html", ("acme", "html")),
    ("acme.corp.pdf", ("acme.corp", "pdf")),
    ("a:b-c_d.csv", ("a:b-c_d", "csv")),
    ("acme.json", ("acme", "json")),
    (".acme.html.tmp", None),
    (".acme.html", None),
    ("..html", None),
    ("acme.txt", None),
    ("acme", None),
    ("acme.HTML", None),
    ("a/b.html", None),
    ("a b.html", None),
    (".html", None),
])
def test_archived_file_names(name: str, parsed: tuple[str, str] | None) -> None:
    assert archive.parse_name(name) == parsed


@given(st.text(max_size=40))
def test_an_accepted_name_is_a_plain_file_name(name: str) -> None:
    parsed = archive.parse_name(name)
    if parsed is not None:
        assert f"{parsed[0]}.{parsed[1]}" == name
        assert "/" not in name and "\\" not in name and "\0" not in name and not name.startswith(".")


def test_the_listing_skips_links_temp_files_and_bad_months(tmp_path: Path) -> None:
    root = tmp_path / "archive"
    fill_archive(root)
    listed = archive.listing(root)
    assert [(a.month, a.filename) for a in listed][:5] == [
        ("2026-10", "acme.html"), ("2026-10", "acme.pdf"), ("2026-10", "acme.csv"), ("2026-10", "acme.json"),
        ("2026-10", "globex.html")]
    assert {a.path.parent for a in listed} == {root / m for m in MONTHS}
    assert len(listed) == 13
    assert archive.find(listed, "2026-10", "evil.html") is None
    assert archive.listing(None) == [] and archive.listing(tmp_path / "missing") == []


def _status(name: str, customer: str, state: str, reason: str = "secret") -> Status:
    return Status(name, "sip", "gold", customer, state, NOW, reason, ("agent-x",))


def test_public_rows_carry_name_state_and_figure_only() -> None:
    result = Availability(Interval(0, 1), 1, 0, 0, 0, 0, 1, 0, 1.0, 99.5, 99.9, False, ())
    figure = Figure(99.5, 99.9, False, -1000, 2_592_000_000, result)
    rows = public_rows("acme", [_status("a", "acme", "down"), _status("b", "globex", "up"),
                                _status("c", "acme", "unmonitored"), _status("d", "acme", "up")],
                       {"a": figure},
                       [MaintenanceWindow("w", "component", "d", NOW - 1, NOW + 1, NOW - 10**9, "r"),
                        MaintenanceWindow("v", "component", "a", NOW + 10, NOW + 20, NOW - 10**9, "r")], NOW)
    assert [(r.name, r.state, r.pct) for r in rows] == [("a", "down", 99.5), ("c", "no data", None),
                                                        ("d", "maintenance", None)]
    assert set(rows[0].__slots__) == {"name", "state", "pct"}


def test_agent_rows_fresh_first_with_their_components() -> None:
    r = ComponentRef("x", "sip", "gold", "acme")
    beats_ = {"b": AgentHeartbeats("b", [NOW - 1000], 1.0), "c": AgentHeartbeats("c", [NOW - 10_000], 1.0)}
    changes = [StateChange(r, "a", NOW - 5, True, ""), StateChange(r, "b", NOW - 5, True, ""),
               StateChange(ComponentRef("y", "sip", "gold", "acme"), "b", NOW - 9, True, "")]
    rows = agent_rows(beats_, changes, NOW, "c")
    assert [(x.agent, x.fresh, x.components, x.last_ms, x.here) for x in rows] == [
        ("b", True, 2, NOW - 1000, False), ("a", False, 1, None, False), ("c", False, 0, NOW - 10_000, True)]


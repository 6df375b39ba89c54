"""The overview's poll answer is made once per read of the store and shared by the users of one scope (many open
overviews must not each cost a build and a read of the incidents on the agent's event loop); the next read brings
news to all of them, and a customer's answer is never an operator's."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from slawatch.model import Heartbeat, StateChange
from tests.console.site import incident, ref, site, write

pytestmark = pytest.mark.timeout(60)

NOW = (int(time.time()) // 60) * 60_000


async def test_one_answer_per_read_shared_within_a_scope(tmp_path: Path) -> None:
    async with site(tmp_path, NOW) as s:
        loaded = s.loaded
        await write(loaded, [StateChange(ref(loaded, name), "a1", NOW - 600_000, True, "")
                             for name in ("pbx-1", "san-1", "lb-9", "core-1")]
                    + [Heartbeat("a1", t, 1.0) for t in range(NOW - 600_000, NOW, 1000)])
        await s.refresh()
        await s.add_user("ops")
        await s.add_user("acme-user", "customer", ("acme",))
        assert (await s.login("ops")).status == 303
        first = await (await s.client.get("/api/overview?since=-1&figures=0")).json()
        assert first["incidents"]["active"] == 0 and len(first["changed"]) == 4

        # Opened between two reads: the same question in the same scope gets the answer already made...
        assert await s.desk_store.open(incident("INC-2026-000001", ref(loaded, "pbx-1"), NOW - 120_000), [], [])
        same = await (await s.client.get("/api/overview?since=-1&figures=0")).json()
        assert same == first
        # ... a customer's scope gets its own, never the operators' ...
        s.client.session.cookie_jar.clear()
        assert (await s.login("acme-user")).status == 303
        mine = await (await s.client.get("/api/overview?since=-1&figures=0")).json()
        assert {c["name"] for c in mine["changed"]} == {"pbx-1", "san-1"} and mine["incidents"]["active"] == 1
        # ... and the next read of the store brings the news to everyone.
        s.client.session.cookie_jar.clear()
        assert (await s.login("ops")).status == 303
        await write(loaded, [Heartbeat("a1", NOW, 1.0)])
        s.clock.now_ms = NOW + 1000
        await s.console.board.refresh()
        fresh = await (await s.client.get("/api/overview?since=-1&figures=0")).json()
        assert fresh["incidents"]["active"] == 1 and fresh["read_ms"] == NOW + 1000

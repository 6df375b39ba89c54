"""A report's read of state changes from SQLite, in batches: the same changes, in order, as one read of them all."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from slawatch.config.settings import SqliteSettings
from slawatch.model import ComponentRef, StateChange
from slawatch.store import sqlite
from slawatch.store.sqlite import SqliteSink, SqliteSource

pytestmark = pytest.mark.timeout(60)
START, END = 1_000_000, 2_000_000


def history(seed: int) -> list[StateChange]:
    rng = random.Random(seed)
    out = []
    for c in range(rng.randint(1, 12)):
        ref = ComponentRef(f"c{c:02d}", "san", "gold", "acme")
        for agent in rng.sample(["mon-1", "mon-2", "mon-3"], rng.randint(1, 3)):
            for ts in rng.sample(range(0, 2_500_000, 1000), rng.randint(0, 6)):
                up = rng.random() < 0.5
                out.append(StateChange(ref, agent, ts, up, "" if up else rng.choice(["503", "refused"]),
                                       up and rng.random() < 0.2))
    return out


def expected(changes: list[StateChange], names: set[str]) -> list[StateChange]:
    """Each (component, agent)'s last change before the period and every change in it, by (component, ts, agent)."""
    last: dict[tuple[str, str], StateChange] = {}
    inside = []
    for c in changes:
        if c.ref.component not in names:
            continue
        if c.ts_ms < START:
            key = (c.ref.component, c.agent)
            if key not in last or last[key].ts_ms < c.ts_ms:
                last[key] = c
        elif c.ts_ms < END:
            inside.append(c)
    return sorted([*last.values(), *inside], key=lambda c: (c.ref.component, c.ts_ms, c.agent))


@pytest.mark.parametrize("batch", [1, 2, 7, 50_000])
@pytest.mark.parametrize("seed", range(6))
async def test_batched_read_is_the_whole_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int,
                                              batch: int) -> None:
    monkeypatch.setattr(sqlite, "READ_BATCH", batch)
    changes = history(seed)
    settings = SqliteSettings(path=tmp_path / "s.db")
    sink = SqliteSink(settings)
    await sink.write(changes or [StateChange(ComponentRef("zz", "san", "gold", ""), "mon-1", 5, True, "")])
    await sink.close()
    names = sorted({c.ref.component for c in changes})
    asked = set(random.Random(seed).sample(names, max(1, len(names) * 2 // 3))) if names else {"c00"}
    source = SqliteSource(settings)
    try:
        got = await source.changes(START, END, sorted(asked))
        everything = await source.changes(START, END)  # the unfiltered read, sorted in Python
    finally:
        await source.close()
    assert got == expected(changes, asked)
    assert [c for c in everything if c.ref.component in asked] == got
    if len(got) > 1:  # one str per distinct agent: shared, not made per row
        assert len({id(c.agent) for c in got}) == len({c.agent for c in got})

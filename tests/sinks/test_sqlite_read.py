"""A report's read of state changes from SQLite: a component per row (its changes packed into texts), in batches,
and read as rows where the packing cannot hold them: the same changes, in order, as one read of them all."""

from __future__ import annotations

import random
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from slawatch import schema
from slawatch.config.settings import SqliteSettings
from slawatch.model import ComponentRef, StateChange
from slawatch.store import sqlite
from slawatch.store.sqlite import SqliteSink, SqliteSource
from tests.sinks.histories import months_of_agents, read_of

pytestmark = pytest.mark.timeout(120)
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


async def read_back(path: Path, changes: list[StateChange], asked: list[str],
                    monkeypatch: pytest.MonkeyPatch) -> tuple[list[StateChange], list[StateChange], list[str]]:
    """(the slice's read of `asked`, the unfiltered read, the components the slice's read took as rows)."""
    settings = SqliteSettings(path=path)
    sink = SqliteSink(settings)
    await sink.write(changes or [StateChange(ComponentRef("zz", "san", "gold", ""), "mon-1", 5, True, "")])
    await sink.close()
    as_rows: list[str] = []
    unpacked = schema.unpacked_changes

    def watched(row: Any, *args: Any) -> list[StateChange] | None:
        got = unpacked(row, *args)
        if got is None:
            as_rows.append(row[0])
        return got

    source = SqliteSource(settings)
    try:
        with monkeypatch.context() as patch:
            patch.setattr(schema, "unpacked_changes", watched)
            got = await source.changes(START, END, asked)
        everything = await source.changes(START, END)  # the unfiltered read: rows, sorted in Python
    finally:
        await source.close()
    return got, everything, as_rows


@pytest.mark.parametrize("batch", [1, 2, 7, 1000])
@pytest.mark.parametrize("seed", range(6))
async def test_batched_read_is_the_whole_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int,
                                              batch: int) -> None:
    monkeypatch.setattr(sqlite, "PACKED_BATCH", batch)
    changes = history(seed)
    names = sorted({c.ref.component for c in changes})
    asked = set(random.Random(seed).sample(names, max(1, len(names) * 2 // 3))) if names else {"c00"}
    got, everything, as_rows = await read_back(tmp_path / "s.db", changes, sorted(asked), monkeypatch)
    assert got == expected(changes, asked)
    assert [c for c in everything if c.ref.component in asked] == got
    assert as_rows == []  # plain changes are read packed, never as rows
    if len(got) > 1:  # one str per distinct agent: shared, not made per row
        assert len({id(c.agent) for c in got}) == len({c.agent for c in got})


# Texts that the packing joins or splits on (the unit separator, the comma), empty ones, and others.
_TEXT = st.sampled_from(["", "mon-1", "mon-2", "a\x1fb", "\x1f", "x,y", "503", "é ü"])
_CHANGE = st.tuples(st.integers(0, 3), st.sampled_from(["san", "sip"]), st.sampled_from(["gold", "base"]),
                    _TEXT, st.integers(900_000, 1_100_000).map(lambda n: n - n % 50_000 + n % 3), st.booleans(),
                    _TEXT, st.booleans(), st.booleans())


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(_CHANGE, max_size=40), st.integers(1, 3))
async def test_any_changes_read_packed_or_as_rows_are_the_whole_read(
        tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch,
        drawn: list[tuple[Any, ...]], batch: int) -> None:
    """Ties at one instant, tags that change within the period, separators inside agents and reasons, every flag:
    the slice's read equals the expected changes and the unfiltered read; a component is read as rows only when
    its packed row cannot hold its changes."""
    monkeypatch.setattr(sqlite, "PACKED_BATCH", batch)
    by_key: dict[tuple[str, int, str], StateChange] = {}
    for n, klass, tier, agent, ts, up, reason, degraded, released in drawn:
        change = StateChange(ComponentRef(f"c{n}", klass, tier, "acme"), agent, ts, up, reason, up and degraded,
                             released)
        by_key[(change.ref.component, ts, agent)] = change  # the store keeps one change per identity
    changes = list(by_key.values())
    asked = ["c0", "c1", "c3"]
    got, everything, as_rows = await read_back(tmp_path_factory.mktemp("packed") / "s.db", changes, asked,
                                                monkeypatch)
    assert got == expected(changes, set(asked))
    assert [c for c in everything if c.ref.component in asked] == got
    for name in asked:
        inside = [c for c in changes if c.ref.component == name and START <= c.ts_ms < END]
        plain = (len({(c.ref.klass, c.ref.tier) for c in inside}) <= 1
                 and not any("\x1f" in c.agent or "\x1f" in c.reason for c in inside))
        assert (name in as_rows) == (bool(inside) and not plain), name


async def test_a_slice_s_last_changes_are_the_same_walked_along_the_index_or_read_in_full(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The last change of each (component, agent) before a period: read from every change before it while the
    store's history before the period is short, walked along the index once it is more than half a period; the same
    changes either way. Components with one to three agents, an agent that begins after the first period, one that
    stops before the second, a component without changes."""
    day = 86_400_000
    t0 = 1_000 * day
    points = months_of_agents(t0, day)
    settings = SqliteSettings(path=tmp_path / "s.db")
    sink = SqliteSink(settings)
    await sink.write(points)
    await sink.close()
    used: list[str] = []
    source = SqliteSource(settings)
    read = source._read

    async def spied(sql: str, *args: Any, **kwargs: Any) -> list[Any]:
        if "MAX(ts_ms)" in sql:
            used.append("walked" if "RECURSIVE" in sql else "in full")
        return await read(sql, *args, **kwargs)

    monkeypatch.setattr(source, "_read", spied)
    try:
        for start, end in ((t0 + 3 * day, t0 + 33 * day), (t0 + 63 * day, t0 + 93 * day)):
            assert await source.changes(start, end, ["a", "b", "c", "d", "none"]) == read_of(points, start, end)
    finally:
        await source.close()
    assert used == ["in full", "walked"]
